"""The work behind each Dagster asset, as plain functions over the lake and the store.

Assets in ``defs/`` call these and add metadata; tests call them directly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
from sqlalchemy.engine import Engine

from . import metrics, reports
from .frames import LANDED_SCHEMA, LEDGER_SCHEMA, SETTLEMENT_LINE_SCHEMA, conform, empty
from .ingest import parsed_lines
from .lake import PART, Lake, atomic_write, atomic_write_parquet
from .matching import ReconResult, reconcile
from .matching.accuracy import Accuracy, measure, read_truth
from .settings import Settings
from .store import db, service
from .store.anchors import anchor_on_commit, anchors_path
from .telemetry import current_ids, step_span


@dataclass(frozen=True)
class LedgerBuild:
    frame: pl.DataFrame
    landed_files: int
    events_read: int
    duplicate_events: int
    duplicate_transaction_ids: int


def build_ledger(lake: Lake, day: dt.date, tz: str) -> LedgerBuild:
    """Landed events of one business date, de-duplicated by event_id, into ``lake/transactions``."""
    built = read_ledger(lake, day, tz)
    atomic_write_parquet(lake.lake_table("transactions", day) / PART, built.frame)
    return built


def read_ledger(lake: Lake, day: dt.date, tz: str) -> LedgerBuild:
    """Landed events of one business date, de-duplicated by event_id (a pure read of landing/)."""
    folder = lake.landing_transactions_date(day)
    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    parts = [
        conform(pl.read_parquet(f), LANDED_SCHEMA).with_columns(landed_file=pl.lit(f.name)) for f in files
    ]
    raw = pl.concat(parts) if parts else empty({**LANDED_SCHEMA, "landed_file": pl.String()})
    raw = raw.sort("landed_file", "kafka_partition", "kafka_offset", nulls_last=False, maintain_order=True)
    by_event = raw.unique("event_id", keep="first", maintain_order=True)
    ledger = by_event.unique("transaction_id", keep="first", maintain_order=True).with_columns(
        business_date=pl.col("occurred_at").dt.convert_time_zone(tz).dt.date()
    )
    ledger = conform(ledger.filter(pl.col("business_date") == day), LEDGER_SCHEMA)
    return LedgerBuild(
        ledger, len(files), raw.height, raw.height - by_event.height, by_event.height - ledger.height
    )


def build_settlement_lines(lake: Lake, day: dt.date) -> pl.DataFrame:
    """Accepted settlement lines booked on ``day`` into ``lake/settlement_lines``."""
    scan = parsed_lines(lake)
    lines = (
        conform(scan.filter(pl.col("booking_date") == day).collect(), SETTLEMENT_LINE_SCHEMA)
        if scan is not None
        else empty(SETTLEMENT_LINE_SCHEMA)
    )
    lines = lines.sort("psp", "source_file", "source_row")
    atomic_write_parquet(lake.lake_table("settlement_lines", day) / PART, lines)
    return lines


def run_reconciliation(lake: Lake, day: dt.date, settings: Settings) -> ReconResult:
    """Everything landed and dated within the lookback window up to ``day``, through the matching rules.

    Reads the sources (landed events, parsed settlement files) rather than other partitions' outputs,
    so the result is a function of what has landed and of ``day`` alone: dates can run in any order.
    """
    with step_span("reconcile", {"business_date": day}, metrics_dir=lake.root / "metrics"):
        first = day - dt.timedelta(days=settings.lookback_days)
        days = [first + dt.timedelta(days=n) for n in range((day - first).days + 1)]
        parts = [read_ledger(lake, d, settings.business_tz).frame for d in days]
        ledger = (
            pl.concat(parts)
            .sort("occurred_at", "transaction_id")
            .unique("transaction_id", keep="first", maintain_order=True)
        )
        scan = parsed_lines(lake)
        lines = (
            scan.filter(pl.col("booking_date").is_between(first, day)).collect()
            if scan is not None
            else empty(SETTLEMENT_LINE_SCHEMA)
        )
        result = reconcile(
            conform(ledger, LEDGER_SCHEMA),
            conform(lines, SETTLEMENT_LINE_SCHEMA),
            as_of=day,
            lag_days=settings.settlement_lag_days,
            fx_tolerance_minor=settings.fx_tolerance_minor,
            rules=settings.rules,
        )
        outcomes = lake.lake_table("outcomes", day) / PART
        atomic_write(outcomes, result.sink_outcomes)
        result.written_to(outcomes)
        atomic_write_parquet(lake.lake_table("evidence", day) / PART, result.evidence)
        metrics.record_reconciled(result.outcomes)
        return result


def _run_id(chain: dict[str, object]) -> str | None:
    run_id = chain.get("run_id")
    return None if run_id is None else str(run_id)


def publish_outcomes(
    lake: Lake, engine: Engine, day: dt.date, *, chain: dict[str, object], actor: str
) -> service.ApplyResult:
    """Write the day's records and outcomes into the store, audited, in one transaction."""
    outcomes = lake.read_day("outcomes", day)
    evidence = lake.read_day("evidence", day)
    ledger = lake.read_day("transactions", day)
    lines = lake.read_day("settlement_lines", day)
    if outcomes is None:
        raise FileNotFoundError(f"no reconciliation output for {day}: materialise `reconciliation` first")
    with (
        step_span(
            "publish",
            {"business_date": day, "dagster.run_id": _run_id(chain)},
            metrics_dir=lake.root / "metrics",
        ),
        db.session_scope(engine) as session,
    ):
        # audit events carry the payment's trace id; batch events (and records of no known payment)
        # the trace id of this publish span
        run_trace, _ = current_ids()
        # once committed, the chain's head is anchored in the lake (audit/anchors.jsonl)
        anchor_on_commit(session, anchors_path(lake.root), run_id=_run_id(chain))
        if ledger is not None and ledger.height:
            service.upsert_transactions(session, ledger, chain=chain, actor=actor, trace_id=run_trace)
        if lines is not None and lines.height:
            service.upsert_settlement_lines(session, lines, chain=chain, actor=actor, trace_id=run_trace)
        applied = service.apply_outcomes(
            session, outcomes, as_of=day, chain=chain, actor=actor, evidence=evidence, trace_id=run_trace
        )
        metrics.record_published(applied)
        return applied


