"""The file and landing sensors, evaluated through Dagster's own sensor API."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from reconciliation_pipeline.defs.resources import ReconResource
from reconciliation_pipeline.defs.sensors import landed_transactions_sensor, settlement_file_sensor
from reconciliation_pipeline.frames import LANDED_SCHEMA, conform
from reconciliation_pipeline.lake import atomic_write_parquet
from tests.examples import ADYEN_EXAMPLE, STRIPE_EXAMPLE


@pytest.fixture
def recon(tmp_path: Path) -> ReconResource:
    return ReconResource(data_dir=str(tmp_path / "data"))


def tick(
    sensor: dg.SensorDefinition, recon: ReconResource, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, resources={"recon": recon}, cursor=cursor)
    return sensor(context)


def drop(recon: ReconResource, psp: str, name: str, text: str) -> Path:
    folder = recon.lake.landing_settlements(psp)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_a_new_settlement_file_requests_runs_for_its_business_dates_once(recon: ReconResource) -> None:
    drop(recon, "adyen", "settlement_detail_report_batch_812.csv", ADYEN_EXAMPLE)
    with dg.instance_for_test() as instance:
        first = tick(settlement_file_sensor, recon, instance)
        dates = sorted(r.partition_key for r in first.run_requests or [])
        assert dates == ["2026-03-02", "2026-03-03", "2026-03-04"]
        assert len({r.run_key for r in first.run_requests or []}) == 3
        # The next tick sees the same file: registered already, nothing new is requested.
        assert not tick(settlement_file_sensor, recon, instance).run_requests
        # The same bytes dropped again under another name: recognised, removed from landing, no run.
        again = drop(recon, "adyen", "copy_of_batch_812.csv", ADYEN_EXAMPLE)
        result = tick(settlement_file_sensor, recon, instance)
        assert not result.run_requests
        assert not again.exists()


def test_a_bad_file_dropped_into_landing_is_quarantined_and_starts_nothing(recon: ReconResource) -> None:
    bad = drop(recon, "adyen", "not_adyen.csv", STRIPE_EXAMPLE)
    with dg.instance_for_test() as instance:
        result = tick(settlement_file_sensor, recon, instance)
    assert not result.run_requests
    assert result.skip_reason and "not_adyen.csv" in str(result.skip_reason.skip_message)
    assert not bad.exists()
    assert (recon.lake.quarantine / "adyen" / "not_adyen.csv.reason.json").exists()


def test_landed_transactions_request_their_date_and_the_same_files_never_twice(
    recon: ReconResource, tmp_path: Path
) -> None:
    day = dt.date(2026, 3, 2)
    frame = conform(
        pl.DataFrame(
            {
                "event_id": ["e1"],
                "transaction_id": ["t1"],
                "psp": ["adyen"],
                "kind": ["deposit"],
                "amount_minor": [100],
                "currency": ["EUR"],
                "occurred_at": [dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)],
                "player_id": ["p"],
                "brand": ["b"],
                "jurisdiction": ["MT"],
            }
        ),
        LANDED_SCHEMA,
    )
    path = recon.lake.landing_transactions_date(day) / "jsonl-x.parquet"
    atomic_write_parquet(path, frame)
    with dg.instance_for_test() as instance:
        first = tick(landed_transactions_sensor, recon, instance)
        assert [r.partition_key for r in first.run_requests or []] == ["2026-03-02"]
        # Nothing changed: no request.
        assert not tick(landed_transactions_sensor, recon, instance, first.cursor).run_requests
        # The same file rewritten (a replay): requested again with the SAME run key, which Dagster skips.
        shutil.copy(path, tmp_path / "copy.parquet")
        atomic_write_parquet(path, frame)
        replay = tick(landed_transactions_sensor, recon, instance, first.cursor)
        assert [r.run_key for r in replay.run_requests or []] == [r.run_key for r in first.run_requests or []]
        # New content for the date: a new run key.
        atomic_write_parquet(path, pl.concat([frame, frame.with_columns(event_id=pl.lit("e2"))]))
        changed = tick(landed_transactions_sensor, recon, instance, replay.cursor)
        assert changed.run_requests and changed.run_requests[0].run_key != first.run_requests[0].run_key  # type: ignore[index]


def test_registered_files_are_not_read_again_on_later_ticks(
    recon: ReconResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop(recon, "adyen", "settlement_detail_report_batch_812.csv", ADYEN_EXAMPLE)
    with dg.instance_for_test() as instance:
        assert tick(settlement_file_sensor, recon, instance).run_requests
        real_read = Path.read_bytes

        def no_landing_reads(self: Path) -> bytes:
            assert "landing" not in self.parts, f"{self} was read again"
            return real_read(self)

        monkeypatch.setattr(Path, "read_bytes", no_landing_reads)
        assert not tick(settlement_file_sensor, recon, instance).run_requests
        monkeypatch.setattr(Path, "read_bytes", real_read)
        # A new file next to it is read (and only it would be), and requests its dates.
        drop(recon, "stripe", "stripe_payout.csv", STRIPE_EXAMPLE)
        assert tick(settlement_file_sensor, recon, instance).run_requests


def test_a_landed_file_whose_registration_never_committed_is_registered_by_the_next_tick(
    recon: ReconResource, tmp_path: Path
) -> None:
    """An ingestion stopped after the file was landed and its parse cached, before its registration
    committed (simulated: the same lake, a store that never saw the file). The next tick registers it
    instead of taking the cache for a registration, so the same batch re-sent under another name is then
    recognised and not counted twice."""
    drop(recon, "adyen", "settlement_detail_report_batch_812.csv", ADYEN_EXAMPLE)
    with dg.instance_for_test() as instance:
        assert tick(settlement_file_sensor, recon, instance).run_requests
    (recon.lake.lake / "parsed" / ".landing-index.json").unlink()  # written with the registration
    fresh_store = ReconResource(data_dir=recon.data_dir, database_url=f"sqlite:///{tmp_path / 'other.db'}")
    from reconciliation_pipeline.store import db, service

    with db.session_scope(fresh_store.engine) as session:
        assert service.find_file(session, sha256=_sha(ADYEN_EXAMPLE)) is None
    with dg.instance_for_test() as instance:
        result = tick(settlement_file_sensor, fresh_store, instance)
        assert sorted(r.partition_key for r in result.run_requests or []) == [
            "2026-03-02",
            "2026-03-03",
            "2026-03-04",
        ]
        with db.session_scope(fresh_store.engine) as session:
            known = service.find_file(session, sha256=_sha(ADYEN_EXAMPLE))
            assert known is not None and known.status == "accepted"
        # the same batch under another name and other bytes (a trailing blank line): not counted twice
        resent = drop(recon, "adyen", "resent_batch_812.csv", ADYEN_EXAMPLE + "\n")
        assert not tick(settlement_file_sensor, fresh_store, instance).run_requests
        assert not resent.exists()


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
