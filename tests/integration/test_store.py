"""The outcome store on SQLite and on the real PostgreSQL: migrations, upserts, outcome semantics,
exceptions, and the hash-chained audit trail (tampering, deletion, concurrent writers)."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import polars as pl
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, text

from reconciliation_pipeline.frames import LEDGER_SCHEMA, OUTCOME_SCHEMA, SETTLEMENT_LINE_SCHEMA, conform
from reconciliation_pipeline.store import (
    AuditEvent,
    AuditEventIn,
    ExceptionItem,
    MatchGroup,
    Outcome,
    Transaction,
    append_event,
    append_events,
    apply_outcomes,
    audit_head,
    canonical_json,
    export_outcomes,
    get_transaction,
    make_engine,
    migrate,
    register_file,
    resolve_exception,
    session_scope,
    upsert_settlement_lines,
    upsert_transactions,
    verify_chain,
)
from reconciliation_pipeline.store.audit import GENESIS_HASH, compute_hash
from reconciliation_pipeline.store.models import Base
from tests.integration.audit_helpers import as_superuser

CHAIN = {
    "run_id": "run-1",
    "asset": "outcomes",
    "partition": "2024-03-01",
    "code_version": "0.1.0",
    "rule_ids": ["R1_exact_reference"],
}
D1, D2, D3 = dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)
UTC = dt.UTC


def _ledger(n: int = 3, start: int = 0) -> pl.DataFrame:
    rows = [
        {
            "event_id": f"ev-{i}",
            "transaction_id": f"tx-{i}",
            "psp": "adyen",
            "psp_reference": f"PSP{i:05d}",
            "kind": "deposit",
            "amount_minor": 1000 + i,
            "currency": "EUR",
            "occurred_at": dt.datetime(2024, 3, 1, 10, 0, i, tzinfo=UTC),
            "player_id": f"p{i}",
            "brand": "brand-a",
            "jurisdiction": "MT",
            "kafka_topic": "payments.transactions.v1",
            "kafka_partition": 0,
            "kafka_offset": i,
            "landed_file": "landing/transactions/date=2024-03-01/part-0.parquet",
            "business_date": D1,
        }
        for i in range(start, start + n)
    ]
    return conform(pl.DataFrame(rows), LEDGER_SCHEMA)


def _lines(n: int = 2) -> pl.DataFrame:
    rows = [
        {
            "psp": "adyen",
            "source_file": "settlement_detail_report_batch_7.csv",
            "source_row": i + 1,
            "file_sha256": "a" * 64,
            "batch_id": "7",
            "account_id": "OperatorCOM",
            "record_type": "Settled",
            "line_kind": "capture",
            "moves_player_money": True,
            "movement_reference": f"PSP{i:05d}",
            "merchant_reference": f"tx-{i}",
            "booked_at": dt.datetime(2024, 3, 2, 4, 0, tzinfo=UTC),
            "booking_date": D2,
            "amount_minor": 1000 + i,
            "currency": "EUR",
            "fee_minor": 12,
            "net_amount_minor": 988 + i,
            "net_currency": "EUR",
            "exchange_rate": "1.000000",
        }
        for i in range(n)
    ]
    return conform(pl.DataFrame(rows), SETTLEMENT_LINE_SCHEMA)


def _outcomes(rows: list[dict[str, object]]) -> pl.DataFrame:
    return conform(pl.DataFrame(rows, infer_schema_length=None), OUTCOME_SCHEMA)


def _led(
    tx: str,
    status: str,
    *,
    match_id: str | None = None,
    rule_id: str | None = None,
    category: str | None = None,
) -> dict[str, object]:
    return {
        "record": "ledger",
        "transaction_id": tx,
        "psp": "adyen",
        "status": status,
        "match_id": match_id,
        "rule_id": rule_id,
        "exception_category": category,
        "business_date": D1,
    }


def _stl(
    row: int,
    status: str,
    *,
    match_id: str | None = None,
    rule_id: str | None = None,
    category: str | None = None,
    tx: str | None = None,
) -> dict[str, object]:
    return {
        "record": "settlement",
        "transaction_id": tx,
        "psp": "adyen",
        "source_file": "settlement_detail_report_batch_7.csv",
        "source_row": row,
        "status": status,
        "match_id": match_id,
        "rule_id": rule_id,
        "exception_category": category,
        "business_date": D2,
    }


def _events(engine: Engine, action: str | None = None) -> list[AuditEvent]:
    with session_scope(engine) as s:
        stmt = select(AuditEvent).order_by(AuditEvent.seq)
        if action:
            stmt = stmt.where(AuditEvent.action == action)
        return list(s.scalars(stmt))


# --------------------------------------------------------------------------- migrations


def test_migrate_twice_is_a_noop_and_matches_models(db_url: str) -> None:
    migrate(db_url)
    eng = make_engine(db_url)
    try:
        tables = set(inspect(eng).get_table_names())
        with eng.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        migrate(db_url)  # again: nothing to do, nothing breaks
        migrate(eng)
        assert set(inspect(eng).get_table_names()) == tables
        with eng.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == version
            # the explicit migration and the typed models describe the same schema
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == []
        from alembic.script import ScriptDirectory

        from reconciliation_pipeline.store.db import alembic_config

        assert version == [ScriptDirectory.from_config(alembic_config()).get_current_head()]
        assert {
            "transactions",
            "settlement_lines",
            "ingested_files",
            "match_groups",
            "outcomes",
            "exceptions",
            "audit_events",
            "idempotency_keys",
        } <= tables
    finally:
        eng.dispose()


def test_sqlite_engine_settings(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "deep" / "er" / "recon.db"
    eng = make_engine(f"sqlite:///{path}")
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert path.parent.is_dir()
    finally:
        eng.dispose()


# --------------------------------------------------------------------------- ledger, lines, files


def test_upsert_transactions_and_settlement_lines(engine: Engine) -> None:
    with session_scope(engine) as s:
        assert upsert_transactions(s, _ledger(3), chain=CHAIN, actor="test") == 3
    with session_scope(engine) as s:
        assert upsert_transactions(s, _ledger(3), chain=CHAIN, actor="test") == 0  # identical: ignored
        assert upsert_transactions(s, _ledger(2, start=2), chain=CHAIN, actor="test") == 1
        changed = _ledger(1).with_columns(amount_minor=pl.lit(5, pl.Int64))
        assert upsert_transactions(s, changed, chain=CHAIN, actor="test") == 0  # conflict: kept as stored
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Transaction)) == 4
        tx = s.get(Transaction, "tx-0")
        assert (
            tx is not None
            and tx.amount_minor == 1000
            and tx.occurred_at == dt.datetime(2024, 3, 1, 10, tzinfo=UTC)
        )
        assert tx.occurred_at.tzinfo is not None and tx.business_date == D1
        assert upsert_settlement_lines(s, _lines(2), chain=CHAIN, actor="test") == 2
        assert upsert_settlement_lines(s, _lines(2), chain=CHAIN, actor="test") == 0
    events = _events(engine)
    ledger_events = [e for e in events if e.action == "ledger.upserted"]
    assert [e.outcome["inserted"] for e in ledger_events] == [3, 0, 1, 0]
    assert ledger_events[-1].outcome["conflicting"] == 1 and ledger_events[-1].outcome[
        "conflicting_keys"
    ] == ["tx-0"]
    assert isinstance(ledger_events[0].outcome["inserted"], int)
    assert ledger_events[0].chain == CHAIN
    assert [e.outcome["inserted"] for e in events if e.action == "settlement_lines.upserted"] == [2, 0]
    assert verify_chain(engine).ok


def test_register_file_dedupes_by_sha_and_batch(engine: Engine) -> None:
    common: dict[str, Any] = {
        "psp": "adyen",
        "status": "accepted",
        "reason": None,
        "actor": "ingest",
        "chain": CHAIN,
    }
    with session_scope(engine) as s:
        f1, new1 = register_file(
            s,
            sha256="1" * 64,
            original_name="batch_7.csv",
            stored_path="landing/a",
            batch_key="adyen:OperatorCOM:7",
            **common,
        )
        assert new1 and f1.status == "accepted"
    with session_scope(engine) as s:
        _, new2 = register_file(
            s, sha256="1" * 64, original_name="copy.csv", stored_path="landing/b", batch_key=None, **common
        )
        f3, new3 = register_file(
            s,
            sha256="2" * 64,
            original_name="batch_7_again.csv",
            stored_path="landing/c",
            batch_key="adyen:OperatorCOM:7",
            **common,
        )
        assert not new2 and not new3 and f3.sha256 == "1" * 64
        # the same batch key under another PSP is another batch; NULL batch keys never collide
        _, new4 = register_file(
            s,
            sha256="3" * 64,
            original_name="x.csv",
            stored_path=None,
            batch_key="adyen:OperatorCOM:7",
            **{**common, "psp": "stripe"},
        )
        _, new5 = register_file(
            s,
            sha256="4" * 64,
            original_name="y.csv",
            stored_path=None,
            batch_key=None,
            **{
                **common,
                "status": "quarantined",
                "reason": {"row": 3, "field": "Gross Credit (GC)", "error": "not a number"},
            },
        )
        _, new6 = register_file(
            s, sha256="5" * 64, original_name="z.csv", stored_path=None, batch_key=None, **common
        )
        assert new4 and new5 and new6
    # the two recognised deliveries are audited too (nothing is silently dropped), naming the original
    assert [e.action for e in _events(engine)] == [
        "file.accepted",
        "file.duplicate",
        "file.duplicate",
        "file.accepted",
        "file.quarantined",
        "file.accepted",
    ]
    dup_bytes, dup_batch = _events(engine, "file.duplicate")
    assert dup_bytes.outcome["same_bytes"] is True and dup_bytes.outcome["registered_sha256"] == "1" * 64
    assert dup_batch.outcome["same_bytes"] is False and dup_batch.outcome["registered_sha256"] == "1" * 64
    quarantined = _events(engine, "file.quarantined")[0]
    assert quarantined.outcome["reason"]["row"] == 3 and quarantined.entity_id == "4" * 64


# --------------------------------------------------------------------------- outcomes


def test_apply_outcomes_semantics_and_exceptions(engine: Engine) -> None:
    day1 = _outcomes(
        [
            _led("tx-0", "pending"),
            _led("tx-1", "matched", match_id="m-1", rule_id="R1_exact_reference"),
            _stl(1, "matched", match_id="m-1", rule_id="R1_exact_reference", tx="tx-1"),
            _stl(2, "exception", category="missing_in_ledger"),
        ]
    )
    evidence = pl.DataFrame(
        {
            "record_key": ["settlement:adyen:settlement_detail_report_batch_7.csv:2"],
            "evidence": ['{"amount_minor": 1001, "candidates": []}'],
        }
    )
    with session_scope(engine) as s:
        upsert_transactions(s, _ledger(3), chain=CHAIN, actor="test")
        r1 = apply_outcomes(s, day1, as_of=D1, chain=CHAIN, actor="dagster", evidence=evidence)
    assert (r1.inserted, r1.changed, r1.unchanged, r1.skipped_older) == (4, 0, 0, 0)
    assert r1.exceptions_opened == 1
    with session_scope(engine) as s:
        exc = s.scalars(select(ExceptionItem)).one()
        assert exc.state == "open" and exc.category == "missing_in_ledger" and exc.opened_as_of == D1
        assert exc.evidence == {"amount_minor": 1001, "candidates": []}
        group = s.get(MatchGroup, "m-1")
        assert group is not None and group.rule_id == "R1_exact_reference" and group.run_id == "run-1"

    # day 3: the late settlement arrives; tx-0 matches the formerly unbooked line
    day3 = _outcomes(
        [
            _led("tx-0", "matched", match_id="m-2", rule_id="R2_merchant_reference"),
            _led("tx-1", "matched", match_id="m-1", rule_id="R1_exact_reference"),
            _stl(1, "matched", match_id="m-1", rule_id="R1_exact_reference", tx="tx-1"),
            _stl(2, "matched", match_id="m-2", rule_id="R2_merchant_reference", tx="tx-0"),
            _led("tx-2", "exception", category="missing_in_psp"),
        ]
    )
    chain3 = {**CHAIN, "run_id": "run-3", "partition": "2024-03-03"}
    with session_scope(engine) as s:
        r3 = apply_outcomes(s, day3, as_of=D3, chain=chain3, actor="dagster")
    assert (r3.inserted, r3.changed, r3.unchanged, r3.skipped_older) == (1, 2, 2, 0)
    assert (r3.exceptions_opened, r3.exceptions_resolved) == (1, 1)
    with session_scope(engine) as s:
        exc_rows = {e.record_key: e for e in s.scalars(select(ExceptionItem))}
        old = exc_rows["settlement:adyen:settlement_detail_report_batch_7.csv:2"]
        assert (
            old.state == "resolved"
            and old.resolution_code == "auto_rematched"
            and old.resolved_by == "dagster"
        )
        assert old.resolved_at is not None and old.resolved_at.tzinfo is not None
        assert (
            exc_rows["ledger:tx-2"].state == "open" and exc_rows["ledger:tx-2"].category == "missing_in_psp"
        )
        out0 = s.get(Outcome, "ledger:tx-0")
        assert (
            out0 is not None and out0.status == "matched" and out0.as_of_date == D3 and out0.run_id == "run-3"
        )

    # re-running day 2 (older than the stored day 3) never overwrites; identical content is unchanged
    day2 = _outcomes(
        [
            _led("tx-0", "pending"),
            _led("tx-1", "matched", match_id="m-1", rule_id="R1_exact_reference"),
        ]
    )
    with session_scope(engine) as s:
        r2 = apply_outcomes(s, day2, as_of=D2, chain=CHAIN, actor="dagster")
        assert (r2.inserted, r2.changed, r2.unchanged, r2.skipped_older) == (0, 0, 1, 1)
        r3b = apply_outcomes(s, day3, as_of=D3, chain=chain3, actor="dagster")
        assert (r3b.inserted, r3b.changed, r3b.unchanged, r3b.skipped_older) == (0, 0, 5, 0)
        assert s.get(Outcome, "ledger:tx-0").status == "matched"  # type: ignore[union-attr]

    written = _events(engine, "outcome.written")
    changed = _events(engine, "outcome.changed")
    assert len(written) == 5 and len(changed) == 2
    ev = next(e for e in changed if e.entity_id == "ledger:tx-0")
    assert ev.entity_type == "outcome" and ev.actor == "dagster" and ev.chain["run_id"] == "run-3"
    assert ev.inputs["previous"] == {
        "status": "pending",
        "match_id": None,
        "rule_id": None,
        "exception_category": None,
        "transaction_id": "tx-0",
        "as_of_date": "2024-03-01",
    }
    assert ev.outcome == {
        "status": "matched",
        "match_id": "m-2",
        "rule_id": "R2_merchant_reference",
        "exception_category": None,
        "transaction_id": "tx-0",
        "business_date": "2024-03-01",
    }
    assert [e.action for e in _events(engine) if e.action.startswith("exception.")] == [
        "exception.opened",
        "exception.resolved",
        "exception.opened",
    ]
    result = verify_chain(engine)
    assert result.ok and result.count == len(_events(engine)) and result.first_bad_seq is None

    # the partner API's view of one transaction
    with session_scope(engine) as s:
        view = get_transaction(s, "tx-0")
        assert view is not None and view["transaction"]["amount_minor"] == 1000
        assert view["outcome"]["status"] == "matched" and view["outcome"]["match_id"] == "m-2"
        assert [line["outcome"]["source_row"] for line in view["settlement_lines"]] == [2]
        assert get_transaction(s, "nope") is None

    # an operator resolves the open exception by hand
    with session_scope(engine) as s:
        item = s.scalars(select(ExceptionItem).where(ExceptionItem.state == "open")).one()
        resolve_exception(
            s,
            exception_id=item.id,
            resolution_code="written_off",
            note="below threshold",
            actor="ops@operator",
        )
        with pytest.raises(ValueError):
            resolve_exception(
                s, exception_id=item.id, resolution_code="again", note=None, actor="ops@operator"
            )
    assert _events(engine, "exception.resolved")[-1].actor == "ops@operator"
    assert verify_chain(engine).ok


def test_apply_outcomes_rejects_duplicate_keys(engine: Engine) -> None:
    with session_scope(engine) as s, pytest.raises(ValueError, match="share a record key"):
        apply_outcomes(
            s, _outcomes([_led("tx-0", "pending"), _led("tx-0", "matched")]), as_of=D1, chain=CHAIN, actor="t"
        )


def test_apply_outcomes_bulk_and_export(engine: Engine) -> None:
    n = 20_000
    idx = pl.int_range(pl.len())
    frame = pl.DataFrame({"i": range(n)}).select(
        record=pl.when(idx % 2 == 0).then(pl.lit("ledger")).otherwise(pl.lit("settlement")),
        transaction_id=pl.format("tx-{}", idx),
        psp=pl.lit("stripe"),
        source_file=pl.when(idx % 2 == 1).then(pl.lit("balance_report.csv")),
        source_row=pl.when(idx % 2 == 1).then(idx),
        status=pl.lit("pending"),
        business_date=pl.lit(D1),
    )
    frame = conform(frame, OUTCOME_SCHEMA)
    with session_scope(engine) as s:
        r = apply_outcomes(s, frame, as_of=D1, chain=CHAIN, actor="bulk")
    assert r.inserted == n
    moved = frame.with_columns(
        status=pl.when(idx % 3 == 0).then(pl.lit("exception")).otherwise(pl.lit("pending")),
        exception_category=pl.when(idx % 3 == 0).then(pl.lit("missing_in_psp")),
    )
    with session_scope(engine) as s:
        r2 = apply_outcomes(s, moved, as_of=D2, chain=CHAIN, actor="bulk")
    changed = (n + 2) // 3
    assert (r2.changed, r2.unchanged, r2.exceptions_opened) == (changed, n - changed, changed)
    with session_scope(engine) as s:
        out = export_outcomes(s)
        assert audit_head(s) is not None
    assert out.schema == pl.Schema(OUTCOME_SCHEMA)
    assert out.height == n
    assert out["status"].value_counts().sort("status")["count"].to_list() == [changed, n - changed]
    expected = moved.sort(["record", "psp", "source_file", "source_row", "transaction_id"], nulls_last=True)
    assert out.equals(expected)
    result = verify_chain(engine, batch_size=997)
    assert result.ok and result.count == n + changed * 2  # written + changed + exception.opened


def test_export_outcomes_empty_has_the_contract_dtypes(engine: Engine) -> None:
    with session_scope(engine) as s:
        out = export_outcomes(s)
        assert audit_head(s) is None
    assert out.height == 0 and out.schema == pl.Schema(OUTCOME_SCHEMA)


# --------------------------------------------------------------------------- the audit chain


def _seed_chain(engine: Engine, n: int = 5) -> list[AuditEvent]:
    with session_scope(engine) as s:
        return append_events(
            s,
            [
                AuditEventIn(
                    actor="test",
                    action="test.event",
                    entity_type="thing",
                    entity_id=f"thing-{i}",
                    inputs={
                        "amount_minor": 100 * i,
                        "when": dt.date(2024, 3, i + 1),
                        "note": 'déjà vu "q" \\ back\nline\ttab',
                    },
                    chain=CHAIN,
                    outcome={"ok": True, "n": i},
                    trace_id=f"{i:032x}",
                )
                for i in range(n)
            ],
        )


def test_chain_links_and_hash_definition(engine: Engine) -> None:
    events = _seed_chain(engine, 5)
    assert [e.prev_hash for e in events] == [GENESIS_HASH] + [e.hash for e in events[:-1]]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    for e in events:
        body = {
            c: getattr(e, c)
            for c in (
                "event_id",
                "occurred_at",
                "actor",
                "action",
                "entity_type",
                "entity_id",
                "inputs",
                "chain",
                "outcome",
                "trace_id",
                "prev_hash",
            )
        }
        assert e.hash == compute_hash(e.prev_hash, body)
        assert e.occurred_at.tzinfo is not None
    assert events[1].inputs == {
        "amount_minor": 100,
        "when": "2024-03-02",
        "note": 'déjà vu "q" \\ back\nline\ttab',
    }
    with session_scope(engine) as s:
        one = append_event(s, actor="x", action="y", entity_type="z", entity_id="1")
        assert audit_head(s) == (one.seq, one.hash)
    assert verify_chain(engine).ok and verify_chain(engine).head_hash == one.hash


def test_canonical_json() -> None:
    value = {
        "b": [1, 2.5],
        "a": dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        "d": dt.date(2024, 3, 1),
        "u": "€",
    }
    assert canonical_json(value) == '{"a":"2024-03-01T11:00:00.000000Z","b":[1,2.5],"d":"2024-03-01","u":"€"}'


def test_tampering_with_an_event_is_detected(engine: Engine) -> None:
    events = _seed_chain(engine, 6)
    target = events[3]
    with as_superuser(engine) as conn:  # the triggers of migration 0002 refuse it otherwise
        if conn.dialect.name == "postgresql":
            conn.execute(
                text("UPDATE audit_events SET outcome = CAST(:o AS json) WHERE seq = :s"),
                {"o": '{"ok": false, "n": 3}', "s": target.seq},
            )
        else:
            conn.execute(
                text("UPDATE audit_events SET outcome = :o WHERE seq = :s"),
                {"o": '{"ok": false, "n": 3}', "s": target.seq},
            )
    result = verify_chain(engine)
    assert not result.ok and result.first_bad_seq == target.seq and result.count == 3
    assert "altered" in (result.reason or "")
    with session_scope(engine) as s:
        assert not verify_chain(s).ok  # a session works as well


def test_deleting_an_event_is_detected(engine: Engine) -> None:
    events = _seed_chain(engine, 6)
    with as_superuser(engine) as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": events[2].seq})
    result = verify_chain(engine)
    assert not result.ok and result.first_bad_seq == events[3].seq
    assert "does not link" in (result.reason or "")


def test_concurrent_appends_leave_one_valid_chain(engine: Engine) -> None:
    threads_n, rounds, batch = 4, 10, 5
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)

    def worker(k: int) -> None:
        try:
            barrier.wait()
            for r in range(rounds):
                with session_scope(engine) as s:
                    append_events(
                        s,
                        [
                            AuditEventIn(
                                actor=f"w{k}",
                                action="test.concurrent",
                                entity_type="t",
                                entity_id=f"{k}-{r}-{i}",
                                inputs={"i": i},
                            )
                            for i in range(batch)
                        ],
                    )
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads_n)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert errors == []
    result = verify_chain(engine)
    assert result.ok, result.reason
    assert result.count == threads_n * rounds * batch
    # every batch is contiguous in the chain: writers never interleave inside one transaction
    events = _events(engine)
    for start in range(0, len(events), batch):
        assert len({e.entity_id.rsplit("-", 1)[0] for e in events[start : start + batch]}) == 1
