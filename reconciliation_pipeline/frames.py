"""The frames that flow between layers, as Polars schemas and pandera models.

These are the internal contracts: parsers produce :data:`SETTLEMENT_LINE_SCHEMA`, the lander produces
:data:`LANDED_SCHEMA`, the matcher produces :data:`OUTCOME_SCHEMA` (the outcome export of DESIGN.md).
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

UTC_TS = pl.Datetime("us", "UTC")

KINDS = ("deposit", "withdrawal", "refund", "chargeback", "chargeback_reversal")
#: Sign of a ledger kind from the merchant's point of view (money in = +1).
KIND_SIGN = {"deposit": 1, "withdrawal": -1, "refund": -1, "chargeback": -1, "chargeback_reversal": 1}

EVENT_COLUMNS: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "transaction_id": pl.String(),
    "psp": pl.String(),
    "psp_reference": pl.String(),
    "original_transaction_id": pl.String(),
    "kind": pl.String(),
    "amount_minor": pl.Int64(),
    "currency": pl.String(),
    "occurred_at": UTC_TS,
    "player_id": pl.String(),
    "brand": pl.String(),
    "jurisdiction": pl.String(),
    "trace_id": pl.String(),
}
#: Landed Parquet: the event's columns plus where it came from on Kafka (DESIGN.md).
LANDED_SCHEMA: dict[str, pl.DataType] = {
    **EVENT_COLUMNS,
    "kafka_topic": pl.String(),
    "kafka_partition": pl.Int32(),
    "kafka_offset": pl.Int64(),
}
#: Ledger records in the lake: landed columns, de-duplicated by event_id, with their business date
#: and the landed file they came from.
LEDGER_SCHEMA: dict[str, pl.DataType] = {
    **LANDED_SCHEMA,
    "landed_file": pl.String(),
    "business_date": pl.Date(),
}

LINE_KINDS = (
    "capture",
    "refund",
    "refund_reversal",
    "chargeback",
    "chargeback_reversal",
    "payout_to_player",
    "payout_to_player_reversal",
    "fee",
    "merchant_payout",
    "balance_transfer",
    "adjustment",
    "bank_credit",
    "bank_debit",
    "other",
)
PLAYER_LINE_KINDS = frozenset(
    {
        "capture",
        "refund",
        "refund_reversal",
        "chargeback",
        "chargeback_reversal",
        "payout_to_player",
        "payout_to_player_reversal",
    }
)

#: One normalised row of a PSP settlement file or bank statement, with provenance.
SETTLEMENT_LINE_SCHEMA: dict[str, pl.DataType] = {
    "psp": pl.String(),  # adyen | stripe | paypal | bank
    "source_file": pl.String(),  # basename of the landed file
    "source_row": pl.Int64(),  # 1-based data row (DESIGN.md: CSV row, n-th SB, n-th Ntry)
    "file_sha256": pl.String(),
    "batch_id": pl.String(),  # PSP batch / payout / report / statement id
    "account_id": pl.String(),  # merchant account, PayPal account, IBAN
    "record_type": pl.String(),  # the PSP's own row type (Adyen Type, Stripe category, T-code, CRDT)
    "line_kind": pl.String(),  # normalised, one of LINE_KINDS
    "moves_player_money": pl.Boolean(),
    "movement_reference": pl.String(),  # PSP id of this money movement (the ledger's psp_reference)
    "payment_reference": pl.String(),  # PSP id of the original payment
    "merchant_reference": pl.String(),  # operator's reference (a transaction_id)
    "payout_reference": pl.String(),  # reference a bank credit carries for a merchant payout row
    "remittance_info": pl.String(),  # bank entries: end-to-end id, remittance text, additional info
    "booked_at": UTC_TS,
    "booking_date": pl.Date(),  # the PSP's booking date in the file's own time zone
    "amount_minor": pl.Int64(),  # signed gross, merchant's view (+ = money to the merchant)
    "currency": pl.String(),
    "fee_minor": pl.Int64(),  # fees on this row in net_currency (+ = charged)
    "net_amount_minor": pl.Int64(),  # signed, net_currency
    "net_currency": pl.String(),
    "exchange_rate": pl.String(),  # decimal text, gross -> net currency
    "presentment_amount_minor": pl.Int64(),  # signed amount the player saw, when the PSP reports it
    "presentment_currency": pl.String(),  # (Stripe customer_facing_*), for cross-currency settlement
}

RECORDS = ("ledger", "settlement")
STATUSES = ("matched", "exception", "pending")
EXCEPTION_CATEGORIES = (
    "missing_in_psp",
    "missing_in_ledger",
    "amount_mismatch",
    "currency_mismatch",
    "duplicate_settlement",
    "duplicate_booking",
    "unlinked_adjustment",
)

#: The outcome export of DESIGN.md, column for column.
OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "record": pl.String(),
    "transaction_id": pl.String(),
    "psp": pl.String(),
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "status": pl.String(),
    "match_id": pl.String(),
    "rule_id": pl.String(),
    "exception_category": pl.String(),
    "business_date": pl.Date(),
}


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select and cast ``frame`` to ``schema`` (missing columns become nulls), in schema order."""
    exprs = [
        (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in schema.items()
    ]
    return frame.select(exprs)


def plain_strings(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with its Enum and Categorical columns as plain strings (the same values)."""
    coded = [name for name, dtype in frame.schema.items() if isinstance(dtype, (pl.Enum, pl.Categorical))]
    return frame.with_columns(pl.col(coded).cast(pl.String)) if coded else frame


class SettlementLineModel(pa.DataFrameModel):
    """pandera contract every parser's output must satisfy."""

    psp: str = pa.Field(isin=["adyen", "stripe", "paypal", "bank"])
    source_file: str = pa.Field(str_length={"min_value": 1})
    source_row: int = pa.Field(ge=1)
    file_sha256: str = pa.Field(str_matches=r"^[0-9a-f]{64}$")
    batch_id: str = pa.Field(nullable=True)
    record_type: str
    line_kind: str = pa.Field(isin=list(LINE_KINDS))
    moves_player_money: bool
    booking_date: pl.Date
    amount_minor: int
    currency: str = pa.Field(str_matches=r"^[A-Z]{3}$")
    net_amount_minor: int = pa.Field(nullable=True)
    net_currency: str = pa.Field(nullable=True, str_matches=r"^[A-Z]{3}$")

    class Config:
        strict = False

    @pa.dataframe_check(error="(file_sha256, source_row) must be unique: one line per file and data row")
    @classmethod
    def one_line_per_file_row(cls, data: PolarsData) -> pl.LazyFrame:
        """Row-wise uniqueness of (file_sha256, source_row), the same result as pandera's ``unique``
        option; a parser's frame is one file, where hashing the integer row alone is exact and cheap."""
        lf = data.lazyframe
        sha, row = pl.col("file_sha256"), pl.col("source_row")
        one_file, ascending = (
            lf.select(sha.eq_missing(sha.first()).all(), (row.diff() > 0).all()).collect().row(0)
        )
        if one_file and ascending:
            # Rows of one file in strictly ascending order are unique: no hashing needed (the parsers'
            # own output, so the common case).
            return lf.select(pl.repeat(True, pl.len()).alias("unique"))
        key = row if one_file else pl.struct("file_sha256", "source_row")
        return lf.select((~key.is_duplicated()).alias("unique"))


class LedgerModel(pa.DataFrameModel):
    """pandera contract of de-duplicated ledger records in the lake."""

    event_id: str = pa.Field(unique=True)
    transaction_id: str = pa.Field(str_length={"min_value": 1})
    psp: str
    kind: str = pa.Field(isin=list(KINDS))
    amount_minor: int = pa.Field(ge=0)
    currency: str = pa.Field(str_matches=r"^[A-Z]{3}$")
    jurisdiction: str = pa.Field(str_matches=r"^[A-Z]{2}$")
    business_date: pl.Date

    class Config:
        strict = False


class OutcomeModel(pa.DataFrameModel):
    """pandera contract of the outcome frame."""

    record: str = pa.Field(isin=list(RECORDS))
    status: str = pa.Field(isin=list(STATUSES))
    exception_category: str = pa.Field(nullable=True, isin=list(EXCEPTION_CATEGORIES))
    rule_id: str = pa.Field(nullable=True)
    match_id: str = pa.Field(nullable=True)
    business_date: pl.Date

    class Config:
        strict = False
