"""Stripe itemized payout reconciliation report (``payout_reconciliation.itemized.5``) → settlement lines.

Format: ``/work/shared/formats/stripe-itemized-payout-reconciliation.md``. Single-header CSV mapped by
header name; ``gross``/``fee``/``net`` are signed decimals in major units of the (lower-case) ``currency``;
timestamps ``YYYY-MM-DD HH:MM:SS`` without offset (``_utc`` columns are UTC).
"""

from __future__ import annotations

import polars as pl

from reconciliation_pipeline import frames
from reconciliation_pipeline.formats.common import (
    ROW,
    amounts_to_minor,
    basename,
    finish,
    first_line,
    first_row,
    minor_col,
    read_csv_strings,
    sha256_hex,
)
from reconciliation_pipeline.formats.errors import FormatError
from reconciliation_pipeline.money import to_major_str

FORMAT = "stripe_payout_reconciliation_itemized"
PSP = "stripe"

C_PAYOUT = "automatic_payout_id"
C_TXN = "balance_transaction_id"
C_CREATED = "created_utc"
C_AVAILABLE = "available_on_utc"
C_CCY = "currency"
C_GROSS = "gross"
C_FEE = "fee"
C_NET = "net"
C_CATEGORY = "reporting_category"
C_SOURCE = "source_id"
C_CHARGE = "charge_id"
C_INTENT = "payment_intent_id"
C_CONNECTED = "connected_account_id"
C_FACING = "customer_facing_amount"
C_FACING_CCY = "customer_facing_currency"

REQUIRED = (C_PAYOUT, C_TXN, C_CREATED, C_CCY, C_GROSS, C_FEE, C_NET, C_CATEGORY, C_SOURCE)
OPTIONAL = (C_AVAILABLE, C_CHARGE, C_INTENT, C_CONNECTED)
SNIFF = (C_PAYOUT, C_TXN, C_GROSS, C_NET, C_CATEGORY)

LINE_KIND: dict[str, str] = {
    "charge": "capture",
    "refund": "refund",
    "refund_failure": "refund_reversal",
    "dispute": "chargeback",
    "dispute_reversal": "chargeback_reversal",
    "fee": "fee",
    "network_cost": "fee",
    "tax": "fee",
    "payout": "merchant_payout",
    "payout_reversal": "adjustment",
}

_TS_FORMAT = "%Y-%m-%d %H:%M:%S"


def looks_like(data: bytes) -> bool:
    names = {part.strip().strip('"') for part in first_line(data).split(",")}
    return all(name in names for name in SNIFF)


