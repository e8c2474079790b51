"""Charts as inline SVG: the HTML report draws without a network, a script or a plotting library.

Every chart is an ``<svg class="chart">``; its marks are ``rect.bar`` and ``circle.point`` elements with a
``<title>`` that a browser shows on hover.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

PALETTE = ("#2f6fb0", "#e0a030", "#c8423b", "#4c9a6a", "#7b5ea7", "#8c6d46", "#d16ba5", "#5b7d8a")
STATUS_COLOURS = {"matched": "#4c9a6a", "pending": "#e0a030", "exception": "#c8423b"}
WIDTH = 640


def _fmt_int(value: float) -> str:
    return f"{value:,.0f}"


def _empty(title: str, message: str) -> str:
    return (
        f'<svg class="chart empty" role="img" aria-label="{escape(title)}" width="{WIDTH}" height="60" '
        f'viewBox="0 0 {WIDTH} 60"><title>{escape(title)}</title>'
        f'<text x="{WIDTH / 2}" y="35" text-anchor="middle" class="muted">{escape(message)}</text></svg>'
    )


def _legend(names: Sequence[str], colours: Sequence[str]) -> tuple[list[str], float]:
    """Legend entries wrapped into rows across the chart's width; returns the marks and their height."""
    parts: list[str] = []
    x, y = 0.0, 14.0
    for name, colour in zip(names, colours, strict=True):
        width = 26 + 7.2 * len(name)
        if x > 0 and x + width > WIDTH:
            x, y = 0.0, y + 18
        parts.append(f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 16:.1f}" y="{y:.1f}" class="legend">{escape(name)}</text>')
        x += width
    return parts, y + 8


def _polyline(points: list[str], colour: str) -> str:
    return f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" stroke-width="2"/>'


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    colours: Sequence[str] | None = None,
    value_format: Callable[[float], str] = _fmt_int,
    empty_message: str = "Nothing to show",
) -> str:
    """Horizontal bars, one per label, stacked by series (one series gives plain bars)."""
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))]
    if not labels or max(totals, default=0) <= 0:
        return _empty(title, empty_message)
    colours = list(colours or PALETTE[: len(series)])
    legend, legend_height = _legend([name for name, _ in series], colours) if len(series) > 1 else ([], 0.0)
    left, right, top, row = 170.0, 70.0, legend_height + 10, 26.0
    height = top + row * len(labels) + 12
    plot = WIDTH - left - right
    scale = plot / max(totals)
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}"><title>{escape(title)}</title>'
    ]
    parts += legend
    for i, name in enumerate(labels):
        y = top + i * row
        parts.append(
            f'<text x="{left - 8:.1f}" y="{y + row / 2 + 4:.1f}" text-anchor="end" class="axis">'
            f"{escape(name)}</text>"
        )
        x = left
        for (series_name, values), colour in zip(series, colours, strict=True):
            value = values[i]
            if value <= 0:
                continue
            w = value * scale
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y + 4:.1f}" width="{max(w, 1.0):.1f}" '
                f'height="{row - 8:.1f}" fill="{colour}">'
                f"<title>{escape(name)} · {escape(series_name)}: {value_format(value)}</title></rect>"
            )
            x += w
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y + row / 2 + 4:.1f}" class="value">{value_format(totals[i])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    y_min: float = 0.0,
    y_max: float = 1.0,
    value_format: Callable[[float], str] = lambda v: f"{v:.2%}",
    empty_message: str = "Nothing to show",
) -> str:
    """Lines over categorical x (dates); ``None`` leaves a gap. Values are clipped to [y_min, y_max]."""
    if not x_labels or all(v is None for _, values in series for v in values):
        return _empty(title, empty_message)
    colours = PALETTE[: len(series)]
    legend, legend_height = _legend([name for name, _ in series], colours)
    left, right, top, bottom = 60.0, 44.0, legend_height + 12, 46.0
    height = top + 180.0 + bottom
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    step = plot_w / max(len(x_labels) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        v = min(max(v, y_min), y_max)
        x = left + (i * step if len(x_labels) > 1 else plot_w / 2)
        return x, top + plot_h * (1 - (v - y_min) / (y_max - y_min))

    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}"><title>{escape(title)}</title>'
    ]
    for k in range(5):
        v = y_min + (y_max - y_min) * k / 4
        _, y = xy(0, v)
        parts.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{value_format(v)}</text>'
        )
    every = max(1, len(x_labels) // 8)
    for i, name in enumerate(x_labels):
        if i % every == 0 or i == len(x_labels) - 1:
            x, _ = xy(i, y_min)
            parts.append(
                f'<text x="{x:.1f}" y="{height - bottom + 18:.1f}" text-anchor="middle" class="axis">'
                f"{escape(name)}</text>"
            )
    parts += legend
    for (name, values), colour in zip(series, colours, strict=True):
        segment: list[str] = []
        for i, value in enumerate(values):
            if value is None:
                if len(segment) > 1:
                    parts.append(_polyline(segment, colour))
                segment = []
                continue
            x, y = xy(i, value)
            segment.append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}">'
                f"<title>{escape(x_labels[i])} · {escape(name)}: {value_format(value)}</title></circle>"
            )
        if len(segment) > 1:
            parts.append(_polyline(segment, colour))
    parts.append("</svg>")
    return "".join(parts)
