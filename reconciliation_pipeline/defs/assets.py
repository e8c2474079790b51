"""Daily-partitioned assets, one business date per partition, from landed data to reports.

Each asset is a thin shell over :mod:`reconciliation_pipeline.pipeline` (and
:mod:`reconciliation_pipeline.exception_queue`); checks that guard publication are declared with the
asset (``check_specs``, evaluated in :mod:`.checks`) and are blocking: a failure stops downstream assets.
"""

import datetime as dt
import warnings
from typing import Any

import dagster as dg
import polars as pl
import sqlalchemy.exc

from .. import exception_queue, pipeline
from ..frames import LedgerModel, OutcomeModel, SettlementLineModel
from ..ingest import register_landed
from ..lake import atomic_write_parquet
from ..matching import RULES
from ..matching.accuracy import measure, read_truth
from ..store import audit, db
from .checks import (
    ACCURACY_CHECK,
    COMPLETENESS_CHECK,
    EXCEPTIONS_SUITE,
    EXCEPTIONS_SUITE_CHECK,
    LEDGER_SCHEMA_CHECK,
    OUTCOME_SCHEMA_CHECK,
    OUTCOMES_SUITE,
    OUTCOMES_SUITE_CHECK,
    SETTLEMENT_SCHEMA_CHECK,
    STORE_TOTALS_CHECK,
    md_table,
    schema_check,
    store_totals_check,
    suite_check,
)
from .partitions import business_date_partitions
from .resources import ReconResource

__all__ = [
    "ACCURACY_CHECK",
    "ASSETS",
    "COMPLETENESS_CHECK",
    "EXCEPTIONS_SUITE_CHECK",
    "LEDGER_SCHEMA_CHECK",
    "OUTCOMES_SUITE_CHECK",
    "OUTCOME_SCHEMA_CHECK",
    "SETTLEMENT_SCHEMA_CHECK",
    "STORE_TOTALS_CHECK",
]

GROUP = "reconciliation"
#: Writes to the outcome store run one at a time across all runs (the audit chain is one line anyway).
STORE_POOL = "recon_store"
#: Transient faults (a database restart, a busy file system) are retried; bad data is not transient and
#: is stopped by the blocking checks instead, so the matching asset has no retry policy.
TRANSIENT_RETRY = dg.RetryPolicy(
    max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
#: Errors worth retrying: the connection or the file system, not the statement or the data.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    sqlalchemy.exc.DisconnectionError,
    OSError,
)


