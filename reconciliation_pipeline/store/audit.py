"""The hash-chained audit trail.

Every event's ``hash`` is ``sha256(prev_hash + canonical_json(body))`` where ``body`` holds every
column except ``seq`` and ``hash`` (so ``prev_hash`` is hashed too), and ``prev_hash`` is the hash of
the event before it (64 zeros for the first). Changing, removing or re-ordering any stored event
breaks the recomputation or the link at that event, which :func:`verify_chain` reports.

Appends take a lock so the chain stays one line under concurrent writers: a transaction-scoped
advisory lock on PostgreSQL, the ``BEGIN IMMEDIATE`` write lock on SQLite (see ``db.make_engine``).
``seq`` values are assigned under that lock in chain order, and ``prev_hash`` is unique, so even a
writer that bypassed the lock could not fork the chain.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import decimal
import functools
import hashlib
import io
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import polars as pl
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    String,
    Text,
    cast,
    column,
    func,
    select,
    table,
    text,
)
from sqlalchemy.orm import Session

from reconciliation_pipeline.store.db import COPY_CHUNK, LineReader, bulk_insert, copy_csv
from reconciliation_pipeline.store.models import AuditEvent, UTCDateTime

_plh: Any
try:  # SHA-256 as a Polars expression (verification); hashlib per value without it
    import polars_hash as _plh
except ImportError:  # pragma: no cover - a dependency; kept optional for odd platforms
    _plh = None

GENESIS_HASH = "0" * 64
#: ``pg_advisory_xact_lock`` key of the audit chain.
AUDIT_LOCK_KEY = 7_020_240_102
#: Columns hashed, in the order they are stored (``seq`` and ``hash`` excluded).
BODY_COLUMNS = (
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
CHAIN_KEYS = ("run_id", "asset", "partition", "code_version", "rule_ids")
VERIFY_BATCH = 5_000
UTC = dt.UTC


# --------------------------------------------------------------------------- canonical JSON


def iso_utc(value: dt.datetime) -> str:
    """ISO 8601 UTC with microseconds and a ``Z`` (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset():
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=lambda v: json.dumps(v, sort_keys=True, default=_default))
    if isinstance(value, tuple):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / polars scalars
        return value.item()
    raise TypeError(f"audit: {type(value).__name__} is not JSON serialisable: {value!r}")


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default
)


_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


def _is_plain(value: Any) -> bool:
    """Only dicts with str keys, lists, str, int, bool and None (exact types): orjson writes these
    byte for byte as ``json.dumps`` does (a test compares them); floats and everything else do not."""
    kind = type(value)
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str or (type(v) not in _PLAIN_SCALARS and not _is_plain(v)):
                return False
        return True
    if kind is list:
        for v in value:  # noqa: SIM110 - a loop is faster than all() over a generator here
            if type(v) not in _PLAIN_SCALARS and not _is_plain(v):
                return False
        return True
    return kind in _PLAIN_SCALARS


def canonical_json(obj: Any) -> str:
    """The canonical text of ``obj``: sorted keys, no whitespace, UTF-8, dates ISO 8601 (UTC ``Z``).

    Integers stay integers (money is minor units); NaN and infinities are refused. Equal to
    ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=...)``;
    plain values (the common case) are written by orjson, which gives the same text several times
    faster.
    """
    if _is_plain(obj):
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode("utf-8")
        except orjson.JSONEncodeError:  # an int beyond 64 bits, nesting deeper than orjson's limit
            pass
    return _CANONICAL.encode(obj)


def to_json_value(obj: Any) -> Any:
    """``obj`` as the plain JSON value that is stored (and later re-hashed)."""
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return json.loads(canonical_json(obj))


def compute_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(body)).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- appending


@dataclasses.dataclass
class AuditEventIn:
    """An audit event to append. ``occurred_at`` defaults to now, ``event_id`` to a fresh uuid4."""

    actor: str
    action: str
    entity_type: str
    entity_id: str
    inputs: Any = None
    chain: Any = None
    outcome: Any = None
    trace_id: str | None = None
    occurred_at: dt.datetime | None = None
    event_id: str | None = None


@dataclasses.dataclass(frozen=True)
class AppendResult:
    count: int
    first_seq: int | None
    last_seq: int | None
    head_hash: str | None


def normalise_chain(chain: Mapping[str, Any] | None) -> dict[str, Any]:
    """The processing chain with every documented key present (missing ones ``None``)."""
    out: dict[str, Any] = {key: None for key in CHAIN_KEYS}
    if chain:
        out.update(chain)
    if out.get("rule_ids") is not None and not isinstance(out["rule_ids"], list):
        out["rule_ids"] = sorted(out["rule_ids"])
    return out


def lock_chain(session: Session) -> None:
    """Take the audit chain's lock for the rest of the session's transaction.

    PostgreSQL: a transaction-scoped advisory lock (re-entrant within the transaction). SQLite: the
    engine opens every transaction with ``BEGIN IMMEDIATE``, so the session already holds the
    database's write lock from its first statement. Service functions take the lock before they read
    what they compare against, so concurrent writers see each other's committed results.
    """
    if session.connection().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})


def lock_and_head(session: Session) -> tuple[int, str]:
    """Take the chain lock and return ``(last seq, last hash)`` (``(0, zeros)`` when empty)."""
    lock_chain(session)
    row = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    if row is None:
        return 0, GENESIS_HASH
    return int(row[0]), str(row[1])


def _advance_sequence(session: Session, last_seq: int) -> None:
    """Move the ``seq`` column's own sequence to ``last_seq`` (PostgreSQL).

    Appends number events themselves, under the chain lock (``max(seq) + 1 ...``), so numbers follow
    chain order without one ``nextval`` per event; the sequence is kept level for any other inserter.
    """
    if session.connection().dialect.name == "postgresql":
        session.execute(
            text("SELECT setval(pg_get_serial_sequence('audit_events', 'seq'), :v)"), {"v": last_seq}
        )


_encode_str = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses for str