def parse(data: bytes, source_file: str, *, file_sha256: str | None = None) -> pl.DataFrame:
    """``file_sha256``: the checksum of ``data`` when the caller has computed it already."""
    name = basename(source_file)
    frame = read_csv_strings(
        data,
        source_file,
        what="Stripe itemized payout reconciliation report",
        required=REQUIRED,
        used=OPTIONAL,
    )
    for column in OPTIONAL:
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(column))
    metadata = [c for c in frame.columns if c.startswith("payment_metadata[")]

    for column in (C_CATEGORY, C_CCY, C_GROSS, C_NET, C_CREATED):
        hit = first_row(frame, pl.col(column).is_null())
        if hit is not None:
            raise FormatError.at(
                name,
                f"the row has no value in {column!r}",
                row=_int(hit[ROW]),
                field=column,
                hint="Every balance transaction has it; re-run the report from Stripe.",
            )

    # Timestamps (UTC text without offset).
    frame = frame.with_columns(
        pl.col(C_CREATED).str.strptime(pl.Datetime("us"), _TS_FORMAT, strict=False).alias("__created"),
        pl.col(C_AVAILABLE).str.strptime(pl.Datetime("us"), _TS_FORMAT, strict=False).alias("__available"),
    )
    for column, parsed in ((C_CREATED, "__created"), (C_AVAILABLE, "__available")):
        hit = first_row(frame, pl.col(column).is_not_null() & pl.col(parsed).is_null())
        if hit is not None:
            raise FormatError.at(
                name,
                "not a timestamp of the form YYYY-MM-DD HH:MM:SS",
                row=_int(hit[ROW]),
                field=column,
                value=hit[column],
                hint="Re-run the report without changing the timestamp columns.",
            )

    specs = [(C_GROSS, C_CCY), (C_FEE, C_CCY), (C_NET, C_CCY)]
    has_presentment = C_FACING in frame.columns and C_FACING_CCY in frame.columns
    if has_presentment:
        frame = frame.with_columns(
            [pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in (C_FACING, C_FACING_CCY)]
        )
        specs.append((C_FACING, C_FACING_CCY))
    frame = amounts_to_minor(frame, source_file, specs)
    gross = pl.col(minor_col(C_GROSS))
    fee = pl.col(minor_col(C_FEE)).fill_null(0)
    net = pl.col(minor_col(C_NET))
    bad_net = first_row(frame, net != gross - fee)
    if bad_net is not None:
        ccy = str(bad_net[C_CCY]).upper()
        expected = to_major_str(int(bad_net[minor_col(C_GROSS)]) - int(bad_net[minor_col(C_FEE)] or 0), ccy)
        raise FormatError.at(
            name,
            f"net is not gross - fee (expected {expected})",
            row=_int(bad_net[ROW]),
            field=C_NET,
            value=bad_net[C_NET],
            hint="The file is altered or corrupt; download the report again from Stripe.",
        )

    category = pl.col(C_CATEGORY)
    line_kind = category.replace_strict(LINE_KIND, default="other", return_dtype=pl.String)
    movement = (
        pl.when(category == "charge")
        .then(pl.coalesce(pl.col(C_INTENT), pl.col(C_CHARGE), pl.col(C_SOURCE)))
        .otherwise(pl.col(C_SOURCE))
    )
    currency = pl.col(C_CCY).str.to_uppercase()
    out = frame.select(
        pl.lit(PSP).alias("psp"),
        pl.lit(name).alias("source_file"),
        pl.col(ROW).alias("source_row"),
        pl.lit(file_sha256 or sha256_hex(data)).alias("file_sha256"),
        pl.col(C_PAYOUT).alias("batch_id"),
        pl.col(C_CONNECTED).alias("account_id"),
        category.alias("record_type"),
        line_kind.alias("line_kind"),
        line_kind.is_in(list(frames.PLAYER_LINE_KINDS)).alias("moves_player_money"),
        movement.alias("movement_reference"),
        pl.coalesce(pl.col(C_INTENT), pl.col(C_CHARGE)).alias("payment_reference"),
        (pl.col(metadata[0]) if metadata else pl.lit(None, pl.String)).alias("merchant_reference"),
        pl.when(category == "payout")
        .then(pl.col(C_SOURCE))
        .otherwise(pl.lit(None, pl.String))
        .alias("payout_reference"),
        pl.col("__created").dt.replace_time_zone("UTC").alias("booked_at"),
        pl.coalesce(pl.col("__available"), pl.col("__created")).dt.date().alias("booking_date"),
        gross.alias("amount_minor"),
        currency.alias("currency"),
        fee.alias("fee_minor"),
        net.alias("net_amount_minor"),
        currency.alias("net_currency"),
        pl.lit(None, pl.String).alias("exchange_rate"),
        (pl.col(minor_col(C_FACING)) if has_presentment else pl.lit(None, pl.Int64)).alias(
            "presentment_amount_minor"
        ),
        (pl.col(C_FACING_CCY).str.to_uppercase() if has_presentment else pl.lit(None, pl.String)).alias(
            "presentment_currency"
        ),
        pl.col(C_NET).alias("__net_text"),
    )
    _check_payout_totals(out, name)
    return finish(out, source_file)


def _check_payout_totals(out: pl.DataFrame, name: str) -> None:
    """Per automatic payout (and currency) with a payout row: Σ net of the others = −net of the payout row."""
    is_payout = pl.col("record_type") == "payout"
    groups = (
        out.filter(pl.col("batch_id").is_not_null())
        .group_by("batch_id", "currency")
        .agg(
            pl.col("source_row").filter(is_payout).min().alias("payout_row"),
            pl.col("net_amount_minor").filter(~is_payout).sum().alias("others"),
            pl.col("net_amount_minor").filter(is_payout).sum().alias("payout"),
        )
        .filter(pl.col("payout_row").is_not_null() & (pl.col("others") + pl.col("payout") != 0))
        .sort("payout_row")
    )
    if groups.height == 0:
        return
    g = groups.row(0, named=True)
    row = out.filter(pl.col("source_row") == g["payout_row"]).row(0, named=True)
    ccy = str(g["currency"])
    raise FormatError.at(
        name,
        f"control total mismatch for payout {g['batch_id']} ({ccy}): the other rows net to "
        f"{to_major_str(int(g['others']), ccy)} but the payout row pays out "
        f"{to_major_str(-int(g['payout']), ccy)}",
        row=_int(g["payout_row"]),
        field=C_NET,
        value=row["__net_text"],
        hint="The report is incomplete (rows filtered out?) or altered; re-run it for the whole payout.",
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None
