"""A regulator's extract of the audit trail, with a manifest that lets them check it alone.

:func:`export_audit` writes every event of a contiguous ``seq`` range covering a period (the first to
the last event that occurred in it, UTC dates inclusive) as JSON lines, CSV or Parquet, and next to it
``<file>.manifest.json``: count, first and last seq and hash, the ``prev_hash`` the extract starts
from, the SHA-256 of the file, the result of verifying the whole chain at export time, and the chain's
head at that moment, which is also appended to the anchors file. :func:`verify_extract` recomputes
every hash and link of an extract from the file alone and compares it with its manifest.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import Engine, func, select

from reconciliation_pipeline.store.anchors import anchor_head
from reconciliation_pipeline.store.audit import (
    ROW_COLUMNS,
    _body_text,
    _sha,
    canonical_json,
    iso_utc,
    stored_columns,
    verify_chain,
)
from reconciliation_pipeline.store.models import AuditEvent

FORMATS = ("jsonl", "csv", "parquet")
COLUMNS = ROW_COLUMNS
JSON_COLUMNS = ("inputs", "chain", "outcome")
HASH_DEFINITION = (
    "hash = sha256_hex(prev_hash + canonical_json(body)); body = every column but seq and hash; "
    "canonical_json = sorted keys, separators ',' and ':', UTF-8 (no \\u escapes of non-ASCII), "
    "occurred_at as YYYY-MM-DDTHH:MM:SS.ffffffZ; prev_hash of the first event ever is 64 zeros"
)
STREAM = 20_000


@dataclasses.dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest_path: Path
    manifest: dict[str, Any]


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _rows(engine: Engine, first: int, last: int) -> Iterator[tuple[Any, ...]]:
    cols = stored_columns()
    stmt = select(*cols).where(AuditEvent.seq.between(first, last)).order_by(AuditEvent.seq)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=STREAM).execute(stmt)
        for row in result:
            seq, eid, occ, *rest = row
            yield (seq, eid, iso_utc(occ), *rest)


def _canon_text(stored: str | None) -> str | None:
    return None if stored is None else canonical_json(json.loads(stored))


def export_audit(
    engine: Engine,
    out: Path,
    *,
    fmt: str,
    date_from: dt.date,
    date_to: dt.date,
    anchors_file: Path,
    exported_by: str,
) -> ExportResult:
    """Write the extract and its manifest; the chain's head is anchored in ``anchors_file`` too."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if date_to < date_from:
        raise ValueError(f"--to {date_to} is before --from {date_from}")
    lo, hi = _day_start(date_from), _day_start(date_to + dt.timedelta(days=1))
    with engine.connect() as conn:
        first, last = conn.execute(
            select(func.min(AuditEvent.seq), func.max(AuditEvent.seq)).where(
                AuditEvent.occurred_at >= lo, AuditEvent.occurred_at < hi
            )
        ).one()
        verified = verify_chain(conn)
        anchor = anchor_head(conn, anchors_file, kind="export")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = _rows(engine, first, last) if first is not None else iter(())
    count = 0
    head: tuple[int, str] | None = None
    start: tuple[int, str, str] | None = None
    if fmt == "jsonl":
        with out.open("w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                record = dict(zip(COLUMNS, row, strict=True))
                for c in JSON_COLUMNS:
                    record[c] = None if record[c] is None else json.loads(record[c])
                handle.write(canonical_json(record) + "\n")
                count += 1
                start = start or (row[0], row[12], row[11])
                head = (row[0], row[12])
    elif fmt == "csv":
        with out.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(COLUMNS)
            for row in rows:
                writer.writerow(["" if v is None else v for v in row])
                count += 1
                start = start or (row[0], row[12], row[11])
                head = (row[0], row[12])
    else:
        batch: list[tuple[Any, ...]] = list(rows)
        frame = pl.DataFrame(
            batch,
            schema={c: (pl.Int64() if c == "seq" else pl.String()) for c in COLUMNS},
            orient="row",
        )
        frame.write_parquet(out)
        count = frame.height
        if count:
            start = (batch[0][0], batch[0][12], batch[0][11])
            head = (batch[-1][0], batch[-1][12])
    digest = hashlib.sha256()
    with out.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    manifest: dict[str, Any] = {
        "file": out.name,
        "format": fmt,
        "sha256": digest.hexdigest(),
        "bytes": out.stat().st_size,
        "count": count,
        "period": {"from": date_from.isoformat(), "to": date_to.isoformat(), "time_zone": "UTC"},
        "selection": "the contiguous seq range from the first to the last event that occurred in the period",
        "first": None if start is None else {"seq": start[0], "hash": start[1], "prev_hash": start[2]},
        "last": None if head is None else {"seq": head[0], "hash": head[1]},
        "chain_verified_at_export": {
            "ok": verified.ok,
            "events": verified.count,
            "head_hash": verified.head_hash,
            "first_bad_seq": verified.first_bad_seq,
            "reason": verified.reason,
        },
        "anchor": None if anchor is None else anchor.as_json(),
        "anchors_file": str(anchors_file),
        "exported_at": iso_utc(dt.datetime.now(dt.UTC)),
        "exported_by": exported_by,
        "hash_definition": HASH_DEFINITION,
    }
    manifest_path = out.with_name(out.name + ".manifest.json")
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return ExportResult(out, manifest_path, manifest)


@dataclasses.dataclass(frozen=True)
class ExtractCheck:
    ok: bool
    count: int
    problems: list[str]


def _read_extract(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                for c in JSON_COLUMNS:
                    record[c] = None if record[c] is None else canonical_json(record[c])
                yield record
    elif fmt == "csv":
        with path.open(encoding="utf-8", newline="") as handle:
            for record in csv.DictReader(handle):
                out: dict[str, Any] = {k: (v if v != "" else None) for k, v in record.items()}
                yield out
    else:
        yield from pl.read_parquet(path).iter_rows(named=True)


def verify_extract(manifest_path: Path) -> ExtractCheck:
    """Check an extract against its manifest from the files alone: SHA-256, count, every hash and link."""
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    path = manifest_path.with_name(manifest["file"])
    problems: list[str] = []
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != manifest["sha256"]:
        problems.append(f"{path.name}: SHA-256 {digest} differs from the manifest's {manifest['sha256']}")
    prev = None if manifest["first"] is None else manifest["first"]["prev_hash"]
    count = 0
    last_hash = None
    for r in _read_extract(path, manifest["format"]):
        count += 1
        seq = r["seq"]
        if r["prev_hash"] != prev:
            problems.append(f"event seq {seq}: prev_hash does not link to the event before it in the extract")
            break
        body = _body_text(
            r["event_id"],
            r["occurred_at"],
            r["actor"],
            r["action"],
            r["entity_type"],
            r["entity_id"],
            _canon_text(r["inputs"]),
            _canon_text(r["chain"]),
            _canon_text(r["outcome"]),
            r["trace_id"],
            r["prev_hash"],
        )
        recomputed = _sha(r["prev_hash"], body)
        if recomputed != r["hash"]:
            problems.append(f"event seq {seq}: content hashes to {recomputed}, not its hash {r['hash']}")
            break
        prev = last_hash = r["hash"]
    if not problems:
        if count != manifest["count"]:
            problems.append(f"{count} events in the file, the manifest says {manifest['count']}")
        expected_last = None if manifest["last"] is None else manifest["last"]["hash"]
        if last_hash != expected_last:
            problems.append(f"last hash {last_hash} differs from the manifest's {expected_last}")
    return ExtractCheck(not problems, count, problems)


__all__ = ["FORMATS", "ExportResult", "ExtractCheck", "export_audit", "verify_extract"]
