"""What a business date's reconciliation had in view, and the exception queue it left open.

Plain functions over the lake (no Dagster): the ``reconciliation`` asset compares its outcome count with
:func:`records_in_view` (the row-count reconciliation between inputs and outcomes), and the
``exceptions`` asset publishes :func:`build_exceptions` for operators.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from .frames import KIND_SIGN, SETTLEMENT_LINE_SCHEMA, conform, empty
from .ingest import parsed_lines
from .lake import Lake, atomic_write_parquet
from .pipeline import PART, read_ledger
from .settings import Settings

#: One row per record the matcher saw: its key and its money (signed, merchant's view).
VIEW_SCHEMA: dict[str, pl.DataType] = {
    "record_key": pl.String(),
    "record": pl.String(),
    "amount_minor": pl.Int64(),
    "currency": pl.String(),
}

#: The open exception queue of one business date (``lake/exceptions/date=D/``).
EXCEPTION_QUEUE_SCHEMA: dict[str, pl.DataType] = {
    "record_key": pl.String(),
    "record": pl.String(),
    "transaction_id": pl.String(),
    "psp": pl.String(),
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "exception_category": pl.String(),
    "rule_id": pl.String(),
    "amount_minor": pl.Int64(),
    "currency": pl.String(),
    "business_date": pl.Date(),
    "as_of_date": pl.Date(),
    "days_open": pl.Int64(),
    "evidence": pl.String(),
}


def _window(day: dt.date, settings: Settings) -> list[dt.date]:
    first = day - dt.timedelta(days=settings.lookback_days)
    return [first + dt.timedelta(days=n) for n in range((day - first).days + 1)]


def records_in_view(lake: Lake, day: dt.date, settings: Settings) -> pl.DataFrame:
    """Every ledger and settlement record the reconciliation of ``day`` reads, counted independently of
    the matcher: ledger records of the lookback window de-duplicated by ``transaction_id``, and every
    accepted settlement line booked in the window."""
    ledger = pl.concat([read_ledger(lake, d, settings.business_tz).frame for d in _window(day, settings)])
    ledger = ledger.sort("occurred_at", "transaction_id").unique(
        "transaction_id", keep="first", maintain_order=True
    )
    sign = pl.col("kind").replace_strict(KIND_SIGN, default=1, return_dtype=pl.Int64)
    ledger_view = ledger.select(
        record_key=pl.concat_str([pl.lit("ledger:"), pl.col("transaction_id")]),
        record=pl.lit("ledger"),
        amount_minor=pl.col("amount_minor") * sign,
        currency=pl.col("currency"),
    )
    first = day - dt.timedelta(days=settings.lookback_days)
    scan = parsed_lines(lake)
    lines = (
        conform(scan.filter(pl.col("booking_date").is_between(first, day)).collect(), SETTLEMENT_LINE_SCHEMA)
        if scan is not None
        else empty(SETTLEMENT_LINE_SCHEMA)
    )
    line_view = lines.select(
        record_key=pl.format("settlement:{}:{}:{}", "psp", "source_file", "source_row"),
        record=pl.lit("settlement"),
        amount_minor=pl.col("amount_minor"),
        currency=pl.col("currency"),
    )
    return conform(
        pl.concat([conform(ledger_view, VIEW_SCHEMA), conform(line_view, VIEW_SCHEMA)]), VIEW_SCHEMA
    )


def build_exceptions(lake: Lake, day: dt.date, settings: Settings) -> pl.DataFrame:
    """The records left in ``exception`` by the reconciliation of ``day``, with their money, age and
    evidence, written to ``lake/exceptions/date=D/``. Reads the reconciliation output of ``day``."""
    outcomes = lake.read_day("outcomes", day)
    if outcomes is None:
        raise FileNotFoundError(f"no reconciliation output for {day}: materialise `reconciliation` first")
    evidence = lake.read_day("evidence", day)
    open_items = outcomes.filter(pl.col("status") == "exception")
    view = records_in_view(lake, day, settings).unique("record_key", keep="first")
    queue = open_items.join(view.drop("record"), on="record_key", how="left")
    if evidence is not None and evidence.height:
        queue = queue.join(
            evidence.unique("record_key", keep="last").select("record_key", "evidence"),
            on="record_key",
            how="left",
        )
    queue = queue.with_columns(
        as_of_date=pl.lit(day, pl.Date),
        days_open=(pl.lit(day, pl.Date) - pl.col("business_date")).dt.total_days(),
    )
    queue = conform(queue, EXCEPTION_QUEUE_SCHEMA).sort("exception_category", "record_key")
    atomic_write_parquet(lake.lake_table("exceptions", day) / PART, queue)
    return queue
