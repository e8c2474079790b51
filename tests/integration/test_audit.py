"""The audit trail a regulator can replay: immutability enforced by the database, tampering and truncation
detected and named, concurrent writers leaving one chain, the regulator's extract, and the exception queue.

SQLite and the real PostgreSQL (127.0.0.1:5432); the CLI is run as a real ``recon`` process.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from reconciliation_pipeline.frames import OUTCOME_SCHEMA, conform
from reconciliation_pipeline.store import (
    AuditEvent,
    AuditEventIn,
    ExceptionItem,
    append_events,
    apply_outcomes,
    make_engine,
    migrate,
    session_scope,
    verify_chain,
)
from reconciliation_pipeline.store.anchors import anchor_head, anchors_path, check_anchors, read_anchors
from reconciliation_pipeline.store.audit import canonical_json
from reconciliation_pipeline.store.audit_export import export_audit, verify_extract
from reconciliation_pipeline.store.exceptions import list_exceptions
from tests.integration.audit_helpers import as_superuser

RECON = str(Path(sys.executable).with_name("recon"))
UTC = dt.UTC
D1 = dt.date(2024, 3, 1)
CHAIN = {
    "run_id": "run-1",
    "asset": "outcomes",
    "partition": "2024-03-01",
    "code_version": "t",
    "rule_ids": [],
}


def _seed(engine: Engine, n: int = 6, prefix: str = "thing") -> list[AuditEvent]:
    with session_scope(engine) as s:
        return append_events(
            s,
            [
                AuditEventIn(
                    actor="test",
                    action="test.event",
                    entity_type="thing",
                    entity_id=f"{prefix}-{i}",
                    inputs={"amount_minor": 100 * i, "note": 'déjà "q" \\ \n\t€'},
                    chain=CHAIN,
                    outcome={"ok": True, "n": i},
                    trace_id=f"{i:032x}",
                )
                for i in range(n)
            ],
        )


def recon(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECON, *args], env=env, capture_output=True, text=True, check=False, timeout=300)


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> dict[str, str]:
    environment = {**os.environ, "RECON_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "250"}
    environment["RECON_DATABASE_URL"] = db_url
    environment["DAGSTER_HOME"] = str(tmp_path / "home")
    return environment


# --------------------------------------------------------------------------- the database refuses


def test_the_database_refuses_update_delete_and_truncate_for_everyone(engine: Engine) -> None:
    events = _seed(engine, 3)
    statements = [
        "UPDATE audit_events SET actor = 'mallory' WHERE seq = :s",
        "DELETE FROM audit_events WHERE seq = :s",
        "DELETE FROM audit_events",
    ]
    if engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_events")
    for sql in statements:
        with pytest.raises(DBAPIError, match="append-only") as caught, engine.begin() as conn:
            conn.execute(text(sql), {"s": events[1].seq})
        assert "refused" in str(caught.value)
    result = verify_chain(engine)
    assert result.ok and result.count == 3
    with session_scope(engine) as s:
        assert s.scalars(select(AuditEvent.actor)).all() == ["test"] * 3


@pytest.mark.postgres
def test_the_application_role_may_only_insert_and_select_the_audit_table(pg_schema_url: str) -> None:
    eng = make_engine(pg_schema_url)
    migrate(eng)
    try:
        events = _seed(eng, 3)
        with eng.connect() as conn:
            member = conn.execute(
                text("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'recon_app'")
            ).scalar_one()
            assert member is False  # a group role: production logs in as a member of it
        for sql in (
            "UPDATE audit_events SET actor = 'mallory' WHERE seq = :s",
            "DELETE FROM audit_events WHERE seq = :s",
            "TRUNCATE audit_events",
            "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete",
        ):
            with pytest.raises(DBAPIError) as caught, eng.begin() as conn:
                conn.exec_driver_sql("SET LOCAL ROLE recon_app")
                conn.execute(text(sql), {"s": events[0].seq})
            assert "permission denied" in str(caught.value) or "must be owner" in str(caught.value)
        # what the application does do, it may: append under the chain lock, read, write outcomes
        with session_scope(eng) as s:
            s.connection().exec_driver_sql("SET LOCAL ROLE recon_app")
            append_events(s, [AuditEventIn(actor="app", action="a", entity_type="t", entity_id="x")])
            apply_outcomes(
                s,
                conform(
                    pl.DataFrame(
                        [{"record": "ledger", "transaction_id": "tx-1", "psp": "adyen", "status": "pending"}]
                    ),
                    OUTCOME_SCHEMA,
                ),
                as_of=D1,
                chain=CHAIN,
                actor="app",
            )
            s.connection().exec_driver_sql("UPDATE outcomes SET run_id = 'r2'")
        result = verify_chain(eng)
        assert result.ok and result.count == 5
        # production: a login role that is a member of recon_app (docs/audit.md), migrations already run
        login = f"recon_login_{uuid.uuid4().hex[:8]}"
        with eng.begin() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {login} LOGIN IN ROLE recon_app")
        as_app = make_engine(make_url(pg_schema_url).set(username=login))
        try:
            migrate(as_app)  # current schema: a no-op the application role may run
            with session_scope(as_app) as s:
                append_events(s, [AuditEventIn(actor="pipeline", action="a", entity_type="t", entity_id="y")])
            with pytest.raises(DBAPIError, match="permission denied"), as_app.begin() as conn:
                conn.exec_driver_sql("DELETE FROM audit_events")
            assert verify_chain(as_app).ok
        finally:
            as_app.dispose()
            with eng.begin() as conn:
                conn.exec_driver_sql(f"DROP ROLE {login}")
    finally:
        eng.dispose()


# --------------------------------------------------------------------------- verify names the event


@pytest.mark.parametrize("method", ["auto", "python"])
def test_a_row_changed_as_superuser_makes_verify_fail_and_name_it(
    engine: Engine, env: dict[str, str], method: str
) -> None:
    events = _seed(engine, 8)
    ok = recon(env, "audit", "verify", "--method", method)
    assert ok.returncode == 0, ok.stderr
    assert "Audit chain intact" in ok.stdout and "8 events" in ok.stdout
    target = events[5]
    with as_superuser(engine) as conn:
        conn.execute(text("UPDATE audit_events SET entity_id = 'thing-99' WHERE seq = :s"), {"s": target.seq})
    done = recon(env, "audit", "verify", "--method", method)
    assert done.returncode == 1
    assert f"Audit chain broken at event seq {target.seq}" in done.stderr
    assert "altered" in done.stderr
    result = verify_chain(engine, method=method)
    assert not result.ok and result.first_bad_seq == target.seq and result.count == 5
    assert result.head_hash == events[4].hash


def test_a_json_value_changed_to_an_equal_looking_text_is_still_caught(engine: Engine) -> None:
    events = _seed(engine, 4)
    # same meaning, different text: the stored text is what was hashed, whitespace included
    stored = canonical_json(events[2].outcome).replace(",", ", ")
    cast = "CAST(:o AS json)" if engine.dialect.name == "postgresql" else ":o"
    with as_superuser(engine) as conn:
        conn.execute(
            text(f"UPDATE audit_events SET outcome = {cast} WHERE seq = :s"),
            {"o": stored, "s": events[2].seq},
        )
    assert verify_chain(engine).ok  # re-canonicalised, the content is unchanged: no false alarm
    with as_superuser(engine) as conn:
        conn.execute(
            text(f"UPDATE audit_events SET outcome = {cast} WHERE seq = :s"),
            {"o": '{"ok": false, "n": 2}', "s": events[2].seq},
        )
    result = verify_chain(engine)
    assert not result.ok and result.first_bad_seq == events[2].seq


def test_a_removed_event_breaks_the_link_of_the_next(engine: Engine) -> None:
    events = _seed(engine, 5)
    with as_superuser(engine) as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": events[1].seq})
    for method in ("auto", "python"):
        result = verify_chain(engine, method=method)
        assert not result.ok and result.first_bad_seq == events[2].seq
        assert "does not link" in (result.reason or "")


# --------------------------------------------------------------------------- anchors


def test_a_truncated_tail_is_caught_by_the_anchors(engine: Engine, env: dict[str, str]) -> None:
    anchors = anchors_path(Path(env["RECON_DATA_DIR"]))
    first = _seed(engine, 4, "a")
    a1 = anchor_head(engine, anchors, run_id="run-a")
    later = _seed(engine, 3, "b")
    a2 = anchor_head(engine, anchors, run_id="run-b")
    assert a1 is not None and a2 is not None
    assert (a1.seq, a1.hash) == (first[-1].seq, first[-1].hash)
    assert (a2.seq, a2.hash) == (later[-1].seq, later[-1].hash)
    assert [a.run_id for a in read_anchors(anchors)] == ["run-a", "run-b"]
    ok = recon(env, "audit", "verify")
    assert ok.returncode == 0 and "Anchors hold" in ok.stdout and "2 anchors" in ok.stdout
    with as_superuser(engine) as conn:  # cut the last two events off
        conn.execute(text("DELETE FROM audit_events WHERE seq >= :s"), {"s": later[1].seq})
    assert verify_chain(engine).ok  # the shorter chain is internally consistent ...
    check = check_anchors(engine, read_anchors(anchors))
    assert not check.ok and check.bad is not None and check.bad.seq == a2.seq  # ... the anchor is not
    assert "cut off the tail" in (check.reason or "")
    done = recon(env, "audit", "verify")
    assert done.returncode == 1
    assert f"truncated or rewritten at event seq {a2.seq}" in done.stderr
    assert "run-b" in done.stderr


def test_a_rewritten_chain_is_caught_by_the_anchors(engine: Engine, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    events = _seed(engine, 3)
    anchor_head(engine, anchors)
    # an administrator rewrites the whole chain consistently from the genesis (a perfect forgery) ...
    with as_superuser(engine) as conn:
        conn.execute(text("DELETE FROM audit_events"))
    _seed(engine, 3, "forged")
    assert verify_chain(engine).ok
    check = check_anchors(engine, read_anchors(anchors))  # ... and the anchor outside tells
    assert not check.ok and "rewritten" in (check.reason or "") and check.bad is not None
    assert check.bad.hash == events[-1].hash


# --------------------------------------------------------------------------- the regulator's extract


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_export_writes_an_extract_its_manifest_checks_alone(engine: Engine, tmp_path: Path, fmt: str) -> None:
    events = _seed(engine, 7)
    out = tmp_path / f"audit.{fmt}"
    done = export_audit(
        engine,
        out,
        fmt=fmt,
        date_from=dt.date.today() - dt.timedelta(days=1),
        date_to=dt.date.today() + dt.timedelta(days=1),
        anchors_file=tmp_path / "anchors.jsonl",
        exported_by="compliance@operator",
    )
    m = json.loads(done.manifest_path.read_text())
    assert m["count"] == 7 and m["format"] == fmt
    assert m["first"] == {"seq": events[0].seq, "hash": events[0].hash, "prev_hash": events[0].prev_hash}
    assert m["last"] == {"seq": events[-1].seq, "hash": events[-1].hash}
    import hashlib

    assert m["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert m["anchor"]["hash"] == events[-1].hash and m["chain_verified_at_export"]["ok"] is True
    assert read_anchors(tmp_path / "anchors.jsonl")[-1].source == "export"
    check = verify_extract(done.manifest_path)
    assert check.ok and check.count == 7, check.problems
    # the manifest's checksum catches any change of the file; recomputation names the event
    if fmt == "jsonl":
        lines = out.read_text().splitlines()
        lines[3] = lines[3].replace('"n":3', '"n":4')
        out.write_text("\n".join(lines) + "\n")
        bad = verify_extract(done.manifest_path)
        assert not bad.ok and any("SHA-256" in p for p in bad.problems)
        assert any(f"event seq {events[3].seq}" in p for p in bad.problems)


def test_audit_export_cli(engine: Engine, env: dict[str, str], tmp_path: Path) -> None:
    _seed(engine, 3)
    today = dt.date.today().isoformat()
    out = tmp_path / "x" / "extract.csv"
    done = recon(env, "audit", "export", "--from", today, "--to", today, "--format", "csv", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "Wrote 3 events" in done.stdout
    manifest = out.with_name("extract.csv.manifest.json")
    checked = recon(env, "audit", "verify-export", str(manifest))
    assert checked.returncode == 0 and "Extract intact" in checked.stdout
    backwards = recon(env, "audit", "export", "--from", today, "--to", "2000-01-01")
    assert backwards.returncode == 2 and "before" in backwards.stderr


def test_canonical_json_fast_path_is_byte_identical_to_json_dumps() -> None:
    values: list[Any] = [
        {"z": "".join(chr(i) for i in range(0x80)) + "\u2028é€😀", "a": [1, -(2**63), 2**64 - 1, True, None]},
        {"é": 1, "e": 2, "E": 3, "": {"b": [], "a": {}}},
        {"big": 2**70, "f": 2.5, "d": dt.date(2024, 3, 1)},  # not plain: the json path
    ]
    for value in values:
        plain = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        if "d" not in value:
            assert canonical_json(value) == plain
    assert canonical_json(values[2]) == '{"big":1180591620717411303424,"d":"2024-03-01","f":2.5}'


# --------------------------------------------------------------------------- 8 concurrent writers


def _writer(url: str, k: int, rounds: int) -> None:
    eng = make_engine(url)
    try:
        for r in range(rounds):
            with session_scope(eng) as s:
                frame = conform(
                    pl.DataFrame(
                        [
                            {
                                "record": "ledger",
                                "transaction_id": f"w{k}-r{r}-{i}",
                                "psp": "stripe",
                                "status": "pending",
                            }
                            for i in range(20)
                        ]
                    ),
                    OUTCOME_SCHEMA,
                )
                apply_outcomes(
                    s, frame, as_of=D1, chain={**CHAIN, "run_id": f"w{k}-r{r}"}, actor=f"writer-{k}"
                )
            with session_scope(eng) as s:
                append_events(
                    s,
                    [
                        AuditEventIn(
                            actor=f"api-{k}", action="api.call", entity_type="t", entity_id=f"{k}-{r}"
                        )
                    ],
                )
    finally:
        eng.dispose()


@pytest.mark.postgres
def test_eight_concurrent_writers_leave_one_chain_that_verifies(pg_schema_url: str) -> None:
    eng = make_engine(pg_schema_url)
    migrate(eng)
    writers, rounds = 8, 4
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(pg_schema_url, k, rounds)) for k in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    try:
        assert [p.exitcode for p in procs] == [0] * writers
        for method in ("server", "python"):
            result = verify_chain(eng, method=method)
            assert result.ok, result.reason
            assert result.count == writers * rounds * 21
        with session_scope(eng) as s:
            rows = s.execute(select(AuditEvent.seq, AuditEvent.chain).order_by(AuditEvent.seq)).all()
        # one line: seq strictly increasing without gaps, and each run's 20 events contiguous
        assert [r[0] for r in rows] == list(range(rows[0][0], rows[0][0] + len(rows)))
        runs = [r[1]["run_id"] for r in rows if r[1] and r[1].get("run_id")]
        blocks = [runs[i : i + 20] for i in range(0, len(runs), 20)]
        assert all(len(set(b)) == 1 for b in blocks) and len({b[0] for b in blocks}) == writers * rounds
    finally:
        eng.dispose()


# --------------------------------------------------------------------------- the exception queue


def _queue(engine: Engine) -> None:
    rows = [
        {"record": "ledger", "transaction_id": "tx-a", "psp": "adyen", "status": "exception",
         "exception_category": "missing_in_psp", "business_date": D1},
        {"record": "ledger", "transaction_id": "tx-b", "psp": "stripe", "status": "exception",
         "exception_category": "amount_mismatch", "business_date": D1},
        {"record": "settlement", "psp": "stripe", "source_file": "balance.csv", "source_row": 4,
         "status": "exception", "exception_category": "missing_in_ledger", "business_date": D1},
    ]  # fmt: skip
    evidence = pl.DataFrame({"record_key": ["ledger:tx-b"], "evidence": ['{"booked": 1000, "settled": 990}']})
    with session_scope(engine) as s:
        apply_outcomes(
            s,
            conform(pl.DataFrame(rows), OUTCOME_SCHEMA),
            as_of=D1,
            chain=CHAIN,
            actor="t",
            evidence=evidence,
        )
    later = [{"record": "ledger", "transaction_id": "tx-c", "psp": "adyen", "status": "exception",
              "exception_category": "missing_in_psp", "business_date": D1 + dt.timedelta(days=9)}]  # fmt: skip
    with session_scope(engine) as s:
        apply_outcomes(
            s,
            conform(pl.DataFrame(later), OUTCOME_SCHEMA),
            as_of=D1 + dt.timedelta(days=9),
            chain=CHAIN,
            actor="t",
        )


def test_exception_queue_filters_and_resolution_keeps_evidence(
    engine: Engine, env: dict[str, str], tmp_path: Path
) -> None:
    _queue(engine)
    with session_scope(engine) as s:
        today = D1 + dt.timedelta(days=10)
        assert {i.transaction_id for i in list_exceptions(s, psp="adyen", today=today)} == {"tx-a", "tx-c"}
        assert [i.category for i in list_exceptions(s, psp="stripe", category="amount_mismatch")] == [
            "amount_mismatch"
        ]
        assert [i.transaction_id for i in list_exceptions(s, min_age_days=5, psp="adyen", today=today)] == [
            "tx-a"
        ]
        assert [i.transaction_id for i in list_exceptions(s, max_age_days=5, today=today)] == ["tx-c"]
        ids = {i.transaction_id or i.record_key: i.id for i in list_exceptions(s)}
    listed = recon(env, "exceptions", "list", "--psp", "stripe")
    assert listed.returncode == 0, listed.stderr
    assert (
        "amount_mismatch" in listed.stdout
        and "balance.csv row 4" in listed.stdout
        and "tx-a" not in listed.stdout
    )

    shown = recon(env, "exceptions", "show", str(ids["tx-b"]))
    assert shown.returncode == 0 and '"settled": 990' in shown.stdout and "exception.opened" in shown.stdout

    bad_code = recon(env, "exceptions", "resolve", str(ids["tx-b"]), "--code", "because")
    assert bad_code.returncode == 2 and "written_off" in bad_code.stderr
    no_note = recon(env, "exceptions", "resolve", str(ids["tx-b"]), "--code", "other", "--by", "ops")
    assert no_note.returncode == 1 and "needs a note" in no_note.stderr

    doc = tmp_path / "psp-email.txt"
    doc.write_text("Stripe confirms the 10 cent fee was withheld.\n")
    env2 = {**env, "RECON_OPERATOR": "alice@operator"}
    done = recon(
        env2, "exceptions", "resolve", str(ids["tx-b"]), "--code", "psp_corrected", "--note", "fee withheld",
        "--evidence", str(doc), "--ref", "TICKET-42",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = recon(env2, "exceptions", "resolve", str(ids["tx-b"]), "--code", "written_off")
    assert again.returncode == 1 and "already resolved" in again.stderr

    with session_scope(engine) as s:
        item = s.get(ExceptionItem, ids["tx-b"])
        assert item is not None and item.state == "resolved" and item.resolved_by == "alice@operator"
        assert item.evidence == {"booked": 1000, "settled": 990}  # the matcher's evidence is kept
        import hashlib

        digest = hashlib.sha256(doc.read_bytes()).hexdigest()
        assert item.resolution_evidence[0]["sha256"] == digest
        assert item.resolution_evidence[1] == {"kind": "reference", "value": "TICKET-42"}
        stored = Path(item.resolution_evidence[0]["stored"])
        assert stored.read_bytes() == doc.read_bytes()
        event = s.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "exception.resolved")
            .order_by(AuditEvent.seq.desc())
        ).first()
        assert event is not None and event.actor == "alice@operator" and event.entity_id == "ledger:tx-b"
        assert (
            event.outcome["resolution_code"] == "psp_corrected"
            and event.outcome["evidence"][0]["sha256"] == digest
        )

    open_only = recon(env, "exceptions", "list")
    assert "tx-b" not in open_only.stdout
    everything = recon(env, "exceptions", "list", "--state", "all")
    assert "tx-b" in everything.stdout and "psp_corrected by alice@operator" in everything.stdout
    resolved = recon(env, "exceptions", "list", "--state", "resolved", "--json")
    assert resolved.returncode == 0 and '"resolution_code": "psp_corrected"' in resolved.stdout
    assert verify_chain(engine).ok
