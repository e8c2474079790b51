"""A librdkafka mock cluster in a process of its own, events to send, and checks of the landed lake.

The mock cluster must outlive the landers the tests kill, so it lives in a helper process
(``python kafka_helpers.py mock``) that prints its bootstrap address and serves until its stdin closes.
It is made by the librdkafka that confluent-kafka bundles, through its public mock API (``rdkafka_mock.h``,
called with ctypes): a producer handle with ``test.mock.num.brokers=3`` owns the cluster, whose
brokers listen on 127.0.0.1. The mock API lets the helper create topics with a given number of partitions
and drop the group's initial rebalance delay (3 s by default), so that a lander restarted after SIGKILL
rejoins its group in about two seconds with a 1.5 s session timeout. Without ctypes it falls back to a
plain ``Producer({"test.mock.num.brokers": 3})`` (topics auto-created with the mock's default 4
partitions, slower rejoins).

``python kafka_helpers.py land ...`` runs one lander (the fault test kills it), printing its stats as JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import glob
import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from confluent_kafka import Consumer, Producer, TopicPartition

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
PARTITIONS = 4
WINDOW_FILE = re.compile(r"^(?P<topic>.+)-p(?P<partition>\d+)-w(?P<start>\d{20})\.parquet$")


# -- the mock cluster (helper process side) -------------------------------------------------------------
class _CtypesMock:
    """The mock cluster through librdkafka's C API (the library confluent-kafka ships)."""

    def __init__(self, brokers: int) -> None:
        import confluent_kafka

        libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
        candidates = sorted(glob.glob(str(libs / "librdkafka*.so*")))
        lib = ctypes.CDLL(candidates[0] if candidates else "librdkafka.so.1")
        lib.rd_kafka_conf_new.restype = ctypes.c_void_p
        lib.rd_kafka_conf_set.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.rd_kafka_new.restype = ctypes.c_void_p
        lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.rd_kafka_handle_mock_cluster.restype = ctypes.c_void_p
        lib.rd_kafka_handle_mock_cluster.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
        lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
        lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
        lib.rd_kafka_mock_topic_create.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        errstr = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        for key, value in (("test.mock.num.brokers", str(brokers)), ("log_level", "3")):
            if lib.rd_kafka_conf_set(conf, key.encode(), value.encode(), errstr, 512) != 0:
                raise RuntimeError(errstr.value.decode())
        self.rk = lib.rd_kafka_new(0, conf, errstr, 512)  # 0: RD_KAFKA_PRODUCER
        if not self.rk:
            raise RuntimeError(errstr.value.decode())
        self.lib = lib
        self.cluster = lib.rd_kafka_handle_mock_cluster(self.rk)
        if not self.cluster:
            raise RuntimeError("no mock cluster on the handle")
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self.cluster, 0)
        self.bootstrap = lib.rd_kafka_mock_cluster_bootstraps(self.cluster).decode()

    def create_topic(self, name: str, partitions: int) -> None:
        err = self.lib.rd_kafka_mock_topic_create(self.cluster, name.encode(), partitions, 3)
        if err:
            raise RuntimeError(f"mock topic {name}: error {err}")


class _ProducerMock:
    """Fallback: the mock cluster of a confluent-kafka producer (topics auto-created, 4 partitions)."""

    def __init__(self, brokers: int) -> None:
        self.producer = Producer({"test.mock.num.brokers": brokers, "log_level": 3})
        metadata = self.producer.list_topics(timeout=10)
        self.bootstrap = ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())

    def create_topic(self, name: str, partitions: int) -> None:
        self.producer.list_topics(name, timeout=10)  # auto-creates it


