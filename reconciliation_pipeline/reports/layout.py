"""How each report view is presented: titles, key columns, column labels and kinds of cell.

Shared by the XLSX and HTML writers so both show the same thing. A column named ``*_minor`` is an
amount in integer minor units of the row's ``currency``.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class View:
    name: str
    title: str
    description: str
    key_columns: int  # leading columns that identify a row (frozen in the workbook)


VIEW_LAYOUT: dict[str, View] = {
    v.name: v
    for v in (
        View(
            "summary",
            "Summary",
            "Per PSP, currency and jurisdiction: records booked and settled on the date and their status in "
            "the outcome store, exceptions by category, fees, and merchant payouts against the bank credit. "
            "Jurisdiction — means not attributable to a booked transaction (fee rows, payouts, bank entries, "
            "unmatched settlement rows).",
            3,
        ),
        View(
            "payouts",
            "Payouts vs bank",
            "Each merchant payout a PSP declared on the date: what its batch adds up to, what the PSP "
            "paid and what the bank statement credited. Both differences should be zero.",
            3,
        ),
        View("exceptions", "Exceptions", "Exceptions of the date by category, with their amounts.", 5),
        View(
            "ageing",
            "Exception ageing",
            "Every record still in exception with a business date up to the report date, by age in days.",
            4,
        ),
        View(
            "accuracy",
            "Accuracy over time",
            "Per business date: records by status, the auto-match rate (matched among decided records) and, "
            "where a ground truth was measured, the accuracy against it.",
            1,
        ),
        View(
            "fees",
            "Fee analysis",
            "Fees per PSP, currency and kind, on the date and over the 7 days ending on it, with the "
            "captured volume and the effective rate in basis points.",
            3,
        ),
    )
}

HIDDEN_COLUMNS = frozenset({"bucket_order"})
PERCENT_COLUMNS = frozenset({"auto_match_rate", "accuracy"})
NONE_TEXT = "—"


def is_amount(column: str) -> bool:
    return column.endswith("_minor")


def label(column: str) -> str:
    """``ledger_matched_minor`` → ``ledger matched``; ``rate_day_bps`` → ``rate day (bps)``."""
    if is_amount(column):
        column = column.removesuffix("_minor")
    text = column.replace("_", " ")
    if text.endswith(" bps"):
        text = text.removesuffix(" bps") + " (bps)"
    if text.endswith(" at"):
        text += " (UTC)"
    return text


def visible(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in HIDDEN_COLUMNS]
