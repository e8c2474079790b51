"""200 concurrent retries of one dispute with one Idempotency-Key, against uvicorn on 127.0.0.1 over
PostgreSQL (50 over SQLite): exactly one state change, every other answer a replay or a 409."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import func, select

from reconciliation_pipeline.store import audit, db
from reconciliation_pipeline.store.models import AuditEvent, Dispute
from tests.integration.api_fixtures import Api, uvicorn_server


async def _storm(url: str, key: str, payload: dict[str, object], n: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "retry-storm-1"}
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        return list(
            await asyncio.gather(
                *(client.post("/v1/disputes", json=payload, headers=headers) for _ in range(n))
            )
        )


def test_concurrent_retries_make_exactly_one_state_change(
    api: Api, store_urls: tuple[str, str], tmp_path: Path
) -> None:
    n = 200 if store_urls[0].startswith("postgresql") else 50
    key = api.partner()
    tx = api.txn()
    payload = {"transaction_id": tx, "reason": "amount_mismatch", "amount_minor": 700}
    with uvicorn_server(api.settings) as url:
        responses = asyncio.run(_storm(url, key, payload, n))
        after = httpx.post(
            f"{url}/v1/disputes",
            json=payload,
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "retry-storm-1"},
        )
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 409}, statuses
    created = [r for r in responses if r.status_code == 201]
    originals = [r for r in created if "idempotent-replayed" not in r.headers]
    assert len(originals) == 1, statuses
    ids = {r.json()["dispute_id"] for r in created}
    assert len(ids) == 1
    assert after.status_code == 201 and after.headers["idempotent-replayed"] == "true"
    assert after.json()["dispute_id"] in ids
    for r in responses:
        if r.status_code == 409:
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.headers["retry-after"] == "1"
    with db.session_scope(api.engines["live"]) as session:
        assert session.scalar(select(func.count()).select_from(Dispute)) == 1
        raised = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "dispute.raised")
        )
        assert raised == 1
        replayed = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "idempotency.replayed")
        )
        assert replayed == len(created) - 1 + 1  # every replay in the storm, and the one after it
        assert audit.verify_chain(session).ok
