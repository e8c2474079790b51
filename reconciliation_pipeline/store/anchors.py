"""The head of the audit chain, anchored outside the database.

After every pipeline run (and in every export) the newest event's ``(seq, hash)`` is appended as one
JSON line to ``<data_dir>/audit/anchors.jsonl`` in the lake: a file the database cannot rewrite. The
hash chain alone proves that no stored event was changed, removed or re-ordered *between* events; it
cannot see events cut off the end (a truncated tail leaves a shorter chain that still verifies).
Every anchor must therefore still be in the chain, with the same hash: :func:`check_anchors`.

Lines are appended with ``O_APPEND`` under an exclusive ``flock`` and fsynced; existing lines are
never rewritten. In production the file lives in object storage with a retention lock (see
``docs/audit.md``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, select
from sqlalchemy.orm import Session

from reconciliation_pipeline.store.models import AuditEvent

ANCHORS_RELATIVE = Path("audit") / "anchors.jsonl"
CHECK_CHUNK = 1_000


def anchors_path(data_dir: Path) -> Path:
    """Where the anchors of the store behind ``data_dir`` are kept."""
    return Path(data_dir) / ANCHORS_RELATIVE


@dataclasses.dataclass(frozen=True)
class Anchor:
    """The chain's head at one moment: the event ``seq`` had hash ``hash``."""

    seq: int
    hash: str
    at: str
    run_id: str | None = None
    source: str = "run"  # run | export | manual
    line: int | None = None  # 1-based line of the anchors file it was read from

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "at": self.at,
            "run_id": self.run_id,
            "source": self.source,
        }


def _head(conn: Session | Connection) -> tuple[int, str] | None:
    row = conn.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    return None if row is None else (int(row[0]), str(row[1]))


def append_anchor(path: Path, anchor: Anchor) -> Anchor:
    """Append ``anchor`` as one line (created with its folder when missing), durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(anchor.as_json(), separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return anchor


def anchor_head(
    source: Engine | Session | Connection,
    path: Path,
    *,
    run_id: str | None = None,
    kind: str = "run",
) -> Anchor | None:
    """Read the chain's committed head and append it to ``path``; ``None`` for an empty chain."""
    if isinstance(source, Engine):
        with source.connect() as conn:
            head = _head(conn)
    else:
        head = _head(source)
    if head is None:
        return None
    now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return append_anchor(path, Anchor(head[0], head[1], now, run_id, kind))


def anchor_on_commit(session: Session, path: Path, *, run_id: str | None = None) -> None:
    """Anchor the chain's head in ``path`` once the session's transaction has committed.

    The pipeline's publish step calls this inside its transaction: the anchor is written only for a
    head that is durable, and a failure to write it fails the step (the commit stands; a retry
    publishes nothing new and anchors again).
    """
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine

    @event.listens_for(session, "after_commit", once=True)
    def _anchor(_session: Session) -> None:
        anchor_head(engine, path, run_id=run_id, kind="run")


class AnchorFileError(ValueError):
    """The anchors file cannot be read: names the line."""


def read_anchors(path: Path) -> list[Anchor]:
    """Every anchor of the file, in order (``[]`` when the file does not exist)."""
    if not path.exists():
        return []
    anchors: list[Anchor] = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                raw = json.loads(text)
                anchor = Anchor(
                    seq=int(raw["seq"]),
                    hash=str(raw["hash"]),
                    at=str(raw["at"]),
                    run_id=raw.get("run_id"),
                    source=str(raw.get("source", "run")),
                    line=number,
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise AnchorFileError(
                    f"{path}, line {number}: not an anchor ({exc}): {text.strip()[:200]}"
                ) from exc
            anchors.append(anchor)
    return anchors


@dataclasses.dataclass(frozen=True)
class AnchorCheck:
    ok: bool
    checked: int
    latest: Anchor | None
    bad: Anchor | None = None
    reason: str | None = None


def check_anchors(conn: Session | Connection | Engine, anchors: Sequence[Anchor]) -> AnchorCheck:
    """Every anchor must still be in the chain with its hash; the first one that is not is reported.

    An anchor past the chain's end means events were cut off the tail; one whose event has another
    hash means the chain was rewritten from there on.
    """
    if isinstance(conn, Engine):
        with conn.connect() as c:
            return check_anchors(c, anchors)
    if not anchors:
        return AnchorCheck(True, 0, None)
    head = _head(conn)
    last_seq = head[0] if head else 0
    stored: dict[int, str] = {}
    seqs = sorted({a.seq for a in anchors})
    for start in range(0, len(seqs), CHECK_CHUNK):
        chunk = seqs[start : start + CHECK_CHUNK]
        for seq, hash_ in conn.execute(
            select(AuditEvent.seq, AuditEvent.hash).where(AuditEvent.seq.in_(chunk))
        ):
            stored[int(seq)] = str(hash_)
    latest = max(anchors, key=lambda a: a.seq)
    for anchor in sorted(anchors, key=lambda a: (a.seq, a.line or 0)):
        where = f"anchor of {anchor.at} (run {anchor.run_id or '-'}, {anchor.source}, line {anchor.line})"
        found = stored.get(anchor.seq)
        if found is None:
            if anchor.seq > last_seq:
                reason = (
                    f"{where} names event seq {anchor.seq}, but the chain ends at seq {last_seq}: "
                    f"{anchor.seq - last_seq} or more events were cut off the tail"
                )
            else:
                reason = f"{where} names event seq {anchor.seq}, which is no longer in the chain"
            return AnchorCheck(False, len(anchors), latest, anchor, reason)
        if found != anchor.hash:
            reason = (
                f"{where}: event seq {anchor.seq} had hash {anchor.hash}, the chain now has {found}; "
                "the chain was rewritten from there on"
            )
            return AnchorCheck(False, len(anchors), latest, anchor, reason)
    return AnchorCheck(True, len(anchors), latest)


__all__ = [
    "ANCHORS_RELATIVE",
    "Anchor",
    "AnchorCheck",
    "AnchorFileError",
    "anchor_head",
    "anchor_on_commit",
    "anchors_path",
    "append_anchor",
    "check_anchors",
    "read_anchors",
]
