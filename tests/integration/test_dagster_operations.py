"""Operators' flows through Dagster's own API, on demo data in a real instance and a real SQLite store.

* A run broken mid-way (the outcome store refuses the publication's INSERTs while a fault file exists)
  is re-executed from failure with ``ReexecutionOptions.from_failure``: the outcomes equal those of a
  clean run, and the audit trail shows the failed attempt and the re-execution.
* A blocking Great Expectations check (row-count reconciliation) stops publication when the matcher
  loses a record.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
import sqlalchemy.exc
from polars.testing import assert_frame_equal
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from reconciliation_pipeline.defs.assets import ASSETS, EXCEPTIONS_SUITE_CHECK, OUTCOMES_SUITE_CHECK
from reconciliation_pipeline.defs.checks import ACCURACY_CHECK
from reconciliation_pipeline.defs.jobs import reconcile_job
from reconciliation_pipeline.defs.resources import ReconResource
from reconciliation_pipeline.demo.generator import DemoConfig, generate
from reconciliation_pipeline.ingest import ingest_file
from reconciliation_pipeline.lake import Lake
from reconciliation_pipeline.landing import land_jsonl
from reconciliation_pipeline.store import db, service
from reconciliation_pipeline.store.models import AuditEvent

START = dt.date(2026, 3, 2)
DAY = dt.date(2026, 3, 4)  # a date with matches, pendings and exceptions in the demo data
WRITES_OUTCOMES = re.compile(r'^\s*INSERT\b[^(]*\bINTO\s+"?outcomes"?\s', re.IGNORECASE)
DROPPED = "server closed the connection unexpectedly (injected fault)"
INJECTED = "permission denied for table outcomes (injected fault)"


def make_demo_lake(root: Path, *, days: int = 3, per_day: int = 40, seed: int = 5) -> Path:
    """Demo data landed and ingested the way `recon demo` does it; returns the data folder."""
    data = root / "data"
    lake = Lake(data)
    lake.ensure()
    manifest = generate(data / "demo-input", DemoConfig(seed=seed, days=days, transactions_per_day=per_day))
    land_jsonl(manifest.events_file, lake=lake, tz="Europe/Malta")
    engine = db.make_engine(f"sqlite:///{data / 'recon.db'}")
    db.migrate(engine)
    try:
        for psp, files in sorted(manifest.settlement_files.items()):
            for path in files:
                ingest_file(path, psp=psp, lake=lake, engine=engine, actor="test")
    finally:
        engine.dispose()
    return data


class StoreWithFault(ReconResource):
    """The real resource; while ``fault_file`` exists its store engine refuses INSERTs into ``outcomes``,
    in the middle of the publication transaction (ledger and settlement rows are already written in it)."""

    fault_file: str = ""
    #: "persistent": refused while the file exists (non-transient, a revoked grant); "once": the connection
    #: drops on the first attempt and the file is removed (a transient outage the retry policy covers).
    fault_mode: str = "persistent"

    @cached_property
    def engine(self) -> Engine:
        engine = db.make_engine(self.settings.db_url)
        db.migrate(engine)
        fault = Path(self.fault_file)

        @event.listens_for(engine, "before_cursor_execute")
        def _refuse(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            if fault.exists() and WRITES_OUTCOMES.match(statement):
                if self.fault_mode == "once":
                    fault.unlink()
                    raise sqlalchemy.exc.OperationalError(statement, None, Exception(DROPPED))
                raise sqlalchemy.exc.ProgrammingError(statement, None, Exception(INJECTED))

        return engine


def faulty_job() -> dg.JobDefinition:
    defs = dg.Definitions(
        assets=ASSETS, jobs=[reconcile_job], resources={"recon": StoreWithFault.configure_at_launch()}
    )
    return defs.resolve_job_def(reconcile_job.name)


def _run_config(data: Path, db_file: Path, fault_file: Path) -> dict[str, Any]:
    return {
        "execution": {"config": {"in_process": {}}},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        "resources": {
            "recon": {
                "config": {
                    "data_dir": str(data),
                    "database_url": f"sqlite:///{db_file}",
                    "fault_file": str(fault_file),
                }
            }
        },
    }


def _stored(db_file: Path) -> tuple[pl.DataFrame, list[AuditEvent]]:
    engine = db.make_engine(f"sqlite:///{db_file}")
    try:
        with db.session_scope(engine) as session:
            export = service.export_outcomes(session).sort(
                "record", "transaction_id", "source_file", "source_row"
            )
            events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
            session.expunge_all()
    finally:
        engine.dispose()
    return export, events


def _steps(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> set[str]:
    records = instance.get_records_for_run(run_id, of_type=kind).records
    return {r.event_log_entry.step_key or "" for r in records}


def _materialize_day(instance: dg.DagsterInstance, resource: ReconResource) -> dg.ExecuteInProcessResult:
    """Every asset for :data:`DAY` through ``dg.materialize`` on ``resource``; failures are returned."""
    return dg.materialize(
        ASSETS,
        partition_key=DAY.isoformat(),
        instance=instance,
        resources={"recon": resource},
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_lake(tmp_path_factory.mktemp("ops"))


def test_a_failed_partition_re_executed_from_failure_equals_a_clean_run(
    demo_data: Path, tmp_path: Path
) -> None:
    partition = {"dagster/partition": DAY.isoformat()}
    fault = tmp_path / "store-refuses-writes"
    never = tmp_path / "no-fault"
    clean_db, faulty_db = tmp_path / "clean.db", tmp_path / "faulty.db"
    job = dg.reconstructable(faulty_job)
    with dg.instance_for_test() as instance:
        with dg.execute_job(
            job, instance, run_config=_run_config(demo_data, clean_db, never), tags=partition
        ) as r:
            assert r.success
        fault.touch()
        with dg.execute_job(
            job, instance, run_config=_run_config(demo_data, faulty_db, fault), tags=partition
        ) as r:
            assert not r.success
            failed_run = r.run_id
        # Mid-way: everything up to the matching succeeded, publication failed, what follows never ran.
        assert {"landed_transactions", "settlement_lines", "bank_statements", "reconciliation"} <= _steps(
            instance, failed_run, dg.DagsterEventType.STEP_SUCCESS
        )
        assert _steps(instance, failed_run, dg.DagsterEventType.STEP_FAILURE) == {"outcomes"}
        # A non-transient error is not retried by the retry policy: one attempt, at once.
        assert not _steps(instance, failed_run, dg.DagsterEventType.STEP_UP_FOR_RETRY)
        assert "exceptions" not in _steps(instance, failed_run, dg.DagsterEventType.STEP_SUCCESS)
        half, _ = _stored(faulty_db)
        assert half.is_empty(), "the failed publication must leave nothing behind"

        fault.unlink()  # the operator fixes the store, then re-executes from failure
        options = dg.ReexecutionOptions.from_failure(failed_run, instance)
        # execute_job does not carry the parent's tags over (the UI's "Re-execute from failure" does):
        # the partition is passed again.
        with dg.execute_job(job, instance, reexecution_options=options, tags=partition) as r:
            assert r.success
            again = r.run_id
        rerun = instance.get_run_by_id(again)
        assert rerun is not None and rerun.parent_run_id == failed_run
        assert rerun.tags.get("dagster/partition") == DAY.isoformat()
        # Only the failed step and what depends on it ran again.
        ran = _steps(instance, again, dg.DagsterEventType.STEP_SUCCESS)
        assert {"outcomes", "exceptions", "daily_report"} <= ran
        assert not ran & {"landed_transactions", "settlement_lines", "reconciliation"}

    clean, _ = _stored(clean_db)
    healed, events = _stored(faulty_db)
    assert (
        clean.height > 0 and (clean["status"] == "exception").any() and (clean["status"] == "matched").any()
    )
    assert_frame_equal(healed, clean)

    failed = [e for e in events if e.action == "outcomes.publish_failed"]
    assert len(failed) == 1 and failed[0].chain["run_id"] == failed_run
    assert INJECTED in failed[0].outcome["message"] and failed[0].outcome["transient"] is False
    published = [e for e in events if (e.chain or {}).get("run_id") == again]
    assert published, "the re-execution's writes are audited under its run id"
    assert all(e.chain.get("parent_run_id") == failed_run for e in published)


def test_a_blocking_expectation_stops_publication(
    demo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input record that got no outcome (as if the matcher lost it) passes the pandera and uniqueness
    checks but not the suite's row-count reconciliation: `outcomes` is not published, the store stays empty.
    The lost record is simulated on the inputs' side: one ledger record more than the matcher saw."""
    from reconciliation_pipeline import exception_queue

    real = exception_queue.records_in_view

    def with_a_lost_record(*args: Any, **kwargs: Any) -> pl.DataFrame:
        view = real(*args, **kwargs)
        lost = pl.DataFrame(
            {
                "record_key": ["ledger:lost-1"],
                "record": ["ledger"],
                "amount_minor": [100],
                "currency": ["EUR"],
            }
        )
        return pl.concat([view, lost.cast(view.schema)])  # type: ignore[arg-type]

    monkeypatch.setattr(exception_queue, "records_in_view", with_a_lost_record)
    db_file = tmp_path / "store.db"
    resource = ReconResource(data_dir=str(demo_data), database_url=f"sqlite:///{db_file}")
    with dg.instance_for_test() as instance:
        result = _materialize_day(instance, resource)
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert not evaluations[OUTCOMES_SUITE_CHECK].passed
        assert evaluations["every_record_has_one_outcome"].passed and evaluations["outcome_schema"].passed
        failed = str(evaluations[OUTCOMES_SUITE_CHECK].metadata["failed_expectations"].value)
        assert "expect_table_row_count_to_equal" in failed
        done = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
        assert "reconciliation" in done and not done & {"outcomes", "exceptions", "daily_report"}
    stored, _ = _stored(db_file)
    assert stored.is_empty()


