"""Writes and reads of the outcome store.

Every function takes the caller's session first and works inside the caller's transaction; every
state change appends audit events in that same transaction (commit or roll back together). Writers
take the audit chain's lock (:func:`audit.lock_chain`) before reading what they compare against, so
concurrent writers (Dagster partitions, the partner API) apply one after the other.

Bulk paths compare against stored rows loaded in chunks of keys (never one SELECT per row) and write
with ``executemany``; 100k outcome rows apply in a few seconds on SQLite.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl
from sqlalchemy import ColumnElement, Table, Text, any_, bindparam, cast, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from reconciliation_pipeline.frames import (
    LEDGER_SCHEMA,
    OUTCOME_SCHEMA,
    RECORDS,
    SETTLEMENT_LINE_SCHEMA,
    STATUSES,
    conform,
)
from reconciliation_pipeline.store.audit import (
    AuditEventIn,
    EventPiece,
    append_event_rows,
    audit_head,
    canonical_json,
    events_frame,
    hash_event_frame,
    json_object,
    json_strings,
    lock_and_head,
    lock_chain,
    normalise_chain,
    store_event_pieces,
    to_json_value,
    uses_copy,
)
from reconciliation_pipeline.store.db import bulk_insert, bulk_update, copy_frame
from reconciliation_pipeline.store.models import (
    ExceptionItem,
    IngestedFile,
    MatchGroup,
    Outcome,
    SettlementLine,
    Transaction,
)

UTC = dt.UTC
KEY_CHUNK = 5_000
WRITE_CHUNK = 5_000
#: Outcome columns whose change is a change of the record's reconciliation state.
STATE_COLUMNS = ("status", "match_id", "rule_id", "exception_category", "transaction_id")
#: Ledger columns compared when a transaction_id arrives again (provenance columns excluded).
LEDGER_IDENTITY = (
    "event_id",
    "psp",
    "psp_reference",
    "original_transaction_id",
    "kind",
    "amount_minor",
    "currency",
)
SETTLEMENT_IDENTITY = ("file_sha256", "line_kind", "movement_reference", "amount_minor", "currency")
SAMPLE_KEYS = 20

# --------------------------------------------------------------------------- helpers


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def _load_by_keys(
    session: Session, key_col: ColumnElement[Any], columns: Sequence[ColumnElement[Any]], keys: Sequence[str]
) -> list[Any]:
    if not keys:
        return []
    if session.connection().dialect.name == "postgresql":  # one statement, the keys as one array
        wanted = cast(bindparam("keys", pg_text_array(keys), type_=Text()), ARRAY(Text()))
        return list(session.execute(select(*columns).where(key_col == any_(wanted))).all())
    rows: list[Any] = []
    for chunk in _chunks(list(keys), KEY_CHUNK):
        rows.extend(session.execute(select(*columns).where(key_col.in_(chunk))).all())
    return rows


def pg_text_array(values: Iterable[str]) -> str:
    """``values`` as one PostgreSQL array literal (``'{"a","b"}'``, cast to ``text[]`` by the query):
    the server reads one constant instead of parsing a node per element."""
    quoted = pl.Series(list(values), dtype=pl.String)
    quoted = quoted.str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)
    return "{" + pl.select(pl.concat_str(pl.lit('"'), pl.lit(quoted), pl.lit('"')).str.join(",")).item() + "}"


def keys_digest(keys: Iterable[str]) -> str:
    """sha256 of the sorted keys, one a line: names a batch in the audit trail."""
    h = hashlib.sha256()
    for key in sorted(keys):
        h.update(key.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


def _require_columns(frame: pl.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")


def settlement_key(psp: str, source_file: str, source_row: int) -> str:
    return f"settlement:{psp}:{source_file}:{source_row}"


def ledger_key(transaction_id: str) -> str:
    return f"ledger:{transaction_id}"


def _date_span(frame: pl.DataFrame, column: str) -> list[str | None]:
    if column not in frame.columns or frame.height == 0:
        return [None, None]
    s = frame[column].drop_nulls()
    if s.len() == 0:
        return [None, None]
    lo, hi = s.min(), s.max()
    return [str(lo), str(hi)]


# --------------------------------------------------------------------------- ledger and settlement lines


def _upsert_records(
    session: Session,
    frame: pl.DataFrame,
    *,
    table: Table,
    key: str,
    identity: Sequence[str],
    chain: dict[str, Any],
    actor: str,
    action: str,
    entity_type: str,
    inputs: dict[str, Any],
    trace_id: str | None,
) -> int:
    lock_chain(session)
    frame = frame.unique(subset=[key], keep="first", maintain_order=True)
    keys: list[str] = frame[key].to_list()
    key_col = table.c[key]
    stored = {
        row[0]: tuple(row[1:])
        for row in _load_by_keys(session, key_col, [key_col, *(table.c[c] for c in identity)], keys)
    }
    new_rows: list[dict[str, Any]] = []
    conflicts: list[str] = []
    identical = 0
    for row in frame.iter_rows(named=True):
        k = row[key]
        if k in stored:
            if tuple(row[c] for c in identity) == stored[k]:
                identical += 1
            else:
                conflicts.append(k)
            continue
        new_rows.append({c.name: row.get(c.name) for c in table.columns})
    bulk_insert(session, table, new_rows, ignore_conflicts=True)
    append_event_rows(
        session,
        [
            AuditEventIn(
                actor=actor,
                action=action,
                entity_type=entity_type,
                entity_id=keys_digest(keys),
                inputs={**inputs, "rows": frame.height, "keys_digest": keys_digest(keys)},
                chain=normalise_chain(chain),
                outcome={
                    "inserted": len(new_rows),
                    "identical": identical,
                    "conflicting": len(conflicts),
                    "conflicting_keys": sorted(conflicts)[:SAMPLE_KEYS],
                },
                trace_id=trace_id,
            )
        ],
    )
    return len(new_rows)


def upsert_transactions(
    session: Session, ledger: pl.DataFrame, *, chain: dict[str, Any], actor: str, trace_id: str | None = None
) -> int:
    """Insert the ledger records not stored yet; returns how many were inserted.

    A ``transaction_id`` already stored with the same identity (event, amount, currency, ...) is
    ignored; one stored with a different identity is kept as stored and counted as ``conflicting``
    in the batch's audit event (``ledger.upserted``).
    """
    _require_columns(
        ledger, ["transaction_id", "event_id", "amount_minor", "currency"], "upsert_transactions"
    )
    frame = conform(ledger, LEDGER_SCHEMA)
    if frame["transaction_id"].null_count():
        raise ValueError("upsert_transactions: transaction_id is null in some rows")
    return _upsert_records(
        session,
        frame,
        table=_table(Transaction),
        key="transaction_id",
        identity=LEDGER_IDENTITY,
        chain=chain,
        actor=actor,
        action="ledger.upserted",
        entity_type="ledger_batch",
        inputs={"business_dates": _date_span(frame, "business_date")},
        trace_id=trace_id,
    )


def upsert_settlement_lines(
    session: Session, lines: pl.DataFrame, *, chain: dict[str, Any], actor: str, trace_id: str | None = None
) -> int:
    """Insert the settlement lines not stored yet (keyed ``settlement:{psp}:{source_file}:{source_row}``)."""
    _require_columns(
        lines, ["psp", "source_file", "source_row", "amount_minor", "currency"], "upsert_settlement_lines"
    )
    frame = conform(lines, SETTLEMENT_LINE_SCHEMA)
    if frame.select(pl.any_horizontal(pl.col("psp", "source_file", "source_row").is_null()).any()).item():
        raise ValueError("upsert_settlement_lines: psp, source_file or source_row is null in some rows")
    frame = frame.with_columns(
        record_key=pl.format("settlement:{}:{}:{}", "psp", "source_file", "source_row")
    )
    return _upsert_records(
        session,
        frame,
        table=_table(SettlementLine),
        key="record_key",
        identity=SETTLEMENT_IDENTITY,
        chain=chain,
        actor=actor,
        action="settlement_lines.upserted",
        entity_type="settlement_batch",
        inputs={
            "files": sorted(set(frame["source_file"].to_list()))[:SAMPLE_KEYS],
            "booking_dates": _date_span(frame, "booking_date"),
        },
        trace_id=trace_id,
    )


# --------------------------------------------------------------------------- files


def find_file(session: Session, *, sha256: str) -> IngestedFile | None:
    """The registered file with this checksum, if any."""
    return session.get(IngestedFile, sha256)


def register_file(
    session: Session,
    *,
    sha256: str,
    psp: str,
    original_name: str,
    stored_path: str | None,
    status: str,
    reason: Any,
    batch_key: str | None,
    actor: str,
    chain: dict[str, Any] | None = None,
    trace_id: str | None = None,
) -> tuple[IngestedFile, bool]:
    """Register a received file; ``(file, False)`` when its sha256 or ``(psp, batch_key)`` is known.

    A new file writes ``file.accepted`` or ``file.quarantined`` (with its reason) to the audit trail.
    """
    if status not in ("accepted", "quarantined"):
        raise ValueError(f"register_file: status must be accepted or quarantined, not {status!r}")
    lock_chain(session)
    existing = session.get(IngestedFile, sha256)
    if existing is None and batch_key is not None:
        existing = session.scalars(
            select(IngestedFile).where(IngestedFile.psp == psp, IngestedFile.batch_key == batch_key)
        ).first()
    if existing is not None:
        record_duplicate_file(
            session,
            sha256=sha256,
            psp=psp,
            original_name=original_name,
            known=existing,
            batch_key=batch_key,
            actor=actor,
            chain=chain,
            trace_id=trace_id,
        )
        return existing, False
    reason_json = to_json_value(reason)
    record = IngestedFile(
        sha256=sha256,
        psp=psp,
        original_name=original_name,
        stored_path=stored_path,
        status=status,
        reason=reason_json,
        batch_key=batch_key,
        registered_at=_now(),
    )
    session.add(record)
    session.flush()
    append_event_rows(
        session,
        [
            AuditEventIn(
                actor=actor,
                action=f"file.{status}",
                entity_type="file",
                entity_id=sha256,
                inputs={"original_name": original_name, "psp": psp, "batch_key": batch_key, "sha256": sha256},
                chain=normalise_chain(chain),
                outcome={"status": status, "stored_path": stored_path, "reason": reason_json},
                trace_id=trace_id,
            )
        ],
    )
    return record, True


def record_duplicate_file(
    session: Session,
    *,
    sha256: str,
    psp: str,
    original_name: str,
    known: IngestedFile,
    batch_key: str | None,
    actor: str,
    chain: dict[str, Any] | None = None,
    trace_id: str | None = None,
) -> None:
    """Audit a delivery that was recognised (same bytes, or the same PSP batch under another name) and
    not counted again: ``file.duplicate``, naming the registration it repeats."""
    lock_chain(session)
    append_event_rows(
        session,
        [
            AuditEventIn(
                actor=actor,
                action="file.duplicate",
                entity_type="file",
                entity_id=sha256,
                inputs={"original_name": original_name, "psp": psp, "batch_key": batch_key, "sha256": sha256},
                chain=normalise_chain(chain),
                outcome={
                    "status": "duplicate",
                    "same_bytes": known.sha256 == sha256,
                    "registered_sha256": known.sha256,
                    "registered_name": known.original_name,
                    "registered_status": known.status,
                },
                trace_id=trace_id,
            )
        ],
    )


# --------------------------------------------------------------------------- outcomes


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    inserted: int
    changed: int
    unchanged: int
    skipped_older: int
    exceptions_opened: int = 0
    exceptions_resolved: int = 0


_PREV_SCHEMA: dict[str, pl.DataType] = {
    "record_key": pl.String(),
    "status_prev": pl.String(),
    "match_id_prev": pl.String(),
    "rule_id_prev": pl.String(),
    "exception_category_prev": pl.String(),
    "transaction_id_prev": pl.String(),
    "as_of_date_prev": pl.Date(),
    "trace_id_prev": pl.String(),
    "_stored": pl.Boolean(),
}


def _keyed_outcomes(outcomes: pl.DataFrame) -> pl.DataFrame:
    _require_columns(outcomes, ["record", "status"], "apply_outcomes")
    df = conform(outcomes, OUTCOME_SCHEMA)
    bad_record = df.filter(~pl.col("record").is_in(list(RECORDS)) | pl.col("record").is_null())
    if bad_record.height:
        raise ValueError(f"apply_outcomes: record must be one of {RECORDS}; got {bad_record['record'][0]!r}")
    bad_status = df.filter(~pl.col("status").is_in(list(STATUSES)) | pl.col("status").is_null())
    if bad_status.height:
        raise ValueError(f"apply_outcomes: status must be one of {STATUSES}; got {bad_status['status'][0]!r}")
    df = df.with_columns(
        record_key=pl.when(pl.col("record") == "ledger")
        .then(pl.lit("ledger:") + pl.col("transaction_id"))
        .otherwise(pl.format("settlement:{}:{}:{}", "psp", "source_file", "source_row"))
    )
    if df["record_key"].null_count():
        row = df.filter(pl.col("record_key").is_null()).row(0, named=True)
        raise ValueError(
            "apply_outcomes: a ledger outcome needs transaction_id, a settlement outcome psp, source_file "
            f"and source_row; got {row}"
        )
    dupes = df.filter(pl.col("record_key").is_duplicated())
    if dupes.height:
        sample = dupes["record_key"].unique().sort().head(5).to_list()
        raise ValueError(f"apply_outcomes: {dupes.height} rows share a record key, e.g. {sample}")
    given = outcomes["trace_id"].cast(pl.String) if "trace_id" in outcomes.columns else None
    return df.with_columns(trace_id=given if given is not None else pl.lit(None, pl.String))


def _trace_by_group(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows without a trace id take that of their match group's ledger records (the smallest
    transaction id with one): a settlement record gets the trace of the payment it matched."""
    by_group = (
        frame.filter(pl.col("match_id").is_not_null() & pl.col("trace_id").is_not_null())
        .sort("transaction_id", nulls_last=True)
        .group_by("match_id")
        .agg(pl.col("trace_id").first().alias("_group_trace"))
    )
    return (
        frame.join(by_group, on="match_id", how="left")
        .with_columns(pl.col("trace_id").fill_null(pl.col("_group_trace")))
        .drop("_group_trace")
    )


