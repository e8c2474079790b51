"""Partner API over real stores (SQLite and PostgreSQL): auth, ownership, environments, idempotency,
problem details, evidence, pagination, uploads through the ingestion, disputes and the audit trail."""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from partner_api import idempotency
from reconciliation_pipeline.store import audit, db
from reconciliation_pipeline.store.models import AuditEvent, Dispute, IdempotencyKey, IngestedFile
from reconciliation_pipeline.telemetry import JsonLogFormatter, current
from tests.examples import ADYEN_EXAMPLE
from tests.integration.api_fixtures import Api, build_api, make_settings

PROBLEM = "application/problem+json"


def _is_problem(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith(PROBLEM)  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status and body["title"] and body["type"]
    return body  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- auth


def test_missing_malformed_unknown_and_revoked_keys_are_401_problems(api: Api) -> None:
    tx = api.txn()
    _is_problem(api.get(f"/v1/transactions/{tx}", None), 401)
    _is_problem(api.get(f"/v1/transactions/{tx}", "not-a-key"), 401)
    key = api.partner()
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    body = _is_problem(api.get(f"/v1/transactions/{tx}", forged), 401)
    assert "unknown or revoked" in str(body["detail"])
    assert api.get(f"/v1/transactions/{tx}", key).status_code == 200
    key_id = key.split("_")[2]
    from partner_api.service import revoke_key

    with db.session_scope(api.engines["live"]) as session:
        revoke_key(session, key_id=key_id)
    resp = api.get(f"/v1/transactions/{tx}", key)
    _is_problem(resp, 401)
    assert resp.headers["www-authenticate"].startswith("Bearer")


def test_a_revoked_key_stops_working_when_its_cache_entry_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the key cache on (``RECON_API_KEY_CACHE_S``, 5 s by default), a revoked key is refused at
    the latest that long after it was last looked up; an unknown key is never cached."""
    from partner_api import auth
    from partner_api.service import revoke_key

    now = [1000.0]
    monkeypatch.setattr(auth, "time", SimpleNamespace(monotonic=lambda: now[0]))  # auth's clock only
    live, sandbox = f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'sandbox.db'}"
    gen = build_api(make_settings(tmp_path, live, sandbox, api_key_cache_s=5.0))
    api = next(gen)
    try:
        tx = api.txn()
        key = api.partner()
        assert api.get(f"/v1/transactions/{tx}", key).status_code == 200  # looked up at t=1000, cached
        with db.session_scope(api.engines["live"]) as session:
            revoke_key(session, key_id=key.split("_")[2])
        now[0] = 1004.9
        assert api.get(f"/v1/transactions/{tx}", key).status_code == 200  # within the bound: cached
        now[0] = 1005.1
        _is_problem(api.get(f"/v1/transactions/{tx}", key), 401)
        now[0] = 1005.2
        _is_problem(api.get(f"/v1/transactions/{tx}", key), 401)  # a refused key is not cached
    finally:
        with pytest.raises(StopIteration):
            next(gen)


def test_keys_are_stored_hashed_only(api: Api) -> None:
    key = api.partner()
    from reconciliation_pipeline.store.models import ApiKey

    with db.session_scope(api.engines["live"]) as session:
        stored = session.get(ApiKey, key.split("_")[2])
        assert stored is not None
        assert key.split("_", 3)[3] not in stored.secret_sha256
        assert stored.secret_sha256 == __import__("hashlib").sha256(key.encode()).hexdigest()


def test_scopes_are_enforced(api: Api) -> None:
    reader = api.partner(scopes="read")
    tx = api.txn()
    body = _is_problem(
        api.post("/v1/disputes", reader, idem="k1", json={"transaction_id": tx, "reason": "other"}), 403
    )
    assert "disputes" in str(body["detail"])
    _is_problem(api.get("/v1/ops/exceptions", reader), 403)
    # the status read checks its scope where it reaches the store (after auth and the rate limit)
    body = _is_problem(api.get(f"/v1/transactions/{tx}", api.partner(scopes="disputes")), 403)
    assert "read" in str(body["detail"])
    upload = api.post("/v1/settlement-files", reader, idem="k2", files={"file": ("a.csv", b"x")})
    _is_problem(upload, 403)


# --------------------------------------------------------------------------- ownership and environments


def test_partner_a_gets_404_for_partner_b_transaction(api: Api) -> None:
    key_a = api.partner(psp="adyen")
    key_b = api.partner(psp="stripe")
    tx_b = api.txn(psp="stripe", psp_reference="pi_B1")
    tx_a = api.txn(psp="adyen", psp_reference="REF_A1")
    assert api.get(f"/v1/transactions/{tx_b}", key_b).status_code == 200
    for path in (f"/v1/transactions/{tx_b}", "/v1/transactions/by-psp-reference/pi_B1"):
        body = _is_problem(api.get(path, key_a), 404)
        assert "visible" in str(body["detail"])
    # the same answer as for an id that does not exist at all
    unknown = _is_problem(api.get("/v1/transactions/tx-does-not-exist", key_a), 404)
    assert unknown["type"] == _is_problem(api.get(f"/v1/transactions/{tx_b}", key_a), 404)["type"]
    listed = api.get("/v1/transactions", key_a).json()["data"]
    assert [r["transaction_id"] for r in listed] == [tx_a]
    dispute = api.post("/v1/disputes", key_a, idem="d1", json={"transaction_id": tx_b, "reason": "other"})
    _is_problem(dispute, 404)
    with db.session_scope(api.engines["live"]) as session:
        assert session.scalar(select(func.count()).select_from(Dispute)) == 0


def test_brand_partner_sees_its_brand_across_psps(api: Api) -> None:
    key = api.partner(psp=None, brand="casino-b")
    mine = {api.txn(psp="adyen", brand="casino-b"), api.txn(psp="stripe", brand="casino-b")}
    other = api.txn(psp="adyen", brand="casino-a")
    listed = {r["transaction_id"] for r in api.get("/v1/transactions", key).json()["data"]}
    assert listed == mine
    _is_problem(api.get(f"/v1/transactions/{other}", key), 404)


def test_sandbox_keys_never_see_live_data(api: Api) -> None:
    live_key = api.partner(name="acme", env="live")
    sandbox_key = api.partner(name="acme", env="sandbox")
    assert sandbox_key.startswith("rk_sandbox_") and live_key.startswith("rk_live_")
    shared_id = "tx-shared-1"
    api.txn("live", transaction_id=shared_id, amount_minor=111)
    api.txn("sandbox", transaction_id=shared_id, amount_minor=222)
    live_only = api.txn("live")
    assert api.get(f"/v1/transactions/{shared_id}", live_key).json()["amount_minor"] == 111
    assert api.get(f"/v1/transactions/{shared_id}", sandbox_key).json()["amount_minor"] == 222
    _is_problem(api.get(f"/v1/transactions/{live_only}", sandbox_key), 404)
    assert {r["transaction_id"] for r in api.get("/v1/transactions", sandbox_key).json()["data"]} == {
        shared_id
    }
    # a sandbox dispute is written to the sandbox store, never to the live one
    resp = api.post(
        "/v1/disputes", sandbox_key, idem="s1", json={"transaction_id": shared_id, "reason": "other"}
    )
    assert resp.status_code == 201, resp.text
    with db.session_scope(api.engines["live"]) as session:
        assert session.scalar(select(func.count()).select_from(Dispute)) == 0
    with db.session_scope(api.engines["sandbox"]) as session:
        assert session.scalar(select(Dispute.amount_minor)) == 222
    # a sandbox key cannot be turned into a live one by editing its prefix
    _is_problem(api.get(f"/v1/transactions/{shared_id}", sandbox_key.replace("rk_sandbox_", "rk_live_")), 401)


# --------------------------------------------------------------------------- status, evidence, lists


def test_status_carries_the_match_evidence(api: Api) -> None:
    key = api.partner()
    tx = api.txn(psp_reference="Q1W2E3R4T5Y6U7I8", trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    match_id = api.matched(tx)
    body = api.get(f"/v1/transactions/{tx}", key).json()
    assert body["status"] == "matched" and body["match_id"] == match_id and body["rule_id"] == "exact_ref"
    assert body["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    [evidence] = body["settlements"]
    assert evidence["source_file"] == "batch_812.csv" and evidence["batch_id"] == "812"
    assert evidence["amount_minor"] == 10_000 and evidence["currency"] == "EUR"
    assert api.get("/v1/transactions/by-psp-reference/Q1W2E3R4T5Y6U7I8", key).json() == body
    # the status is written by orjson without the response model: it must be the model's own JSON
    from partner_api.schemas import TransactionStatus

    assert TransactionStatus.model_validate(body).model_dump(mode="json") == body
    batch = api.get("/v1/settlement-batches/812", key).json()
    assert batch["by_status"] == {"matched": 1} and batch["reconciled"] is True
    assert batch["totals"] == [{"currency": "EUR", "lines": 1, "amount_minor": 10_000}]
    _is_problem(api.get("/v1/settlement-batches/812", api.partner(psp="stripe")), 404)


def test_ambiguous_psp_reference_is_a_409(api: Api) -> None:
    key = api.partner()
    api.txn(psp_reference="DUP")
    api.txn(psp_reference="DUP")
    body = _is_problem(api.get("/v1/transactions/by-psp-reference/DUP", key), 409)
    assert len(body["transaction_ids"]) == 2  # type: ignore[arg-type]


def test_list_cursor_pagination_visits_each_transaction_once(api: Api) -> None:
    key = api.partner()
    ids = sorted(api.txn(transaction_id=f"tx-{i:03d}") for i in range(7))
    api.txn(transaction_id="tx-gbp", currency="GBP")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 3, "currency": "EUR"}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/v1/transactions", key, params=params).json()
        seen += [r["transaction_id"] for r in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 3
    _is_problem(api.get("/v1/transactions", key, params={"cursor": "!!not-ours"}), 400)
    bad = _is_problem(api.get("/v1/transactions", key, params={"limit": 0}), 422)
    assert bad["errors"]


# --------------------------------------------------------------------------- problem details


def test_every_error_is_problem_json(api: Api) -> None:
    key = api.partner()
    _is_problem(api.get("/v1/nothing-here", key), 404)
    _is_problem(api.client.delete("/v1/transactions"), 405)
    body = _is_problem(api.post("/v1/disputes", key, idem="x", json={"reason": "nope"}), 422)
    locations = [e["location"] for e in body["errors"]]  # type: ignore[attr-defined]
    assert ["body", "transaction_id"] in locations and ["body", "reason"] in locations
    resp = api.get("/v1/nothing-here", key)
    assert resp.json()["trace_id"] == resp.headers["x-trace-id"]


# --------------------------------------------------------------------------- idempotency


def test_state_changing_call_without_key_is_400(api: Api) -> None:
    key = api.partner()
    tx = api.txn()
    body = _is_problem(api.post("/v1/disputes", key, json={"transaction_id": tx, "reason": "other"}), 400)
    assert "Idempotency-Key" in str(body["detail"])
    _is_problem(
        api.post("/v1/disputes", key, idem="has space", json={"transaction_id": tx, "reason": "other"}), 400
    )


def test_same_key_replays_different_payload_is_422_and_keys_are_per_partner(api: Api) -> None:
    key_a = api.partner()
    key_b = api.partner()
    tx = api.txn()
    payload = {"transaction_id": tx, "reason": "amount_mismatch", "amount_minor": 500, "currency": "EUR"}
    first = api.post("/v1/disputes", key_a, idem="same", json=payload)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = api.post("/v1/disputes", key_a, idem="same", json=dict(reversed(list(payload.items()))))
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json() and again.headers["location"] == first.headers["location"]
    other = api.post("/v1/disputes", key_a, idem="same", json={**payload, "amount_minor": 501})
    assert "different request" in str(_is_problem(other, 422)["detail"])
    # partner B's "same" is another key: it runs
    b = api.post("/v1/disputes", key_b, idem="same", json=payload)
    assert b.status_code == 201 and "idempotent-replayed" not in b.headers
    partner_a = _partner_of(api, key_a)
    with db.session_scope(api.engines["live"]) as session:
        assert session.scalar(select(func.count()).select_from(Dispute)) == 2
        row = session.get(IdempotencyKey, (partner_a, "same"))
        assert row is not None and row.state == "completed"
        assert row.expires_at is not None and row.created_at is not None
        assert (row.expires_at - row.created_at).total_seconds() >= 24 * 3600


def _partner_of(api: Api, key: str) -> str:
    from reconciliation_pipeline.store.models import ApiKey

    with db.session_scope(api.engines["live"]) as session:
        stored = session.get(ApiKey, key.split("_")[2])
        assert stored is not None
        return stored.partner_id


def test_client_errors_are_stored_and_replayed(api: Api) -> None:
    key = api.partner()
    first = api.post("/v1/disputes", key, idem="k404", json={"transaction_id": "tx-nope", "reason": "other"})
    _is_problem(first, 404)
    api.txn(transaction_id="tx-nope")  # appears later: the same key still answers what it answered
    again = api.post("/v1/disputes", key, idem="k404", json={"transaction_id": "tx-nope", "reason": "other"})
    assert again.status_code == 404 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    fresh = api.post("/v1/disputes", key, idem="k-new", json={"transaction_id": "tx-nope", "reason": "other"})
    assert fresh.status_code == 201


def test_same_key_while_in_flight_is_409_then_replays(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    key = api.partner()
    tx = api.txn()
    from partner_api.routers import disputes

    entered, release = threading.Event(), threading.Event()
    original = disputes.transaction_visible

    def slow(*args: object, **kwargs: object) -> object:
        # the first request holds its reservation and has not started its transaction yet (on SQLite a
        # started write transaction would make the second request wait for it, then replay)
        entered.set()
        assert release.wait(30)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(disputes, "transaction_visible", slow)
    payload = {"transaction_id": tx, "reason": "other"}
    results: list[object] = []
    worker = threading.Thread(
        target=lambda: results.append(api.post("/v1/disputes", key, idem="busy", json=payload))
    )
    worker.start()
    assert entered.wait(30)
    busy = api.post("/v1/disputes", key, idem="busy", json=payload)
    body = _is_problem(busy, 409)
    assert "still being processed" in str(body["detail"]) and busy.headers["retry-after"] == "1"
    release.set()
    worker.join(30)
    assert results[0].status_code == 201  # type: ignore[attr-defined]
    replay = api.post("/v1/disputes", key, idem="busy", json=payload)
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    with db.session_scope(api.engines["live"]) as session:
        assert session.scalar(select(func.count()).select_from(Dispute)) == 1


def test_a_crashed_reservation_is_taken_over_and_cannot_complete(api: Api) -> None:
    key = api.partner()
    tx = api.txn()
    payload = {"transaction_id": tx, "reason": "other"}
    from fastapi.responses import Response
    from sqlalchemy import update

    from partner_api.auth import load_key
    from partner_api.deps import build_runtime
    from partner_api.schemas import DisputeIn

    runtime = build_runtime(api.settings)
    try:
        with db.session_scope(api.engines["live"]) as session:
            found = load_key(session, key.split("_")[2])
        assert found is not None
        principal = found[1]
        fp = idempotency.fingerprint("POST", "/v1/disputes", DisputeIn(**payload).model_dump(mode="json"))
        crashed = idempotency._reserve(
            runtime, runtime.engine("live"), principal, key="crash", method="POST", path="/v1/disputes", fp=fp
        )
        assert isinstance(crashed, idempotency.Reservation)
        _is_problem(api.post("/v1/disputes", key, idem="crash", json=payload), 409)
        # the holder crashed: its lock time passes
        with db.session_scope(api.engines["live"]) as session:
            session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.idempotency_key == "crash")
                .values(locked_until=IdempotencyKey.created_at)
            )
        taken = api.post("/v1/disputes", key, idem="crash", json=payload)
        assert taken.status_code == 201 and "idempotent-replayed" not in taken.headers
        with pytest.raises(idempotency.LostReservationError), db.session_scope(runtime.engine("live")) as s:
            idempotency.complete(s, crashed, Response(b"{}", 201))
        assert api.post("/v1/disputes", key, idem="crash", json=payload).json() == taken.json()
    finally:
        runtime.close()


# --------------------------------------------------------------------------- audit, tracing, logs, metrics


def test_dispute_and_replay_are_audited_with_the_request_trace_id(api: Api) -> None:
    key = api.partner()
    tx = api.txn()
    payload = {"transaction_id": tx, "reason": "duplicate"}
    first = api.post("/v1/disputes", key, idem="audit-1", json=payload)
    replay = api.post("/v1/disputes", key, idem="audit-1", json=payload)
    with db.session_scope(api.engines["live"]) as session:
        events = {
            e.action: e
            for e in session.scalars(
                select(AuditEvent).where(AuditEvent.action.in_(["dispute.raised", "idempotency.replayed"]))
            )
        }
        assert events["dispute.raised"].trace_id == first.headers["x-trace-id"]
        assert events["dispute.raised"].entity_id == first.json()["dispute_id"]
        assert events["dispute.raised"].inputs["amount_minor"] == 10_000
        assert events["idempotency.replayed"].trace_id == replay.headers["x-trace-id"]
        assert events["idempotency.replayed"].actor.startswith("partner:ptn_")
        assert audit.verify_chain(session).ok
    spans = current().memory
    assert spans is not None, "the default exporter keeps spans in memory"
    trace_spans = [
        s
        for s in spans.get_finished_spans()
        if format(s.context.trace_id, "032x") == first.headers["x-trace-id"]
    ]
    names = {s.name for s in trace_spans}
    assert any(n.startswith("POST /v1/disputes") for n in names), names
    sql = [
        s
        for s in trace_spans
        if s.attributes and ("db.statement" in s.attributes or "db.query.text" in s.attributes)
    ]
    assert sql, names


def test_an_unsampled_request_keeps_its_trace_id_without_sql_instrumentation(api: Api) -> None:
    """A request whose trace is not sampled (here the caller's ``traceparent`` says so) still answers
    with its trace id; its SQL runs with OpenTelemetry's instrumentation suppressed (no span work for
    spans the parent-based sampler would drop), while a sampled request's SQL is instrumented."""
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled
    from sqlalchemy import event

    key = api.partner()
    tx = api.txn()
    assert api.get(f"/v1/transactions/{tx}", key).status_code == 200  # the runtime is built
    seen: list[bool] = []
    engine = api.app.state.runtime.engine("live")

    def _record(*_args: object) -> None:
        seen.append(is_instrumentation_enabled())

    event.listen(engine, "before_cursor_execute", _record)
    try:
        sampled = api.get(f"/v1/transactions/{tx}", key)
        assert sampled.status_code == 200 and seen and all(seen)
        seen.clear()
        trace_id = uuid.uuid4().hex
        unsampled = api.client.get(
            f"/v1/transactions/{tx}",
            headers={"Authorization": f"Bearer {key}", "traceparent": f"00-{trace_id}-{'1' * 16}-00"},
        )
    finally:
        event.remove(engine, "before_cursor_execute", _record)
    assert unsampled.status_code == 200 and unsampled.json() == sampled.json()
    assert unsampled.headers["x-trace-id"] == trace_id
    assert seen and not any(seen)
    spans = current().memory
    assert spans is not None
    assert not [s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]


def test_access_logs_are_json_with_the_trace_id(api: Api) -> None:
    key = api.partner()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("partner_api.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        resp = api.get("/v1/transactions/tx-none", key)
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [line for line in lines if line.get("request_trace_id") == resp.headers["x-trace-id"]]
    assert (
        mine
        and mine[0]["http_status"] == 404
        and mine[0]["http_route"] == "/v1/transactions/{transaction_id}"
    )
    assert mine[0]["trace_id"] == resp.headers["x-trace-id"]


def test_metrics_and_health(api: Api) -> None:
    key = api.partner()
    api.get("/v1/transactions/whatever", key)
    text = api.client.get("/metrics").text
    assert (
        'recon_api_requests_total{method="GET",route="/v1/transactions/{transaction_id}",status="404"}'
        in text
    )
    assert api.client.get("/v1/health").json() == {"status": "ok"}
    ready = api.client.get("/v1/ready").json()
    assert ready["status"] == "ready" and ready["checks"]["store_live"] == "ok"


# --------------------------------------------------------------------------- uploads and operators


def test_upload_goes_through_the_ingestion(api: Api) -> None:
    key = api.partner(psp="adyen", scopes="read,upload")
    data = ADYEN_EXAMPLE.encode()
    files = {"file": ("../../etc/settlement_detail_report_batch_812.csv", data, "text/csv")}
    first = api.post("/v1/settlement-files", key, idem="up-1", files=files)
    assert first.status_code == 201, first.text
    body = first.json()
    assert (
        body["status"] == "accepted"
        and body["rows"] == 5
        and body["name"] == "settlement_detail_report_batch_812.csv"
    )
    landed = (
        api.settings.data_path
        / "landing"
        / "settlements"
        / "adyen"
        / "settlement_detail_report_batch_812.csv"
    )
    assert landed.read_bytes() == data  # where settlement_file_sensor looks
    replay = api.post("/v1/settlement-files", key, idem="up-1", files=files)
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    again = api.post("/v1/settlement-files", key, idem="up-2", files=files)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    status = api.get(f"/v1/settlement-files/{body['sha256']}", key).json()
    assert status["status"] == "accepted"
    with db.session_scope(api.engines["live"]) as session:
        assert session.scalar(select(func.count()).select_from(IngestedFile)) == 1
        actions = session.scalars(select(AuditEvent.action)).all()
        assert actions.count("settlement_file.uploaded") == 2 and "file.accepted" in actions
    bad = ADYEN_EXAMPLE.replace(",EUR,,100.00,", ",EUX,,100.00,").encode()
    refused = api.post("/v1/settlement-files", key, idem="up-3", files={"file": ("bad.csv", bad)})
    problem = _is_problem(refused, 422)
    assert problem["file_problem"]["row"] == 1  # type: ignore[index]
    assert (api.settings.data_path / "quarantine" / "adyen" / "bad.csv").exists()
    wrong = api.post(
        "/v1/settlement-files", key, idem="up-4", files={"file": ("a.csv", data)}, data={"psp": "stripe"}
    )
    _is_problem(wrong, 403)


def test_an_upload_is_registered_with_its_idempotency_record_or_not_at_all(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's registration and the idempotency record are one transaction: when storing the record
    fails, the registration is rolled back with it, and the retry with the same key registers the file
    once and answers as a first request."""
    key = api.partner(psp="adyen", scopes="read,upload")
    files = {"file": ("settlement_detail_report_batch_812.csv", ADYEN_EXAMPLE.encode(), "text/csv")}
    real = idempotency.complete

    def failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the store went away while the idempotency record was written")

    monkeypatch.setattr(idempotency, "complete", failing)
    with pytest.raises(RuntimeError, match="went away"):
        api.post("/v1/settlement-files", key, idem="up-tx", files=files)
    with db.session_scope(api.engines["live"]) as session:
        assert session.scalar(select(func.count()).select_from(IngestedFile)) == 0
        actions = session.scalars(select(AuditEvent.action)).all()
        assert "file.accepted" not in actions and "settlement_file.uploaded" not in actions
    monkeypatch.setattr(idempotency, "complete", real)
    retry = api.post("/v1/settlement-files", key, idem="up-tx", files=files)
    assert retry.status_code == 201 and retry.json()["status"] == "accepted", retry.text
    assert "idempotent-replayed" not in retry.headers
    with db.session_scope(api.engines["live"]) as session:
        assert session.scalar(select(func.count()).select_from(IngestedFile)) == 1
        actions = session.scalars(select(AuditEvent.action)).all()
        assert actions.count("file.accepted") == 1 and actions.count("settlement_file.uploaded") == 1


def test_operator_lists_and_resolves_exceptions(api: Api) -> None:
    import datetime as dt

    import polars as pl

    from reconciliation_pipeline.store import service as store_service

    tx = api.txn()
    with db.session_scope(api.engines["live"]) as session:
        store_service.apply_outcomes(
            session,
            pl.DataFrame(
                {
                    "record": ["ledger"],
                    "transaction_id": [tx],
                    "psp": ["adyen"],
                    "status": ["exception"],
                    "exception_category": ["missing_in_psp"],
                    "business_date": [dt.date(2026, 3, 2)],
                }
            ),
            as_of=dt.date(2026, 3, 5),
            chain={"run_id": "r1"},
            actor="test",
        )
    operator = api.partner(name=f"ops-{uuid.uuid4().hex[:6]}", scopes="operator")
    queue = api.get("/v1/ops/exceptions", operator).json()["data"]
    [item] = [q for q in queue if q["transaction_id"] == tx]
    assert item["category"] == "missing_in_psp" and item["state"] == "open"
    reader_status = api.get(f"/v1/transactions/{tx}", api.partner()).json()
    assert reader_status["open_exception"]["exception_id"] == item["exception_id"]
    path = f"/v1/ops/exceptions/{item['exception_id']}/resolve"
    # reason codes are the queue's own (recon exceptions codes); `other` must say why
    _is_problem(api.post(path, operator, idem="r0a", json={"resolution_code": "because"}), 422)
    _is_problem(api.post(path, operator, idem="r0b", json={"resolution_code": "other"}), 422)
    body = {"resolution_code": "written_off", "note": "below threshold"}
    done = api.post(path, operator, idem="r1", json=body)
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "resolved" and done.json()["resolved_by"].startswith("operator:")
    assert api.post(path, operator, idem="r1", json=body).headers["idempotent-replayed"] == "true"
    _is_problem(api.post(path, operator, idem="r2", json=body), 409)
    _is_problem(api.post("/v1/ops/exceptions/999999/resolve", operator, idem="r3", json=body), 404)