def _body_text(  # noqa: PLR0917 - hot path, called once per event
    event_id: str,
    occurred_at: str,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    inputs: str | None,
    chain: str | None,
    outcome: str | None,
    trace_id: str | None,
    prev_hash: str,
) -> str:
    """``canonical_json(body)`` assembled from already canonical parts (keys in sorted order).

    Equal to :func:`canonical_json` of the body dict (a test checks it), without re-encoding the
    nested JSON values of every event.
    """
    s = _encode_str
    return (
        '{"action":'
        + s(action)
        + ',"actor":'
        + s(actor)
        + ',"chain":'
        + (chain or "null")
        + ',"entity_id":'
        + s(entity_id)
        + ',"entity_type":'
        + s(entity_type)
        + ',"event_id":'
        + s(event_id)
        + ',"inputs":'
        + (inputs or "null")
        + ',"occurred_at":'
        + s(occurred_at)
        + ',"outcome":'
        + (outcome or "null")
        + ',"prev_hash":'
        + s(prev_hash)
        + ',"trace_id":'
        + ("null" if trace_id is None else s(trace_id))
        + "}"
    )


def _sha(prev_hash: str, body_text: str) -> str:
    return hashlib.sha256((prev_hash + body_text).encode("utf-8")).hexdigest()


#: The audit table with its JSON columns as plain text: rows are inserted with the canonical text
#: already computed for the hash (PostgreSQL casts the text literal to jsonb on assignment).
_RAW = table(
    "audit_events",
    column("seq", BigInteger()),
    column("event_id", String()),
    column("occurred_at", UTCDateTime()),
    column("actor", String()),
    column("action", String()),
    column("entity_type", String()),
    column("entity_id", String()),
    column("inputs", Text()),
    column("chain", Text()),
    column("outcome", Text()),
    column("trace_id", String()),
    column("prev_hash", String()),
    column("hash", String()),
)


class _Chainer:
    """Turns events into stored rows, hashing each onto the one before (one pass, in order)."""

    def __init__(self, events: Sequence[AuditEventIn], first_seq: int, prev: str) -> None:
        self.events = events
        self.first_seq = first_seq
        self.head = prev
        self.now = dt.datetime.now(UTC)
        self._cache: dict[int, tuple[Any, str | None]] = {}  # id(obj) -> (obj, text): shared dicts
        self._random: list[str] = []

    def _new_event_id(self) -> str:
        """A random (version 4) UUID; random bytes are drawn for many events at once."""
        if not self._random:
            block = os.urandom(16 * 4096).hex()
            self._random = [block[i : i + 32] for i in range(0, len(block), 32)]
        h = self._random.pop()
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def _jtext(self, value: Any) -> str | None:
        if value is None:
            return None
        hit = self._cache.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        text_ = canonical_json(value)
        if isinstance(value, (dict, list)):
            self._cache[id(value)] = (value, text_)
        return text_

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """``(seq, event_id, occurred_at, occurred_iso, actor, action, entity_type, entity_id, inputs,
        chain, outcome, trace_id, prev_hash, hash)`` per event; ``self.head`` follows along."""
        prev = self.head
        last: tuple[dt.datetime | None, str] = (None, "")
        occurred_utc = self.now
        jtext = self._jtext
        for seq, ev in enumerate(self.events, start=self.first_seq):
            occurred = ev.occurred_at or self.now
            if occurred is not last[0]:
                aware = occurred if occurred.tzinfo is not None else occurred.replace(tzinfo=UTC)
                last = (occurred, iso_utc(aware))
                occurred_utc = aware.astimezone(UTC)
            event_id = ev.event_id or self._new_event_id()
            entity_id = str(ev.entity_id)
            inputs, chain, outcome = jtext(ev.inputs), jtext(ev.chain), jtext(ev.outcome)
            digest = _sha(
                prev,
                _body_text(
                    event_id,
                    last[1],
                    ev.actor,
                    ev.action,
                    ev.entity_type,
                    entity_id,
                    inputs,
                    chain,
                    outcome,
                    ev.trace_id,
                    prev,
                ),
            )
            yield (
                seq,
                event_id,
                occurred_utc,
                last[1],
                ev.actor,
                ev.action,
                ev.entity_type,
                entity_id,
                inputs,
                chain,
                outcome,
                ev.trace_id,
                prev,
                digest,
            )
            prev = digest
            self.head = digest


