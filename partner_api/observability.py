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

import logging
import time

from fastapi import FastAPI
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciliation_pipeline.telemetry import setup_telemetry

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
    """Pure ASGI middleware: counts and times every HTTP request, adds ``X-Trace-Id``, logs one line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        trace_hex: str | None = None

        async def _send(message: Message) -> None:
            nonlocal status, trace_hex
            if message["type"] == "http.response.start":
                status = int(message["status"])
                ctx = trace.get_current_span().get_span_context()
                if ctx.is_valid:
                    trace_hex = format(ctx.trace_id, "032x")
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"x-trace-id", trace_hex.encode())]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            REQUESTS.labels(method, template, str(status)).inc()
            LATENCY.labels(method, template).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                principal = getattr(scope.get("state", {}).get("principal"), "partner_id", None)
                access_log.info(
                    "%s %s %s",
                    method,
                    scope.get("path", ""),
                    status,
                    extra={
                        "http_method": method,
                        "http_route": template,
                        "http_status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                        "partner_id": principal,
                        "request_trace_id": trace_hex,
                    },
                )


def metrics_response() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def instrument_app(app: FastAPI, *, service_version: str | None = None) -> None:
    """Tracing of every request (spans for the receive/send ASGI events are left out)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    telemetry = setup_telemetry("recon-partner-api", service_version=service_version)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=telemetry.provider,
        excluded_urls="/metrics,/health",
        exclude_spans=["receive", "send"],
    )


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


def log_in_background() -> None:
    """Write log lines from a background thread (``QueueHandler`` / ``QueueListener``).

    Each record is still formatted in the thread that logs it (the JSON line takes the trace id of the
    span current there); only the write and flush of the stream move off the request path.
    """
    import queue
    import sys
    from logging.handlers import QueueHandler, QueueListener

    from reconciliation_pipeline.telemetry import JsonLogFormatter

    root = logging.getLogger()
    if any(isinstance(h, QueueHandler) for h in root.handlers):
        return
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(logging.Formatter("%(message)s"))
    formatters = [h.formatter for h in root.handlers if h.get_name() == "recon-json"]
    for handler in [h for h in root.handlers if h.get_name() == "recon-json"]:
        root.removeHandler(handler)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    front = QueueHandler(records)
    front.set_name("recon-json")
    front.setFormatter(formatters[0] if formatters and formatters[0] else JsonLogFormatter())
    root.addHandler(front)
    listener = QueueListener(records, writer)
    listener.start()
