"""The Dagster definitions through Dagster's own APIs: load, validate, materialise, block on bad data."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl

from reconciliation_pipeline.defs.assets import ASSETS, LEDGER_SCHEMA_CHECK
from reconciliation_pipeline.defs.resources import ReconResource
from reconciliation_pipeline.frames import LANDED_SCHEMA, conform
from reconciliation_pipeline.lake import Lake, atomic_write_parquet

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 3, 2)


def test_definitions_load_with_the_expected_graph() -> None:
    from reconciliation_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {
        "landed_transactions",
        "settlement_lines",
        "bank_statements",
        "reconciliation",
        "outcomes",
        "exceptions",
        "daily_report",
    }
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("reconciliation")).parent_keys} == {
        "landed_transactions",
        "settlement_lines",
        "bank_statements",
    }
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("exceptions")).parent_keys} == {"outcomes"}
    checks = {c.name for c in graph.asset_check_keys}
    assert {
        "ledger_schema",
        "settlement_lines_schema",
        "every_record_has_one_outcome",
        "outcome_schema",
        "ge_reconciliation_outcomes",
        "ge_exception_queue",
        "store_control_totals",
    } <= checks


def test_dagster_definitions_validate(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _landed(rows: list[dict[str, object]]) -> pl.DataFrame:
    return conform(pl.DataFrame(rows), LANDED_SCHEMA)


def _event(n: int, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "event_id": f"ev-{n}",
        "transaction_id": f"tx-{n}",
        "psp": "adyen",
        "psp_reference": f"P{n}",
        "kind": "deposit",
        "amount_minor": 100 * n,
        "currency": "EUR",
        "occurred_at": dt.datetime(2026, 3, 2, 9, n, tzinfo=dt.UTC),
        "player_id": "p",
        "brand": "b",
        "jurisdiction": "MT",
    }
    row.update(overrides)
    return row


def test_a_partition_materialises_and_its_checks_pass(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "data")
    lake.ensure()
    atomic_write_parquet(
        lake.landing_transactions_date(DAY) / "x.parquet", _landed([_event(1), _event(2), _event(2)])
    )  # ev-2 redelivered
    resource = ReconResource(data_dir=str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ASSETS, partition_key=DAY.isoformat(), instance=instance, resources={"recon": resource}
        )
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        assert evaluations and all(e.passed for e in evaluations)
        mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
        ledger_meta = mats["landed_transactions"].materialization.metadata
        assert ledger_meta["dagster/row_count"].value == 2
        assert ledger_meta["duplicate_events_dropped"].value == 1
    pending = pl.read_parquet(lake.lake_table("outcomes", DAY) / "part-0.parquet")
    assert pending["status"].to_list() == ["pending", "pending"]


def test_a_failing_blocking_check_stops_downstream_assets(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "data")
    lake.ensure()
    # Written straight into landing, bypassing the lander's schema validation: an unknown kind.
    atomic_write_parquet(
        lake.landing_transactions_date(DAY) / "x.parquet", _landed([_event(1), _event(2, kind="bonus")])
    )
    resource = ReconResource(data_dir=str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ASSETS,
            partition_key=DAY.isoformat(),
            instance=instance,
            resources={"recon": resource},
            raise_on_error=False,
        )
        failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
        assert [e.check_name for e in failed] == [LEDGER_SCHEMA_CHECK]
        done = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
        assert "reconciliation" not in done and "outcomes" not in done
    assert not (lake.lake_table("outcomes", DAY) / "part-0.parquet").exists()


def test_recon_run_exits_non_zero_when_a_blocking_check_fails(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "data")
    lake.ensure()
    atomic_write_parquet(
        lake.landing_transactions_date(DAY) / "x.parquet", _landed([_event(1, kind="bonus")])
    )
    env = {**os.environ, "RECON_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("recon")),
            "run",
            "--from",
            DAY.isoformat(),
            "--to",
            DAY.isoformat(),
        ],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "ledger_schema" in done.stderr


def test_the_local_instance_config_queues_runs_one_at_a_time(tmp_path: Path) -> None:
    import shutil

    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", tmp_path)
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        config = instance.get_concurrency_config()
        assert config.run_queue_config is not None and config.run_queue_config.max_concurrent_runs == 1
        assert config.pool_config.default_pool_limit == 1
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    finally:
        instance.dispose()


def test_store_writers_share_a_pool_and_transient_faults_are_retried() -> None:
    from reconciliation_pipeline.defs.assets import STORE_POOL, outcomes, reconciliation, settlement_lines

    assert outcomes.op.pool == STORE_POOL
    assert outcomes.op.retry_policy is not None and outcomes.op.retry_policy.max_retries == 3
    assert settlement_lines.op.retry_policy is not None
    # Bad data is not transient: the matching asset is not retried, its blocking checks stop it.
    assert reconciliation.op.retry_policy is None
