"""Accepting settlement files whole or quarantining them whole, and never counting one twice.

A file is parsed completely before anything is written. An accepted file is copied into
``landing/settlements/<psp>/`` (bank statements: ``landing/bank/<account>/``) and its parsed lines are
cached in ``lake/parsed/<psp>/<sha256>.parquet``; a refused file goes to ``quarantine/<psp>/`` beside a
``.reason.json`` that says what, where and what to do. Files are registered in the outcome store by
checksum and by PSP batch, so the same file dropped twice, or the same batch re-sent under another
name, is recognised.
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .formats import registry
from .formats.errors import FormatError, Problem
from .lake import Lake, atomic_write_bytes, atomic_write_parquet, sha256_bytes
from .store import db, service

Status = Literal["accepted", "duplicate", "quarantined"]
PSPS = ("adyen", "stripe", "paypal", "bank")


@dataclass
class IngestOutcome:
    status: Status
    psp: str
    name: str
    sha256: str
    message: str
    path: Path | None = None
    rows: int = 0
    business_dates: list[dt.date] = field(default_factory=list)
    problem: Problem | None = None


def parsed_path(lake: Lake, psp: str, sha: str) -> Path:
    return lake.lake / "parsed" / psp / f"{sha}.parquet"


def _quarantine(lake: Lake, *, psp: str, name: str, sha: str, data: bytes, problem: Problem) -> Path:
    folder = lake.quarantine / psp
    target = folder / name
    if target.exists() and sha256_bytes(target.read_bytes()) != sha:
        target = folder / f"{Path(name).stem}.{sha[:12]}{Path(name).suffix}"
    atomic_write_bytes(target, data)
    reason = {**problem.as_dict(), "psp": psp, "sha256": sha, "quarantined_file": target.name}
    atomic_write_bytes(
        target.with_name(target.name + ".reason.json"), json.dumps(reason, indent=2, sort_keys=True).encode()
    )
    return target


def _landing_target(lake: Lake, psp: str, name: str, sha: str, frame: pl.DataFrame) -> Path:
    folder = lake.landing_settlements(psp)
    if psp == "bank":
        accounts = frame["account_id"].drop_nulls().unique().sort().to_list()
        folder = folder / (accounts[0] if len(accounts) == 1 else "mixed")
    target = folder / name
    if target.exists() and sha256_bytes(target.read_bytes()) != sha:
        target = folder / f"{Path(name).stem}.{sha[:12]}{Path(name).suffix}"
    return target


def _scope(engine: Engine, session: Session | None) -> AbstractContextManager[Session]:
    """The caller's session (committed by the caller), or a transaction of its own."""
    return nullcontext(session) if session is not None else db.session_scope(engine)


def accept_bytes(
    data: bytes,
    *,
    name: str,
    psp: str,
    lake: Lake,
    engine: Engine,
    actor: str,
    chain: dict[str, object],
    landed_at: Path | None = None,
    session: Session | None = None,
) -> IngestOutcome:
    """Parse ``data`` as ``psp``'s format and accept, recognise or quarantine it as a whole.

    ``landed_at`` is set when the file already lies in the landing folder (dropped there directly);
    a refused or duplicate file is then moved out of landing.

    The registration (and its ``file.*`` audit event) is committed here, or, when ``session`` is given,
    written in that session and committed with the caller's own change (the partner API's upload: with
    its idempotency record). Should that transaction roll back, the landed file and its cached parse stay
    behind unregistered, and the next sensor tick or run registers them (:func:`register_landed`).
    """
    if psp not in PSPS:
        raise ValueError(f"unknown PSP {psp!r}; expected one of {', '.join(PSPS)}")
    sha = sha256_bytes(data)
    with _scope(engine, session) as s:
        known = service.find_file(s, sha256=sha)
        if known is not None:
            service.record_duplicate_file(
                s,
                sha256=sha,
                psp=psp,
                original_name=name,
                known=known,
                batch_key=known.batch_key,
                actor=actor,
                chain=chain,
            )
    if known is not None:
        if landed_at is not None and known.stored_path != str(landed_at):
            landed_at.unlink(missing_ok=True)
        return IngestOutcome(
            "duplicate",
            psp,
            name,
            sha,
            f"{name}: already registered on {known.registered_at:%Y-%m-%d} as "
            f"{known.original_name} ({known.status}); not counted again",
        )
    try:
        frame = registry.parse_as(psp, data, name, file_sha256=sha)
    except FormatError as exc:
        target = _quarantine(lake, psp=psp, name=name, sha=sha, data=data, problem=exc.problem)
        with _scope(engine, session) as s:
            service.register_file(
                s,
                sha256=sha,
                psp=psp,
                original_name=name,
                stored_path=str(target),
                status="quarantined",
                reason=exc.problem.as_dict(),
                batch_key=None,
                actor=actor,
                chain=chain,
            )
        if landed_at is not None:
            landed_at.unlink(missing_ok=True)
        return IngestOutcome("quarantined", psp, name, sha, str(exc), path=target, problem=exc.problem)

    batch_key = ",".join(frame["batch_id"].drop_nulls().unique().sort().to_list()) or None
    target = landed_at or _landing_target(lake, psp, name, sha, frame)
    cache = parsed_path(lake, psp, sha)
    atomic_write_parquet(cache, frame)
    if landed_at is None:
        atomic_write_bytes(target, data)
    with _scope(engine, session) as s:
        record, created = service.register_file(
            s,
            sha256=sha,
            psp=psp,
            original_name=name,
            stored_path=str(target),
            status="accepted",
            reason=None,
            batch_key=batch_key,
            actor=actor,
            chain=chain,
        )
        other = record.original_name
    if not created:  # the same PSP batch under another name
        cache.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        return IngestOutcome(
            "duplicate",
            psp,
            name,
            sha,
            f"{name}: PSP batch {batch_key} was already ingested as {other}; not counted again",
        )
    dates = frame["booking_date"].unique().sort().to_list()
    return IngestOutcome(
        "accepted",
        psp,
        name,
        sha,
        f"{name}: {frame.height} rows accepted as {psp}",
        path=target,
        rows=frame.height,
        business_dates=dates,
    )