#: Every stored column, in order: the hashed body between ``seq`` and ``hash``.
ROW_COLUMNS = ("seq", *BODY_COLUMNS, "hash")
_COPY_SQL = f"COPY audit_events ({', '.join(ROW_COLUMNS)}) FROM STDIN"
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _copy_field(value: str | None) -> str:
    """One field in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return _COPY_SPECIAL.sub(lambda m: _COPY_ESCAPES[m.group(0)], value)
    return value


def _copy_json(value: str | None) -> str:
    """A canonical JSON text as a COPY field: it has no raw control characters, only backslashes."""
    if value is None:
        return "\\N"
    return value.replace("\\", "\\\\") if "\\" in value else value


def _copy_lines(rows: Iterator[tuple[Any, ...]]) -> Iterator[str]:
    f, j = _copy_field, _copy_json
    for seq, event_id, _occ, occ_iso, actor, action, etype, eid, inp, chn, out, trace, prv, digest in rows:
        yield (
            f"{seq}\t{f(event_id)}\t{occ_iso}\t{f(actor)}\t{f(action)}\t{f(etype)}\t{f(eid)}\t"
            f"{j(inp)}\t{j(chn)}\t{j(out)}\t{f(trace)}\t{prv}\t{digest}\n"
        )


def _copy_events(session: Session, chainer: _Chainer) -> None:
    dbapi = session.connection().connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.copy_expert(_COPY_SQL, LineReader(_copy_lines(chainer.rows())), size=COPY_CHUNK)
    finally:
        cursor.close()


def append_event_rows(session: Session, events: Sequence[AuditEventIn]) -> AppendResult:
    """Append ``events`` in order inside the session's transaction, without loading them back.

    The bulk path (a million events per call is fine); :func:`append_events` returns ORM objects.
    On PostgreSQL with psycopg2 the rows are streamed with ``COPY`` while they are being hashed.
    """
    if not events:
        return AppendResult(0, None, None, None)
    last_seq, prev = lock_and_head(session)
    chainer = _Chainer(events, last_seq + 1, prev)
    conn = session.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
        _copy_events(session, chainer)
    else:
        batch = [dict(zip(ROW_COLUMNS, (r[0], r[1], r[2], *r[4:]), strict=True)) for r in chainer.rows()]
        bulk_insert(session, _RAW, batch)
    last = last_seq + len(events)
    _advance_sequence(session, last)
    return AppendResult(len(events), last_seq + 1, last, chainer.head)


# --------------------------------------------------------------------------- appending a frame

#: An event frame (:func:`append_event_frame`): one row per event, in chain order. JSON columns hold
#: canonical JSON text (:func:`canonical_json`, or :func:`json_string` pieces); a null ``event_id``
#: gets a fresh uuid4, ``occurred_at`` is UTC.
EVENT_FRAME_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "occurred_at": pl.Datetime("us", "UTC"),
    "actor": pl.String(),
    "action": pl.String(),
    "entity_type": pl.String(),
    "entity_id": pl.String(),
    "inputs": pl.String(),
    "chain": pl.String(),
    "outcome": pl.String(),
    "trace_id": pl.String(),
}
#: Characters :func:`json.dumps` escapes in a string (``ensure_ascii=False``).
_JSON_ESCAPED = r'[\x00-\x1f"\\]'
#: Events hashed and sent to ``COPY`` per piece (the server stores a piece while the next is hashed).
FRAME_PIECE = 32_768


def json_string(values: pl.Series) -> pl.Series:
    """Each value as a JSON string literal, exactly as :func:`canonical_json` writes it (``null`` for
    a null). Plain values are quoted column-wise; the few that need escapes go through ``json``."""
    values = values.cast(pl.String)
    quoted = pl.select(pl.concat_str(pl.lit('"'), pl.lit(values), pl.lit('"'))).to_series()
    special = values.str.contains(_JSON_ESCAPED).fill_null(False)
    if special.any():
        where = special.arg_true()
        quoted = quoted.scatter(where, [_encode_str(v) for v in values.gather(where).to_list()])
    return quoted.fill_null("null").alias(values.name)


def json_strings(columns: Mapping[str, pl.Series]) -> dict[str, pl.Series]:
    """:func:`json_string` of several columns of the same length. One pass over all of them finds
    whether any value needs an escape; when none does (the common case) every column is just quoted."""
    cols = {name: values.cast(pl.String) for name, values in columns.items()}
    if not cols:
        return {}
    frame = pl.DataFrame(list(cols.values()), schema=list(cols))
    joined = pl.concat_str([pl.col(n).fill_null("") for n in cols])
    if frame.select(joined.str.contains(_JSON_ESCAPED).any()).item():
        return {name: json_string(values).alias(name) for name, values in cols.items()}
    quoted = frame.select(
        pl.concat_str(pl.lit('"'), pl.col(n), pl.lit('"')).fill_null(pl.lit("null")).alias(n) for n in cols
    )
    return {name: quoted[name] for name in cols}


def json_object(fields: Mapping[str, pl.Series | str]) -> pl.Series:
    """Canonical JSON text of one object per row: ``fields`` maps each key to its values' JSON text
    (a Series, e.g. from :func:`json_string`, or one text for every row); keys are written sorted."""
    parts: list[Any] = []
    for i, key in enumerate(sorted(fields)):
        parts.append(pl.lit(("{" if i == 0 else ",") + _encode_str(key) + ":"))
        value = fields[key]
        parts.append(pl.lit(value) if isinstance(value, pl.Series) else pl.lit(value, pl.String))
    parts.append(pl.lit("}"))
    return pl.select(pl.concat_str(parts)).to_series()


def events_frame(events: Sequence[AuditEventIn]) -> pl.DataFrame:
    """``events`` as an event frame (their JSON values as canonical text)."""
    now = dt.datetime.now(UTC)
    texts = _Chainer([], 0, GENESIS_HASH)._jtext  # canonical text, shared values encoded once
    rows = []
    for ev in events:
        occurred = ev.occurred_at or now
        rows.append(
            (
                ev.event_id,
                occurred if occurred.tzinfo is not None else occurred.replace(tzinfo=UTC),
                ev.actor,
                ev.action,
                ev.entity_type,
                str(ev.entity_id),
                texts(ev.inputs),
                texts(ev.chain),
                texts(ev.outcome),
                ev.trace_id,
            )
        )
    return pl.DataFrame(rows, schema=EVENT_FRAME_SCHEMA, orient="row")


def _fresh_event_ids(n: int) -> pl.Series:
    """``n`` random (version 4) UUIDs, made column-wise from one ``os.urandom`` block."""
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = pl.Series("h", np.frombuffer(raw.tobytes().hex().encode("ascii"), dtype="S32")).cast(pl.String)
    h = pl.col("h")
    pieces = [
        h.str.slice(0, 8),
        h.str.slice(8, 4),
        h.str.slice(12, 4),
        h.str.slice(16, 4),
        h.str.slice(20, 12),
    ]
    return pl.DataFrame([hexed]).select(pl.concat_str(pieces, separator="-").alias("event_id")).to_series()


_HEX64 = re.compile(r"[0-9a-f]{64}")
#: :func:`iso_utc` as a Polars format.
_ISO_FORMAT = "%Y-%m-%dT%H:%M:%S%.6fZ"


@dataclasses.dataclass(frozen=True)
class EventPiece:
    """Hashed events ready to store: ``rows`` (columns :data:`ROW_COLUMNS`, ``occurred_at`` as ISO
    text) and, for ``COPY``, the same rows as CSV."""

    rows: pl.DataFrame
    csv: bytes | None


def _body_up_to_prev_hash(js: Mapping[str, pl.Series], stored: pl.DataFrame) -> list[pl.Expr]:
    """The pieces of ``canonical_json(body)`` up to the value of ``prev_hash`` (keys sorted), per row:
    ``js`` holds the string fields as JSON text (:func:`json_strings`), ``stored`` the JSON columns as
    their canonical text. Shared by hashing (:func:`hash_event_frame`) and verification."""
    return [
        pl.lit('{"action":'), pl.lit(js["action"]),
        pl.lit(',"actor":'), pl.lit(js["actor"]),
        pl.lit(',"chain":'), pl.lit(stored["chain"].fill_null("null")),
        pl.lit(',"entity_id":'), pl.lit(js["entity_id"]),
        pl.lit(',"entity_type":'), pl.lit(js["entity_type"]),
        pl.lit(',"event_id":'), pl.lit(js["event_id"]),
        pl.lit(',"inputs":'), pl.lit(stored["inputs"].fill_null("null")),
        pl.lit(',"occurred_at":'), pl.lit(js["occurred_at"]),
        pl.lit(',"outcome":'), pl.lit(stored["outcome"].fill_null("null")),
        pl.lit(',"prev_hash":'),
    ]  # fmt: skip


def hash_event_frame(
    frame: pl.DataFrame, first_seq: int, head: list[str], *, csv: bool
) -> Iterator[EventPiece]:
    """The events of an event frame numbered from ``first_seq`` and hashed onto ``head[0]``, piece by
    piece; ``head[0]`` follows the chain's head (the hash of the last event hashed so far).

    Bodies are assembled column-wise (the same text as :func:`canonical_json` of the body, a test
    compares them); only the chain itself runs one event at a time.
    """
    frame = frame.select(pl.col(c).cast(t) for c, t in EVENT_FRAME_SCHEMA.items())
    sha = hashlib.sha256
    for start in range(0, frame.height, FRAME_PIECE):
        part = frame.slice(start, FRAME_PIECE)
        ids = part["event_id"]
        if ids.null_count():
            ids = ids.fill_null(_fresh_event_ids(part.height))
        occurred = part["occurred_at"].dt.strftime(_ISO_FORMAT)
        js = json_strings(
            {
                "action": part["action"],
                "actor": part["actor"],
                "entity_id": part["entity_id"],
                "entity_type": part["entity_type"],
                "event_id": ids,
                "occurred_at": occurred,
                "trace_id": part["trace_id"],
            }
        )
        # canonical_json(body), cut at prev_hash's value (a hex digest: no escapes):
        # hash input = prev + before + prev + after
        before = pl.select(pl.concat_str([*_body_up_to_prev_hash(js, part), pl.lit('"')])).to_series()
        after = pl.select(pl.concat_str(pl.lit('","trace_id":'), pl.lit(js["trace_id"]), pl.lit("}")))
        first_prev = prev = head[0]
        hashes: list[str] = []
        append = hashes.append
        pairs = zip(
            before.cast(pl.Binary).to_list(), after.to_series().cast(pl.Binary).to_list(), strict=True
        )
        if not _HEX64.fullmatch(prev):  # a head that is not a digest is written as JSON writes it
            a, b = next(pairs)
            body = a[:-1] + _encode_str(prev).encode("utf-8") + b[1:]
            prev = sha(prev.encode("utf-8") + body).hexdigest()
            append(prev)
        for a, b in pairs:
            p = prev.encode("ascii")
            prev = sha(p + a + p + b).hexdigest()
            append(prev)
        head[0] = prev
        rows = pl.DataFrame(
            {
                "seq": pl.int_range(first_seq + start, first_seq + start + part.height, eager=True),
                "event_id": ids,
                "occurred_at": occurred,
                "actor": part["actor"],
                "action": part["action"],
                "entity_type": part["entity_type"],
                "entity_id": part["entity_id"],
                "inputs": part["inputs"],
                "chain": part["chain"],
                "outcome": part["outcome"],
                "trace_id": part["trace_id"],
                "prev_hash": pl.Series([first_prev, *hashes[:-1]], dtype=pl.String),
                "hash": pl.Series(hashes, dtype=pl.String),
            }
        )
        data = None
        if csv:
            buf = io.BytesIO()
            rows.write_csv(buf, include_header=False)
            data = buf.getvalue()
        yield EventPiece(rows, data)


def uses_copy(session: Session) -> bool:
    """Whether appends go through ``COPY`` (PostgreSQL with psycopg2)."""
    conn = session.connection()
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2"


def store_event_pieces(session: Session, pieces: Iterable[EventPiece], last_seq: int) -> None:
    """Store hashed pieces (:func:`hash_event_frame`) under the chain's lock; ``last_seq`` is the
    ``seq`` of the last event stored by them. ``COPY`` streams each piece as soon as it is made."""
    if uses_copy(session):
        copy_csv(session.connection(), "audit_events", ROW_COLUMNS, (p.csv or b"" for p in pieces))
    else:
        for piece in pieces:
            rows = piece.rows.with_columns(
                pl.col("occurred_at").str.to_datetime(_ISO_FORMAT, time_unit="us", time_zone="UTC")
            )
            bulk_insert(session, _RAW, rows.to_dicts())
    _advance_sequence(session, last_seq)


def append_event_frame(session: Session, frame: pl.DataFrame) -> AppendResult:
    """Append the events of an event frame (:data:`EVENT_FRAME_SCHEMA`) in order, inside the session's
    transaction: the bulk path of the publish step. PostgreSQL (psycopg2): ``COPY ... (FORMAT csv)``,
    a piece is stored while the next one is hashed. Hashes equal those of :func:`append_event_rows`.
    """
    if frame.height == 0:
        return AppendResult(0, None, None, None)
    last_seq, prev = lock_and_head(session)
    head = [prev]
    last = last_seq + frame.height
    store_event_pieces(session, hash_event_frame(frame, last_seq + 1, head, csv=uses_copy(session)), last)
    return AppendResult(frame.height, last_seq + 1, last, head[0])


def append_events(session: Session, events: Sequence[AuditEventIn]) -> list[AuditEvent]:
    """Append ``events`` in order inside the caller's transaction and return them as stored."""
    result = append_event_rows(session, events)
    if result.count == 0:
        return []
    return list(
        session.scalars(
            select(AuditEvent)
            .where(AuditEvent.seq >= result.first_seq, AuditEvent.seq <= result.last_seq)
            .order_by(AuditEvent.seq)
        )
    )


