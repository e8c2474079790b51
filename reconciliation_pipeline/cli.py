"""``recon``: the platform's command line (DESIGN.md, "Command-line contract").

State is located by ``RECON_DATA_DIR``, ``RECON_DATABASE_URL`` and ``DAGSTER_HOME`` alone.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from partner_api.cli import app as partners_app

from .cli_audit import audit_app, exceptions_app
from .settings import Settings, dagster_home

app = typer.Typer(
    help="Payment reconciliation for regulated iGaming operators.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
outcomes_app = typer.Typer(help="The outcome export.", no_args_is_help=True)
app.add_typer(outcomes_app, name="outcomes")
app.add_typer(audit_app, name="audit")  # cli_audit.py
app.add_typer(exceptions_app, name="exceptions")  # cli_audit.py
app.add_typer(partners_app, name="partners")  # partner_api/cli.py

console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    return Settings()


def _lake_and_engine(settings: Settings):  # type: ignore[no-untyped-def]
    from .lake import Lake
    from .store import db

    lake = Lake(settings.data_path)
    lake.ensure()
    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    return lake, engine


class ExportFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"


@app.command()
def land(
    from_jsonl: Annotated[
        Path | None,
        typer.Option(
            "--from-jsonl", exists=True, dir_okay=False, help="A file of events, one JSON object a line"
        ),
    ] = None,
    bootstrap_servers: Annotated[str | None, typer.Option("--bootstrap-servers", help="Kafka H:P")] = None,
    topic: Annotated[str, typer.Option(help="Kafka topic")] = "payments.transactions.v1",
    group_id: Annotated[str, typer.Option("--group-id")] = "recon-lander",
    until_idle: Annotated[
        float | None, typer.Option("--until-idle", help="Exit after S idle seconds")
    ] = None,
) -> None:
    """Land transaction events into landing/transactions/date=YYYY-MM-DD/ (bad events are dead-lettered)."""
    from .lake import Lake
    from .landing import land_jsonl

    settings = _settings()
    if (from_jsonl is None) == (bootstrap_servers is None):
        err.print("[red]Give exactly one of --from-jsonl FILE or --bootstrap-servers H:P.[/red]")
        raise typer.Exit(2)
    lake = Lake(settings.data_path)
    lake.ensure()
    if bootstrap_servers is not None:
        from .kafka_lander import land_from_kafka
        from .telemetry import configure_logging

        configure_logging()  # a long-running lander: JSON log lines with trace and span ids on stderr
        stats = land_from_kafka(
            bootstrap_servers=bootstrap_servers,
            topic=topic,
            group_id=group_id,
            lake=lake,
            tz=settings.business_tz,
            until_idle=until_idle,
        )
        console.print(stats.summary())
        if stats.dead_lettered:
            err.print(
                f"[yellow]{stats.dead_lettered} event(s) broke the transaction-event v1 schema and were "
                f"dead-lettered to {lake.quarantine / 'transactions'}[/yellow]"
            )
        return
    assert from_jsonl is not None
    result = land_jsonl(from_jsonl, lake=lake, tz=settings.business_tz)
    for problem in result.problems[:20]:
        err.print(f"[yellow]dead-lettered[/yellow] {problem}")
    if len(result.problems) > 20:
        err.print(f"... and {len(result.problems) - 20} more")
    days = ", ".join(d.isoformat() for d in sorted(result.business_dates)) or "none"
    console.print(
        f"Landed {result.landed} events into {len(result.files)} file(s) for business dates: {days}."
    )
    if result.quarantined:
        err.print(
            f"[red]{result.quarantined} event(s) broke the transaction-event v1 schema and were "
            f"dead-lettered to {result.dead_letter}[/red]"
        )
        raise typer.Exit(1)


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="Settlement files")],
    psp: Annotated[str, typer.Option("--psp", help="adyen, stripe, paypal or bank (camt.053)")],
) -> None:
    """Check settlement files whole against the PSP's own format and copy them into landing/."""
    from .ingest import PSPS, ingest_file

    if psp not in PSPS:
        err.print(f"[red]--psp {psp!r} is not one of {', '.join(PSPS)}[/red]")
        raise typer.Exit(2)
    lake, engine = _lake_and_engine(_settings())
    refused = 0
    for path in files:
        outcome = ingest_file(path, psp=psp, lake=lake, engine=engine)
        if outcome.status == "quarantined":
            refused += 1
            err.print(f"[red]refused[/red] {outcome.message}\n  quarantined as {outcome.path}")
        elif outcome.status == "duplicate":
            console.print(f"[yellow]duplicate[/yellow] {outcome.message}")
        else:
            days = ", ".join(d.isoformat() for d in outcome.business_dates)
            console.print(
                f"[green]accepted[/green] {outcome.message} (business dates {days}) -> {outcome.path}"
            )
    if refused:
        raise typer.Exit(1)


