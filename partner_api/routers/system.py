"""Health (the process answers), readiness (its stores and Redis answer) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import text

from reconciliation_pipeline.metrics import install_store_metrics

from ..deps import Runtime, RuntimeDep
from ..observability import metrics_response
from ..openapi import errors
from ..problems import ProblemError
from ..schemas import Health, Readiness

router = APIRouter(tags=["ops"])


@router.get("/health", response_model=Health, include_in_schema=False)
@router.get("/v1/health", response_model=Health)
async def health() -> Any:
    """Liveness: the process answers (no dependency is checked)."""
    return {"status": "ok"}


def _check_stores(runtime: Runtime) -> dict[str, str]:
    checks: dict[str, str] = {}
    for env, engine in runtime.engines.items():
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks[f"store_{env}"] = "ok"
        except Exception as exc:
            checks[f"store_{env}"] = f"failed: {type(exc).__name__}"
    return checks


@router.get("/v1/ready", response_model=Readiness, responses=errors(503))
async def ready(runtime: RuntimeDep) -> Any:
    """Readiness: both stores answer a query and the rate limiter's Redis answers a PING."""
    checks = await run_in_threadpool(_check_stores, runtime)
    limiter_ok = await run_in_threadpool(runtime.limiter.ping)
    checks[f"ratelimit_{runtime.limiter.backend}"] = "ok" if limiter_ok else "failed"
    failed = sorted(k for k, v in checks.items() if v != "ok")
    if failed:
        raise ProblemError(503, f"not ready: {', '.join(failed)}", slug="not-ready", checks=checks)
    return {"status": "ready", "checks": checks}


@router.get("/metrics", include_in_schema=False)
async def metrics(runtime: RuntimeDep) -> Response:
    # the outcome store's state (records per status, open exceptions by age) is read at scrape time
    install_store_metrics(runtime.settings.db_url, business_tz=runtime.settings.business_tz)
    body, media = await run_in_threadpool(metrics_response)
    return Response(body, media_type=media)