def build_daily_report(
    lake: Lake, day: dt.date, engine: Engine, *, generated_at: dt.datetime | None = None
) -> reports.ReportFiles:
    """Finance's report of one business date: DuckDB SQL (``sql/``) over the Parquet lake and the outcome
    export (latest status of every record in the store), written to ``reports/date=YYYY-MM-DD/`` as CSV
    (integer minor units), an XLSX workbook and a self-contained HTML report with charts."""
    from sqlalchemy import select

    from .store.models import ExceptionItem

    with db.session_scope(engine) as session:
        export = service.export_outcomes(session)
        queue = pl.DataFrame(
            [tuple(r) for r in session.execute(select(ExceptionItem.record_key, ExceptionItem.state))],
            schema=reports.QUEUE_SCHEMA,
            orient="row",
        )
    data = reports.query_reports(lake, day, export, exception_queue=queue)
    return reports.write_reports(data, reports.report_folder(lake.reports, day), generated_at=generated_at)


def record_accuracy(
    lake: Lake, day: dt.date, settings: Settings, *, run_id: str | None = None
) -> Accuracy | None:
    """Measure the day's reconciliation output against ``RECON_GROUND_TRUTH`` and keep the figures in
    ``lake/accuracy/`` for the reports' accuracy over time.

    The same rule as the blocking accuracy check: evaluated only on the truth's as-of date (its last
    ledger business date), over the records of the lookback window. ``None`` when not evaluated.
    """
    path = settings.ground_truth
    outcomes = lake.read_day("outcomes", day)
    if path is None or not path.exists() or outcomes is None:
        return None
    truth = read_truth(path)
    as_of = truth.filter(pl.col("record") == "ledger")["business_date"].max()
    if as_of != day:
        return None
    first = day - dt.timedelta(days=settings.lookback_days)
    acc = measure(outcomes, truth.filter(pl.col("business_date") >= first))
    keep_accuracy(lake, day, acc, run_id=run_id)
    return acc


def keep_accuracy(lake: Lake, day: dt.date, acc: Accuracy, *, run_id: str | None = None) -> None:
    """Keep one measurement: the figures in ``lake/accuracy/`` for the reports, and the
    ``recon_pipeline_accuracy_ratio`` metric (alerted below 0.998). The blocking check calls this too, so
    a date whose accuracy fails the check (and so publishes no report) is still recorded and alerted."""
    reports.record_accuracy(lake, day, acc, run_id=run_id)
    metrics.record_accuracy(acc.overall)
    metrics.export_step("accuracy", lake.root / "metrics")
