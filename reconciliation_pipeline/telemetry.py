"""Tracing and structured logs for every process of the platform (CLI, Dagster runs, partner API).

* :func:`setup_telemetry` installs one OpenTelemetry ``TracerProvider`` per process with the exporter
  the settings name (``RECON_OTEL_EXPORTER``: ``memory`` by default, ``console``, ``otlp`` or ``none``;
  the standard ``OTEL_TRACES_EXPORTER`` is honoured when ``RECON_OTEL_EXPORTER`` is unset). ``otlp``
  sends OTLP/HTTP protobuf to the collector named by the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` variables; ``OTEL_SERVICE_NAME`` and
  ``OTEL_RESOURCE_ATTRIBUTES`` set the resource; ``OTEL_SDK_DISABLED=true`` turns tracing off.
* :func:`configure_logging` makes log records one JSON object a line, each with the ``trace_id`` and
  ``span_id`` of the span current when it was logged (:class:`JsonLogFormatter`).
* :func:`step_span` wraps one pipeline step (land, ingest, reconcile, publish) in a span and records
  its duration and last success in the pipeline metrics (:mod:`reconciliation_pipeline.metrics`).

A payment's own trace id (``trace_id`` of the transaction event, the W3C id of the request that booked
it) is data, not span context: the pipeline processes thousands of payments in one span, so it carries
the id onto the landed row, the outcome and the audit events, and the partner API returns it (see
``docs/observability.md``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

EXPORTERS = ("memory", "console", "otlp", "none")
#: Spans the default in-memory exporter keeps (the newest); older ones are dropped.
MEMORY_SPANS = 4096
INSTRUMENTATION_NAME = "reconciliation_pipeline"
log = logging.getLogger(__name__)
TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_HANDLER_NAME = "recon-json"
#: LogRecord attributes that are not "extra" fields of a log call.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)).keys() | {"message", "asctime"}
)


class MemorySpanExporter(SpanExporter):
    """Keeps the newest ``maxlen`` finished spans in memory (the default: nothing leaves the process)."""

    def __init__(self, maxlen: int = MEMORY_SPANS) -> None:
        self._spans: deque[ReadableSpan] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self._spans.extend(spans)
        return SpanExportResult.SUCCESS

    def get_finished_spans(self) -> list[ReadableSpan]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def shutdown(self) -> None:
        self.clear()


@dataclass(frozen=True)
class Telemetry:
    """What :func:`setup_telemetry` installed."""

    provider: TracerProvider
    exporter: str
    #: The in-memory exporter (``exporter == "memory"``), for tests and the ops pages.
    memory: MemorySpanExporter | None

    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer(INSTRUMENTATION_NAME)


_lock = threading.Lock()
#: The process's telemetry once set up (a one-slot holder: OpenTelemetry's provider is global too).
_installed: list[Telemetry] = []


def exporter_name(explicit: str | None = None) -> str:
    """The exporter to use: the argument, else ``RECON_OTEL_EXPORTER``, else ``OTEL_TRACES_EXPORTER``,
    else ``memory``. Raises ``ValueError`` naming the allowed values for anything else."""
    if explicit is None:
        from .settings import Settings

        explicit = Settings().otel_exporter
    name = explicit or os.environ.get("OTEL_TRACES_EXPORTER")
    name = (name or "memory").strip().lower()
    if name == "in-memory":
        name = "memory"
    if name not in EXPORTERS:
        raise ValueError(f"unknown trace exporter {name!r}: use one of {', '.join(EXPORTERS)}")
    return name


def make_exporter(name: str) -> tuple[SpanExporter | None, MemorySpanExporter | None]:
    """The span exporter ``name`` stands for (``None`` for ``none``), and the in-memory one if it is that."""
    if name == "memory":
        memory = MemorySpanExporter()
        return memory, memory
    if name == "console":
        return ConsoleSpanExporter(out=sys.stderr), None
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(), None  # endpoint, headers, timeout: the standard OTEL_EXPORTER_OTLP_*
    return None, None


def setup_telemetry(
    service_name: str = "recon-pipeline",
    *,
    exporter: str | None = None,
    service_version: str | None = None,
) -> Telemetry:
    """Install the process's tracer provider and span exporter; returns what is installed.

    Idempotent: a second call with the same exporter returns the first result. A call naming a
    different exporter adds that exporter to the provider already installed (OpenTelemetry allows one
    global provider per process, so the service name of the first call stays).
    """
    name = exporter_name(exporter)
    with _lock:
        if _installed and _installed[0].exporter == name:
            return _installed[0]
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            attributes: dict[str, str] = {"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name}
            if service_version:
                attributes["service.version"] = service_version
            provider = TracerProvider(resource=Resource.create(attributes))
            trace.set_tracer_provider(provider)
            provider = trace.get_tracer_provider()
            if not isinstance(provider, TracerProvider):  # pragma: no cover - another SDK won the race
                raise RuntimeError(f"a foreign tracer provider is installed: {provider!r}")
        span_exporter, memory = make_exporter(name)
        if span_exporter is not None:
            batch = name == "otlp"
            provider.add_span_processor(
                BatchSpanProcessor(span_exporter) if batch else SimpleSpanProcessor(span_exporter)
            )
        _installed[:] = [Telemetry(provider=provider, exporter=name, memory=memory)]
        return _installed[0]


def current() -> Telemetry:
    """The installed telemetry, set up from the environment on first use."""
    return _installed[0] if _installed else setup_telemetry()


def tracer() -> trace.Tracer:
    return current().tracer()


def current_ids() -> tuple[str | None, str | None]:
    """``(trace_id, span_id)`` of the current span as lowercase hex, or ``(None, None)`` outside one."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