def test_a_transient_store_fault_is_retried_by_the_retry_policy(demo_data: Path, tmp_path: Path) -> None:
    """The connection drops once in the middle of the publication: the retry policy runs `outcomes` again
    in the same run, which succeeds; the audit trail records the dropped attempt as transient."""
    fault = tmp_path / "connection-drops-once"
    fault.touch()
    db_file = tmp_path / "store.db"
    resource = StoreWithFault(
        data_dir=str(demo_data), database_url=f"sqlite:///{db_file}", fault_file=str(fault), fault_mode="once"
    )
    with dg.instance_for_test() as instance:
        result = _materialize_day(instance, resource)
        assert result.success
        assert _steps(instance, result.run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY) == {"outcomes"}
    assert not fault.exists()
    stored, events = _stored(db_file)
    assert stored.height > 0
    dropped = [e for e in events if e.action == "outcomes.publish_failed"]
    assert len(dropped) == 1 and dropped[0].outcome["transient"] is True
    assert DROPPED in dropped[0].outcome["message"] and dropped[0].inputs["attempt"] == 1
    # The dropped attempt wrote nothing else; the retry's writes follow it in the chain.
    published = [e for e in events if e.action != "outcomes.publish_failed"]
    assert published and all(e.seq > dropped[0].seq for e in published)


