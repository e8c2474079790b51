"""Tracing, metrics and request logs of the partner API.

* OpenTelemetry: the process's tracer provider comes from :mod:`reconciliation_pipeline.telemetry`
  (``RECON_OTEL_EXPORTER``: in-memory by default, ``console``, ``otlp``); FastAPI requests get a server
  span (``opentelemetry-instrumentation-fastapi``) and every SQL statement a child span
  (``opentelemetry-instrumentation-sqlalchemy``). Responses carry the trace id in ``X-Trace-Id``;
  problem bodies and audit events carry it too.
* Prometheus (``prometheus-client``) at ``/metrics``: requests by route, method and status, their
  latency, rate-limited requests and idempotent replays.
* One JSON log line per request (logger ``partner_api.access``) with the trace id.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import logging
import threading
import time
from collections import deque
from typing import IO, Any

import orjson
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.http import sanitize_method
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from sqlalchemy.engine import Engine
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciliation_pipeline.telemetry import _STANDARD_ATTRS, JsonLogFormatter, setup_telemetry

access_log = logging.getLogger("partner_api.access")

REQUESTS = Counter("recon_api_requests_total", "Partner API requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "recon_api_request_duration_seconds",
    "Partner API request duration (server side)",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RATE_LIMITED = Counter("recon_api_rate_limited_total", "Requests refused with 429", ["environment"])
IDEMPOTENT_REPLAYS = Counter(
    "recon_api_idempotent_replays_total",
    "State-changing calls answered from a stored response",
    ["environment"],
)


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request, adds ``X-Trace-Id``, logs one line.

    It also completes the server span that ``OpenTelemetryMiddleware`` opened before routing: once the
    route is known it names the span ``<METHOD> <route template>`` with ``http.route``, and records an
    unhandled exception on it (status ERROR) before the 500 handler answers.

    A request whose server span is not sampled runs with OpenTelemetry's suppress-instrumentation flag
    set (``opentelemetry.instrumentation.utils.suppress_instrumentation``), which the SQLAlchemy
    instrumentation honours: its statements would only have made spans that the parent-based sampler
    drops (~70 us of CPU a statement here). The request keeps its trace id (``X-Trace-Id``, logs,
    audit events): the unsampled span is still the current one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        trace_hex: str | None = None
        span = trace.get_current_span()
        suppressed = contextlib.ExitStack()
        if not span.is_recording():
            suppressed.enter_context(suppress_instrumentation())

        async def _send(message: Message) -> None:
            nonlocal status, trace_hex
            if message["type"] == "http.response.start":
                status = int(message["status"])
                ctx = span.get_span_context()
                if ctx.is_valid:
                    trace_hex = format(ctx.trace_id, "032x")
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"x-trace-id", trace_hex.encode())]
                    _name_span(span, scope)
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except Exception as exc:
            if span.is_recording():
                _name_span(span, scope)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            suppressed.close()
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            key = (method, template, status)
            children = _children.get(key)
            if children is None:
                children = _children[key] = (
                    REQUESTS.labels(method, template, str(status)),
                    LATENCY.labels(method, template),
                )
            children[0].inc()
            children[1].observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                principal = getattr(scope.get("state", {}).get("principal"), "partner_id", None)
                # makeRecord + handle: Logger.info without its caller lookup (a walk up the stack that
                # the JSON line never shows)
                access_log.handle(
                    access_log.makeRecord(
                        access_log.name,
                        logging.INFO,
                        __file__,
                        0,
                        "%s %s %s",
                        (method, scope.get("path", ""), status),
                        None,
                        extra={
                            "http_method": method,
                            "http_route": template,
                            "http_status": status,
                            "duration_ms": round(elapsed * 1000, 3),
                            "partner_id": principal,
                            "request_trace_id": trace_hex,
                        },
                    )
                )


#: Prometheus children by (method, route, status): ``labels()`` looks them up under a lock each time.
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def metrics_response() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def _span_details(scope: Scope) -> tuple[str, dict[str, str]]:
    """The server span's name when it starts: the method (the route is not known before routing)."""
    method = sanitize_method(scope.get("method", "").strip())
    return ("HTTP" if method == "_OTHER" else method), {}


def _name_span(span: trace.Span, scope: Scope) -> None:
    template = getattr(scope.get("route"), "path", None)
    if template and span.is_recording():
        span.update_name(f"{_span_details(scope)[0]} {template}")
        span.set_attribute("http.route", template)