def _blocking_check(name: str, asset: str, description: str) -> dg.AssetCheckSpec:
    """A blocking check evaluated per business date: its result is recorded against the partition, so the
    UI shows each date's result (``partitions_def`` on a check spec is a Dagster preview feature; the
    Dagster version is pinned)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name,
            asset=asset,
            blocking=True,
            partitions_def=business_date_partitions,
            description=description,
        )


def _day(context: dg.AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


def _chain(
    context: dg.AssetExecutionContext, recon: ReconResource, rules: tuple[str, ...] = ()
) -> dict[str, Any]:
    chain: dict[str, Any] = {
        "run_id": context.run.run_id,
        "asset": context.asset_key.to_user_string(),
        "partition": context.partition_key,
        "code_version": recon.settings.code_version,
        "rule_ids": list(rules),
    }
    if context.run.parent_run_id:  # a re-execution: say which run it continues
        chain["parent_run_id"] = context.run.parent_run_id
        chain["root_run_id"] = context.run.root_run_id
    return chain


def _status_table(frame: pl.DataFrame) -> dg.MetadataValue:
    counts = frame.group_by("record", "status").len().sort("record", "status")
    lines = ["| record | status | records |", "| --- | --- | ---: |"]
    lines += [f"| {r} | {s} | {n} |" for r, s, n in counts.iter_rows()]
    return dg.MetadataValue.md("\n".join(lines))


def _by_category(outcomes: pl.DataFrame) -> dict[str, int]:
    counts = (
        outcomes.filter(pl.col("status") == "exception")
        .group_by("exception_category")
        .len()
        .sort("exception_category")
    )
    return {str(c): int(n) for c, n in counts.iter_rows()}


def _path(recon: ReconResource, table: str, day: dt.date) -> dg.MetadataValue:
    return dg.MetadataValue.path(str(recon.lake.lake_table(table, day) / pipeline.PART))


@dg.asset(
    group_name=GROUP,
    partitions_def=business_date_partitions,
    check_specs=[
        _blocking_check(
            LEDGER_SCHEMA_CHECK,
            "landed_transactions",
            "pandera LedgerModel on the de-duplicated ledger records",
        )
    ],
    kinds={"polars", "parquet"},
)
def landed_transactions(context: dg.AssetExecutionContext, recon: ReconResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Operator transactions of one business date: landed Kafka events de-duplicated by `event_id`,
    with their business date, in `lake/transactions/date=YYYY-MM-DD/`."""
    day = _day(context)
    built = pipeline.build_ledger(recon.lake, day, recon.settings.business_tz)
    frame = built.frame
    by_ccy = frame.group_by("psp", "kind", "currency").agg(
        records=pl.len(), amount_minor=pl.col("amount_minor").sum()
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "path": _path(recon, "transactions", day),
            "landed_files": built.landed_files,
            "events_read": built.events_read,
            "duplicate_events_dropped": built.duplicate_events,
            "duplicate_transaction_ids_dropped": built.duplicate_transaction_ids,
            "by_psp_kind_currency": md_table(by_ccy.sort("psp", "kind", "currency"), 50),
            "preview": md_table(
                frame.select("transaction_id", "psp", "kind", "amount_minor", "currency"), 10
            ),
        },
        check_results=[schema_check(LEDGER_SCHEMA_CHECK, LedgerModel, frame)],
    )


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    group_name=GROUP,
    partitions_def=business_date_partitions,
    check_specs=[
        _blocking_check(
            SETTLEMENT_SCHEMA_CHECK,
            "settlement_lines",
            "pandera SettlementLineModel on the day's settlement lines",
        )
    ],
    kinds={"polars", "parquet"},
)
def settlement_lines(context: dg.AssetExecutionContext, recon: ReconResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """PSP settlement rows and bank statement entries booked on one business date, parsed from the
    PSPs' own formats (files that fail parsing, control totals included, are quarantined whole), in
    `lake/settlement_lines/`."""
    day = _day(context)
    registered = register_landed(recon.lake, recon.engine, actor="dagster", chain=_chain(context, recon))
    lines = pipeline.build_settlement_lines(recon.lake, day)
    quarantined = [r for r in registered if r.status != "accepted"]
    for outcome in quarantined:
        context.log.warning(outcome.message)
    by_psp = lines.group_by("psp").len().sort("psp")
    by_kind = lines.group_by("psp", "line_kind", "currency").agg(
        rows=pl.len(), amount_minor=pl.col("amount_minor").sum()
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": lines.height,
            "path": _path(recon, "settlement_lines", day),
            "rows_by_psp": dg.MetadataValue.json({str(k): int(v) for k, v in by_psp.iter_rows()}),
            "by_psp_kind_currency": md_table(by_kind.sort("psp", "line_kind", "currency"), 60),
            "files": lines["source_file"].n_unique(),
            "files_registered_this_run": len(registered),
            "files_refused_this_run": dg.MetadataValue.json([r.message for r in quarantined]),
        },
        check_results=[schema_check(SETTLEMENT_SCHEMA_CHECK, SettlementLineModel, lines)],
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=business_date_partitions,
    deps=[settlement_lines],
    kinds={"polars", "parquet"},
)
def bank_statements(context: dg.AssetExecutionContext, recon: ReconResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Bank statement entries (camt.053 `Ntry`, `psp = bank`) booked on one business date, in
    `lake/bank_statements/`: the bank side of the three-way match (PSP payout ↔ bank credit). The
    statement's control total (opening balance + booked entries = closing balance) is checked when the
    file is ingested; a statement that does not add up is quarantined whole and never reaches here."""
    day = _day(context)
    lines = recon.lake.read_day("settlement_lines", day)
    entries = lines.filter(pl.col("psp") == "bank") if lines is not None else pl.DataFrame()
    target = recon.lake.lake_table("bank_statements", day) / pipeline.PART
    if lines is not None:
        atomic_write_parquet(target, entries)
    if entries.is_empty():
        return dg.MaterializeResult(
            metadata={"dagster/row_count": 0, "path": dg.MetadataValue.path(str(target))}
        )
    flows = entries.group_by("account_id", "currency").agg(
        entries=pl.len(),
        statements=pl.col("batch_id").n_unique(),
        credits_minor=pl.col("amount_minor").filter(pl.col("amount_minor") > 0).sum(),
        debits_minor=pl.col("amount_minor").filter(pl.col("amount_minor") < 0).sum(),
        net_minor=pl.col("amount_minor").sum(),
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": entries.height,
            "path": dg.MetadataValue.path(str(target)),
            "statements": entries["batch_id"].n_unique(),
            "by_account_currency": md_table(flows.sort("account_id", "currency"), 30),
            "preview": md_table(
                entries.select(
                    "source_file", "source_row", "record_type", "amount_minor", "currency", "remittance_info"
                ),
                10,
            ),
        }
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=business_date_partitions,
    deps=[landed_transactions, settlement_lines, bank_statements],
    check_specs=[
        _blocking_check(
            COMPLETENESS_CHECK,
            "reconciliation",
            "every ledger and settlement record in view has exactly one outcome",
        ),
        _blocking_check(
            OUTCOME_SCHEMA_CHECK,
            "reconciliation",
            "pandera OutcomeModel: statuses and categories from the fixed vocabulary",
        ),
        _blocking_check(
            OUTCOMES_SUITE_CHECK,
            "reconciliation",
            "Great Expectations suite expectations/reconciliation_outcomes.json: unique, "
            "non-null record keys; allowed statuses and categories; row counts equal to the inputs in view",
        ),
        _blocking_check(
            ACCURACY_CHECK,
            "reconciliation",
            "accuracy per category and overall against RECON_GROUND_TRUTH (demo data), "
            "evaluated on the truth's as-of date; blocks publication below RECON_ACCURACY_THRESHOLD",
        ),
    ],
    kinds={"polars"},
)
def reconciliation(context: dg.AssetExecutionContext, recon: ReconResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """The matching rules over everything known as of this business date (open items carried over
    the settlement-lag window), written to `lake/outcomes/date=YYYY-MM-DD/`. Its blocking checks stop
    publication to the outcome store when the outcomes are incomplete or malformed."""
    day = _day(context)
    result = pipeline.run_reconciliation(recon.lake, day, recon.settings)
    outcomes = result.outcomes
    keys = outcomes["record_key"]
    complete = keys.n_unique() == keys.len() and outcomes["status"].null_count() == 0
    view = exception_queue.records_in_view(recon.lake, day, recon.settings)
    in_view = {
        "records_in_view": view.height,
        "ledger_records_in_view": int((view["record"] == "ledger").sum()),
        "settlement_records_in_view": int((view["record"] == "settlement").sum()),
    }
    accuracy = _accuracy_check(result.export, day, recon, run_id=context.run.run_id)
    metadata: dict[str, Any] = {
        "dagster/row_count": outcomes.height,
        "path": _path(recon, "outcomes", day),
        "outcomes": _status_table(outcomes),
        "exceptions_by_category": dg.MetadataValue.json(_by_category(outcomes)),
        "records_in_view": dg.MetadataValue.json(in_view),
        "rules": dg.MetadataValue.json(list(RULES)),
    }
    if accuracy.metadata.get("evaluated") and accuracy.metadata["evaluated"].value:
        metadata["accuracy"] = accuracy.metadata["accuracy"]
        metadata["accuracy_by_category"] = accuracy.metadata["by_category"]
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name=COMPLETENESS_CHECK,
                passed=bool(complete),
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"records": keys.len(), "distinct_records": keys.n_unique()},
            ),
            schema_check(OUTCOME_SCHEMA_CHECK, OutcomeModel, outcomes),
            suite_check(OUTCOMES_SUITE_CHECK, outcomes, OUTCOMES_SUITE, in_view),
            accuracy,
        ],
    )


def _accuracy_check(
    export: pl.DataFrame, day: dt.date, recon: ReconResource, *, run_id: str | None = None
) -> dg.AssetCheckResult:
    settings = recon.settings
    path = settings.ground_truth
    if path is None or not path.exists():
        reason = "no ground truth configured (RECON_GROUND_TRUTH); production data has none"
        return dg.AssetCheckResult(
            check_name=ACCURACY_CHECK, passed=True, metadata={"evaluated": False, "reason": reason}
        )
    truth = read_truth(path)
    as_of: dt.date | None = truth.filter(pl.col("record") == "ledger")["business_date"].max()  # type: ignore[assignment]
    if as_of != day:
        reason = f"the ground truth is as of {as_of}; it is evaluated on that business date"
        return dg.AssetCheckResult(
            check_name=ACCURACY_CHECK, passed=True, metadata={"evaluated": False, "reason": reason}
        )
    first = day - dt.timedelta(days=settings.lookback_days)
    acc = measure(export, truth.filter(pl.col("business_date") >= first))
    # kept whether or not it passes: a failing date publishes no report, but its figures and the
    # accuracy metric (and so the alert) must still show it
    pipeline.keep_accuracy(recon.lake, day, acc, run_id=run_id)
    table = ["| category | records | correct | accuracy |", "| --- | ---: | ---: | ---: |"]
    table += [f"| {c} | {n} | {k} | {a:.4%} |" for c, n, k, a in acc.by_category.iter_rows()]
    return dg.AssetCheckResult(
        check_name=ACCURACY_CHECK,
        passed=acc.overall >= settings.accuracy_threshold,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "evaluated": True,
            "accuracy": dg.MetadataValue.float(acc.overall),
            "threshold": dg.MetadataValue.float(settings.accuracy_threshold),
            "records": acc.total,
            "by_category": dg.MetadataValue.md("\n".join(table)),
            "wrong_sample": dg.MetadataValue.json(acc.wrong.head(10).to_dicts()),
        },
    )


def _record_failed_attempt(
    context: dg.AssetExecutionContext, recon: ReconResource, exc: BaseException, *, transient: bool
) -> None:
    """An audit event for a publication attempt that failed (its writes were rolled back), so the trail
    shows every attempt, not only the one that succeeded. Best effort: the store may be what failed."""
    try:
        with db.session_scope(recon.engine) as session:
            audit.append_event(
                session,
                actor="dagster",
                action="outcomes.publish_failed",
                entity_type="partition",
                entity_id=f"{context.asset_key.to_user_string()}:{context.partition_key}",
                inputs={"business_date": context.partition_key, "attempt": context.retry_number + 1},
                chain=audit.normalise_chain(_chain(context, recon, RULES)),
                outcome={
                    "error": type(exc).__name__,
                    "message": str(exc)[:500],
                    "transient": transient,
                    "rolled_back": True,
                },
            )
    except Exception as audit_exc:
        context.log.warning(f"could not record the failed attempt in the audit trail: {audit_exc}")


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    pool=STORE_POOL,
    group_name=GROUP,
    partitions_def=business_date_partitions,
    deps=[reconciliation],
    check_specs=[
        _blocking_check(
            STORE_TOTALS_CHECK,
            "outcomes",
            "control totals: per currency, rows and Σ amount_minor of the day's ledger records "
            "and settlement lines in the lake equal those in the outcome store",
        )
    ],
    kinds={"sqlalchemy"},
)
def outcomes(context: dg.AssetExecutionContext, recon: ReconResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Outcomes of one business date written to the outcome store, each change an audit event in the
    same database transaction; the latest business date's view wins over an earlier one. A failed attempt
    writes nothing but an `outcomes.publish_failed` audit event; connection and file-system faults are
    retried, any other error fails the step at once (re-execute the run from failure once it is fixed)."""
    day = _day(context)
    try:
        applied = pipeline.publish_outcomes(
            recon.lake, recon.engine, day, chain=_chain(context, recon, RULES), actor="dagster"
        )
    except TRANSIENT_ERRORS as exc:
        _record_failed_attempt(context, recon, exc, transient=True)
        raise
    except Exception as exc:
        _record_failed_attempt(context, recon, exc, transient=False)
        raise dg.Failure(
            description=f"publishing {day} to the outcome store failed ({type(exc).__name__}: {exc}); "
            "nothing was written. Fix the cause, then re-execute the run from failure "
            "(docs/runbooks/rerun-failed-partition.md).",
            allow_retries=False,
        ) from exc
    published = recon.lake.read_day("outcomes", day)
    ledger = recon.lake.read_day("transactions", day)
    lines = recon.lake.read_day("settlement_lines", day)
    metadata: dict[str, Any] = {
        "inserted": applied.inserted,
        "changed": applied.changed,
        "unchanged": applied.unchanged,
        "skipped_older": applied.skipped_older,
        "exceptions_opened": applied.exceptions_opened,
        "exceptions_resolved": applied.exceptions_resolved,
        "store": dg.MetadataValue.text(recon.engine.url.render_as_string(hide_password=True)),
    }
    if published is not None:
        metadata["dagster/row_count"] = published.height
        metadata["outcomes"] = _status_table(published)
    return dg.MaterializeResult(
        metadata=metadata, check_results=[store_totals_check(recon.engine, day, ledger, lines)]
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=business_date_partitions,
    deps=[outcomes],
    check_specs=[
        _blocking_check(
            EXCEPTIONS_SUITE_CHECK,
            "exceptions",
            "Great Expectations suite expectations/exception_queue.json: unique keys, allowed "
            "categories, amounts within range, ISO 4217 currencies, every exception of the outcomes queued",
        )
    ],
    kinds={"polars", "parquet"},
)
def exceptions(context: dg.AssetExecutionContext, recon: ReconResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """The open exception queue of one business date (`lake/exceptions/date=YYYY-MM-DD/`): every record
    the reconciliation left in `exception`, with its category, money, age and evidence. Operators work
    it with `recon exceptions list|show|resolve`."""
    day = _day(context)
    queue = exception_queue.build_exceptions(recon.lake, day, recon.settings)
    published = recon.lake.read_day("outcomes", day)
    expected = 0 if published is None else int((published["status"] == "exception").sum())
    by_category = queue.group_by("exception_category").agg(
        records=pl.len(), oldest_days=pl.col("days_open").max()
    )
    exposure = queue.group_by("exception_category", "currency").agg(
        records=pl.len(), abs_amount_minor=pl.col("amount_minor").abs().sum()
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": queue.height,
            "path": _path(recon, "exceptions", day),
            "by_category": dg.MetadataValue.json(
                {str(c): int(n) for c, n, _ in by_category.sort("exception_category").iter_rows()}
            ),
            "by_category_table": md_table(by_category.sort("exception_category"), 20),
            "exposure_by_currency": md_table(exposure.sort("exception_category", "currency"), 50),
            "by_psp": dg.MetadataValue.json(
                {str(k): int(v) for k, v in queue.group_by("psp").len().sort("psp").iter_rows()}
            ),
            "preview": md_table(
                queue.select("exception_category", "record_key", "amount_minor", "currency", "days_open"), 20
            ),
        },
        check_results=[
            suite_check(EXCEPTIONS_SUITE_CHECK, queue, EXCEPTIONS_SUITE, {"exceptions_in_outcomes": expected})
        ],
    )


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    group_name=GROUP,
    partitions_def=business_date_partitions,
    deps=[outcomes, exceptions],  # a failing exception-queue suite blocks the report
    kinds={"duckdb", "csv"},
)
def daily_report(context: dg.AssetExecutionContext, recon: ReconResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Finance's daily reconciliation report per PSP, currency and jurisdiction (DuckDB SQL in `sql/` over
    the lake and the outcome export): an XLSX workbook, a self-contained HTML report with charts and CSV
    files in `reports/date=YYYY-MM-DD/`. Also keeps the date's ground-truth accuracy, when measured."""
    day = _day(context)
    pipeline.record_accuracy(recon.lake, day, recon.settings, run_id=context.run.run_id)
    built = pipeline.build_daily_report(recon.lake, day, recon.engine)
    head = built.headline
    return dg.MaterializeResult(
        metadata={
            "preview": dg.MetadataValue.md(built.preview_md),
            "html_report": dg.MetadataValue.path(str(built.html)),
            "xlsx_report": dg.MetadataValue.path(str(built.xlsx)),
            "csv_files": dg.MetadataValue.json({view: str(path) for view, path in built.csv.items()}),
            "exceptions": head["exceptions"],
            "open_exceptions": head["open_exceptions"],
            "payout_breaks": head["payout_breaks"],
            "records_without_amount": head["missing_amounts"],
        }
    )


ASSETS = [
    landed_transactions,
    settlement_lines,
    bank_statements,
    reconciliation,
    outcomes,
    exceptions,
    daily_report,
]
