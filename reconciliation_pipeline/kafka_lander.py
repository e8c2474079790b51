"""Landing transaction events from Kafka into ``landing/transactions/date=YYYY-MM-DD/``.

Nothing is lost and nothing is duplicated, whatever happens to the lander:

* every event is checked with :func:`landing.check_event`; a bad one is dead-lettered to
  ``quarantine/transactions/`` with its reason, original bytes, topic, partition and offset;
* files are written to a temporary name, fsynced and renamed (:func:`lake.atomic_write_parquet`), and
  only then are the offsets committed (synchronously, explicit offsets, auto commit and auto offset
  store off). A crash before the commit replays from the last committed offset;
* a replay rewrites the same files instead of adding copies: each partition's offsets are cut into fixed
  windows of :data:`OFFSET_WINDOW` offsets, and a message always lands in
  ``date=D/<topic>-p<partition>-w<window start, 20 digits>.parquet`` (D its business date). A window
  written more than once (several flushes, a replay after a crash, a rebalance) is merged with the file
  already there: read, concatenated, de-duplicated by ``(kafka_partition, kafka_offset)``, rewritten
  atomically. Merges of one partition are serialised by a lock file, so a merge only ever adds rows;
* a rebalance flushes and commits in the revoke callback; partitions lost without a revoke are dropped
  from the pending batch and replayed by their new owner.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import polars as pl
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from . import metrics
from .frames import LANDED_SCHEMA, conform
from .lake import Lake, atomic_write_bytes, atomic_write_parquet
from .landing import validate_batch, with_business_date
from .telemetry import step_span

try:  # POSIX only; elsewhere merges of one partition are not serialised across processes.
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Offsets per file window. Part of the file names: changing it makes a replay write new names.
OFFSET_WINDOW = 10_000
#: How long ``until_idle`` waits for the first assignment (joining a group takes seconds) at least.
JOIN_GRACE_SECONDS = 30.0
#: How long the final commit may wait for a rebalance in progress to settle.
FINAL_COMMIT_SECONDS = 10.0
_CONSUME_BATCH = 5_000
_POLL_SECONDS = 0.2
_RETRIABLE_COMMIT = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._NO_OFFSET,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._WAIT_COORD,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}


@dataclass
class KafkaLandStats:
    """What one run of the lander did."""

    consumed: int = 0
    landed: int = 0
    dead_lettered: int = 0
    files: set[Path] = field(default_factory=set)
    business_dates: set[dt.date] = field(default_factory=set)
    flushes: int = 0
    commits: int = 0
    commit_failures: int = 0
    rebalances: int = 0
    first_message_at: float | None = None  # time.monotonic()
    last_message_at: float | None = None  # time.monotonic() after the last batch of messages was taken
    last_durable_at: float | None = None  # time.monotonic() when the last flush completed
    last_flush_seconds: float = 0.0
    stopped_by: str = "idle"

    @property
    def files_written(self) -> int:
        return len(self.files)

    def as_dict(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "landed": self.landed,
            "dead_lettered": self.dead_lettered,
            "files_written": self.files_written,
            "business_dates": sorted(d.isoformat() for d in self.business_dates),
            "flushes": self.flushes,
            "commits": self.commits,
            "commit_failures": self.commit_failures,
            "rebalances": self.rebalances,
            "stopped_by": self.stopped_by,
        }

    def summary(self) -> str:
        days = ", ".join(d.isoformat() for d in sorted(self.business_dates)) or "none"
        return (
            f"Consumed {self.consumed} events: landed {self.landed}, dead-lettered {self.dead_lettered}, "
            f"into {self.files_written} file(s) for business dates: {days} (stopped by {self.stopped_by})."
        )


def window_start(offset: int, window: int = OFFSET_WINDOW) -> int:
    return offset // window * window


def window_stem(topic: str, partition: int, start: int) -> str:
    """The deterministic stem of every file holding offsets ``start .. start + window - 1``."""
    return f"{topic}-p{partition}-w{start:020d}"


def dead_letter_path(lake: Lake, topic: str, partition: int, start: int) -> Path:
    return lake.quarantine / "transactions" / f"{window_stem(topic, partition, start)}.rejects.jsonl"


@contextlib.contextmanager
def partition_lock(lake: Lake, topic: str, partition: int) -> Iterator[None]:
    """Serialise read-merge-write of one partition's files across threads and processes (flock)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    folder = lake.landing_transactions / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{topic}-p{partition}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def merge_parquet(path: Path, new: pl.DataFrame) -> int:
    """Write ``new`` to ``path``, merged with what is there (unique by partition and offset).

    Returns the number of rows the file gained. The caller holds the partition's lock.
    """
    frame = conform(new, LANDED_SCHEMA)
    before = 0
    if path.exists():
        old = conform(pl.read_parquet(path), LANDED_SCHEMA)
        before = old.height
        frame = pl.concat([old, frame])
    frame = frame.unique(["kafka_partition", "kafka_offset"], keep="first", maintain_order=True).sort(
        "kafka_offset"
    )
    if frame.height != before:
        atomic_write_parquet(path, frame)
    return frame.height - before


