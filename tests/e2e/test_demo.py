"""The README's demo, end to end through the real CLI, Dagster and the store, on a small seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from reconciliation_pipeline.matching.accuracy import measure

pytestmark = pytest.mark.e2e
RECON = str(Path(sys.executable).with_name("recon"))


def recon(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([RECON, *args], env=env, capture_output=True, check=False, text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"recon {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, str], Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("demo")
    env = {
        **os.environ,
        "RECON_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "COLUMNS": "200",
    }
    env.pop("RECON_DATABASE_URL", None)
    done = recon(env, "demo", "--seed", "11", "--days", "6", "--per-day", "80")
    return env, root, done


def read_truth(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema_length=0).with_columns(
        pl.col("source_row").cast(pl.Int64), pl.col("business_date").str.to_date()
    )


def test_demo_prints_accuracy_and_where_to_look(
    demo: tuple[dict[str, str], Path, subprocess.CompletedProcess[str]],
) -> None:
    _, root, done = demo
    out = done.stdout
    assert "Accuracy against the ground truth" in out
    assert "dagster dev" in out
    assert str(root / "data" / "exports" / "outcomes.csv") in out.replace("\n", "")


def test_exported_outcomes_agree_with_the_ground_truth(
    demo: tuple[dict[str, str], Path, subprocess.CompletedProcess[str]],
) -> None:
    env, root, _ = demo
    out = root / "export.parquet"
    recon(env, "outcomes", "export", "--format", "parquet", "--out", str(out))
    outcomes = pl.read_parquet(out)
    truth = read_truth(root / "data" / "demo-input" / "ground_truth.csv")
    assert outcomes.columns == [
        "record",
        "transaction_id",
        "psp",
        "source_file",
        "source_row",
        "status",
        "match_id",
        "rule_id",
        "exception_category",
        "business_date",
    ]
    acc = measure(outcomes, truth)
    by_cat = {row["category"]: row for row in acc.by_category.iter_rows(named=True)}
    # Nothing missing, nothing invented.
    assert "not_in_truth" not in by_cat
    assert outcomes.height == truth.height
    # Every category of the fixed vocabulary that the data has is reconciled exactly.
    for category, row in by_cat.items():
        assert row["accuracy"] == 1.0, (category, acc.wrong.filter(pl.col("category") == category))
    assert acc.overall >= 0.998, acc.by_category


def test_csv_export_round_trips(demo: tuple[dict[str, str], Path, subprocess.CompletedProcess[str]]) -> None:
    env, root, _ = demo
    csv_out, pq_out = root / "o.csv", root / "o.parquet"
    recon(env, "outcomes", "export", "--format", "csv", "--out", str(csv_out))
    recon(env, "outcomes", "export", "--format", "parquet", "--out", str(pq_out))
    from_csv = pl.read_csv(csv_out, schema=pl.read_parquet_schema(pq_out))
    assert from_csv.equals(pl.read_parquet(pq_out))


def test_rerunning_a_date_changes_nothing_and_the_audit_chain_verifies(
    demo: tuple[dict[str, str], Path, subprocess.CompletedProcess[str]],
) -> None:
    env, root, _ = demo
    before = root / "before.parquet"
    after = root / "after.parquet"
    recon(env, "outcomes", "export", "--format", "parquet", "--out", str(before))
    recon(env, "run", "--from", "2026-03-03", "--to", "2026-03-04")
    recon(env, "outcomes", "export", "--format", "parquet", "--out", str(after))
    assert pl.read_parquet(before).equals(pl.read_parquet(after))
    verified = recon(env, "audit", "verify")
    assert "intact" in verified.stdout


def test_transaction_status_over_the_api(
    demo: tuple[dict[str, str], Path, subprocess.CompletedProcess[str]],
) -> None:
    """A partner key made with `recon partners add` reads a demo transaction of its PSP with its match
    evidence; another PSP's transaction is a 404 problem, and no key is a 401."""
    env, root, _ = demo
    from fastapi.testclient import TestClient

    from partner_api.main import create_app
    from reconciliation_pipeline.settings import Settings

    truth = read_truth(root / "data" / "demo-input" / "ground_truth.csv")
    matched = truth.filter((pl.col("record") == "ledger") & (pl.col("status") == "matched"))
    tx = matched["transaction_id"][0]
    export = pl.read_parquet(root / "data" / "exports" / "outcomes.parquet")
    psp = export.filter(pl.col("transaction_id") == tx)["psp"][0]
    other = export.filter((pl.col("record") == "ledger") & (pl.col("psp") != psp))["transaction_id"][0]
    created = recon(env, "partners", "add", f"e2e-{psp}", "--psp", psp)
    key = next(tok for tok in created.stdout.split() if tok.startswith("rk_"))

    settings = Settings(data_dir=Path(env["RECON_DATA_DIR"]), database_url=env.get("RECON_DATABASE_URL"))
    with TestClient(create_app(settings, instrument=False)) as client:
        auth = {"Authorization": f"Bearer {key}"}
        response = client.get(f"/v1/transactions/{tx}", headers=auth)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["transaction_id"] == tx and body["status"] == "matched"
        assert isinstance(body["amount_minor"], int)
        assert body["settlements"], "a matched transaction shows the settlement rows it matched"
        hidden = client.get(f"/v1/transactions/{other}", headers=auth)
        assert hidden.status_code == 404
        assert hidden.headers["content-type"].startswith("application/problem+json")
        assert client.get(f"/v1/transactions/{tx}").status_code == 401


def test_running_dates_out_of_order_gives_the_same_outcomes(
    demo: tuple[dict[str, str], Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """A second store and Dagster home over the same landed data, dates run last-first and then one
    date again: the export equals the in-order run's."""
    env, root, _ = demo
    in_order = root / "in_order.parquet"
    recon(env, "outcomes", "export", "--format", "parquet", "--out", str(in_order))
    shuffled = {
        **env,
        "RECON_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}",
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    for day in (
        "2026-03-07",
        "2026-03-05",
        "2026-03-02",
        "2026-03-06",
        "2026-03-03",
        "2026-03-04",
        "2026-03-05",
    ):
        recon(shuffled, "run", "--from", day, "--to", day)
    out = tmp_path / "shuffled.parquet"
    recon(shuffled, "outcomes", "export", "--format", "parquet", "--out", str(out))
    assert pl.read_parquet(out).equals(pl.read_parquet(in_order))


def test_the_demo_evaluates_the_blocking_accuracy_check(
    demo: tuple[dict[str, str], Path, subprocess.CompletedProcess[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    env, _, _ = demo
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as instance:
        records = instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=500
        )
        evaluated = [
            data
            for record in records
            if record.event_log_entry.dagster_event is not None
            and (data := record.event_log_entry.dagster_event.event_specific_data).check_name
            == "accuracy_vs_ground_truth"
            and data.metadata["evaluated"].value
        ]
    assert evaluated, "the accuracy check never compared with the ground truth"
    assert all(e.passed for e in evaluated)
    assert evaluated[0].metadata["accuracy"].value >= 0.998