def append_event(session: Session, **fields: Any) -> AuditEvent:
    """Append one event (keyword arguments of :class:`AuditEventIn`)."""
    return append_events(session, [AuditEventIn(**fields)])[0]


def audit_head(session: Session) -> tuple[int, str] | None:
    """``(seq, hash)`` of the newest event, or ``None`` for an empty trail."""
    row = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    return None if row is None else (int(row[0]), str(row[1]))


# --------------------------------------------------------------------------- verifying


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    head_hash: str | None
    first_bad_seq: int | None = None
    reason: str | None = None


#: Columns holding JSON, read as text: the exact canonical text that was hashed.
_JSON_COLUMNS = ("inputs", "chain", "outcome")


def stored_columns(names: Sequence[str] = ROW_COLUMNS) -> list[Any]:
    """SELECT columns of ``audit_events`` by name, JSON ones as their stored text (hashing input)."""
    return [
        cast(getattr(AuditEvent, n), Text) if n in _JSON_COLUMNS else getattr(AuditEvent, n) for n in names
    ]


_VERIFY_COLUMNS = stored_columns(("seq", "hash", *BODY_COLUMNS))


def _recanon(stored: str | None) -> str | None:
    return None if stored is None else canonical_json(json.loads(stored))


def _batches(conn: Connection | Session, batch_size: int, after: int | None) -> Iterator[list[Any]]:
    last = after
    while True:
        stmt = select(*_VERIFY_COLUMNS).order_by(AuditEvent.seq).limit(batch_size)
        if last is not None:
            stmt = stmt.where(AuditEvent.seq > last)
        rows = list(conn.execute(stmt))
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _row_hash(row: Sequence[Any], *, recanonicalise: bool) -> str:
    """The hash an event row should have: from its stored JSON text, or re-canonicalised text."""
    _seq, _hash, event_id, occurred_at, actor, action, etype, eid, inp, chn, out, trace, prv = row
    conv = _recanon if recanonicalise else (lambda v: v)
    return _sha(
        prv,
        _body_text(
            event_id,
            iso_utc(occurred_at),
            actor,
            action,
            etype,
            eid,
            conv(inp),
            conv(chn),
            conv(out),
            trace,
            prv,
        ),
    )