def merge_dead_letters(path: Path, rejects: list[dict[str, Any]]) -> int:
    """Like :func:`merge_parquet` for a JSON-lines dead-letter file (unique by partition and offset)."""
    by_position: dict[tuple[int, int], dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                item = json.loads(line)
                by_position[(item["partition"], item["offset"])] = item
    before = len(by_position)
    for item in rejects:
        by_position.setdefault((item["partition"], item["offset"]), item)
    if len(by_position) != before:
        body = "".join(json.dumps(by_position[key], sort_keys=True) + "\n" for key in sorted(by_position))
        atomic_write_bytes(path, body.encode())
    return len(by_position) - before


def _original(raw: bytes) -> tuple[str, str]:
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


class _Pending:
    """Consumed but not yet durable: valid events, rejects and the next offset to commit."""

    def __init__(self) -> None:
        self.raws: list[bytes] = []
        self.positions: list[tuple[str, int, int]] = []
        self.next_offsets: dict[tuple[str, int], int] = {}
        self.since: float | None = None

    def __len__(self) -> int:
        return len(self.raws)

    def drop(self, partitions: set[tuple[str, int]]) -> None:
        keep = [i for i, (t, p, _) in enumerate(self.positions) if (t, p) not in partitions]
        self.raws = [self.raws[i] for i in keep]
        self.positions = [self.positions[i] for i in keep]
        for key in partitions:
            self.next_offsets.pop(key, None)


class _Lander:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        lake: Lake,
        tz: str,
        until_idle: float | None,
        max_batch_events: int,
        max_batch_seconds: float,
        consumer_config: dict[str, Any] | None,
        offset_window: int,
        stop: threading.Event | None,
    ) -> None:
        self.topic = topic
        self.lake = lake
        self.tz = tz
        self.until_idle = until_idle
        self.max_batch_events = max(1, max_batch_events)
        self.max_batch_seconds = max_batch_seconds
        self.window = offset_window
        self.stop = stop or threading.Event()
        self.stats = KafkaLandStats()
        self.pending = _Pending()
        #: Durable but not yet committed (a commit failed), per partition still assigned.
        self.uncommitted: dict[tuple[str, int], int] = {}
        self.last_activity = time.monotonic()
        self.assigned_once = False
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            **(consumer_config or {}),
        }
        # Offsets are committed by hand, after the files are durable, whatever the caller configured.
        config.update({"enable.auto.commit": False, "enable.auto.offset.store": False})
        self.consumer = Consumer(config)

    # -- rebalance callbacks -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        self.assigned_once = True
        self.last_activity = time.monotonic()
        log.info("assigned %s", [p.partition for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoking %s: flushing and committing first", [p.partition for p in partitions])
        self.flush_and_commit()
        revoked = {(p.topic, p.partition) for p in partitions}
        for key in revoked:  # never commit an old offset over the next owner's later one
            self.uncommitted.pop(key, None)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(p.topic, p.partition) for p in partitions}
        log.warning("lost %s without revoke; their pending events are replayed by the new owner", lost)
        self.pending.drop(lost)
        for key in lost:
            self.uncommitted.pop(key, None)

    # -- consuming ----------------------------------------------------------------------------------
    def _take(self, message: Message) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        pending = self.pending
        pending.raws.append(message.value() or b"")  # type: ignore[arg-type]
        pending.positions.append((topic, partition, offset))  # type: ignore[arg-type]
        pending.next_offsets[(topic, partition)] = offset + 1  # type: ignore[index,operator]
        self.stats.consumed += 1
        if pending.since is None:
            pending.since = time.monotonic()
            if self.stats.first_message_at is None:
                self.stats.first_message_at = pending.since

    def _write(self) -> None:
        """Make everything pending durable (files fsynced and renamed), one partition lock at a time."""
        began = time.monotonic()
        pending = self.pending
        good, valid, problems = validate_batch(
            pending.raws, source=f"kafka:{self.topic}", rows=[offset for _, _, offset in pending.positions]
        )
        rejected: list[dict[str, Any]] = []
        for index, problem in problems:
            topic, partition, offset = pending.positions[index]
            original, encoding = _original(pending.raws[index])
            rejected.append(
                {
                    **problem.as_dict(),
                    "file": f"kafka:{topic}[{partition}]",
                    "original": original,
                    "original_encoding": encoding,
                    "topic": topic,
                    "partition": partition,
                    "offset": offset,
                }
            )
        frame = valid.with_columns(
            kafka_topic=pl.Series([pending.positions[i][0] for i in good], dtype=pl.String),
            kafka_partition=pl.Series([pending.positions[i][1] for i in good], dtype=pl.Int32),
            kafka_offset=pl.Series([pending.positions[i][2] for i in good], dtype=pl.Int64),
        ).select(list(LANDED_SCHEMA))
        dated = with_business_date(frame, self.tz).with_columns(
            (pl.col("kafka_offset") // self.window * self.window).alias("_window")
        )
        parts: dict[tuple[str, int], list[tuple[dt.date, int, pl.DataFrame]]] = defaultdict(list)
        for (topic, partition, day, start), part in dated.partition_by(
            ["kafka_topic", "kafka_partition", "business_date", "_window"], as_dict=True
        ).items():
            assert isinstance(day, dt.date)
            parts[(str(topic), int(partition))].append(
                (day, int(start), part.drop("business_date", "_window"))
            )
        rejects: dict[tuple[str, int], dict[int, list[dict[str, Any]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for item in rejected:
            rejects[(item["topic"], item["partition"])][window_start(item["offset"], self.window)].append(
                item
            )
        for key in sorted(set(parts) | set(rejects)):
            topic, partition = key
            with partition_lock(self.lake, topic, partition):
                for day, start, part in parts.get(key, []):
                    path = (
                        self.lake.landing_transactions_date(day)
                        / f"{window_stem(topic, partition, start)}.parquet"
                    )
                    merge_parquet(path, part)
                    self.stats.files.add(path)
                    self.stats.business_dates.add(day)
                for start, items in sorted(rejects.get(key, {}).items()):
                    path = dead_letter_path(self.lake, topic, partition, start)
                    merge_dead_letters(path, items)
                    self.stats.files.add(path)
        metrics.record_landing(
            source="kafka",
            landed=frame.height,
            dead_lettered=len(rejected),
            oldest_occurred_at=frame["occurred_at"].min() if frame.height else None,  # type: ignore[arg-type]
        )
        self.stats.landed += frame.height
        self.stats.dead_lettered += len(rejected)
        self.stats.flushes += 1
        self.stats.last_durable_at = time.monotonic()
        self.stats.last_flush_seconds = self.stats.last_durable_at - began

    def _commit(self) -> bool:
        if not self.uncommitted:
            return True
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self.uncommitted.items())]
        try:
            result = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() not in _RETRIABLE_COMMIT:
                raise
            self.stats.commit_failures += 1
            log.warning("commit of %s failed (%s); the files are durable, retrying later", offsets, exc)
            return False
        failed = False
        for tp in result or []:
            if tp.error is not None:
                failed = True
                log.warning("commit of %s[%s]@%s failed: %s", tp.topic, tp.partition, tp.offset, tp.error)
            elif self.uncommitted.get((tp.topic, tp.partition)) == tp.offset:
                del self.uncommitted[(tp.topic, tp.partition)]
        if failed:
            self.stats.commit_failures += 1
            return False
        self.stats.commits += 1
        return True

    def flush_and_commit(self) -> bool:
        """Write what is pending, then (only then) commit its offsets. True when all is committed."""
        if len(self.pending):
            with step_span(
                "land_kafka", {"events": len(self.pending)}, metrics_dir=self.lake.root / "metrics"
            ):
                self._write()
            self.uncommitted.update(self.pending.next_offsets)
            self.pending = _Pending()
        elif self.pending.next_offsets:  # nothing to write (cannot happen today), still commit
            self.uncommitted.update(self.pending.next_offsets)
            self.pending = _Pending()
        return self._commit()

    def _due(self, now: float) -> bool:
        if len(self.pending) >= self.max_batch_events:
            return True
        return self.pending.since is not None and now - self.pending.since >= self.max_batch_seconds

    def _idle_limit(self) -> float:
        assert self.until_idle is not None
        return self.until_idle if self.assigned_once else max(self.until_idle, JOIN_GRACE_SECONDS)

    def _poll_once(self) -> int:
        messages = self.consumer.consume(num_messages=_CONSUME_BATCH, timeout=_POLL_SECONDS)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", error)
                continue
            self._take(message)  # the hot loop: kept to a few list appends
            if len(self.pending.raws) >= self.max_batch_events:
                self.flush_and_commit()
        if messages:
            now = time.monotonic()
            self.last_activity = self.stats.last_message_at = now
        return len(messages)

    def run(self) -> KafkaLandStats:
        self.consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        try:
            while not self.stop.is_set():
                self._poll_once()
                now = time.monotonic()
                if self._due(now):
                    self.flush_and_commit()
                if self.until_idle is not None and now - self.last_activity >= self._idle_limit():
                    self.stats.stopped_by = "idle"
                    break
            else:
                self.stats.stopped_by = "signal"
            self._final_commit()
        finally:
            self.consumer.close()  # leaves the group; the revoke callback flushes anything left
        return self.stats

    def _final_commit(self) -> None:
        deadline = time.monotonic() + FINAL_COMMIT_SECONDS
        while not self.flush_and_commit() and time.monotonic() < deadline:
            self._poll_once()  # serves the rebalance in progress (and lands what it delivers)
        if self.uncommitted:
            log.warning(
                "offsets %s left uncommitted; their files are durable and a replay merges", self.uncommitted
            )


def land_from_kafka(
    *,
    bootstrap_servers: str,
    topic: str,
    group_id: str,
    lake: Lake,
    tz: str,
    until_idle: float | None,
    max_batch_events: int = 50_000,
    max_batch_seconds: float = 2.0,
    consumer_config: dict[str, Any] | None = None,
    offset_window: int = OFFSET_WINDOW,
    stop: threading.Event | None = None,
) -> KafkaLandStats:
    """Consume ``topic`` as member of ``group_id`` and land it, committing only what is durable.

    Returns after ``until_idle`` seconds without new messages (None: never), on SIGTERM/SIGINT (when
    called from the main thread) or when ``stop`` is set — each time after a last flush and commit.
    ``consumer_config`` adds librdkafka settings (auto commit and offset store stay off).
    ``offset_window`` must stay the same for a lake: it is part of the file names.
    """
    lake.ensure()
    lander = _Lander(
        bootstrap_servers=bootstrap_servers,
        topic=topic,
        group_id=group_id,
        lake=lake,
        tz=tz,
        until_idle=until_idle,
        max_batch_events=max_batch_events,
        max_batch_seconds=max_batch_seconds,
        consumer_config=consumer_config,
        offset_window=offset_window,
        stop=stop,
    )
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def _stop(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: finishing the batch, committing and stopping", signum)
            lander.stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _stop)
    try:
        return lander.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