def instrument_app(app: FastAPI, *, service_version: str | None = None) -> None:
    """Tracing of every request with OpenTelemetry's ASGI instrumentation (``OpenTelemetryMiddleware``).

    The middleware wraps the whole app (outside Starlette's ``ServerErrorMiddleware``, so the 500
    handler answers inside the span and quotes its trace id), as ``FastAPIInstrumentor`` places it,
    but without the instrumentor's per-request scan of every route to name the span before routing:
    :class:`MetricsMiddleware` names it from the route the router picked. Spans for the receive/send
    ASGI events are left out; ``/metrics`` and ``/health`` are not traced.
    """
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    telemetry = setup_telemetry("recon-partner-api", service_version=service_version)
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        stack = build()
        return ServerErrorMiddleware(
            OpenTelemetryMiddleware(
                stack,
                excluded_urls="/metrics,/health",
                default_span_details=_span_details,
                tracer_provider=telemetry.provider,
                # request metrics are Prometheus's (MetricsMiddleware): OpenTelemetry's are not kept
                meter_provider=NoOpMeterProvider(),
                exclude_spans=["receive", "send"],
            )
        )

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


_instrumented: set[int] = set()


def instrument_engine(engine: Engine) -> None:
    """A span per SQL statement on ``engine`` (once per engine).

    ``EngineTracer`` is what ``SQLAlchemyInstrumentor().instrument(engine=...)`` installs; the
    instrumentor is a process-wide singleton that instruments only once, so each engine of the API
    (live and sandbox stores, one per app) is given its tracer directly.
    """
    from opentelemetry.instrumentation.sqlalchemy import __version__
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    if id(engine) in _instrumented:
        return
    telemetry = setup_telemetry("recon-partner-api")
    name = "opentelemetry.instrumentation.sqlalchemy"
    tracer = telemetry.provider.get_tracer(name, __version__)
    usage = get_meter(name, __version__).create_up_down_counter(
        "db.client.connections.usage", unit="connections", description="connections by state"
    )
    EngineTracer(tracer, engine, usage)
    _instrumented.add(id(engine))


class FastJsonLogFormatter(JsonLogFormatter):
    """:class:`JsonLogFormatter`'s lines (same fields and values), written by orjson when every extra
    field is a plain str/int/float/bool/None (the access log's are); any other record goes to the
    standard formatter."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = format(ctx.trace_id, "032x")
            out["span_id"] = format(ctx.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in out:
                if type(value) not in _PLAIN:
                    return super().format(record)  # json.dumps(default=str) decides how it reads
                out[key] = value
        if record.exc_info or record.stack_info:
            return super().format(record)
        try:
            return orjson.dumps(out).decode()
        except TypeError:  # an integer beyond 64 bits
            return super().format(record)


_PLAIN = frozenset({str, int, float, bool, type(None)})
_second: list[Any] = [None, ""]


def _timestamp(created: float) -> str:
    """``datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")``, the date and time
    of day formatted once a second."""
    whole = int(created)
    micros = round((created - whole) * 1e6)  # rounded to microseconds as datetime does, then cut
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    if _second[0] != whole:
        _second[:] = [whole, dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_second[1]}.{micros // 1000:03d}+00:00"


class BackgroundLines(logging.Handler):
    """Formats each record in the thread that logs it and queues the line; a writer thread writes the
    queued lines every ``interval`` seconds (and at exit), so a request never waits on the stream nor
    wakes a thread per line."""

    def __init__(self, stream: IO[str], *, interval: float = 0.05) -> None:
        super().__init__()
        self.stream = stream
        self.interval = interval
        self._lines: deque[str] = deque()
        self._write_lock = threading.Lock()
        threading.Thread(target=self._run, name="recon-log-writer", daemon=True).start()
        atexit.register(self.flush)

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        # no handler lock: formatting is per record and deque.append is atomic
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self._write_lock:
            lines = self._lines
            out: list[str] = []
            while lines:
                out.append(lines.popleft())
            if out:
                with contextlib.suppress(ValueError, OSError):  # stream closed at interpreter exit
                    self.stream.write("\n".join(out) + "\n")
                    self.stream.flush()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()


def log_in_background() -> None:
    """Write log lines from a background thread (:class:`BackgroundLines` replaces the JSON handler).

    Each record is still formatted in the thread that logs it (the JSON line takes the trace id of the
    span current there); only the write and flush of the stream move off the request path.
    """
    import sys

    root = logging.getLogger()
    if any(isinstance(h, BackgroundLines) for h in root.handlers):
        return
    formatters = [h.formatter for h in root.handlers if h.get_name() == "recon-json"]
    for handler in [h for h in root.handlers if h.get_name() == "recon-json"]:
        root.removeHandler(handler)
    front = BackgroundLines(sys.stderr)
    front.set_name("recon-json")
    formatter = formatters[0] if formatters and formatters[0] else JsonLogFormatter()
    front.setFormatter(FastJsonLogFormatter() if type(formatter) is JsonLogFormatter else formatter)
    root.addHandler(front)