def ingest_file(
    path: Path,
    *,
    psp: str,
    lake: Lake,
    engine: Engine,
    actor: str = "cli",
    chain: dict[str, object] | None = None,
) -> IngestOutcome:
    """``recon ingest``: copy a settlement file into landing after checking it whole."""
    from . import metrics
    from .telemetry import step_span

    with step_span("ingest", {"psp": psp, "file": path.name}, metrics_dir=lake.root / "metrics"):
        outcome = accept_bytes(
            path.read_bytes(),
            name=path.name,
            psp=psp,
            lake=lake,
            engine=engine,
            actor=actor,
            chain=chain or {"command": "recon ingest"},
        )
        metrics.record_ingest(psp=psp, status=outcome.status)
        return outcome


def landed_files(lake: Lake) -> list[tuple[str, Path]]:
    """Every file lying in the settlement and bank landing folders, with the PSP it belongs to."""
    found: list[tuple[str, Path]] = []
    settlements = lake.landing / "settlements"
    if settlements.exists():
        for psp_dir in sorted(p for p in settlements.iterdir() if p.is_dir()):
            found += [
                (psp_dir.name, f)
                for f in sorted(psp_dir.iterdir())
                if f.is_file() and not f.name.startswith(".")
            ]
    bank = lake.landing_settlements("bank")
    if bank.exists():
        found += [("bank", f) for f in sorted(bank.rglob("*")) if f.is_file() and not f.name.startswith(".")]
    return found


def _index_path(lake: Lake) -> Path:
    return lake.lake / "parsed" / ".landing-index.json"


def _load_index(lake: Lake) -> dict[str, list[object]]:
    try:
        loaded = json.loads(_index_path(lake).read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def register_landed(
    lake: Lake, engine: Engine, *, actor: str, chain: dict[str, object]
) -> list[IngestOutcome]:
    """Register every file lying in landing that is not registered yet (files may be dropped there
    directly, not only through ``recon ingest``): parse it whole and accept it, or quarantine it, or
    recognise it as a copy of a registered file and remove the copy from landing.

    Files already registered are recognised by (path, size, mtime) from a small index beside the
    parsed cache, so sensor ticks and runs do not re-read and re-hash the whole landing folder; a
    changed or unknown file is read and hashed as before. (A lost index only costs a re-hash.)
    """
    index = _load_index(lake)
    fresh: dict[str, list[object]] = {}
    results = []
    for psp, path in landed_files(lake):
        stat = path.stat()
        cached = index.get(str(path))
        if (
            cached is not None
            and cached[:2] == [stat.st_size, stat.st_mtime_ns]
            and parsed_path(lake, psp, str(cached[2])).exists()
        ):
            fresh[str(path)] = cached
            continue
        data = path.read_bytes()
        sha = sha256_bytes(data)
        if parsed_path(lake, psp, sha).exists():
            with db.session_scope(engine) as session:
                known = service.find_file(session, sha256=sha)
                stored = None if known is None else known.stored_path
            if stored == str(path):
                fresh[str(path)] = [stat.st_size, stat.st_mtime_ns, sha]
                continue  # the registered original
            # Otherwise a copy of a registered file (recognised and removed below), or a file whose
            # parse was cached but whose registration never committed (an ingestion stopped between
            # the two): it is registered now, so its batch is known and a re-sent batch not counted twice.
        outcome = accept_bytes(
            data,
            name=path.name,
            psp=psp,
            lake=lake,
            engine=engine,
            actor=actor,
            chain=chain,
            landed_at=path,
        )
        if outcome.status == "accepted":
            fresh[str(path)] = [stat.st_size, stat.st_mtime_ns, sha]
        results.append(outcome)
    if fresh != index:
        atomic_write_bytes(_index_path(lake), json.dumps(fresh, sort_keys=True).encode())
    return results


def parsed_lines(lake: Lake) -> pl.LazyFrame | None:
    """All accepted settlement lines: the parsed cache of every accepted file."""
    paths = sorted((lake.lake / "parsed").glob("*/*.parquet"))
    return pl.scan_parquet(paths) if paths else None
