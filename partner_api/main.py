"""The FastAPI application (``recon api`` serves ``partner_api.main:app`` with uvicorn).

:func:`create_app` builds an app for given settings (tests, benchmarks); ``app`` is the one built from
the environment (``RECON_*``). Stores are opened and migrated on the first request.
"""

from __future__ import annotations

from fastapi import FastAPI

from reconciliation_pipeline.settings import Settings
from reconciliation_pipeline.telemetry import configure_logging

from . import openapi, problems
from .observability import MetricsMiddleware, instrument_app, log_in_background
from .routers import disputes, ops, settlements, system, transactions

DESCRIPTION = """\
Transaction status and match evidence, settlement batches, disputes and settlement-file uploads for
PSPs and B2B brands; the exception queue for operators.

* Authenticate with `Authorization: Bearer <API key>`; a key belongs to one partner and one
  environment (`rk_live_…` or `rk_sandbox_…`) and has scopes (`read`, `disputes`, `upload`, `operator`).
* Every state-changing call needs an `Idempotency-Key` header: retries with the same key and request
  replay the first response (`Idempotent-Replayed: true`).
* Errors are RFC 9457 `application/problem+json`; every response carries `X-Trace-Id`.
* Money is an integer number of minor units (`amount_minor`) with its ISO 4217 `currency`.
"""


def create_app(settings: Settings | None = None, *, instrument: bool = True) -> FastAPI:
    app = FastAPI(
        title="Reconciliation partner API",
        version="1.0.0",
        description=DESCRIPTION,
        # FastAPI's own OpenTelemetry layer stays off: requests are traced by the OpenTelemetry
        # FastAPI instrumentation (observability.instrument_app) and counted by Prometheus, so the
        # native layer would only re-check its providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings or Settings()
    problems.install(app)
    for router in (
        transactions.router,
        settlements.router,
        disputes.router,
        ops.router,
        system.router,
    ):
        app.include_router(router)
    openapi.install(app)
    app.add_middleware(MetricsMiddleware)
    if instrument:
        instrument_app(app, service_version=app.state.settings.code_version)
    return app


configure_logging()
log_in_background()
app = create_app()
