"""Kafka landing against librdkafka's mock cluster (3 brokers on 127.0.0.1, 4 partitions a topic).

What is proved: every valid event lands, every bad one is dead-lettered with its position, each Kafka
message is exactly one row of exactly one file (replays rewrite the same names), committed offsets reach
the high watermarks, and that holds across rebalances, SIGTERM and a storm of SIGKILLs.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from reconciliation_pipeline.kafka_lander import KafkaLandStats, land_from_kafka
from reconciliation_pipeline.lake import Lake
from reconciliation_pipeline.pipeline import build_ledger

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kafka_helpers as kh

pytestmark = pytest.mark.kafka
TZ = "Europe/Malta"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mock() -> Iterator[kh.MockCluster]:
    cluster = kh.MockCluster()
    try:
        yield cluster
    finally:
        cluster.close()


def _land(mock: kh.MockCluster, topic: str, group: str, data: Path, **kwargs: object) -> KafkaLandStats:
    options: dict[str, object] = {"until_idle": 1.5, "consumer_config": mock.consumer_config, **kwargs}
    return land_from_kafka(
        bootstrap_servers=mock.bootstrap,
        topic=topic,
        group_id=group,
        lake=Lake(data),
        tz=TZ,
        **options,  # type: ignore[arg-type]
    )


def _events(n: int, prefix: str) -> tuple[list[bytes], set[str]]:
    payloads = [kh.encode(kh.make_event(i, prefix)) for i in range(n)]
    return payloads, {f"{prefix}-{i}" for i in range(n)}


def test_mock_cluster_reports_three_brokers_on_loopback(mock: kh.MockCluster) -> None:
    producer = kh.producer(mock.bootstrap)
    brokers = producer.list_topics(timeout=10).brokers.values()
    assert len(brokers) == 3 and {b.host for b in brokers} == {"127.0.0.1"}


def test_lands_every_valid_event_dead_letters_the_rest_and_commits_to_the_end(
    mock: kh.MockCluster, tmp_path: Path
) -> None:
    topic = mock.new_topic("basic")
    payloads, expected = _events(3000, "b")
    rng = random.Random(1)
    redelivered = rng.sample(payloads, 100)  # exact redeliveries: same bytes, same event_id
    stream = payloads + redelivered + kh.INVALID_PAYLOADS
    rng.shuffle(stream)
    kh.produce(mock.bootstrap, topic, stream)

    stats = _land(mock, topic, "basic", tmp_path, max_batch_events=400, offset_window=300)

    assert stats.consumed == len(stream)
    assert stats.landed == len(payloads) + len(redelivered)
    assert stats.dead_lettered == len(kh.INVALID_PAYLOADS)
    assert stats.business_dates == {dt.date(2026, 3, 2), dt.date(2026, 3, 3)}
    landed = kh.read_landed(tmp_path)
    kh.assert_exactly_once(landed, expected)
    assert landed.rows.height == len(payloads) + len(redelivered)
    assert landed.rows.unique("event_id").height == len(expected)
    # The dead letters say where each bad message is, why, and keep its bytes.
    assert len(landed.rejects) == len(kh.INVALID_PAYLOADS)
    by_original = {r["original"]: r for r in landed.rejects}
    assert by_original["{not json"]["message"].startswith("not a JSON object")
    binary = next(r for r in landed.rejects if r["original_encoding"] == "base64")
    assert binary["original"] == "//4AYmluYXJ5"
    for reject in landed.rejects:
        assert reject["topic"] == topic and reject["partition"] in range(4) and reject["offset"] >= 0
    assert {r["field"] for r in landed.rejects} >= {"amount_minor", "currency", "jurisdiction"}
    # Only durable work is committed, and all of it is.
    assert kh.committed(mock.bootstrap, "basic", topic) == kh.high_watermarks(mock.bootstrap, topic)
    # The ledger reads these files (and ignores a temporary file a crash could leave behind).
    day = dt.date(2026, 3, 2)
    folder = Lake(tmp_path).landing_transactions_date(day)
    (folder / f".{topic}-p0-w{0:020d}.parquet.abc123.tmp").write_bytes(b"PAR1 half a file")
    ledger = build_ledger(Lake(tmp_path), day, TZ)
    on_day = landed.rows.unique("event_id").filter(
        pl.col("occurred_at").dt.convert_time_zone(TZ).dt.date() == day
    )
    assert ledger.frame.height == on_day.height
    assert ledger.duplicate_events == ledger.events_read - on_day.height > 0


def test_replay_rewrites_the_same_files_instead_of_adding_copies(
    mock: kh.MockCluster, tmp_path: Path
) -> None:
    topic = mock.new_topic("replay")
    payloads, expected = _events(2000, "r")
    kh.produce(mock.bootstrap, topic, payloads + kh.INVALID_PAYLOADS)

    first_stats = _land(mock, topic, "replay-1", tmp_path, max_batch_events=700, offset_window=256)
    first = kh.read_landed(tmp_path)
    kh.assert_exactly_once(first, expected)
    # A fresh group replays from the beginning, with other batch boundaries.
    second_stats = _land(mock, topic, "replay-2", tmp_path, max_batch_events=333, offset_window=256)
    second = kh.read_landed(tmp_path)

    assert second_stats.consumed == first_stats.consumed == len(payloads) + len(kh.INVALID_PAYLOADS)
    assert second.files == first.files  # same names, same row counts
    assert second.reject_files == first.reject_files and len(second.rejects) == len(first.rejects)
    kh.assert_exactly_once(second, expected)
    assert second.rows.unique("event_id").height == first.rows.unique("event_id").height == len(expected)
    assert kh.committed(mock.bootstrap, "replay-2", topic) == kh.high_watermarks(mock.bootstrap, topic)


def test_two_landers_in_one_group_survive_rebalances_while_events_arrive(
    mock: kh.MockCluster, tmp_path: Path
) -> None:
    topic = mock.new_topic("rebalance")
    payloads, expected = _events(6000, "g")
    sender = threading.Thread(
        target=kh.produce, args=(mock.bootstrap, topic, payloads), kwargs={"rate": 1500}
    )
    results: dict[str, KafkaLandStats] = {}
    errors: list[BaseException] = []

    def lander(name: str, until_idle: float) -> None:
        try:
            results[name] = _land(
                mock, topic, "rebalance", tmp_path, until_idle=until_idle, max_batch_seconds=0.3
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    first = threading.Thread(target=lander, args=("a", 3.0))
    second = threading.Thread(target=lander, args=("b", 3.0))
    third = threading.Thread(target=lander, args=("c", 0.5))
    sender.start()
    first.start()
    time.sleep(1.0)
    second.start()  # joins while A holds every partition with a batch pending
    time.sleep(1.5)
    third.start()  # joins, then leaves again as soon as it has been idle for half a second
    for thread in (sender, first, second, third):
        thread.join(timeout=90)
        assert not thread.is_alive()
    assert not errors, errors

    assert results["a"].consumed > 0 and results["b"].consumed > 0
    assert results["a"].rebalances >= 2
    landed = kh.read_landed(tmp_path)
    kh.assert_exactly_once(landed, expected)
    assert sum(r.consumed for r in results.values()) >= len(payloads)  # replays after rebalances allowed
    assert kh.committed(mock.bootstrap, "rebalance", topic) == kh.high_watermarks(mock.bootstrap, topic)


def test_sigterm_flushes_and_commits_before_exiting(mock: kh.MockCluster, tmp_path: Path) -> None:
    topic = mock.new_topic("sigterm")
    payloads, expected = _events(1500, "t")
    kh.produce(mock.bootstrap, topic, payloads)
    command = kh.lander_command(
        bootstrap=mock.bootstrap,
        topic=topic,
        group="sigterm",
        data=tmp_path,
        until_idle=None,  # would run for ever
        consumer_config=mock.consumer_config,
        max_batch_seconds=3600,  # nothing is flushed but by the signal
    )
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assigned = threading.Event()

    def watch() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if "assigned [0, 1, 2, 3]" in line:
                assigned.set()

    threading.Thread(target=watch, daemon=True).start()
    assert assigned.wait(30), "the lander was never assigned the partitions"
    time.sleep(2.0)  # it consumes everything into its pending batch
    assert not list((tmp_path / "landing" / "transactions").glob("date=*/*.parquet"))
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert process.stdout is not None
    out = process.stdout.read()
    assert process.returncode == 0
    assert '"stopped_by": "signal"' in out
    kh.assert_exactly_once(kh.read_landed(tmp_path), expected)
    assert kh.committed(mock.bootstrap, "sigterm", topic) == kh.high_watermarks(mock.bootstrap, topic)


def test_sigkill_storm_loses_nothing_and_duplicates_nothing(mock: kh.MockCluster, tmp_path: Path) -> None:
    topic = mock.new_topic("storm")
    payloads, expected = _events(20_000, "k")
    stream = payloads + kh.INVALID_PAYLOADS * 10
    random.Random(7).shuffle(stream)
    sender = threading.Thread(target=kh.produce, args=(mock.bootstrap, topic, stream), kwargs={"rate": 800})
    sender.start()
    seed = int(os.environ.get("RECON_KAFKA_FAULT_SEED", "20260302"))
    rng = random.Random(seed)
    command = kh.lander_command(
        bootstrap=mock.bootstrap,
        topic=topic,
        group="storm",
        data=tmp_path,
        until_idle=None,
        consumer_config=mock.consumer_config,
        max_batch_events=700,
        max_batch_seconds=0.25,
        offset_window=2000,
    )
    kills = 0
    while kills < 22 or sender.is_alive():
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        time.sleep(rng.uniform(0.4, 3.0))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        kills += 1
        assert kills < 80, "the sender never finished"
    sender.join()
    landed_before_clean_run = kh.read_landed(tmp_path).rows.height
    assert landed_before_clean_run > 0, f"nothing landed between {kills} kills (seed {seed})"
    final = subprocess.run(
        [*command, "--until-idle", "3"], check=False, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert final.returncode == 0, final.stderr[-2000:]

    landed = kh.read_landed(tmp_path)  # every file readable, named by window, temp files only dotted
    kh.assert_exactly_once(landed, expected)
    assert landed.rows.height == len(payloads)
    assert len(landed.rejects) == len(kh.INVALID_PAYLOADS) * 10
    assert kh.committed(mock.bootstrap, "storm", topic) == kh.high_watermarks(mock.bootstrap, topic)
    for day in (dt.date(2026, 3, 2), dt.date(2026, 3, 3)):
        ledger = build_ledger(Lake(tmp_path), day, TZ)
        assert ledger.duplicate_events == 0 and ledger.frame.height > 0
    print(f"{kills} SIGKILLs (seed {seed}); {len(landed.temp_files)} temporary file(s) left behind")


def test_benchmark_runs_and_prints_a_ratio() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_kafka_landing.py"), "--events", "3000"],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ratio" in done.stdout and "x" in done.stdout.split("ratio", 1)[1]


def test_recon_land_cli_lands_from_the_mock_cluster(mock: kh.MockCluster, tmp_path: Path) -> None:
    topic = mock.new_topic("cli")
    payloads, expected = _events(500, "cli")
    kh.produce(mock.bootstrap, topic, payloads + kh.INVALID_PAYLOADS[:2])
    env = {**os.environ, "RECON_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("recon")),
            "land",
            "--bootstrap-servers",
            mock.bootstrap,
            "--topic",
            topic,
            "--group-id",
            "cli",
            "--until-idle",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    landed = pl.read_parquet(list((tmp_path / "data" / "landing" / "transactions").rglob("*.parquet")))
    assert set(landed["event_id"].to_list()) == expected
    assert landed["kafka_topic"].unique().to_list() == [topic]
    assert "dead-lettered" in done.stderr