def _unlinked(seq: Any, prv: str, prev: str) -> str:
    return (
        f"event seq {seq}: prev_hash {prv} does not link to the hash of the event before it "
        f"({prev}); an event was removed, inserted or re-ordered"
    )


def _altered(seq: Any, stored_hash: str, recomputed: str) -> str:
    return (
        f"event seq {seq}: stored hash {stored_hash} but its content hashes to {recomputed}; "
        "the event was altered"
    )


def _check_row(row: Sequence[Any], prev: str) -> str | None:
    """``None`` when the row links to ``prev`` and its content hashes to its stored hash, else why not.

    The stored JSON text is hashed as is (it is the canonical text written); text that is not
    canonical (stored before migration 0002 on PostgreSQL) is re-canonicalised before it is judged.
    """
    seq, stored_hash, prv = row[0], row[1], row[12]
    if prv != prev:
        return _unlinked(seq, prv, prev)
    try:
        recomputed = _row_hash(row, recanonicalise=False)
        if recomputed != stored_hash:
            recomputed = _row_hash(row, recanonicalise=True)
    except (TypeError, ValueError) as exc:
        return f"event seq {seq}: unreadable content ({exc})"
    if recomputed != stored_hash:
        return _altered(seq, stored_hash, recomputed)
    return None


def _verify_python(conn: Connection | Session, batch_size: int) -> VerifyResult:
    prev = GENESIS_HASH
    count = 0
    head: str | None = None
    for rows in _batches(conn, batch_size, None):
        for row in rows:
            problem = _check_row(row, prev)
            if problem is not None:
                return VerifyResult(False, count, head, int(row[0]), problem)
            prev = head = row[1]
            count += 1
    return VerifyResult(True, count, head)


#: ``seq`` values per ``COPY`` range of the column-wise Python verification (PostgreSQL).
VERIFY_CHUNK = 65_536
_COPY_OUT_COLUMNS = (
    "seq, hash, event_id, occurred_at AT TIME ZONE 'UTC', actor, action, entity_type, entity_id,"
    " inputs, chain, outcome, trace_id, prev_hash"
)
#: The stored events of a range of ``seq`` in ``COPY``'s text format (cheaper for the server to write and
#: for Polars to read than CSV with every value quoted), in the table's order (sorted here when it is
#: not ``seq`` order): NULL is ``\N``, ``''`` an empty field; a backslash, tab, newline, carriage return,
#: backspace, form feed or vertical tab in a value comes escaped (:func:`_copy_unescape`).
#: ``occurred_at`` as UTC text (``DateStyle`` ISO), JSON columns as stored.
_COPY_OUT_RANGE = (
    f"COPY (SELECT {_COPY_OUT_COLUMNS} FROM audit_events WHERE seq > {{after}} AND seq <= {{upto}}) TO STDOUT"
)
_COPY_OUT_SCHEMA = {"seq": pl.Int64(), **{n: pl.String() for n in ("hash", *BODY_COLUMNS)}}
#: ``COPY`` text escapes after ``\\`` (which is read first, as a NUL: no PostgreSQL text holds one).
_COPY_TEXT_ESCAPES = (
    ("\\b", "\b"),
    ("\\f", "\f"),
    ("\\n", "\n"),
    ("\\r", "\r"),
    ("\\t", "\t"),
    ("\\v", "\v"),
)


def _copy_unescape(column: pl.Expr) -> pl.Expr:
    """A column read from ``COPY``'s text format as the stored values: every backslash starts a
    two-character escape, ``\\\\`` among them, so reading ``\\\\`` first (left to right) pairs them as
    the server wrote them."""
    out = column.str.replace_all("\\\\", "\x00", literal=True)
    for escaped, char in _COPY_TEXT_ESCAPES:
        out = out.str.replace_all(escaped, char, literal=True)
    return out.str.replace_all("\x00", "\\", literal=True)


def _read_copy_text(data: bytes) -> pl.DataFrame:
    """Rows of ``COPY ... TO STDOUT`` (text format) of :data:`_COPY_OUT_COLUMNS` as a frame of the
    stored values."""
    if not data:
        return pl.DataFrame(schema=_COPY_OUT_SCHEMA)
    rows = pl.read_csv(
        data,
        has_header=False,
        separator="\t",
        quote_char=None,
        schema=_COPY_OUT_SCHEMA,
        null_values="\\N",
        empty_string_is_null=False,
    )
    strings = [n for n in _COPY_OUT_SCHEMA if n != "seq"]
    escaped = rows.select(
        pl.any_horizontal(pl.col(n).str.contains("\\", literal=True).any() for n in strings)
    )
    if escaped.item():
        rows = rows.with_columns(
            pl.when(pl.col(n).str.contains("\\", literal=True))
            .then(_copy_unescape(pl.col(n)))
            .otherwise(pl.col(n))
            for n in strings
        )
    return rows