def _fill_trace_ids(session: Session, df: pl.DataFrame) -> pl.DataFrame:
    """Trace ids missing from the outcomes given, from the stored ledger records, then match groups."""
    wanted = df.filter(pl.col("trace_id").is_null() & pl.col("transaction_id").is_not_null())
    if wanted.height:
        t = _table(Transaction).c
        ids = wanted["transaction_id"].unique().to_list()
        found = {
            r[0]: r[1] for r in _load_by_keys(session, t.transaction_id, [t.transaction_id, t.trace_id], ids)
        }
        if found:
            df = df.with_columns(
                pl.col("trace_id").fill_null(
                    pl.col("transaction_id").replace_strict(found, default=None, return_dtype=pl.String)
                )
            )
    return _trace_by_group(df)


def _stored_outcomes(session: Session, keys: Sequence[str]) -> pl.DataFrame:
    o = _table(Outcome).c
    rows = _load_by_keys(
        session,
        o.record_key,
        [
            o.record_key,
            o.status,
            o.match_id,
            o.rule_id,
            o.exception_category,
            o.transaction_id,
            o.as_of_date,
            o.trace_id,
        ],
        keys,
    )
    return (
        pl.DataFrame([(*r, True) for r in rows], schema=_PREV_SCHEMA, orient="row")
        if rows
        else pl.DataFrame(schema=_PREV_SCHEMA)
    )