@app.command()
def run(
    from_: Annotated[dt.datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="First business date")],
    to: Annotated[dt.datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="Last business date")],
) -> None:
    """Materialise every asset for those business dates through Dagster, checks included."""
    from .lake import Lake
    from .progress import run_range_with_progress
    from .reports import read_report, summary_line
    from .runner import DateRun

    reports_root = Lake(_settings().data_path).reports

    def show(run: DateRun) -> None:
        if run.success:
            report = read_report(reports_root, run.day)
            summary = f"  {summary_line(report, with_date=False)}" if report else ""
            console.print(f"[green]✓[/green] {run.day}  run {run.run_id[:8]}{summary}")
        else:
            reason = ", ".join(run.failed_checks) or run.error
            err.print(f"[red]✗[/red] {run.day}  run {run.run_id}: {reason}")

    results = run_range_with_progress(console, from_.date(), to.date(), on_date=show)
    last = read_report(reports_root, results[-1].day) if results and results[-1].success else None
    if last is not None:
        console.print(f"Report for {last.day}: {last.html} (and .xlsx, CSV in {last.folder})")
    if not all(r.success for r in results):
        err.print("[red]Stopped: a run or a blocking check failed (see the run in the Dagster UI).[/red]")
        raise typer.Exit(1)


@outcomes_app.command("export")
def outcomes_export(
    format_: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.csv,
    out: Annotated[Path, typer.Option("--out", dir_okay=False)] = Path("outcomes.csv"),
) -> None:
    """Write the outcome export: one row per ledger transaction and per settlement record."""
    from .export import write_export
    from .store import db

    settings = _settings()
    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    frame = write_export(engine, out, format_.value)
    console.print(f"Wrote {frame.height} outcomes to {out}")


@app.command()
def api(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Serve the partner API (uvicorn)."""
    import uvicorn

    uvicorn.run("partner_api.main:app", host=host, port=port, log_level="info")


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Seed of the generated data")] = 7,
    days: Annotated[int, typer.Option(help="Business days to generate")] = 7,
    per_day: Annotated[int, typer.Option("--per-day", help="Ledger transactions a day")] = 300,
    fresh: Annotated[bool, typer.Option(help="Start from an empty data folder and Dagster home")] = False,
) -> None:
    """Generate a realistic multi-day data set and run everything end to end on embedded defaults."""
    from .demo_run import run_demo

    settings = _settings()
    if fresh:
        data = settings.data_path
        if data.exists() and any(data.iterdir()) and not (data / "demo-input").exists():
            err.print(
                f"[red]--fresh refused: {data} holds data that no demo made; point RECON_DATA_DIR "
                "at a demo folder.[/red]"
            )
            raise typer.Exit(2)
        shutil.rmtree(data, ignore_errors=True)
        for sub in ("storage", "history", "schedules", "logs"):
            shutil.rmtree(dagster_home() / sub, ignore_errors=True)
    started = time.monotonic()
    ok = run_demo(settings, seed=seed, days=days, per_day=per_day, console=console)
    console.print(f"[dim]Finished in {time.monotonic() - started:.0f} s.[/dim]")
    if not ok:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="recon")


if __name__ == "__main__":  # pragma: no cover
    main()