def _sha256_hex(texts: pl.Series) -> pl.Series:
    """``sha256(text).hexdigest()`` of every value (null for null), computed by the Polars plugin
    ``polars-hash`` (compiled, no Python call per value); ``hashlib`` per value if it cannot load."""
    if _plh is not None:
        return texts.to_frame("t").select(_plh.col("t").chash.sha2_256()).to_series()
    sha = hashlib.sha256
    return pl.Series(
        [None if x is None else sha(x).hexdigest() for x in texts.cast(pl.Binary).to_list()], dtype=pl.String
    )


#: The string columns of the body (``occurred_at`` is written here and needs no escape).
_BODY_STRINGS = ("action", "actor", "entity_id", "entity_type", "event_id", "prev_hash", "trace_id")


def _quoted(values: pl.Series) -> pl.Series:
    """Each value between double quotes as it is (``null`` for a null): its JSON text when it needs no
    escape."""
    return pl.select(pl.concat_str(pl.lit('"'), pl.lit(values), pl.lit('"')).fill_null("null")).to_series()


def _recomputed_hashes(rows: pl.DataFrame, *, exact: bool = False) -> pl.Series:
    """``sha256(prev_hash + canonical_json(body))`` of every row, the body assembled column-wise from
    the stored columns (JSON columns as their stored text) by the builder the append path uses; null
    where ``prev_hash`` is null (the row is judged again).

    ``exact``: strings are written as JSON text by :func:`json_strings`. Otherwise each string is only
    quoted (:func:`_quoted`), which is its JSON text unless it holds a ``"``, a ``\\`` or a control
    character: the caller takes such a hash only for a row without ``"`` and ``\\`` whose hash matches
    the stored one (a stored event's canonical text never holds a raw control character, so a match
    rules those out).
    """
    t = pl.col("occurred_at")  # "YYYY-MM-DD HH:MM:SS[.f]" in UTC
    occurred = rows.select(
        pl.concat_str(
            t.str.slice(0, 10), pl.lit("T"), t.str.slice(11, 8), pl.lit("."),
            t.str.slice(20).str.pad_end(6, "0"), pl.lit("Z"),
        )
    ).to_series()  # fmt: skip
    strings = {name: rows[name] for name in _BODY_STRINGS}
    if exact:
        js = json_strings({**strings, "occurred_at": occurred})
    else:
        js = {name: _quoted(values) for name, values in {**strings, "occurred_at": occurred}.items()}
    texts = pl.select(
        pl.concat_str(
            [
                pl.lit(rows["prev_hash"]),
                *_body_up_to_prev_hash(js, rows),
                pl.lit(js["prev_hash"]),
                pl.lit(',"trace_id":'),
                pl.lit(js["trace_id"]),
                pl.lit("}"),
            ]
        )
    ).to_series()
    return _sha256_hex(texts)


def _bad_hashes(rows: pl.DataFrame) -> pl.Series:
    """Whether each row's content does not hash to its stored hash (or cannot be hashed): hashed with
    plain quotes first (:func:`_recomputed_hashes`), the rows that do not pass that way again exactly."""
    plain = rows.select(
        ~pl.any_horizontal(pl.col(n).str.contains_any(['"', "\\"]).fill_null(False) for n in _BODY_STRINGS)
    ).to_series()
    bad = (_recomputed_hashes(rows) != rows["hash"]).fill_null(True) | ~plain
    if bad.any():
        where = bad.arg_true()
        subset = rows.filter(bad)
        again = (_recomputed_hashes(subset, exact=True) != subset["hash"]).fill_null(True)
        bad = bad.scatter(where, again)
    return bad


def _fetch_range(dbapi: Any, after: int, upto: int) -> bytes:
    """The stored events with ``after < seq <= upto`` in ``COPY``'s text format (:data:`_COPY_OUT_RANGE`)."""
    buf = io.BytesIO()
    cursor = dbapi.cursor()
    try:
        cursor.copy_expert(_COPY_OUT_RANGE.format(after=int(after), upto=int(upto)), buf)
    finally:
        cursor.close()
    return buf.getvalue()


def _checked_range(fetched: Future[bytes]) -> pl.DataFrame:
    """``seq``, ``hash``, ``prev_hash`` of the fetched events in ``seq`` order, with ``bad_hash``: their
    content does not hash to the stored hash (or could not be hashed)."""
    rows = _read_copy_text(fetched.result())
    if not rows["seq"].is_sorted():  # rows come in the table's order, which is seq order when untouched
        rows = rows.sort("seq")
    return rows.select("seq", "hash", "prev_hash").with_columns(bad_hash=_bad_hashes(rows))


def _scalar(conn: Connection, stmt: Any) -> Any:
    return conn.execute(stmt).scalar()


def _one(conn: Connection, stmt: Any) -> Any:
    return conn.execute(stmt).one()


def _sql_scalar(conn: Connection, sql: str, params: Mapping[str, Any]) -> Any:
    return conn.exec_driver_sql(sql, dict(params)).scalar()


