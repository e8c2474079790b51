"""``recon demo``: generate, land, ingest, run through Dagster, export and measure, then say where to look."""

from __future__ import annotations

import datetime as dt
import os

from rich.console import Console
from rich.table import Table

from .defs.resources import ReconResource
from .demo.generator import DemoConfig, generate
from .export import write_export
from .ingest import ingest_file
from .lake import Lake
from .landing import land_jsonl
from .matching.accuracy import Accuracy, measure, read_truth
from .progress import run_range_with_progress
from .reports import read_report, summary_line
from .runner import DateRun
from .settings import Settings, dagster_home
from .store import db


def accuracy_table(acc: Accuracy) -> Table:
    table = Table(title=f"Accuracy against the ground truth: {acc.overall:.4%} ({acc.correct}/{acc.total})")
    table.add_column("category")
    table.add_column("records", justify="right")
    table.add_column("correct", justify="right")
    table.add_column("accuracy", justify="right")
    for category, records, correct, share in acc.by_category.iter_rows():
        style = "" if correct == records else "yellow"
        table.add_row(category, str(records), str(correct), f"{share:.2%}", style=style)
    return table


def run_demo(settings: Settings, *, seed: int, days: int, per_day: int, console: Console) -> bool:
    lake = Lake(settings.data_path)
    lake.ensure()
    home = dagster_home()
    config = DemoConfig(
        seed=seed,
        days=days,
        transactions_per_day=per_day,
        business_tz=settings.business_tz,
        settlement_lag_days=settings.settlement_lag_days,
    )
    first = config.start
    last = config.start + dt.timedelta(days=days - 1)

    console.rule("1. Generate")
    manifest = generate(lake.root / "demo-input", config)
    c = manifest.counts
    psp_files = sum(c[f"files_{p}"] for p in ("adyen", "stripe", "paypal"))
    console.print(
        f"Generated {c['ledger_records']:,} ledger records ({c['event_lines']:,} event lines, of which "
        f"{c['event_redeliveries']} redeliveries and {c['invalid_events']} invalid), "
        f"{c['settlement_rows']:,} PSP file rows in {psp_files} files and "
        f"{c['bank_entries']} bank entries in {c['files_bank']} camt.053 statements, into {manifest.root}"
    )

    console.rule("2. Land events (recon land --from-jsonl)")
    landed = land_jsonl(manifest.events_file, lake=lake, tz=settings.business_tz)
    console.print(
        f"Landed {landed.landed} events; {landed.quarantined} dead-lettered"
        + (f" to {landed.dead_letter}" if landed.dead_letter else "")
    )
    for problem in landed.problems[:5]:
        console.print(f"  [yellow]dead-lettered[/yellow] {problem}")

    console.rule("3. Ingest settlement files and bank statements (recon ingest --psp)")
    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    for psp, files in sorted(manifest.settlement_files.items()):
        statuses: dict[str, int] = {}
        for path in files:
            outcome = ingest_file(path, psp=psp, lake=lake, engine=engine, actor="recon demo")
            statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
            if outcome.status == "quarantined":
                console.print(f"  [red]refused[/red] {outcome.message}")
        console.print(f"{psp}: {statuses}")

    console.rule(f"4. Run the Dagster assets for {first} .. {last} (recon run)")
    # The accuracy check of the reconciliation asset compares with this truth and blocks publication
    # below RECON_ACCURACY_THRESHOLD on the truth's as-of date.
    resource = ReconResource(
        data_dir=str(settings.data_path),
        database_url=settings.database_url,
        ground_truth=str(manifest.ground_truth_file),
    )
    results = run_range_with_progress(
        console, first, last, resource=resource, on_date=lambda r: _show_run(console, r)
    )
    if not all(r.success for r in results):
        console.print("[red]A run failed; see it in the Dagster UI.[/red]")
        return False

    console.rule("5. Export outcomes and measure accuracy")
    exports = lake.root / "exports"
    export_csv = exports / "outcomes.csv"
    frame = write_export(engine, export_csv, "csv")
    write_export(engine, exports / "outcomes.parquet", "parquet")
    truth = read_truth(manifest.ground_truth_file)
    acc = measure(frame, truth)
    console.print(accuracy_table(acc))

    console.rule("Where to look")
    env = (
        f"RECON_DATA_DIR={settings.data_path} DAGSTER_HOME={home} "
        f"RECON_GROUND_TRUTH={manifest.ground_truth_file}"
    )
    if os.environ.get("RECON_DATABASE_URL"):
        env += " RECON_DATABASE_URL=$RECON_DATABASE_URL"
    console.print(
        f"Dagster UI:      {env} .venv/bin/dagster dev -w workspace.yaml  (then http://127.0.0.1:3000)"
    )
    console.print(f"Outcome export:  {export_csv} (and outcomes.parquet)")
    report = read_report(lake.reports, last)
    if report is not None:
        console.print(f"Finance report:  {report.html}")
        console.print(f"                 {report.xlsx} (and CSV files beside it)")
        console.print(f"                 {summary_line(report)}")
    console.print(f"Daily reports:   {lake.reports}/date=YYYY-MM-DD/ (HTML with charts, XLSX, CSV)")
    console.print(f"Quarantine:      {lake.quarantine}")
    console.print(f"Data folder:     {lake.root}   outcome store: {settings.db_url}")
    console.print(f"Ground truth:    {manifest.ground_truth_file}")
    return True


def _show_run(console: Console, run: DateRun) -> None:
    mark = "[green]✓[/green]" if run.success else "[red]✗[/red]"
    extra = "" if run.success else f" {', '.join(run.failed_checks) or run.error}"
    console.print(f"{mark} {run.day}  Dagster run {run.run_id[:8]}{extra}")
