"""Daily-partitioned assets, one business date per partition, from landed data to reports.

Each asset is a thin shell over :mod:`reconciliation_pipeline.pipeline`; checks that guard publication
are declared with the asset (``check_specs``) and are blocking: a failure stops downstream assets.
"""

import datetime as dt
from typing import Any

import dagster as dg
import pandera.errors
import polars as pl

from .. import pipeline
from ..frames import LedgerModel, OutcomeModel, SettlementLineModel
from ..ingest import register_landed
from ..matching import RULES
from ..matching.accuracy import measure, read_truth
from .partitions import business_date_partitions
from .resources import ReconResource

GROUP = "reconciliation"
#: Writes to the outcome store run one at a time across all runs (the audit chain is one line anyway).
STORE_POOL = "recon_store"
#: Transient faults (a database restart, a busy file system) are retried; bad data is not transient and
#: is stopped by the blocking checks instead, so the matching asset has no retry policy.
TRANSIENT_RETRY = dg.RetryPolicy(
    max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

LEDGER_SCHEMA_CHECK = "ledger_schema"
SETTLEMENT_SCHEMA_CHECK = "settlement_lines_schema"
COMPLETENESS_CHECK = "every_record_has_one_outcome"
OUTCOME_SCHEMA_CHECK = "outcome_schema"
ACCURACY_CHECK = "accuracy_vs_ground_truth"


def _day(context: dg.AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


def _chain(
    context: dg.AssetExecutionContext, recon: ReconResource, rules: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "run_id": context.run.run_id,
        "asset": context.asset_key.to_user_string(),
        "partition": context.partition_key,
        "code_version": recon.settings.code_version,
        "rule_ids": list(rules),
    }


def _schema_check(name: str, model: Any, frame: pl.DataFrame) -> dg.AssetCheckResult:
    try:
        model.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases.head(20)
        return dg.AssetCheckResult(
            check_name=name,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "failures": len(exc.failure_cases),
                "failure_cases": dg.MetadataValue.md(cases.to_pandas().to_markdown(index=False)),
            },
        )
    return dg.AssetCheckResult(check_name=name, passed=True, metadata={"rows": frame.height})


def _status_table(frame: pl.DataFrame) -> dg.MetadataValue:
    counts = frame.group_by("record", "status").len().sort("record", "status")
    lines = ["| record | status | records |", "| --- | --- | ---: |"]
    lines += [f"| {r} | {s} | {n} |" for r, s, n in counts.iter_rows()]
    return dg.MetadataValue.md("\n".join(lines))


@dg.asset(
    group_name=GROUP,
    partitions_def=business_date_partitions,
    check_specs=[
        dg.AssetCheckSpec(
            LEDGER_SCHEMA_CHECK,
            asset="landed_transactions",
            blocking=True,
            description="pandera LedgerModel on the de-duplicated ledger records",
        )
    ],
    kinds={"polars", "parquet"},
)
def landed_transactions(context: dg.AssetExecutionContext, recon: ReconResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Operator transactions of one business date: landed Kafka events de-duplicated by `event_id`,
    with their business date, in `lake/transactions/date=YYYY-MM-DD/`."""
    built = pipeline.build_ledger(recon.lake, _day(context), recon.settings.business_tz)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": built.frame.height,
            "landed_files": built.landed_files,
            "events_read": built.events_read,
            "duplicate_events_dropped": built.duplicate_events,
            "duplicate_transaction_ids_dropped": built.duplicate_transaction_ids,
        },
        check_results=[_schema_check(LEDGER_SCHEMA_CHECK, LedgerModel, built.frame)],
    )


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    group_name=GROUP,
    partitions_def=business_date_partitions,
    check_specs=[
        dg.AssetCheckSpec(
            SETTLEMENT_SCHEMA_CHECK,
            asset="settlement_lines",
            blocking=True,
            description="pandera SettlementLineModel on the day's settlement lines",
        )
    ],
    kinds={"polars", "parquet"},
)
def settlement_lines(context: dg.AssetExecutionContext, recon: ReconResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """PSP settlement rows and bank statement entries booked on one business date, parsed from the
    PSPs' own formats (files that fail parsing are quarantined whole), in `lake/settlement_lines/`."""
    registered = register_landed(recon.lake, recon.engine, actor="dagster", chain=_chain(context, recon))
    lines = pipeline.build_settlement_lines(recon.lake, _day(context))
    quarantined = [r for r in registered if r.status != "accepted"]
    for outcome in quarantined:
        context.log.warning(outcome.message)
    by_psp = lines.group_by("psp").len().sort("psp")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": lines.height,
            "rows_by_psp": dg.MetadataValue.json(dict(by_psp.iter_rows())),
            "files_registered_this_run": len(registered),
            "files_refused_this_run": dg.MetadataValue.json([r.message for r in quarantined]),
        },
        check_results=[_schema_check(SETTLEMENT_SCHEMA_CHECK, SettlementLineModel, lines)],
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=business_date_partitions,
    deps=[landed_transactions, settlement_lines],
    check_specs=[
        dg.AssetCheckSpec(
            COMPLETENESS_CHECK,
            asset="reconciliation",
            blocking=True,
            description="every ledger and settlement record in view has exactly one outcome",
        ),
        dg.AssetCheckSpec(
            OUTCOME_SCHEMA_CHECK,
            asset="reconciliation",
            blocking=True,
            description="pandera OutcomeModel: statuses and categories from the fixed vocabulary",
        ),
        dg.AssetCheckSpec(
            ACCURACY_CHECK,
            asset="reconciliation",
            blocking=True,
            description="accuracy per category and overall against RECON_GROUND_TRUTH (demo data), "
            "evaluated on the truth's as-of date; blocks publication below RECON_ACCURACY_THRESHOLD",
        ),
    ],
    kinds={"polars"},
)
def reconciliation(context: dg.AssetExecutionContext, recon: ReconResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """The matching rules over everything known as of this business date (open items carried over
    the settlement-lag window), written to `lake/outcomes/date=YYYY-MM-DD/`."""
    day = _day(context)
    result = pipeline.run_reconciliation(recon.lake, day, recon.settings)
    outcomes = result.outcomes
    keys = outcomes["record_key"]
    complete = keys.n_unique() == keys.len() and outcomes["status"].null_count() == 0
    exceptions = (
        outcomes.filter(pl.col("status") == "exception")
        .group_by("exception_category")
        .len()
        .sort("exception_category")
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": outcomes.height,
            "outcomes": _status_table(outcomes),
            "exceptions_by_category": dg.MetadataValue.json(dict(exceptions.iter_rows())),
            "rules": dg.MetadataValue.json(list(RULES)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=COMPLETENESS_CHECK,
                passed=bool(complete),
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"records": keys.len(), "distinct_records": keys.n_unique()},
            ),
            _schema_check(OUTCOME_SCHEMA_CHECK, OutcomeModel, outcomes),
            _accuracy_check(result.export, day, recon),
        ],
    )


