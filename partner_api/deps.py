"""The API's runtime (settings, one store per environment, limiter, key cache) and its dependencies.

Environments are separate stores: live keys read and write the live outcome store and lake
(``RECON_DATABASE_URL`` / ``RECON_DATA_DIR``), sandbox keys the sandbox ones
(``RECON_SANDBOX_DATABASE_URL`` / ``RECON_SANDBOX_DATA_DIR``). Partners and their keys live in the
live store (the control plane). A sandbox key therefore cannot reach live data by any query.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from reconciliation_pipeline.lake import Lake
from reconciliation_pipeline.settings import Settings
from reconciliation_pipeline.store import db

from .ratelimit import RateLimiter, make_limiter

Environment = Literal["live", "sandbox"]
ENVIRONMENTS: tuple[Environment, ...] = ("live", "sandbox")


@dataclass
class Runtime:
    """Everything a request needs that outlives it."""

    settings: Settings
    engines: dict[str, Engine]
    lakes: dict[str, Lake]
    limiter: RateLimiter
    key_cache: dict[str, tuple[float, object]] = field(default_factory=dict)

    @property
    def control(self) -> Engine:
        """The store holding partners and API keys (the live store)."""
        return self.engines["live"]

    def engine(self, environment: str) -> Engine:
        return self.engines[environment]

    def lake(self, environment: str) -> Lake:
        return self.lakes[environment]

    def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()
        self.limiter.close()


def build_runtime(settings: Settings) -> Runtime:
    """Engines for both environments (migrated to the newest schema), lakes and the rate limiter."""
    from .observability import instrument_engine

    engines: dict[str, Engine] = {}
    lakes: dict[str, Lake] = {}
    for env, url, path in (
        ("live", settings.db_url, settings.data_path),
        ("sandbox", settings.sandbox_db_url, settings.sandbox_data_path),
    ):
        engine = (
            db.make_engine(url, pool_size=20, max_overflow=20) if "postgresql" in url else db.make_engine(url)
        )
        db.migrate(engine)
        instrument_engine(engine)
        engines[env] = engine
        lake = Lake(path)
        lake.ensure()
        lakes[env] = lake
    return Runtime(settings=settings, engines=engines, lakes=lakes, limiter=make_limiter(settings))


_lock = threading.Lock()


def _runtime_of(state: Any) -> Runtime:
    runtime: Runtime | None = getattr(state, "runtime", None)
    if runtime is None:
        with _lock:
            runtime = getattr(state, "runtime", None)
            if runtime is None:
                runtime = build_runtime(state.settings)
                state.runtime = runtime
                _freeze_startup_objects()
    return runtime


_frozen: list[bool] = []


def _freeze_startup_objects() -> None:
    """Once a process, when its first runtime is built: move every object alive then (the modules the
    API imported, its app, engines and migrations, ~200k objects) to the garbage collector's permanent
    generation with ``gc.freeze()``, so later full collections skip them.

    Each traced request leaves long-lived objects behind (the exporter's buffer of finished spans, the
    batch processor's queue in production), which triggers a full collection every few thousand
    requests; over everything imported that took ~100-200 ms of CPU each time here, over what is left
    ~10 ms (~250k instructions a request less under callgrind, 6% of the full stack in-process).
    Reference counting still frees frozen objects that are dropped; only cycles among them are kept.
    """
    if not _frozen:
        _frozen.append(True)
        gc.collect()
        gc.freeze()


async def get_runtime(request: Request) -> Runtime:
    """The app's runtime, built on first use from ``app.state.settings``.

    A coroutine: once built (every request but the first) it is an attribute read on the event loop;
    the first build (engines, migrations, Redis pool) runs in a worker thread.
    """
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        runtime = await run_in_threadpool(_runtime_of, request.app.state)
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session for reads (rolled back at the end: nothing to commit)."""
    session = Session(engine)
    try:
        yield session
    finally:
        session.close()