def test_a_failing_accuracy_check_blocks_publication_but_keeps_the_figures_and_the_metric(
    demo_data: Path, tmp_path: Path
) -> None:
    """A ground truth the outcomes disagree with: the blocking accuracy check fails, nothing is published
    and no report is made, yet the date's accuracy is kept in the lake and exported as the metric the
    alert watches (it must not only be recorded on the days that pass)."""
    truth = pl.read_csv(demo_data / "demo-input" / "ground_truth.csv", infer_schema=False)
    flipped = truth.with_columns(
        status=pl.when((pl.col("record") == "ledger") & (pl.col("status") == "matched"))
        .then(pl.lit("pending"))
        .otherwise(pl.col("status"))
    )
    assert flipped["status"].to_list() != truth["status"].to_list()
    truth_file = tmp_path / "wrong_truth.csv"
    flipped.write_csv(truth_file)
    db_file = tmp_path / "store.db"
    resource = ReconResource(
        data_dir=str(demo_data), database_url=f"sqlite:///{db_file}", ground_truth=str(truth_file)
    )
    with dg.instance_for_test() as instance:
        result = _materialize_day(instance, resource)
        accuracy = {e.check_name: e for e in result.get_asset_check_evaluations()}[ACCURACY_CHECK]
        assert not accuracy.passed
        done = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
        assert "reconciliation" in done and not done & {"outcomes", "daily_report"}
    kept = pl.read_parquet(demo_data / "lake" / "accuracy" / f"date={DAY.isoformat()}" / "part-0.parquet")
    overall = kept.filter(pl.col("category") == "overall").row(0, named=True)
    assert overall["run_id"] == result.run_id
    assert overall["accuracy"] == pytest.approx(float(accuracy.metadata["accuracy"].value))
    assert overall["accuracy"] < 0.998
    metric = (demo_data / "metrics" / "accuracy.prom").read_text()
    assert "recon_pipeline_accuracy_ratio" in metric
    stored, _ = _stored(db_file)
    assert stored.is_empty()


def test_a_failing_exception_queue_suite_stops_the_daily_report(
    demo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue loses one exception on its way to the lake: `ge_exception_queue` (one row per exception of
    the outcomes) fails, and the finance report of that date is not made from a queue known to be wrong."""
    from reconciliation_pipeline import exception_queue

    real = exception_queue.build_exceptions

    def losing_one(*args: Any, **kwargs: Any) -> pl.DataFrame:
        queue = real(*args, **kwargs)
        assert queue.height > 1, "the demo date has exceptions"
        return queue.slice(1)

    monkeypatch.setattr(exception_queue, "build_exceptions", losing_one)
    resource = ReconResource(data_dir=str(demo_data), database_url=f"sqlite:///{tmp_path / 'store.db'}")
    with dg.instance_for_test() as instance:
        result = _materialize_day(instance, resource)
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert not evaluations[EXCEPTIONS_SUITE_CHECK].passed
        done = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
        assert {"outcomes", "exceptions"} <= done and "daily_report" not in done