def _accuracy_check(export: pl.DataFrame, day: dt.date, recon: ReconResource) -> dg.AssetCheckResult:
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


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    pool=STORE_POOL,
    group_name=GROUP,
    partitions_def=business_date_partitions,
    deps=[reconciliation],
    kinds={"sqlalchemy"},
)
def outcomes(context: dg.AssetExecutionContext, recon: ReconResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Outcomes of one business date written to the outcome store, each change an audit event in the
    same database transaction; the latest business date's view wins over an earlier one."""
    applied = pipeline.publish_outcomes(
        recon.lake, recon.engine, _day(context), chain=_chain(context, recon, RULES), actor="dagster"
    )
    return dg.MaterializeResult(
        metadata={
            "inserted": applied.inserted,
            "changed": applied.changed,
            "unchanged": applied.unchanged,
            "skipped_older": applied.skipped_older,
        }
    )


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    group_name=GROUP,
    partitions_def=business_date_partitions,
    deps=[outcomes],
    kinds={"duckdb", "csv"},
)
def daily_report(context: dg.AssetExecutionContext, recon: ReconResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Finance's daily summary per PSP and currency (DuckDB SQL in `sql/daily_summary.sql`)."""
    paths = pipeline.build_daily_report(recon.lake, _day(context))
    preview = pl.read_csv(paths["daily_summary_csv"])
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(paths["daily_summary_csv"])),
            "preview": dg.MetadataValue.md(preview.to_pandas().to_markdown(index=False)),
        }
    )


ASSETS = [landed_transactions, settlement_lines, reconciliation, outcomes, daily_report]
