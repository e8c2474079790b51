"""The column-wise audit paths (issue 8's benchmark work) against the row-by-row ones they replace.

* the publish step builds its ``outcome.*`` events column-wise (Polars) and hashes an event frame:
  the JSON texts and hashes must be byte for byte those of ``canonical_json`` and ``append_event_rows``;
* ``verify --method python`` on PostgreSQL fetches the events with ``COPY`` and rebuilds bodies
  column-wise: a change of any stored column (strings, JSON text, ``occurred_at``, NULL against ``''``,
  ``prev_hash``, the hash) must still fail and name the event, including rows whose strings need escapes.

SQLite and the real PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import polars as pl
import pytest
from sqlalchemy import Engine, select, text

from reconciliation_pipeline.frames import OUTCOME_SCHEMA, conform
from reconciliation_pipeline.store import (
    AuditEvent,
    AuditEventIn,
    apply_outcomes,
    audit,
    make_engine,
    migrate,
    service,
    session_scope,
    verify_chain,
)
from tests.integration.audit_helpers import as_superuser

UTC = dt.UTC
TRICKY = ["plain", 'déjà "q" \\ \n\t€\u2028😀', "", "\x01\x1f\x7f", 'a","actor":"b', "\\u0041"]


def _events(n: int = 40) -> list[AuditEventIn]:
    base = dt.datetime(2026, 3, 2, 1, 2, 3, tzinfo=UTC)
    return [
        AuditEventIn(
            actor=TRICKY[i % len(TRICKY)] or "x",
            action=f"test.{TRICKY[(i + 1) % len(TRICKY)]}",
            entity_type="thing",
            entity_id=f"e-{i}-{TRICKY[(i + 2) % len(TRICKY)]}",
            inputs={"n": i, "s": TRICKY[i % len(TRICKY)], "l": [1, None, True, -(2**63)]},
            chain={"run_id": "r", "rule_ids": ["b", "a"]},
            outcome=None if i % 3 else {"ok": False, "é": TRICKY[(i + 3) % len(TRICKY)]},
            trace_id=None if i % 2 else ("" if i % 4 == 0 else f"{i:032x}"),
            occurred_at=base + dt.timedelta(seconds=i, microseconds=(i * 10_001) % 1_000_000),
            event_id=str(uuid.UUID(int=i + 1)),
        )
        for i in range(n)
    ]


def _stored(engine: Engine) -> list[tuple[object, ...]]:
    with session_scope(engine) as s:
        return [tuple(r) for r in s.execute(select(*audit.stored_columns()).order_by(AuditEvent.seq))]


def test_an_event_frame_is_stored_and_hashed_exactly_as_the_row_path(db_url: str, tmp_path: object) -> None:
    results = []
    for how in ("rows", "frame"):
        eng = make_engine(db_url)
        migrate(eng)
        try:
            with eng.begin() as conn:  # same database for both: start each from an empty trail
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
                    conn.exec_driver_sql("DELETE FROM audit_events")
            with session_scope(eng) as s:
                if how == "rows":
                    audit.append_event_rows(s, _events())
                else:
                    audit.append_event_frame(s, audit.events_frame(_events()))
            assert verify_chain(eng, method="python").ok
            results.append([r[1:] for r in _stored(eng)])  # seq aside
        finally:
            eng.dispose()
        if not db_url.startswith("postgresql"):
            db_url = db_url.replace("recon.db", "recon2.db")
    assert results[0] == results[1]


def test_json_strings_quote_exactly_as_json_with_and_without_escapes() -> None:
    plain = pl.Series(["a", "", None, "é€😀 \u2028", "x" * 100])
    for values in (plain, pl.concat([plain, pl.Series(TRICKY)])):
        got = audit.json_strings({"v": values, "w": values.reverse()})
        for name, column in (("v", values), ("w", values.reverse())):
            want = ["null" if v is None else json.dumps(v, ensure_ascii=False) for v in column.to_list()]
            assert got[name].to_list() == want


@pytest.mark.parametrize("values", [TRICKY, ["plain", "", "é€😀", "x-1"]], ids=["escapes", "plain"])
def test_outcome_events_built_column_wise_equal_canonical_json(values: list[str]) -> None:
    rows = []
    for i, s in enumerate(values):
        rows.append(
            {
                "record_key": f"ledger:{s}{i}",
                "_action": "change" if i % 2 else "insert",
                "status": "matched",
                "match_id": s or None,
                "rule_id": None,
                "exception_category": s,
                "transaction_id": f"{s}{i}",
                "business_date": dt.date(2026, 3, 2),
                "trace_id": [None, "", "t" * 32][i % 3],
                **{f"{c}_prev": (s if i % 2 else None) for c in service.STATE_COLUMNS},
                "as_of_date_prev": dt.date(2026, 3, 1) if i % 2 else None,
            }
        )
    written = pl.DataFrame(rows)
    now = dt.datetime(2026, 3, 2, tzinfo=UTC)
    chain = audit.normalise_chain({"run_id": "r"})
    frame = service._outcome_events(
        written, as_of=dt.date(2026, 3, 2), now=now, actor="a", chain=chain, trace_id="fallback"
    )
    for row, got in zip(rows, frame.iter_rows(named=True), strict=True):
        changed = row["_action"] == "change"
        previous = (
            {**{c: row[f"{c}_prev"] for c in service.STATE_COLUMNS}, "as_of_date": "2026-03-01"}
            if changed
            else None
        )
        assert got["inputs"] == audit.canonical_json({"previous": previous, "as_of": "2026-03-02"})
        state = {c: row[c] for c in service.STATE_COLUMNS}
        assert got["outcome"] == audit.canonical_json({**state, "business_date": "2026-03-02"})
        assert got["chain"] == audit.canonical_json(chain)
        assert got["action"] == ("outcome.changed" if changed else "outcome.written")
        assert got["trace_id"] == (row["trace_id"] or "fallback")
        json.loads(got["inputs"])


def test_publish_events_verify_both_ways(engine: Engine) -> None:
    frame = conform(
        pl.DataFrame(
            [
                {"record": "ledger", "transaction_id": f'tx-{i}-{TRICKY[i % len(TRICKY)]}', "psp": "adyen",
                 "status": ["matched", "pending", "exception"][i % 3], "match_id": f"m-{i}" if i % 3 == 0 else None,
                 "rule_id": "exact" if i % 3 == 0 else None,
                 "exception_category": "missing_in_psp" if i % 3 == 2 else None}
                for i in range(30)
            ]
        ),
        OUTCOME_SCHEMA,
    )  # fmt: skip
    chain = {"run_id": "r1", "asset": "outcomes", "partition": "2024-03-01", "code_version": "t"}
    with session_scope(engine) as s:
        first = apply_outcomes(s, frame, as_of=dt.date(2024, 3, 1), chain=chain, actor="t")
    assert first.inserted == 30 and first.exceptions_opened == 10
    changed = frame.with_columns(status=pl.lit("matched"), match_id=pl.lit("m-x"), exception_category=None)
    with session_scope(engine) as s:
        again = apply_outcomes(s, changed, as_of=dt.date(2024, 3, 2), chain=chain, actor="t")
    assert again.changed == 30 and again.exceptions_resolved == 10
    for method in ("auto", "python"):
        result = verify_chain(engine, method=method)
        assert result.ok and result.count == 30 + 10 + 30 + 10, result.reason
    with session_scope(engine) as s:
        events = s.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    for ev in events:  # what the row path would have hashed, recomputed from the ORM objects
        body = {c: getattr(ev, c) for c in audit.BODY_COLUMNS}
        assert audit.compute_hash(ev.prev_hash, body) == ev.hash


TAMPERS = [
    ("actor", "'mallory'"),
    ("action", "'x'"),
    ("entity_type", "'t '"),
    ("event_id", "event_id || 'x'"),
    ("occurred_at", "occurred_at + interval '1 microsecond'"),
    ("trace_id", "''"),  # NULL -> '' (seq 2 has no trace id)
    ("inputs", """'{"n"\\:1}'"""),
    ("chain", "NULL"),
    ("prev_hash", "upper(prev_hash)"),
    ("hash", "lower(hash) || ''"),  # unchanged: must still pass; see below
]


@pytest.mark.parametrize(("column", "value"), TAMPERS)
def test_python_verification_catches_any_changed_column(engine: Engine, column: str, value: str) -> None:
    with session_scope(engine) as s:
        audit.append_event_rows(s, _events(12))
    with session_scope(engine) as s:
        seqs = s.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)).all()
    target = seqs[5] if column != "trace_id" else seqs[1]  # seq 1 (index) has a NULL trace id
    pg = engine.dialect.name == "postgresql"
    expr = value
    if not pg:
        expr = {
            "occurred_at": "strftime('%Y-%m-%d %H:%M:%f', occurred_at, '+1 second')",
        }.get(column, value.replace("::text", ""))
    elif column in ("inputs", "chain") and value != "NULL":
        expr = f"CAST({value} AS json)"
    with as_superuser(engine) as conn:
        conn.execute(text(f"UPDATE audit_events SET {column} = {expr} WHERE seq = :s"), {"s": target})
    for method in ("python", "auto"):
        result = verify_chain(engine, method=method)
        if column == "hash":
            assert result.ok, result.reason
            continue
        assert not result.ok and result.first_bad_seq == target, (method, result)
        assert result.count == seqs.index(target)


def test_python_verification_catches_a_change_in_an_escaped_string(engine: Engine) -> None:
    with session_scope(engine) as s:
        audit.append_event_rows(s, _events(12))
    with session_scope(engine) as s:
        rows = s.execute(select(AuditEvent.seq, AuditEvent.actor).order_by(AuditEvent.seq)).all()
    seq, actor = next((r[0], r[1]) for r in rows if '"' in r[1])
    # the text a naive quoting of the new value would give equals the canonical text of the old one
    forged = json.dumps(actor, ensure_ascii=False)[1:-1]
    with as_superuser(engine) as conn:
        conn.execute(text("UPDATE audit_events SET actor = :a WHERE seq = :s"), {"a": forged, "s": seq})
    for method in ("python", "auto"):
        result = verify_chain(engine, method=method)
        assert not result.ok and result.first_bad_seq == seq, (method, result)


@pytest.mark.postgres
def test_keys_sent_as_one_array_literal_come_back_unchanged(pg_schema_url: str) -> None:
    keys = ["a", 'b"c', "d\\e", "f,g{}", "", "NULL", " sp ", "x\ny\tz", "é€😀", '\\"']
    eng = make_engine(pg_schema_url)
    try:
        with eng.connect() as conn:
            got = conn.exec_driver_sql(
                "SELECT unnest(%(k)s::text[])", {"k": service.pg_text_array(keys)}
            ).scalars()
            assert list(got) == keys
    finally:
        eng.dispose()