def _verify_python_columnwise(conns: Sequence[Connection]) -> VerifyResult:
    """The independent check on PostgreSQL, column-wise: events are fetched with ``COPY`` (text
    format) by ranges of ``seq`` over ``conns`` in turn (each connection fetches the range after next
    while the others are read), bodies assembled by Polars and hashed by ``polars-hash`` in worker
    threads; here the chunks are taken in ``seq`` order and every ``prev_hash`` is compared with the
    hash before it, across chunk boundaries too. Several connections should share one snapshot
    (:func:`snapshot_pair`).

    A row whose recomputed hash or link does not match is judged again row by row with
    :func:`_check_row` (stored JSON text that is not canonical but intact passes there), so the result
    and the reason are those of the row-by-row walk.
    """
    first = conns[0]
    dbapis = []
    for conn in conns:
        conn.exec_driver_sql("SET LOCAL DateStyle = 'ISO'")
        dbapis.append(conn.connection.dbapi_connection)
    lo, hi = first.execute(select(func.min(AuditEvent.seq), func.max(AuditEvent.seq))).one()
    if lo is None:
        return VerifyResult(True, 0, None)
    lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"audit-fetch-{i}") for i in range(len(conns))]
    workers = ThreadPoolExecutor(2, thread_name_prefix="audit-hash")
    pending: collections.deque[tuple[int, Future[pl.DataFrame]]] = collections.deque()
    cursor = [int(lo) - 1, 0]  # the next range starts after cursor[0]; cursor[1] ranges submitted

    def submit() -> None:
        after = cursor[0]
        if after >= hi:
            return
        upto = min(after + VERIFY_CHUNK, int(hi))
        lane = cursor[1] % len(lanes)
        fetched = lanes[lane].submit(_fetch_range, dbapis[lane], after, upto)
        pending.append((upto, workers.submit(_checked_range, fetched)))
        cursor[0], cursor[1] = upto, cursor[1] + 1

    def on_first(fn: Callable[[], Any]) -> Any:
        """``fn`` on the first connection, once its queued fetches are done."""
        return lanes[0].submit(fn).result()

    prev = GENESIS_HASH
    count = 0
    head: str | None = None
    try:
        for _ in range(2 * len(lanes)):
            submit()
        while pending:
            upto, checked = pending.popleft()
            rows = checked.result()
            if rows.height == 0:  # a gap in seq: go on from the next stored event
                nxt = on_first(
                    functools.partial(
                        _scalar, first, select(func.min(AuditEvent.seq)).where(AuditEvent.seq > upto)
                    )
                )
                if nxt is not None and int(nxt) - 1 > cursor[0]:
                    cursor[0] = int(nxt) - 1
                submit()
                continue
            submit()
            stored = rows["hash"]
            expected = stored.shift(1).scatter(0, prev)
            suspect = rows["bad_hash"] | (rows["prev_hash"] != expected).fill_null(True)
            for i in suspect.arg_true().to_list():
                seq = int(rows["seq"][i])
                before = prev if i == 0 else str(stored[i - 1])
                row = on_first(
                    functools.partial(_one, first, select(*_VERIFY_COLUMNS).where(AuditEvent.seq == seq))
                )
                problem = _check_row(row, before)
                if problem is not None:
                    return VerifyResult(False, count + i, None if count + i == 0 else before, seq, problem)
            prev = head = str(stored[-1])
            count += rows.height
    finally:
        for pool in (*lanes, workers):
            pool.shutdown(wait=True, cancel_futures=True)
    return VerifyResult(True, count, head)


def _verify_python_concurrent(engine: Engine) -> VerifyResult:
    """:func:`_verify_python_columnwise` over two connections in one snapshot (:func:`snapshot_pair`)."""
    with snapshot_pair(engine) as conns:
        return _verify_python_columnwise(conns)


#: The canonical body text of an event built by PostgreSQL itself (``to_json(text)`` escapes strings
#: exactly as Python's ``json`` with ``ensure_ascii=False``; ``json`` columns return their stored text).
_PG_BODY = """'{"action":' || to_json(action)::text
    || ',"actor":' || to_json(actor)::text
    || ',"chain":' || coalesce(chain::text, 'null')
    || ',"entity_id":' || to_json(entity_id)::text
    || ',"entity_type":' || to_json(entity_type)::text
    || ',"event_id":' || to_json(event_id)::text
    || ',"inputs":' || coalesce(inputs::text, 'null')
    || ',"occurred_at":"' || to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || 'Z"'
    || ',"outcome":' || coalesce(outcome::text, 'null')
    || ',"prev_hash":' || to_json(prev_hash)::text
    || ',"trace_id":' || coalesce(to_json(trace_id)::text, 'null')
    || '}'"""
#: The seven string columns of the body, joined: when they hold no ``"`` and no ``\``, quoting each as
#: ``"value"`` gives exactly its JSON text if the result hashes to the stored hash (the canonical text of
#: a stored event never holds a raw control character, so a matching hash rules those out), and a value
#: without either character cannot pose as the JSON text of another value. Every other row is built
#: with ``to_json`` (:data:`_PG_BODY`), which costs about twice as much.
_PG_STRINGS = (
    "(action || actor || entity_id || entity_type || event_id || prev_hash || coalesce(trace_id, ''))"
)
_PG_BODY_QUOTED = """'{"action":"' || action
    || '","actor":"' || actor
    || '","chain":' || coalesce(chain::text, 'null')
    || ',"entity_id":"' || entity_id
    || '","entity_type":"' || entity_type
    || '","event_id":"' || event_id
    || '","inputs":' || coalesce(inputs::text, 'null')
    || ',"occurred_at":"' || to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
    || 'Z","outcome":' || coalesce(outcome::text, 'null')
    || ',"prev_hash":"' || prev_hash
    || '","trace_id":' || coalesce('"' || trace_id || '"', 'null')
    || '}'"""
_PG_BODY_FAST = f"""CASE WHEN strpos({_PG_STRINGS}, '"') = 0 AND strpos({_PG_STRINGS}, '\\') = 0
    THEN {_PG_BODY_QUOTED} ELSE {_PG_BODY} END"""
#: The first event whose content does not hash to its stored hash, and how many events were scanned: a
#: plain filtered aggregate, so PostgreSQL can spread it over parallel workers (``seq + 0``: not the
#: index's min/max shortcut, which would walk the index serially).
_PG_BAD_HASH = f"""
SELECT min(seq + 0) FILTER (
    WHERE encode(sha256(convert_to(prev_hash || {_PG_BODY_FAST}, 'UTF8')), 'hex') IS DISTINCT FROM hash
), count(*)
FROM audit_events WHERE seq > %(after)s
"""
#: The first event whose prev_hash is not the hash of the event before it (an ordered index scan).
_PG_BAD_LINK = """
SELECT min(seq) FROM (
    SELECT seq, prev_hash, lag(hash, 1, %(start_prev)s) OVER (ORDER BY seq) AS expected
    FROM audit_events WHERE seq > %(after)s
) AS c
WHERE prev_hash IS DISTINCT FROM expected
"""