def serve_mock(brokers: int = 3) -> None:
    """Helper-process main: print ``{"bootstrap": ..., "tuned": ...}``, then serve ``topic NAME N`` lines."""
    mock: _CtypesMock | _ProducerMock
    try:
        mock = _CtypesMock(brokers)
        tuned = True
    except (OSError, AttributeError, RuntimeError) as exc:
        print(f"mock API not reachable through ctypes ({exc}); using a plain producer", file=sys.stderr)
        mock = _ProducerMock(brokers)
        tuned = False
    print(json.dumps({"bootstrap": mock.bootstrap, "tuned": tuned}), flush=True)
    for line in sys.stdin:  # EOF (the test process ended) stops the cluster
        parts = line.split()
        if len(parts) == 3 and parts[0] == "topic":
            mock.create_topic(parts[1], int(parts[2]))
            print("ok", flush=True)
    os._exit(0)  # do not wait for librdkafka's orderly shutdown


# -- the mock cluster (test side) -----------------------------------------------------------------------
class MockCluster:
    """Handle on the helper process owning the mock cluster."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE), "mock"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        hello = json.loads(self.process.stdout.readline())
        self.bootstrap: str = hello["bootstrap"]
        self.tuned: bool = hello["tuned"]
        self._lock = threading.Lock()
        self._topics = 0

    @property
    def consumer_config(self) -> dict[str, Any]:
        """Session settings that make rejoining fast on this mock (see the module docstring)."""
        if self.tuned:
            return {"session.timeout.ms": 1500, "heartbeat.interval.ms": 250, "log_level": 3}
        return {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "log_level": 3}

    def new_topic(self, prefix: str, partitions: int = PARTITIONS) -> str:
        with self._lock:
            self._topics += 1
            name = f"{prefix}.{self._topics}"
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write(f"topic {name} {partitions}\n")
            self.process.stdin.flush()
            assert self.process.stdout.readline().strip() == "ok"
        return name

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- events ---------------------------------------------------------------------------------------------
BASE_TIME = dt.datetime(2026, 3, 2, 21, 0, tzinfo=dt.UTC)  # around midnight in Malta: two business dates


def make_event(n: int, prefix: str = "ev") -> dict[str, Any]:
    occurred = BASE_TIME + dt.timedelta(seconds=7 * n % 20_000)
    return {
        "event_id": f"{prefix}-{n}",
        "transaction_id": f"tx-{prefix}-{n}",
        "psp": ("adyen", "stripe", "paypal")[n % 3],
        "psp_reference": f"P{n:015d}",
        "kind": ("deposit", "withdrawal", "refund")[n % 3],
        "original_transaction_id": None,
        "amount_minor": 100 + n,
        "currency": ("EUR", "GBP", "SEK")[n % 3],
        "occurred_at": occurred.isoformat(),
        "player_id": f"pl-{n % 97}",
        "brand": "lucky",
        "jurisdiction": "MT",
        "trace_id": f"{n:032x}",
    }


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


INVALID_PAYLOADS: list[bytes] = [
    b"{not json",
    b"\xff\xfe\x00binary",
    encode({**make_event(1, "bad"), "amount_minor": "12.50"}),
    encode({k: v for k, v in make_event(2, "bad").items() if k != "currency"}),
    encode({**make_event(3, "bad"), "jurisdiction": "Malta"}),
    b"[]",
]


def producer(bootstrap: str) -> Producer:
    # Compressed: the mock cluster keeps only the last 5 MB of message sets of a partition.
    return Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4", "log_level": 3}
    )


def produce(bootstrap: str, topic: str, payloads: list[bytes], *, rate: float | None = None) -> None:
    """Send ``payloads`` (keyed by position), optionally at about ``rate`` messages a second."""
    import time

    p = producer(bootstrap)
    start = time.monotonic()
    for i, payload in enumerate(payloads):
        while True:
            try:
                p.produce(topic, key=str(i).encode(), value=payload)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        if rate:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    assert p.flush(30) == 0, "messages left undelivered"


def high_watermarks(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks", "log_level": 3})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)
        }
    finally:
        c.close()


def committed(bootstrap: str, group: str, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


# -- the landed lake ------------------------------------------------------------------------------------
@dataclass
class Landed:
    rows: pl.DataFrame
    files: dict[str, int]  # "date=D/name" -> rows
    temp_files: list[Path] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    reject_files: list[str] = field(default_factory=list)


def read_landed(data: Path) -> Landed:
    """Read every landed file, checking each is whole and named by topic, partition and window."""
    root = data / "landing" / "transactions"
    frames, files = [], {}
    for path in sorted(root.glob("date=*/*.parquet")):
        match = WINDOW_FILE.match(path.name)
        assert match, f"unexpected landed file name {path}"
        frame = pl.read_parquet(path)  # raises on a partial file
        partitions = frame["kafka_partition"].unique().to_list()
        assert partitions == [int(match["partition"])], (path, partitions)
        start = int(match["start"])
        assert frame["kafka_offset"].min() >= start, path  # type: ignore[operator]
        frames.append(frame)
        files[f"{path.parent.name}/{path.name}"] = frame.height
    temp = [p for p in root.glob("date=*/*") if not p.name.endswith(".parquet")]
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in temp), temp
    rejects: list[dict[str, Any]] = []
    reject_files = []
    for path in sorted((data / "quarantine" / "transactions").glob("*.rejects.jsonl")):
        reject_files.append(path.name)
        rejects.extend(json.loads(line) for line in path.read_text().splitlines())
    rows = pl.concat(frames) if frames else pl.DataFrame()
    return Landed(rows, files, temp, rejects, reject_files)


def assert_exactly_once(landed: Landed, expected_event_ids: set[str]) -> None:
    """Each Kafka message is one row (no copies across files); the events are exactly those sent."""
    rows = landed.rows
    assert rows.height > 0
    positions = rows.select("kafka_topic", "kafka_partition", "kafka_offset")
    assert positions.is_duplicated().sum() == 0, "a Kafka message landed twice"
    assert set(rows["event_id"].to_list()) == expected_event_ids
    rejected = [(r["topic"], r["partition"], r["offset"]) for r in landed.rejects]
    assert len(rejected) == len(set(rejected)), "a bad message was dead-lettered twice"


def lander_command(
    *,
    bootstrap: str,
    topic: str,
    group: str,
    data: Path,
    until_idle: float | None,
    consumer_config: dict[str, Any],
    max_batch_events: int = 50_000,
    max_batch_seconds: float = 2.0,
    offset_window: int | None = None,
) -> list[str]:
    command = [
        sys.executable,
        str(HERE),
        "land",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--data",
        str(data),
        "--config",
        json.dumps(consumer_config),
        "--max-batch-events",
        str(max_batch_events),
        "--max-batch-seconds",
        str(max_batch_seconds),
    ]
    if until_idle is not None:
        command += ["--until-idle", str(until_idle)]
    if offset_window is not None:
        command += ["--offset-window", str(offset_window)]
    return command


def _land_main(args: argparse.Namespace) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from reconciliation_pipeline.kafka_lander import OFFSET_WINDOW, land_from_kafka
    from reconciliation_pipeline.lake import Lake

    stats = land_from_kafka(
        bootstrap_servers=args.bootstrap,
        topic=args.topic,
        group_id=args.group,
        lake=Lake(Path(args.data)),
        tz="Europe/Malta",
        until_idle=args.until_idle,
        max_batch_events=args.max_batch_events,
        max_batch_seconds=args.max_batch_seconds,
        consumer_config=json.loads(args.config),
        offset_window=args.offset_window or OFFSET_WINDOW,
    )
    print(json.dumps(stats.as_dict()), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("mock")
    land = sub.add_parser("land")
    land.add_argument("--bootstrap", required=True)
    land.add_argument("--topic", required=True)
    land.add_argument("--group", required=True)
    land.add_argument("--data", required=True)
    land.add_argument("--config", default="{}")
    land.add_argument("--until-idle", type=float, default=None)
    land.add_argument("--max-batch-events", type=int, default=50_000)
    land.add_argument("--max-batch-seconds", type=float, default=2.0)
    land.add_argument("--offset-window", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "mock":
        serve_mock()
    else:
        _land_main(args)


if __name__ == "__main__":
    main()