@contextlib.contextmanager
def step_span(
    step: str, attributes: Mapping[str, Any] | None = None, *, metrics_dir: Path | None = None
) -> Iterator[trace.Span]:
    """A span ``recon.<step>`` around one pipeline step, current while the step runs.

    An exception is recorded on the span (status ERROR) and re-raised. When the step ends, its
    duration and the time it succeeded or failed join the step's run metrics, which are then exported
    (:func:`metrics.export_step`: ``metrics_dir/<step>.prom``, the Pushgateway when configured). A
    failing export is logged, never raised: metrics must not fail a payment run.
    """
    from . import metrics

    attrs = {"recon.step": step, **{k: _attr(v) for k, v in (attributes or {}).items() if v is not None}}
    started = time.monotonic()
    with tracer().start_as_current_span(f"recon.{step}", attributes=attrs) as span:
        ok = False
        try:
            yield span
            ok = True
        finally:
            metrics.record_step(step, time.monotonic() - started, ok=ok)
            try:
                metrics.export_step(step, metrics_dir)
            except Exception as exc:  # pragma: no cover - network or disk trouble
                log.warning("could not export the %s step's metrics: %s", step, exc)


def _attr(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------- logs


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, trace and span ids of the
    current span (absent outside one), exception text, and any ``extra={...}`` fields of the call."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id, span_id = current_ids()
        if trace_id is not None:
            out["trace_id"] = trace_id
            out["span_id"] = span_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(
    level: int | str | None = None, *, json_format: bool | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """Route the root logger to ``stream`` (stderr) as JSON lines (``RECON_LOG_FORMAT=text`` for plain
    text) at ``level`` (``RECON_LOG_LEVEL``, default ``INFO``). Replaces a handler it installed before,
    leaves other handlers alone; returns the handler."""
    if level is None or json_format is None:
        from .settings import Settings

        settings = Settings()
        level = level or settings.log_level
        json_format = settings.log_format == "json" if json_format is None else json_format
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        JsonLogFormatter()
        if json_format
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


__all__ = [
    "EXPORTERS",
    "JsonLogFormatter",
    "MemorySpanExporter",
    "Telemetry",
    "configure_logging",
    "current",
    "current_ids",
    "exporter_name",
    "make_exporter",
    "setup_telemetry",
    "step_span",
    "tracer",
]