def _server_scans(
    conn: Connection, links: Connection | None, pool: ThreadPoolExecutor | None
) -> VerifyResult:
    """The hash scan on ``conn`` and the link scan on ``links`` (another connection in the same
    snapshot, run at the same time in ``pool``) or on ``conn`` after it.

    The first suspect is judged again here with :func:`_check_row`: a row whose stored JSON text is
    not canonical (written before migration 0002) but whose content is intact passes, and the scans
    resume after it.
    """
    # favour a parallel plan for the hash scan (built-in functions only: parallel safe)
    conn.exec_driver_sql("SET LOCAL parallel_setup_cost = 0")
    conn.exec_driver_sql("SET LOCAL parallel_tuple_cost = 0")
    link_conn = conn if links is None else links
    link_conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")  # the link scan's sort stays in memory
    after, start_prev = -(2**62), GENESIS_HASH
    total: int | None = None
    while True:
        params = {"after": after, "start_prev": start_prev}
        if pool is not None:
            link_future = pool.submit(_sql_scalar, link_conn, _PG_BAD_LINK, params)
        bad_hash, scanned = conn.exec_driver_sql(_PG_BAD_HASH, params).one()
        bad_link = (
            link_future.result()
            if pool is not None
            else link_conn.exec_driver_sql(_PG_BAD_LINK, params).scalar()
        )
        if total is None:
            total = int(scanned)
        found = [int(x) for x in (bad_hash, bad_link) if x is not None]
        if not found:
            break
        seq = min(found)
        before = conn.execute(
            select(AuditEvent.hash).where(AuditEvent.seq < seq).order_by(AuditEvent.seq.desc()).limit(1)
        ).scalar()
        expected_prev = str(before) if before is not None else GENESIS_HASH
        row = conn.execute(select(*_VERIFY_COLUMNS).where(AuditEvent.seq == seq)).one()
        problem = _check_row(row, expected_prev)
        if problem is not None:
            count = conn.execute(select(func.count()).where(AuditEvent.seq < seq)).scalar_one()
            return VerifyResult(False, int(count), None if before is None else str(before), seq, problem)
        after, start_prev = seq, str(row[1])
    head_row = conn.execute(select(AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)).first()
    return VerifyResult(True, total, None if head_row is None else str(head_row[0]))


def _verify_server(conn: Connection) -> VerifyResult:
    """PostgreSQL recomputes every hash (one parallel scan) and every link (one ordered scan) on
    ``conn``, one scan after the other."""
    return _server_scans(conn, None, None)


def _verify_server_concurrent(engine: Engine) -> VerifyResult:
    """:func:`_verify_server` with the link scan on a second connection, at the same time as the hash
    scan: both read one snapshot (exported by the first, imported by the second), so they check the
    same chain."""
    with (
        snapshot_pair(engine) as (conn, links),
        ThreadPoolExecutor(1, thread_name_prefix="audit-links") as pool,
    ):
        return _server_scans(conn, links, pool)


@contextlib.contextmanager
def snapshot_pair(engine: Engine) -> Iterator[tuple[Connection, Connection]]:
    """Two read-only ``REPEATABLE READ`` connections of ``engine`` (PostgreSQL) in one transaction
    snapshot: the first exports it (``pg_export_snapshot``), the second imports it (``SET TRANSACTION
    SNAPSHOT``), so queries on either see exactly the same rows."""
    with engine.connect() as first_, engine.connect() as second_:
        first = first_.execution_options(isolation_level="REPEATABLE READ")
        second = second_.execution_options(isolation_level="REPEATABLE READ")
        with first.begin():
            first.exec_driver_sql("SET TRANSACTION READ ONLY")
            snapshot = first.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
            with second.begin():
                second.exec_driver_sql("SET TRANSACTION SNAPSHOT %(s)s", {"s": snapshot})
                second.exec_driver_sql("SET TRANSACTION READ ONLY")
                yield first, second


def verify_chain(
    session_or_engine: Session | Engine | Connection,
    *,
    batch_size: int = VERIFY_BATCH,
    method: str = "auto",
) -> VerifyResult:
    """Walk the whole chain in ``seq`` order and report the first bad event.

    ``method``: ``"server"`` has PostgreSQL recompute every hash (one scan, no rows leave the
    server); ``"python"`` fetches the events in batches and recomputes them here (any backend; the
    independent check); ``"auto"`` is ``server`` on PostgreSQL and ``python`` elsewhere.

    Given an engine on PostgreSQL, both methods work over two read-only connections in one snapshot
    (:func:`snapshot_pair`): server-side, the link scan runs beside the hash scan; in Python, ranges of
    ``seq`` are fetched over both. Given a connection or a session, that connection is used alone.
    """
    if method not in ("auto", "server", "python"):
        raise ValueError(f"verify_chain: method must be auto, server or python, not {method!r}")
    if isinstance(session_or_engine, Engine):
        engine = session_or_engine
        if engine.dialect.name == "postgresql" and method in ("auto", "server"):
            return _verify_server_concurrent(engine)
        if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg2":
            return _verify_python_concurrent(engine)
        with engine.connect() as conn:
            return _verify_on(conn, batch_size, method)
    conn_ = session_or_engine.connection() if isinstance(session_or_engine, Session) else session_or_engine
    return _verify_on(conn_, batch_size, method)


def _verify_on(conn: Connection, batch_size: int, method: str) -> VerifyResult:
    server = conn.dialect.name == "postgresql" and method in ("auto", "server")
    if method == "server" and not server:
        raise ValueError(f"verify_chain: method='server' needs PostgreSQL, not {conn.dialect.name}")
    if server:
        return _verify_server(conn)
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
        return _verify_python_columnwise([conn])
    return _verify_python(conn, batch_size)


def count_events(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(AuditEvent)).scalar_one())


__all__ = [
    "AUDIT_LOCK_KEY",
    "GENESIS_HASH",
    "AppendResult",
    "AuditEventIn",
    "VerifyResult",
    "append_event",
    "append_event_frame",
    "append_event_rows",
    "append_events",
    "audit_head",
    "canonical_json",
    "compute_hash",
    "count_events",
    "events_frame",
    "hash_event_frame",
    "json_object",
    "json_string",
    "json_strings",
    "lock_and_head",
    "lock_chain",
    "normalise_chain",
    "store_event_pieces",
    "uses_copy",
    "verify_chain",
]