def _evidence_by_key(evidence: pl.DataFrame | None, keys: set[str]) -> dict[str, Any]:
    if evidence is None or evidence.height == 0 or not keys:
        return {}
    _require_columns(evidence, ["record_key", "evidence"], "apply_outcomes evidence")
    ev = evidence.filter(pl.col("record_key").is_in(list(keys))).unique("record_key", keep="last")
    out: dict[str, Any] = {}
    is_text = ev.schema["evidence"] == pl.String
    for key, value in zip(ev["record_key"].to_list(), ev["evidence"].to_list(), strict=True):
        out[key] = to_json_value(_maybe_json(value) if is_text else value)
    return out


def _maybe_json(value: Any) -> Any:
    """Evidence given as JSON text is stored as JSON; other text is stored as a string."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _insert_new_groups(session: Session, groups: pl.DataFrame) -> None:
    """Insert the match groups not stored yet (a group may span business dates).

    PostgreSQL (psycopg2): the stored ones are looked up, the rest ``COPY``-ed (only the publish step
    writes match groups, under the chain's lock); elsewhere ``INSERT`` skipping conflicts.
    """
    conn = session.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
        ids = groups["match_id"].to_list()
        stored = conn.exec_driver_sql(
            "SELECT match_id FROM match_groups WHERE match_id = ANY(%(ids)s::text[])",
            {"ids": pg_text_array(ids)},
        ).scalars()
        known = pl.Series("match_id", list(stored), dtype=pl.String)
        copy_frame(session, _table(MatchGroup), groups.filter(~pl.col("match_id").is_in(known)))
        return
    bulk_insert(session, _table(MatchGroup), groups.to_dicts(), ignore_conflicts=True)


def _outcome_events(
    written: pl.DataFrame,
    *,
    as_of: dt.date,
    now: dt.datetime,
    actor: str,
    chain: dict[str, Any],
    trace_id: str | None,
) -> pl.DataFrame:
    """The ``outcome.written`` / ``outcome.changed`` events of the written rows as an event frame,
    built column-wise; the same JSON texts as :func:`audit.canonical_json` of
    ``inputs={"previous": <previous state and as_of_date> or None, "as_of": ...}`` and
    ``outcome={<state>, "business_date": ...}``."""
    j = json_strings(
        {
            **{c: written[c] for c in STATE_COLUMNS},
            **{f"{c}_prev": written[f"{c}_prev"] for c in STATE_COLUMNS},
            "business_date": written["business_date"].cast(pl.String),
            "as_of_date_prev": written["as_of_date_prev"].cast(pl.String),
        }
    )
    changed = written["_action"] == "change"
    previous = json_object({**{c: j[f"{c}_prev"] for c in STATE_COLUMNS}, "as_of_date": j["as_of_date_prev"]})
    previous = pl.select(
        pl.when(pl.lit(changed)).then(pl.lit(previous)).otherwise(pl.lit("null"))
    ).to_series()
    inputs = json_object({"as_of": json.dumps(as_of.isoformat()), "previous": previous})
    outcome = json_object({**{c: j[c] for c in STATE_COLUMNS}, "business_date": j["business_date"]})
    trace = written["trace_id"]
    trace = pl.select(
        pl.when(pl.lit(trace).is_null() | (pl.lit(trace) == ""))
        .then(pl.lit(trace_id, pl.String))
        .otherwise(pl.lit(trace))
    ).to_series()
    return pl.DataFrame(
        {"entity_id": written["record_key"], "inputs": inputs, "outcome": outcome, "trace_id": trace}
    ).select(
        event_id=pl.lit(None, pl.String),
        occurred_at=pl.lit(now, pl.Datetime("us", "UTC")),
        actor=pl.lit(actor, pl.String),
        action=pl.when(pl.lit(changed)).then(pl.lit("outcome.changed")).otherwise(pl.lit("outcome.written")),
        entity_type=pl.lit("outcome", pl.String),
        entity_id=pl.col("entity_id"),
        inputs=pl.col("inputs"),
        chain=pl.lit(canonical_json(chain), pl.String),
        outcome=pl.col("outcome"),
        trace_id=pl.col("trace_id"),
    )


def apply_outcomes(
    session: Session,
    outcomes: pl.DataFrame,
    *,
    as_of: dt.date,
    chain: dict[str, Any],
    actor: str,
    evidence: pl.DataFrame | None = None,
    trace_id: str | None = None,
) -> ApplyResult:
    """Write reconciliation outcomes computed as of ``as_of`` (the run's business date).

    Per record (``ledger:{transaction_id}`` / ``settlement:{psp}:{source_file}:{source_row}``):

    * not stored yet: inserted (``outcome.written``);
    * stored with the same status, match_id, rule_id and exception_category: unchanged (nothing is
      written, whatever the dates);
    * stored with a different state and a stored ``as_of_date`` later than ``as_of``: not applied,
      counted in ``skipped_older`` (an old business date re-run never overwrites a newer result);
    * otherwise: replaced (``outcome.changed``, with the previous state in the event's inputs).

    A record entering ``exception`` opens an exceptions row (evidence from ``evidence``: columns
    ``record_key`` and ``evidence``, JSON text or nested values); one leaving it resolves the open
    row with ``auto_rematched`` (``auto_recategorised`` when only the category changed, followed by a
    new open row). Match groups of written rows are created. Each write is an audit event.
    """
    df = _keyed_outcomes(outcomes)
    chain_n = normalise_chain(chain)
    run_id = chain_n.get("run_id")
    run_id = None if run_id is None else str(run_id)
    now = _now()

    lock_chain(session)
    df = _fill_trace_ids(session, df)
    stored = _stored_outcomes(session, df["record_key"].to_list())
    joined = df.join(stored, on="record_key", how="left").with_columns(pl.col("_stored").fill_null(False))
    same = pl.lit(True)
    for c in STATE_COLUMNS:
        same = same & pl.col(c).eq_missing(pl.col(f"{c}_prev"))
    joined = joined.with_columns(
        _action=pl.when(~pl.col("_stored"))
        .then(pl.lit("insert"))
        .when(same)
        .then(pl.lit("unchanged"))
        .when(pl.col("as_of_date_prev") > pl.lit(as_of))
        .then(pl.lit("older"))
        .otherwise(pl.lit("change"))
    )
    counts = dict(joined.group_by("_action").len().iter_rows())
    written = joined.filter(pl.col("_action").is_in(["insert", "change"]))
    # A trace id learnt later (the ledger record was stored after the outcome) is filled in; it is an
    # attribute of the payment, not a reconciliation state, so no audit event.
    late_traces = joined.filter(
        pl.col("_action").is_in(["unchanged", "older"])
        & pl.col("trace_id_prev").is_null()
        & pl.col("trace_id").is_not_null()
    )
    if late_traces.height:
        bulk_update(
            session, _table(Outcome), "record_key", late_traces.select("record_key", "trace_id").to_dicts()
        )

    # The outcome events come first in the chain and need nothing written below: they are built and
    # hashed in a second thread while the server stores the match groups, outcomes and exceptions
    # (psycopg2 and Polars release the GIL while they wait or work).
    last_seq, head_hash = lock_and_head(session)
    head = [head_hash]
    as_csv = uses_copy(session)

    def outcome_pieces() -> list[EventPiece]:
        frame = _outcome_events(written, as_of=as_of, now=now, actor=actor, chain=chain_n, trace_id=trace_id)
        return list(hash_event_frame(frame, last_seq + 1, head, csv=as_csv))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-hash") as pool:
        hashing = pool.submit(outcome_pieces)
        opened, resolved, events = _write_outcome_rows(
            session, written, as_of=as_of, now=now, actor=actor, evidence=evidence, chain=chain_n,
            trace_id=trace_id, run_id=run_id,
        )  # fmt: skip
        pieces = hashing.result()
    first_exception_seq = last_seq + written.height + 1
    tail = hash_event_frame(events_frame(events), first_exception_seq, head, csv=as_csv)
    if written.height or events:
        store_event_pieces(session, itertools.chain(pieces, tail), first_exception_seq + len(events) - 1)
    return ApplyResult(
        inserted=counts.get("insert", 0),
        changed=counts.get("change", 0),
        unchanged=counts.get("unchanged", 0),
        skipped_older=counts.get("older", 0),
        exceptions_opened=opened,
        exceptions_resolved=resolved,
    )


def _write_outcome_rows(
    session: Session,
    written: pl.DataFrame,
    *,
    as_of: dt.date,
    now: dt.datetime,
    actor: str,
    evidence: pl.DataFrame | None,
    chain: dict[str, Any],
    trace_id: str | None,
    run_id: str | None,
) -> tuple[int, int, list[AuditEventIn]]:
    """Match groups, outcomes and exceptions of the written rows; the exception events to append."""
    # match groups first (outcomes reference them)
    groups = (
        written.filter(pl.col("match_id").is_not_null())
        .group_by("match_id")
        .agg(pl.col("rule_id").drop_nulls().first(), pl.col("business_date").min())
        .sort("match_id")
    )
    if groups.height:
        _insert_new_groups(
            session,
            groups.select(
                "match_id",
                "rule_id",
                "business_date",
                as_of_date=pl.lit(as_of, pl.Date),
                run_id=pl.lit(run_id, pl.String),
            ),
        )

    out_cols = [
        "record_key",
        "record",
        "psp",
        "source_file",
        "source_row",
        *STATE_COLUMNS,
        "business_date",
        "trace_id",
    ]
    inserts = written.filter(pl.col("_action") == "insert")
    if inserts.height:
        copy_frame(
            session,
            _table(Outcome),
            inserts.select(
                *out_cols,
                as_of_date=pl.lit(as_of, pl.Date),
                run_id=pl.lit(run_id, pl.String),
                updated_at=pl.lit(now, pl.Datetime("us", "UTC")),
            ),
        )
    changes = written.filter(pl.col("_action") == "change")
    if changes.height:
        bulk_update(
            session,
            _table(Outcome),
            "record_key",
            changes.select("record_key", *STATE_COLUMNS, "trace_id").to_dicts(),
            constants={"as_of_date": as_of, "run_id": run_id, "updated_at": now},
        )

    events: list[AuditEventIn] = []
    opened, resolved = _sync_exceptions(
        session,
        written,
        as_of=as_of,
        now=now,
        actor=actor,
        evidence=evidence,
        chain=chain,
        trace_id=trace_id,
        events=events,
    )
    return opened, resolved, events


def _sync_exceptions(
    session: Session,
    written: pl.DataFrame,
    *,
    as_of: dt.date,
    now: dt.datetime,
    actor: str,
    evidence: pl.DataFrame | None,
    chain: dict[str, Any],
    trace_id: str | None,
    events: list[AuditEventIn],
) -> tuple[int, int]:
    was_exc = pl.col("status_prev").fill_null("") == "exception"
    is_exc = pl.col("status") == "exception"
    cat_changed = ~pl.col("exception_category").eq_missing(pl.col("exception_category_prev"))
    flagged = written.with_columns(
        _enter=is_exc & (~was_exc | cat_changed),
        _leave=was_exc & (~is_exc | cat_changed),
    ).filter(pl.col("_enter") | pl.col("_leave"))
    if flagged.height == 0:
        return 0, 0
    e = _table(ExceptionItem).c
    open_rows = {
        r[1]: (r[0], r[2])
        for r in _load_by_keys(
            session, e.record_key, [e.id, e.record_key, e.category, e.state], flagged["record_key"].to_list()
        )
        if r[3] == "open"
    }
    as_of_s = as_of.isoformat()

    # resolve
    to_resolve = []
    for key, status, category, row_trace in (
        flagged.filter(pl.col("_leave"))
        .select("record_key", "status", "exception_category", "trace_id")
        .iter_rows()
    ):
        if key not in open_rows:
            continue
        exc_id, old_category = open_rows.pop(key)
        code = "auto_rematched" if status != "exception" else "auto_recategorised"
        note = f"{old_category} -> {category if status == 'exception' else status} as of {as_of_s}"
        to_resolve.append(
            {
                "id": exc_id,
                "resolution_code": code,
                "resolution_note": note,
                "resolved_by": actor,
                "resolved_at": now,
            }
        )
        events.append(
            AuditEventIn(
                actor=actor,
                action="exception.resolved",
                entity_type="exception",
                entity_id=key,
                inputs={"exception_id": exc_id, "category": old_category, "as_of": as_of_s},
                chain=chain,
                outcome={
                    "state": "resolved",
                    "resolution_code": code,
                    "resolution_note": note,
                    "status": status,
                },
                trace_id=row_trace or trace_id,
                occurred_at=now,
            )
        )
    if to_resolve:
        bulk_update(session, _table(ExceptionItem), "id", to_resolve, constants={"state": "resolved"})

    # open
    entering = flagged.filter(pl.col("_enter") & ~pl.col("record_key").is_in(list(open_rows)))
    if entering.height:
        ev = _evidence_by_key(evidence, set(entering["record_key"].to_list()))
        new_rows = [
            {"record_key": k, "category": c, "state": "open", "opened_as_of": as_of, "evidence": ev.get(k)}
            for k, c in entering.select("record_key", "exception_category").iter_rows()
        ]
        entering_traces = dict(entering.select("record_key", "trace_id").iter_rows())
        for r in new_rows:
            if r["category"] is None:
                r["category"] = "uncategorised"
        bulk_insert(session, _table(ExceptionItem), new_rows)
        ids = {
            r[1]: r[0]
            for r in _load_by_keys(
                session, e.record_key, [e.id, e.record_key, e.state], [r["record_key"] for r in new_rows]
            )
            if r[2] == "open"
        }
        for r in new_rows:
            events.append(
                AuditEventIn(
                    actor=actor,
                    action="exception.opened",
                    entity_type="exception",
                    entity_id=r["record_key"],
                    inputs={"as_of": as_of_s, "evidence": r["evidence"]},
                    chain=chain,
                    outcome={
                        "exception_id": ids.get(r["record_key"]),
                        "state": "open",
                        "category": r["category"],
                    },
                    trace_id=entering_traces.get(r["record_key"]) or trace_id,
                    occurred_at=now,
                )
            )
    return entering.height, len(to_resolve)


def resolve_exception(
    session: Session,
    *,
    exception_id: int,
    resolution_code: str,
    note: str | None,
    actor: str,
    chain: dict[str, Any] | None = None,
    trace_id: str | None = None,
) -> ExceptionItem:
    """Resolve an open exception by hand; the one path is :func:`store.exceptions.resolve` (reason
    codes checked, ``exception.resolved`` audited in the same transaction)."""
    from reconciliation_pipeline.store import exceptions

    exceptions.resolve(
        session,
        exception_id=exception_id,
        code=resolution_code,
        note=note,
        by=actor,
        chain=chain,
        trace_id=trace_id,
    )
    item = session.get(ExceptionItem, exception_id)
    assert item is not None
    return item


# --------------------------------------------------------------------------- reads


def export_outcomes(session: Session) -> pl.DataFrame:
    """The outcome export: ``frames.OUTCOME_SCHEMA`` columns and dtypes, latest state per record,
    sorted by record, psp, source_file, source_row, transaction_id (nulls last)."""
    o = _table(Outcome).c
    cols = [o[name] for name in OUTCOME_SCHEMA]
    frames: list[pl.DataFrame] = []
    result = session.execute(select(*cols).execution_options(yield_per=50_000))
    for part in result.partitions():
        frames.append(pl.DataFrame([tuple(r) for r in part], schema=OUTCOME_SCHEMA, orient="row"))
    df = pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=OUTCOME_SCHEMA)
    return df.sort(["record", "psp", "source_file", "source_row", "transaction_id"], nulls_last=True)


def _row_dict(obj: Any) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}


def get_transaction(session: Session, transaction_id: str) -> dict[str, Any] | None:
    """One ledger transaction for the partner API, or ``None`` when neither booked nor reconciled.

    ``{"transaction": {...} | None, "outcome": {...} | None, "settlement_lines": [{..., "outcome":
    {...}}], "exceptions": [...]}``; the settlement lines are those sharing the outcome's match_id.
    """
    txn = session.get(Transaction, transaction_id)
    outcome = session.get(Outcome, ledger_key(transaction_id))
    if txn is None and outcome is None:
        return None
    lines: list[dict[str, Any]] = []
    if outcome is not None and outcome.match_id is not None:
        rows = session.execute(
            select(Outcome, SettlementLine)
            .outerjoin(SettlementLine, SettlementLine.record_key == Outcome.record_key)
            .where(Outcome.match_id == outcome.match_id, Outcome.record == "settlement")
            .order_by(Outcome.psp, Outcome.source_file, Outcome.source_row)
        ).all()
        for out_row, line in rows:
            item: dict[str, Any] = (
                _row_dict(line)
                if line is not None
                else {
                    "record_key": out_row.record_key,
                    "psp": out_row.psp,
                    "source_file": out_row.source_file,
                    "source_row": out_row.source_row,
                }
            )
            item["outcome"] = _row_dict(out_row)
            lines.append(item)
    exceptions = [
        _row_dict(x)
        for x in session.scalars(
            select(ExceptionItem)
            .where(ExceptionItem.record_key == ledger_key(transaction_id))
            .order_by(ExceptionItem.id)
        )
    ]
    return {
        "transaction": None if txn is None else _row_dict(txn),
        "outcome": None if outcome is None else _row_dict(outcome),
        "settlement_lines": lines,
        "exceptions": exceptions,
    }


__all__ = [
    "ApplyResult",
    "apply_outcomes",
    "audit_head",
    "export_outcomes",
    "get_transaction",
    "keys_digest",
    "ledger_key",
    "record_duplicate_file",
    "register_file",
    "resolve_exception",
    "settlement_key",
    "upsert_settlement_lines",
    "upsert_transactions",
]
