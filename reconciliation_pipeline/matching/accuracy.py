"""Accuracy of outcomes against a ground truth, as defined for the product.

A record is correct when its status, exception category and match group (the exact set of records
sharing its ``match_id``; a record without one is a group of its own) all equal the truth. A record
missing from the outcomes, or one that should not exist, counts as wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

_KEY = (
    pl.when(pl.col("record") == "ledger")
    .then(pl.concat_str([pl.lit("ledger:"), pl.col("transaction_id")]))
    .otherwise(
        pl.concat_str(
            [
                pl.lit("settlement:"),
                pl.col("psp"),
                pl.lit(":"),
                pl.col("source_file"),
                pl.lit(":"),
                pl.col("source_row").cast(pl.String),
            ]
        )
    )
)


@dataclass(frozen=True)
class Accuracy:
    overall: float
    correct: int
    total: int
    by_category: pl.DataFrame  # category, records, correct, accuracy
    wrong: pl.DataFrame  # key, truth vs outcome, for the first look


def read_truth(path: Path) -> pl.DataFrame:
    """A ground-truth file (outcome-export columns, CSV) with its types."""
    return pl.read_csv(path, infer_schema_length=0).with_columns(
        pl.col("source_row").cast(pl.Int64), pl.col("business_date").str.to_date()
    )


def category_of() -> pl.Expr:
    """Truth category of a record: its exception category, else its status (matched / pending)."""
    return pl.coalesce(pl.col("exception_category"), pl.col("status"))


def _groups(frame: pl.DataFrame) -> pl.DataFrame:
    keyed = frame.with_columns(key=_KEY)
    group_id = pl.coalesce(pl.col("match_id"), pl.concat_str([pl.lit("solo:"), pl.col("key")]))
    keyed = keyed.with_columns(group_id=group_id)
    members = keyed.group_by("group_id").agg(group=pl.col("key").sort().str.join("|"))
    return keyed.join(members, on="group_id").select(
        "key", "status", "exception_category", "group", category=category_of()
    )


def measure(outcomes: pl.DataFrame, truth: pl.DataFrame) -> Accuracy:
    """Compare outcome-export rows with ground-truth rows (same columns) record by record."""
    got = _groups(outcomes).rename(
        {"status": "o_status", "exception_category": "o_cat", "group": "o_group", "category": "o_category"}
    )
    want = _groups(truth)
    both = want.join(got, on="key", how="full", coalesce=True)
    correct = (
        (pl.col("status") == pl.col("o_status"))
        & (pl.col("exception_category").eq_missing(pl.col("o_cat")))
        & (pl.col("group") == pl.col("o_group"))
    ).fill_null(False)
    both = both.with_columns(correct=correct, category=pl.coalesce("category", pl.lit("not_in_truth")))
    total = both.height
    n_ok = int(both["correct"].sum())
    by_cat = (
        both.group_by("category")
        .agg(records=pl.len(), correct=pl.col("correct").sum())
        .with_columns(accuracy=pl.col("correct") / pl.col("records"))
        .sort("category")
    )
    wrong = both.filter(~pl.col("correct")).select(
        "key", "category", "status", "o_status", "exception_category", "o_cat", "group", "o_group"
    )
    return Accuracy(
        overall=n_ok / total if total else 1.0, correct=n_ok, total=total, by_category=by_cat, wrong=wrong
    )
