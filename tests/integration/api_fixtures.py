"""Fixtures of the partner API tests: a live and a sandbox store (SQLite files, or two schemas of the
real PostgreSQL), the app over them, and helpers to create partners, keys and transactions."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from partner_api import service
from partner_api.main import create_app
from reconciliation_pipeline.settings import Settings
from reconciliation_pipeline.store import db
from reconciliation_pipeline.store.models import MatchGroup, Outcome, SettlementLine, Transaction

TODAY = dt.date(2026, 3, 2)


def _pg_schema(pg_url: str) -> str:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(live URL, sandbox URL): two SQLite files, or two fresh schemas of the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'sandbox.db'}"
    pg_url = str(request.getfixturevalue("pg_url"))
    return _pg_schema(pg_url), _pg_schema(pg_url)


@dataclass
class Api:
    settings: Settings
    app: FastAPI
    client: TestClient
    engines: dict[str, Engine] = field(default_factory=dict)

    def partner(
        self,
        name: str | None = None,
        *,
        psp: str | None = "adyen",
        brand: str | None = None,
        env: str = "live",
        scopes: str = "read,disputes,upload",
        rate: float | None = None,
        burst: int | None = None,
    ) -> str:
        """A new partner (or a new key of the partner of that name); returns the API key."""
        with db.session_scope(self.engines["live"]) as session:
            partner, _ = service.create_partner(
                session, name=name or f"p-{uuid.uuid4().hex[:8]}", psp=psp, brand=brand
            )
            issued = service.issue_key(
                session, partner=partner, environment=env, scopes=scopes, rate_per_s=rate, burst=burst
            )
        return issued.key

    def txn(self, env: str = "live", **fields: Any) -> str:
        values: dict[str, Any] = {
            "transaction_id": f"tx-{uuid.uuid4().hex[:10]}",
            "event_id": f"ev-{uuid.uuid4().hex[:10]}",
            "psp": "adyen",
            "psp_reference": None,
            "kind": "deposit",
            "amount_minor": 10_000,
            "currency": "EUR",
            "brand": "casino-a",
            "business_date": TODAY,
            "occurred_at": dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC),
        }
        values.update(fields)
        with db.session_scope(self.engines[env]) as session:
            session.add(Transaction(**values))
        return str(values["transaction_id"])

    def matched(self, transaction_id: str, *, env: str = "live", amount_minor: int = 10_000) -> str:
        """Store a matched outcome for the transaction and one settlement line of Adyen batch 812."""
        match_id = f"m-{uuid.uuid4().hex[:8]}"
        skey = f"settlement:adyen:batch_812.csv:{uuid.uuid4().int % 10_000 + 1}"
        row = int(skey.rsplit(":", 1)[1])
        with db.session_scope(self.engines[env]) as session:
            session.add(
                MatchGroup(match_id=match_id, rule_id="exact_ref", business_date=TODAY, as_of_date=TODAY)
            )
            session.flush()
            session.add_all(
                [
                    Outcome(
                        record_key=f"ledger:{transaction_id}",
                        record="ledger",
                        transaction_id=transaction_id,
                        psp="adyen",
                        status="matched",
                        match_id=match_id,
                        rule_id="exact_ref",
                        business_date=TODAY,
                        as_of_date=TODAY,
                    ),
                    Outcome(
                        record_key=skey,
                        record="settlement",
                        transaction_id=transaction_id,
                        psp="adyen",
                        source_file="batch_812.csv",
                        source_row=row,
                        status="matched",
                        match_id=match_id,
                        rule_id="exact_ref",
                        business_date=TODAY,
                        as_of_date=TODAY,
                    ),
                    SettlementLine(
                        record_key=skey,
                        psp="adyen",
                        source_file="batch_812.csv",
                        source_row=row,
                        file_sha256="0" * 64,
                        batch_id="812",
                        record_type="Settled",
                        line_kind="capture",
                        moves_player_money=True,
                        booking_date=TODAY,
                        amount_minor=amount_minor,
                        currency="EUR",
                    ),
                ]
            )
        return match_id

    def get(self, path: str, key: str | None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return self.client.get(path, headers=headers, **kw)

    def post(self, path: str, key: str | None, idem: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if idem is not None:
            headers["Idempotency-Key"] = idem
        return self.client.post(path, headers=headers, **kw)


def make_settings(tmp_path: Path, live: str, sandbox: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": live,
        "sandbox_database_url": sandbox,
        "sandbox_data_dir": tmp_path / "sandbox",
        "redis_url": None,
        "api_rate_per_s": 1000.0,
        "api_burst": 1000,
        "api_key_cache_s": 0.0,
    }
    values.update(overrides)
    return Settings(**values)


def build_api(settings: Settings) -> Iterator[Api]:
    app = create_app(settings)
    engines = {"live": db.make_engine(settings.db_url), "sandbox": db.make_engine(settings.sandbox_db_url)}
    for engine in engines.values():
        db.migrate(engine)
    with TestClient(app) as client:
        yield Api(settings, app, client, engines)
    runtime = getattr(app.state, "runtime", None)
    if runtime is not None:
        runtime.close()
    for engine in engines.values():
        engine.dispose()


@pytest.fixture
def api(store_urls: tuple[str, str], tmp_path: Path) -> Iterator[Api]:
    yield from build_api(make_settings(tmp_path, *store_urls))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def uvicorn_server(settings: Settings, *, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """``uvicorn partner_api.main:app`` in a subprocess on 127.0.0.1 with these settings; yields its URL."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    env = {
        **os.environ,
        "RECON_DATA_DIR": str(settings.data_dir),
        "RECON_DATABASE_URL": settings.db_url,
        "RECON_SANDBOX_DATABASE_URL": settings.sandbox_db_url,
        "RECON_SANDBOX_DATA_DIR": str(settings.sandbox_data_path),
        "RECON_API_RATE_PER_S": str(settings.api_rate_per_s),
        "RECON_API_BURST": str(settings.api_burst),
        "RECON_LOG_LEVEL": "WARNING",
        **({"RECON_REDIS_URL": settings.redis_url} if settings.redis_url else {}),
        **(extra_env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "partner_api.main:app", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                if httpx.get(f"{url}/v1/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not become ready within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
