"""Asset check results: pandera schemas on inputs, Great Expectations suites on outputs, control totals.

The checks are declared with their asset (``check_specs``) and evaluated in the same step on the frame
the asset just built, so a blocking check that fails stops the downstream assets of that run.
"""

import datetime as dt
from typing import Any

import dagster as dg
import pandera.errors
import polars as pl
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from .. import quality
from ..store import db
from ..store.models import SettlementLine, Transaction

LEDGER_SCHEMA_CHECK = "ledger_schema"
SETTLEMENT_SCHEMA_CHECK = "settlement_lines_schema"
COMPLETENESS_CHECK = "every_record_has_one_outcome"
OUTCOME_SCHEMA_CHECK = "outcome_schema"
ACCURACY_CHECK = "accuracy_vs_ground_truth"
OUTCOMES_SUITE = "reconciliation_outcomes"
EXCEPTIONS_SUITE = "exception_queue"
OUTCOMES_SUITE_CHECK = f"ge_{OUTCOMES_SUITE}"
EXCEPTIONS_SUITE_CHECK = f"ge_{EXCEPTIONS_SUITE}"
STORE_TOTALS_CHECK = "store_control_totals"


def md_table(frame: pl.DataFrame, limit: int = 20) -> dg.MetadataValue:
    """A Markdown table of the first ``limit`` rows, for the UI."""
    if frame.is_empty():
        return dg.MetadataValue.md("_no rows_")
    shown = frame.head(limit)
    cols = shown.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for row in shown.iter_rows():
        lines.append("| " + " | ".join("" if v is None else str(v).replace("|", "/") for v in row) + " |")
    if frame.height > limit:
        lines.append(f"\n_{frame.height - limit} more rows_")
    return dg.MetadataValue.md("\n".join(lines))


def schema_check(name: str, model: Any, frame: pl.DataFrame) -> dg.AssetCheckResult:
    """A pandera model on a collected frame (value checks included), failure cases in the metadata."""
    try:
        model.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        return dg.AssetCheckResult(
            check_name=name,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "failures": len(exc.failure_cases),
                "failure_cases": md_table(exc.failure_cases, 20),
            },
        )
    return dg.AssetCheckResult(check_name=name, passed=True, metadata={"rows": frame.height})


def suite_check(
    name: str, frame: pl.DataFrame, suite: str, parameters: dict[str, Any]
) -> dg.AssetCheckResult:
    """A committed Great Expectations suite on ``frame``; every expectation's result in the metadata."""
    outcome = quality.validate(frame, suite, parameters)
    return dg.AssetCheckResult(
        check_name=name,
        passed=outcome.success,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "suite": dg.MetadataValue.path(str(quality.suite_path(suite))),
            "rows": outcome.rows,
            "expectations": len(outcome.expectations),
            "failed_expectations": dg.MetadataValue.json(
                [
                    f"{e.expectation}({e.column or ''}{'; ' + e.condition if e.condition else ''})"
                    for e in outcome.failed
                ]
            ),
            "parameters": dg.MetadataValue.json(parameters),
            "results": dg.MetadataValue.md(outcome.markdown()),
        },
    )


def _totals(frame: pl.DataFrame) -> dict[str, tuple[int, int]]:
    """``{currency: (rows, Σ amount_minor)}``."""
    grouped = frame.group_by("currency").agg(pl.len(), pl.col("amount_minor").sum())
    return {c: (int(n), int(s)) for c, n, s in grouped.iter_rows()}


def _stored_totals(engine: Engine, model: Any, date_column: Any, day: dt.date) -> dict[str, tuple[int, int]]:
    query = (
        select(model.currency, func.count(), func.sum(model.amount_minor))
        .where(date_column == day)
        .group_by(model.currency)
    )
    with db.session_scope(engine) as session:
        return {c: (int(n), int(s or 0)) for c, n, s in session.execute(query)}


def store_totals_check(
    engine: Engine, day: dt.date, ledger: pl.DataFrame | None, lines: pl.DataFrame | None
) -> dg.AssetCheckResult:
    """Control totals of the publication: per currency, the count and Σ amount_minor of the day's ledger
    records and settlement lines in the lake equal those stored in the outcome store for that date."""
    rows = ["| table | currency | lake rows | store rows | lake Σ minor | store Σ minor | equal |"]
    rows.append("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    passed = True
    mismatches: list[str] = []
    pairs = [
        ("transactions", ledger, Transaction, Transaction.business_date),
        ("settlement_lines", lines, SettlementLine, SettlementLine.booking_date),
    ]
    for table, frame, model, column in pairs:
        lake = _totals(frame) if frame is not None else {}
        store = _stored_totals(engine, model, column, day)
        for ccy in sorted(set(lake) | set(store)):
            a, b = lake.get(ccy, (0, 0)), store.get(ccy, (0, 0))
            same = a == b
            passed &= same
            if not same:
                mismatches.append(f"{table} {ccy}: lake {a[0]} rows Σ {a[1]}, store {b[0]} rows Σ {b[1]}")
            rows.append(
                f"| {table} | {ccy} | {a[0]} | {b[0]} | {a[1]} | {b[1]} | {'yes' if same else '**no**'} |"
            )
    return dg.AssetCheckResult(
        check_name=STORE_TOTALS_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "totals": dg.MetadataValue.md("\n".join(rows)),
            "mismatches": dg.MetadataValue.json(mismatches),
        },
    )
