"""The HTML report: one self-contained file (inline CSS and SVG charts, no script, no network)."""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

import polars as pl

from . import charts
from .layout import NONE_TEXT, PERCENT_COLUMNS, VIEW_LAYOUT, is_amount, label, visible
from .money_format import display
from .queries import ReportData

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2733;
  background:#f6f7f9}
h1{margin:0 0 4px}h2{margin:32px 0 8px;border-bottom:2px solid #1f3a5f;padding-bottom:4px}
.muted{color:#687385;fill:#687385;font-size:13px}
.kpis{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.kpi{background:#fff;border-radius:8px;padding:12px 16px;min-width:150px;box-shadow:0 1px 2px #0002}
.kpi b{display:block;font-size:24px}.kpi.bad b{color:#c8423b}.kpi.good b{color:#2f7a4a}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(660px,1fr));gap:16px}
figure{background:#fff;margin:0;padding:12px;border-radius:8px;box-shadow:0 1px 2px #0002}
figcaption{font-weight:600;margin-bottom:6px}
svg text{font-size:12px;fill:#1d2733}svg .axis{fill:#4a5565}svg .value{fill:#1d2733;font-weight:600}
svg .grid{stroke:#e3e6ea}svg .legend{font-size:12px}
.table{overflow:auto;max-height:520px;background:#fff;border-radius:8px;box-shadow:0 1px 2px #0002}
table{border-collapse:collapse;font-size:13px;white-space:nowrap}
th{position:sticky;top:0;background:#1f3a5f;color:#fff;padding:6px 8px;text-align:center}
td{padding:4px 8px;border-bottom:1px solid #eef0f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.neg{color:#c8423b}td.flag{background:#fde8e6;font-weight:600}
.warning{background:#fff4d6;border-left:4px solid #e0a030;padding:8px 12px;margin:8px 0}
"""
#: Columns whose non-zero value is a problem to look at.
FLAG_COLUMNS = frozenset({"payout_minus_bank_minor", "batch_minus_payout_minor"})


def _td(column: str, value: Any, currency: str | None) -> str:
    if value is None:
        return f"<td>{NONE_TEXT if column == 'jurisdiction' else ''}</td>"
    if is_amount(column):
        classes = ["num"]
        if value < 0:
            classes.append("neg")
        if column in FLAG_COLUMNS and value != 0:
            classes.append("flag")
        return f'<td class="{" ".join(classes)}">{escape(display(int(value), currency))}</td>'
    if column in PERCENT_COLUMNS:
        return f'<td class="num">{value:.2%}</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:,.2f}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value:,}</td>'
    if isinstance(value, dt.datetime):
        return f"<td>{value.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}</td>"
    return f"<td>{escape(str(value))}</td>"


def table(frame: pl.DataFrame) -> str:
    columns = visible(frame)
    if frame.is_empty():
        return '<p class="muted">No rows.</p>'
    head = "".join(f"<th>{escape(label(c))}</th>" for c in columns)
    rows = []
    for row in frame.iter_rows(named=True):
        currency = row.get("currency")
        rows.append("<tr>" + "".join(_td(c, row[c], currency) for c in columns) + "</tr>")
    body = "".join(rows)
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _status_by_psp(summary: pl.DataFrame) -> str:
    by_psp = (
        summary.group_by("psp")
        .agg(
            matched=pl.col("ledger_matched_count").sum() + pl.col("settlement_matched_count").sum(),
            pending=pl.col("ledger_pending_count").sum() + pl.col("settlement_pending_count").sum(),
            exception=pl.col("ledger_exception_count").sum() + pl.col("settlement_exception_count").sum(),
        )
        .sort("psp")
    )
    return charts.bar_chart(
        "Records of the date by status, per PSP",
        by_psp["psp"].to_list(),
        [(s, by_psp[s].to_list()) for s in ("matched", "pending", "exception")],
        colours=[charts.STATUS_COLOURS[s] for s in ("matched", "pending", "exception")],
        empty_message="No records on this date",
    )


def _exceptions_by_category(exceptions: pl.DataFrame) -> str:
    by_cat = exceptions.group_by("exception_category").agg(pl.col("records").sum()).sort("exception_category")
    return charts.bar_chart(
        "Exceptions of the date by category",
        by_cat["exception_category"].to_list(),
        [("records", by_cat["records"].to_list())],
        colours=[charts.STATUS_COLOURS["exception"]],
        empty_message="No exceptions on this date",
    )


def _ageing(ageing: pl.DataFrame) -> str:
    if ageing.is_empty():
        return charts.bar_chart("Open exceptions by age", [], [], empty_message="No open exceptions")
    buckets = (
        ageing.select("age_bucket", "bucket_order").unique().sort("bucket_order")["age_bucket"].to_list()
    )
    categories = sorted(ageing["exception_category"].unique().to_list())
    counts = ageing.group_by("age_bucket", "exception_category").agg(pl.col("records").sum())
    lookup = {(b, c): n for b, c, n in counts.iter_rows()}
    return charts.bar_chart(
        "Open exceptions by age and category",
        buckets,
        [(c, [lookup.get((b, c), 0) for b in buckets]) for c in categories],
        empty_message="No open exceptions",
    )


def _accuracy(accuracy: pl.DataFrame) -> str:
    dates = [d.isoformat() for d in accuracy["business_date"].to_list()]
    series: list[tuple[str, list[float | None]]] = [
        ("auto-match rate", accuracy["auto_match_rate"].to_list())
    ]
    if accuracy["accuracy"].is_not_null().any():
        series.append(("accuracy vs ground truth", accuracy["accuracy"].to_list()))
    values = [v for _, vs in series for v in vs if v is not None]
    low = min(values, default=0.0)
    y_min = 0.0 if low < 0.5 else (0.5 if low < 0.9 else 0.9)
    return charts.line_chart(
        "Auto-match rate and accuracy per business date", dates, series, y_min=y_min, y_max=1.0
    )


def _fee_rates(fees: pl.DataFrame) -> str:
    rates = (
        fees.filter(pl.col("psp") != "bank")
        .group_by("psp", "currency")
        .agg(pl.col("fees_7d_minor").sum(), pl.col("captured_7d_minor").first())
        .filter(pl.col("captured_7d_minor") > 0)
        .with_columns(bps=pl.col("fees_7d_minor") * 10_000 / pl.col("captured_7d_minor"))
        .sort("psp", "currency")
    )
    return charts.bar_chart(
        "Effective fee rate over 7 days (basis points of captured volume)",
        [f"{p} {c}" for p, c in rates.select("psp", "currency").iter_rows()],
        [("bps", rates["bps"].to_list())],
        colours=[charts.PALETTE[0]],
        value_format=lambda v: f"{v:,.1f} bps",
        empty_message="No captures in the last 7 days",
    )


def _kpis(headline: dict[str, Any]) -> str:
    def tile(name: str, value: str, tone: str = "") -> str:
        return (
            f'<div class="kpi {tone}"><span class="muted">{escape(name)}</span><b>{escape(value)}</b></div>'
        )

    acc = headline.get("accuracy")
    tiles = [
        tile("booked transactions", f"{headline['booked']:,}"),
        tile("settlement records", f"{headline['settlement_records']:,}"),
        tile("matched", f"{headline['matched']:,}", "good"),
        tile("pending", f"{headline['pending']:,}"),
        tile("exceptions", f"{headline['exceptions']:,}", "bad" if headline["exceptions"] else "good"),
        tile("open exceptions (all dates)", f"{headline['open_exceptions']:,}"),
        tile(
            "payouts not matching the bank",
            f"{headline['payout_breaks']} of {headline['payouts']}",
            "bad" if headline["payout_breaks"] else "good",
        ),
    ]
    if acc is not None:
        tiles.append(tile("accuracy vs ground truth", f"{acc:.2%}", "good" if acc >= 0.998 else "bad"))
    return '<div class="kpis">' + "".join(tiles) + "</div>"


def render_html(data: ReportData, headline: dict[str, Any], *, generated_at: dt.datetime) -> str:
    figures = [
        ("Records of the date by status, per PSP", _status_by_psp(data["summary"])),
        ("Exceptions of the date by category", _exceptions_by_category(data["exceptions"])),
        ("Open exceptions by age and category", _ageing(data["ageing"])),
        ("Auto-match rate and accuracy per business date", _accuracy(data["accuracy"])),
        ("Effective fee rate over 7 days (basis points of captured volume)", _fee_rates(data["fees"])),
    ]
    warnings = "".join(
        f'<p class="warning">{records} {escape(record)} record(s) of {escape(psp)} have no amount in the '
        "lake: the figures below leave them out.</p>"
        for record, psp, records in data.missing_amounts.iter_rows()
    )
    sections = "".join(
        f'<section id="{name}"><h2>{escape(view.title)}</h2><p class="muted">{escape(view.description)}</p>'
        f"{table(data[name])}</section>"
        for name, view in VIEW_LAYOUT.items()
    )
    charts_html = "".join(
        f"<figure><figcaption>{escape(title)}</figcaption>{svg}</figure>" for title, svg in figures
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Reconciliation report {data.day.isoformat()}</title>
<style>{CSS}</style></head>
<body>
<h1>Daily reconciliation report — {data.day.isoformat()}</h1>
<p class="muted">Generated {generated_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC.
Statuses are the latest in the outcome store; amounts are in each row's currency (no conversion),
with its ISO 4217 digits.</p>
{warnings}
{_kpis(headline)}
<h2>At a glance</h2>
<div class="charts">{charts_html}</div>
{sections}
</body></html>
"""
