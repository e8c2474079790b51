"""Kafka landing throughput against a bare consume-and-discard loop over the same topic.

    .venv/bin/python benchmarks/bench_kafka_landing.py [--events 200000]

Produces N valid transaction events to a librdkafka mock cluster (3 brokers on 127.0.0.1, 4 partitions),
then reads them twice, each time as a fresh consumer group: a bare loop that consumes and discards, and
``land_from_kafka`` (validation, Parquet, dead letters, fsync, commits). Each rate is measured from the
first message received (group joins are excluded) to the last message discarded / the last event durable.
The producer compresses (zstd): the mock cluster keeps only the last 5 MB of message sets of a partition.
Also prints the rate of ``landing.validate_batch`` alone, which bounds the lander. Goal: ratio >= 0.5x.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciliation_pipeline.kafka_lander import land_from_kafka
from reconciliation_pipeline.lake import Lake
from reconciliation_pipeline.landing import validate_batch

TOPIC = "payments.transactions.v1"
GROUP_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "log_level": 3}
BASE = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def payload(n: int) -> bytes:
    event = {
        "event_id": f"bench-{n}",
        "transaction_id": f"tx-bench-{n}",
        "psp": ("adyen", "stripe", "paypal")[n % 3],
        "psp_reference": f"P{n:015d}",
        "kind": ("deposit", "withdrawal", "refund")[n % 3],
        "amount_minor": 100 + n % 100_000,
        "currency": ("EUR", "GBP", "SEK")[n % 3],
        "occurred_at": (BASE + dt.timedelta(seconds=n % 259_200)).isoformat(),  # three business days
        "player_id": f"pl-{n % 9973}",
        "brand": "lucky",
        "jurisdiction": "MT",
        "trace_id": f"{n:032x}",
    }
    return json.dumps(event, separators=(",", ":")).encode()


def produce(bootstrap: str, payloads: list[bytes]) -> None:
    # Compressed: the mock keeps only the last 5 MB of message sets per partition.
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "zstd", "log_level": 3}
    )
    for i, value in enumerate(payloads):
        while True:
            try:
                producer.produce(TOPIC, key=str(i).encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0


def bare_loop(bootstrap: str, expected: int) -> float:
    """Events per second of consume-and-discard, from the first message to the last."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-bare",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **GROUP_CONFIG,
        }
    )
    consumer.subscribe([TOPIC])
    seen, first = 0, None
    deadline = time.monotonic() + 120
    while seen < expected and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=5000, timeout=0.2):
            if message.error() is None:
                message.value()
                seen += 1
                if first is None:
                    first = time.monotonic()
    last = time.monotonic()
    consumer.close()
    assert seen == expected and first is not None, f"bare loop saw {seen}/{expected}"
    return seen / (last - first)


def lander(bootstrap: str, expected: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        stats = land_from_kafka(
            bootstrap_servers=bootstrap,
            topic=TOPIC,
            group_id="bench-lander",
            lake=Lake(Path(folder)),
            tz="Europe/Malta",
            until_idle=1.0,
            consumer_config=GROUP_CONFIG,
        )
    assert stats.consumed == stats.landed == expected, stats.as_dict()
    assert stats.first_message_at is not None and stats.last_message_at is not None
    # The last flush ran after the idle wait; count its duration, not the wait.
    busy = stats.last_message_at - stats.first_message_at + stats.last_flush_seconds
    return stats.consumed / busy


def validation_only(payloads: list[bytes]) -> float:
    sample = payloads[: min(len(payloads), 50_000)]
    started = time.perf_counter()
    validate_batch(sample, source="bench", rows=list(range(len(sample))))
    return len(sample) / (time.perf_counter() - started)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    mock = Producer({"test.mock.num.brokers": 3, "log_level": 3})  # owns the mock cluster
    metadata = mock.list_topics(timeout=10)
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())
    payloads = [payload(n) for n in range(args.events)]
    produce(bootstrap, payloads)

    bare = bare_loop(bootstrap, args.events)
    landed = lander(bootstrap, args.events)
    check = validation_only(payloads)
    print(f"machine: {os.cpu_count()} CPU(s), {cpu_model()}; {platform.python_version()}; {dt.date.today()}")
    print(f"events: {args.events} on 4 partitions (librdkafka mock cluster, 3 brokers, 127.0.0.1)")
    print(f"bare consume-and-discard : {bare:12,.0f} events/s")
    print(f"land_from_kafka          : {landed:12,.0f} events/s")
    print(f"validate_batch alone     : {check:12,.0f} events/s (upper bound of the lander)")
    print(f"ratio lander / bare      : {landed / bare:.3f}x (goal >= 0.5x)")
    sys.stdout.flush()
    os._exit(0)  # skip librdkafka's orderly shutdown of the mock cluster


if __name__ == "__main__":
    main()
