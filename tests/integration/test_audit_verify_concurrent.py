"""Verification over two connections in one snapshot (PostgreSQL), by ranges of ``seq``.

* ``verify --method python`` fetches ranges of ``seq`` with ``COPY`` (text format) over two connections
  and checks links across range boundaries: a changed or removed event in any range, at a boundary or
  after a gap in ``seq`` larger than a range must fail and name the event, exactly as the row-by-row walk;
* ``--method server`` runs the link scan on a second connection while the hash scan runs, and builds the
  canonical text with plain quotes where no string needs an escape: the text must equal
  ``canonical_json`` and a forged escape must still be caught;
* the two connections of :func:`audit.snapshot_pair` see the same rows while others append.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, text

from reconciliation_pipeline.store import AuditEvent, audit, session_scope, verify_chain
from tests.conftest import migrated_engine
from tests.integration.audit_helpers import as_superuser
from tests.integration.test_audit_columnwise import TRICKY, _events

pytestmark = pytest.mark.postgres

CHUNK = 4  # seq values per COPY range in these tests: 30 events make 8 ranges over 2 connections


@pytest.fixture
def pg(pg_schema_url: str) -> Iterator[Engine]:
    yield from migrated_engine(pg_schema_url)


@pytest.fixture
def chain(pg: Engine, monkeypatch: pytest.MonkeyPatch) -> list[AuditEvent]:
    monkeypatch.setattr(audit, "VERIFY_CHUNK", CHUNK)
    with session_scope(pg) as s:
        audit.append_event_rows(s, _events(30))
    with session_scope(pg) as s:
        events = list(s.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
        s.expunge_all()
    return events


def _all_ways(engine: Engine) -> list[tuple[str, audit.VerifyResult]]:
    """Every PostgreSQL path: both methods on the engine (two connections), and on one connection."""
    out = [(m, verify_chain(engine, method=m)) for m in ("python", "server")]
    with engine.connect() as conn:
        out += [(f"{m} (one connection)", verify_chain(conn, method=m)) for m in ("python", "server")]
    return out


def _assert_fails_at(engine: Engine, events: list[AuditEvent], index: int, why: str) -> None:
    for how, result in _all_ways(engine):
        assert not result.ok, how
        assert result.first_bad_seq == events[index].seq, (how, result)
        assert why in (result.reason or ""), (how, result.reason)
        previous = [e for e in events[:index] if e.seq < events[index].seq]
        assert result.count == len(previous), (how, result)


def test_an_intact_chain_verifies_every_way(pg: Engine, chain: list[AuditEvent]) -> None:
    for how, result in _all_ways(pg):
        assert result.ok and result.count == 30 and result.head_hash == chain[-1].hash, (how, result)


# seq 1..30 in ranges (0, 4], (4, 8], ...: index 5 is inside the second range (the second connection),
# index 4 is the first event of a range, index 7 the last one.
@pytest.mark.parametrize(
    "index", [0, 5, 4, 7, 29], ids=["first", "second-range", "range-start", "range-end", "last"]
)
def test_a_changed_event_in_any_range_is_named(pg: Engine, chain: list[AuditEvent], index: int) -> None:
    with as_superuser(pg) as conn:
        conn.execute(
            text("UPDATE audit_events SET entity_type = 'x' WHERE seq = :s"), {"s": chain[index].seq}
        )
    _assert_fails_at(pg, chain, index, "altered")


@pytest.mark.parametrize("index", [4, 7, 3], ids=["range-start", "range-end", "first-range-end"])
def test_a_removed_event_at_a_range_boundary_breaks_the_next_link(
    pg: Engine, chain: list[AuditEvent], index: int
) -> None:
    with as_superuser(pg) as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": chain[index].seq})
    events = chain[:index] + chain[index + 1 :]
    _assert_fails_at(pg, events, index, "does not link")


def test_removed_ranges_break_the_link_after_them(pg: Engine, chain: list[AuditEvent]) -> None:
    """Two whole ranges are empty: the event after them must not link."""
    with as_superuser(pg) as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq > 8 AND seq <= 16"))
    events = chain[:8] + chain[16:]
    _assert_fails_at(pg, events, 8, "does not link")


def test_a_gap_in_seq_wider_than_a_range_is_not_a_break(pg: Engine, chain: list[AuditEvent]) -> None:
    """``seq`` is not hashed: renumbering with a gap keeps the chain intact, and the walk jumps the gap."""
    with as_superuser(pg) as conn:
        conn.execute(text("UPDATE audit_events SET seq = seq + 1000000 WHERE seq > 12"))
    for how, result in _all_ways(pg):
        assert result.ok and result.count == 30 and result.head_hash == chain[-1].hash, (how, result)
    with as_superuser(pg) as conn:  # and a change after the gap is still named
        conn.execute(
            text("UPDATE audit_events SET actor = 'm' WHERE seq = :s"), {"s": 1000000 + chain[20].seq}
        )
    for how, result in _all_ways(pg):
        assert not result.ok and result.first_bad_seq == 1000000 + chain[20].seq and result.count == 20, how


def test_copy_text_values_come_back_exactly(pg: Engine) -> None:
    values = [*TRICKY, "a\\b", "\\\\n", "\\n", "x\ny\tz\r\b\f\v", "\\", "\\N", "", None, "\\\\\\t"]
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TEMPORARY TABLE t (i bigint, s text)")
        for i, v in enumerate(values):
            conn.execute(text("INSERT INTO t VALUES (:i, :s)"), {"i": i, "s": v})
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        buf = io.BytesIO()
        cursor.copy_expert("COPY (SELECT i, " + ", ".join(["s"] * 12) + " FROM t ORDER BY i) TO STDOUT", buf)
    rows = audit._read_copy_text(buf.getvalue())
    for name in rows.columns[1:]:
        assert rows[name].to_list() == values


def test_the_server_text_equals_canonical_json(pg: Engine, chain: list[AuditEvent]) -> None:
    with pg.connect() as conn:
        texts = conn.exec_driver_sql(f"SELECT {audit._PG_BODY_FAST} FROM audit_events ORDER BY seq").scalars()
        for ev, got in zip(chain, texts, strict=True):
            assert got == audit.canonical_json({c: getattr(ev, c) for c in audit.BODY_COLUMNS})


@pytest.mark.parametrize("column", ["actor", "action", "entity_id"])
def test_a_forged_escape_is_caught_by_the_server(pg: Engine, chain: list[AuditEvent], column: str) -> None:
    """A value replaced by the JSON text of its original (``a"b`` -> ``a\\"b``) would hash the same if it
    were quoted without escaping."""
    index = next(i for i, e in enumerate(chain) if '"' in (getattr(e, column) or ""))
    forged = audit.canonical_json(getattr(chain[index], column))[1:-1]
    with as_superuser(pg) as conn:
        conn.execute(
            text(f"UPDATE audit_events SET {column} = :v WHERE seq = :s"),
            {"v": forged, "s": chain[index].seq},
        )
    _assert_fails_at(pg, chain, index, "altered")


def test_a_snapshot_pair_sees_one_snapshot(pg: Engine, chain: list[AuditEvent]) -> None:
    with audit.snapshot_pair(pg) as (first, second):
        with session_scope(pg) as s:  # committed while the pair is open
            audit.append_event_rows(s, _events(3))
        for conn in (first, second):
            assert conn.exec_driver_sql("SELECT count(*) FROM audit_events").scalar_one() == 30
    assert verify_chain(pg, method="python").count == 33
