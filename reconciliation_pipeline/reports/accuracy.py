"""Accuracy against a ground truth, recorded per business date in the lake for the reports.

The blocking accuracy check measures; this keeps the figures (``lake/accuracy/date=YYYY-MM-DD/``) so the
finance report can draw accuracy over time. One file per business date, the latest measurement wins.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from ..lake import PART, Lake, atomic_write_parquet
from ..matching.accuracy import Accuracy

TABLE = "accuracy"
SCHEMA: dict[str, pl.DataType] = {
    "business_date": pl.Date(),
    "category": pl.String(),  # a truth category, or "overall"
    "records": pl.Int64(),
    "correct": pl.Int64(),
    "accuracy": pl.Float64(),
    "measured_at": pl.Datetime("us", "UTC"),
    "run_id": pl.String(),
}


def accuracy_frame(
    day: dt.date, acc: Accuracy, *, run_id: str | None, measured_at: dt.datetime
) -> pl.DataFrame:
    """One row per category plus an ``overall`` row, in :data:`SCHEMA`."""
    by_cat = acc.by_category.select(
        "category", pl.col("records").cast(pl.Int64), pl.col("correct").cast(pl.Int64), "accuracy"
    )
    overall = pl.DataFrame(
        {
            "category": ["overall"],
            "records": [acc.total],
            "correct": [acc.correct],
            "accuracy": [acc.overall],
        },
        schema={"category": pl.String, "records": pl.Int64, "correct": pl.Int64, "accuracy": pl.Float64},
    )
    return pl.concat([by_cat, overall]).select(
        business_date=pl.lit(day, pl.Date),
        category="category",
        records="records",
        correct="correct",
        accuracy="accuracy",
        measured_at=pl.lit(measured_at, pl.Datetime("us", "UTC")),
        run_id=pl.lit(run_id, pl.String),
    )


def record_accuracy(
    lake: Lake,
    day: dt.date,
    acc: Accuracy,
    *,
    run_id: str | None = None,
    measured_at: dt.datetime | None = None,
) -> Path:
    """Write the figures of one measurement to ``lake/accuracy/date=YYYY-MM-DD/part-0.parquet``."""
    when = measured_at or dt.datetime.now(dt.UTC)
    frame = accuracy_frame(day, acc, run_id=run_id, measured_at=when)
    return atomic_write_parquet(lake.lake_table(TABLE, day) / PART, frame)
