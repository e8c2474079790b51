"""Adyen Settlement details report (SDR) → settlement lines.

Format: ``/work/shared/formats/adyen-settlement-details.md``. One header line, comma-separated, mapped by
header name (columns may be reordered, post-2023 extra columns are ignored). Every column is read as text;
only the amount columns are turned into integer minor units, exactly (no floats).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import polars as pl

from reconciliation_pipeline import frames
from reconciliation_pipeline.formats.common import (
    ROW,
    amounts_plan,
    amounts_to_minor,
    basename,
    constant_values,
    finish,
    first_line,
    first_row,
    minor_col,
    raise_first_bad_amount,
    read_csv_strings,
    sha256_hex,
)
from reconciliation_pipeline.formats.errors import FormatError
from reconciliation_pipeline.money import to_major_str

FORMAT = "adyen_settlement_details"
PSP = "adyen"


# --------------------------------------------------------------------------------------------------------
# Adyen
# --------------------------------------------------------------------------------------------------------

C_MERCHANT = "Merchant Account"
C_PSP_REF = "Psp Reference"
C_MERCHANT_REF = "Merchant Reference"
C_CREATED = "Creation Date"
C_TZ = "TimeZone"
C_TYPE = "Type"
C_MOD_REF = "Modification Reference"
C_GROSS_CCY = "Gross Currency"
C_GROSS_DEBIT = "Gross Debit (GC)"
C_GROSS_CREDIT = "Gross Credit (GC)"
C_RATE = "Exchange Rate"
C_NET_CCY = "Net Currency"
C_NET_DEBIT = "Net Debit (NC)"
C_NET_CREDIT = "Net Credit (NC)"
C_FEES = ("Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)")
C_MOD_MERCHANT_REF = "Modification Merchant Reference"
C_BATCH = "Batch Number"

REQUIRED = (
    C_MERCHANT,
    C_PSP_REF,
    C_MERCHANT_REF,
    C_CREATED,
    C_TZ,
    C_TYPE,
    C_MOD_REF,
    C_GROSS_CCY,
    C_GROSS_DEBIT,
    C_GROSS_CREDIT,
    C_RATE,
    C_NET_CCY,
    C_NET_DEBIT,
    C_NET_CREDIT,
    *C_FEES,
    C_MOD_MERCHANT_REF,
    C_BATCH,
)

LINE_KIND: dict[str, str] = {
    "Settled": "capture",
    "Refunded": "refund",
    "RefundedReversed": "refund_reversal",
    "Chargeback": "chargeback",
    "SecondChargeback": "chargeback",
    "ChargebackReversed": "chargeback_reversal",
    "PaidOut": "payout_to_player",
    "PaidOutReversed": "payout_to_player_reversal",
    "Fee": "fee",
    "MiscCosts": "fee",
    "PaymentCost": "fee",
    "InvoiceDeduction": "fee",
    "MerchantPayout": "merchant_payout",
    "Balancetransfer": "balance_transfer",
    "DepositCorrection": "adjustment",
    "ManualCorrected": "adjustment",
    "MatchedStatement": "adjustment",
    "BankInstructionReturned": "adjustment",
    "EpaPaid": "adjustment",
}
#: Types whose movement is the payment itself (movement_reference = Psp Reference).
_OWN_PSP_REF_TYPES = ("Settled", "PaidOut")

#: UTC offsets (minutes) of the TimeZone abbreviations Adyen writes; anything else is refused.
TZ_OFFSET_MINUTES: dict[str, int] = {
    "CET": 60,
    "CEST": 120,
    "GMT": 0,
    "UTC": 0,
    "BST": 60,
    "EET": 120,
    "EEST": 180,
    "PST": -480,
    "PDT": -420,
    "EST": -300,
    "EDT": -240,
}


def looks_like(data: bytes) -> bool:
    header = first_line(data)
    return all(name in header for name in (C_PSP_REF, C_GROSS_DEBIT, C_BATCH))


def parse(data: bytes, source_file: str, *, file_sha256: str | None = None) -> pl.DataFrame:
    """``file_sha256``: the checksum of ``data`` when the caller has computed it already (ingestion
    has: it recognises a known file by it); otherwise it is computed here, beside the read."""
    name = basename(source_file)

    def read() -> pl.DataFrame:
        return read_csv_strings(
            data, source_file, what="Adyen settlement details report", required=REQUIRED, only_listed=True
        )

    if file_sha256 is not None:
        return _parse_frame(read(), name, source_file, file_sha256)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # hashlib releases the GIL: the checksum is computed while Polars reads the file.
        checksum = pool.submit(sha256_hex, data)
        frame = read()
        return _parse_frame(frame, name, source_file, checksum.result())


def _parse_frame(frame: pl.DataFrame, name: str, source_file: str, file_sha256: str) -> pl.DataFrame:

    for column, label in (
        (C_TYPE, "a Type"),
        (C_MERCHANT, "a Merchant Account"),
        (C_BATCH, "a Batch Number"),
        (C_CREATED, "a Creation Date"),
        (C_TZ, "a TimeZone"),
    ):
        hit = first_row(frame, pl.col(column).is_null())
        if hit is not None:
            raise FormatError.at(
                name,
                f"the row has no value in {column!r}; every row needs {label}",
                row=_int(hit[ROW]),
                field=column,
                hint="Re-export the complete report from the Adyen Customer Area.",
            )

    # The usual report is one merchant account's batch in one time zone and net currency: values that
    # are the same on every row are computed once (the per-row expressions below give the same result).
    same = constant_values(frame, (C_MERCHANT, C_BATCH, C_TZ, C_GROSS_CCY, C_NET_CCY))

    # Time zone abbreviations and creation timestamps.
    unknown_tz = (
        None
        if same.get(C_TZ) in TZ_OFFSET_MINUTES
        else first_row(frame, ~pl.col(C_TZ).is_in(list(TZ_OFFSET_MINUTES)))
    )
    if unknown_tz is not None:
        raise FormatError.at(
            name,
            "unknown time-zone abbreviation",
            row=_int(unknown_tz[ROW]),
            field=C_TZ,
            value=unknown_tz[C_TZ],
            hint=f"Known abbreviations: {', '.join(TZ_OFFSET_MINUTES)}; add the new one to "
            "adyen.TZ_OFFSET_MINUTES with its UTC offset.",
        )
    # Creation times are mostly distinct: parsing each is cheaper than Polars' cache of unique values.
    local = pl.col(C_CREATED).str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=False, cache=False)

    # Amounts → minor units.
    side_by_side = [
        (C_GROSS_DEBIT, C_GROSS_CCY),
        (C_GROSS_CREDIT, C_GROSS_CCY),
        (C_NET_DEBIT, C_NET_CCY),
        (C_NET_CREDIT, C_NET_CCY),
        *[(fee, C_NET_CCY) for fee in C_FEES],
    ]
    # A row carries its amount on one side, debit or credit: when no row fills both, each pair is parsed
    # as one column (half the work) and the debit side negated afterwards.
    pairs = ((C_GROSS_DEBIT, C_GROSS_CREDIT, C_GROSS_CCY), (C_NET_DEBIT, C_NET_CREDIT, C_NET_CCY))
    both = frame.select([(pl.col(d).is_not_null() & pl.col(c).is_not_null()).any() for d, c, _ in pairs]).row(
        0
    )
    one_side = {credit: debit for (debit, credit, _), filled in zip(pairs, both, strict=True) if not filled}
    frame = frame.with_columns(
        pl.coalesce(credit, debit).alias(_either(credit)) for credit, debit in one_side.items()
    )
    specs = [
        *[
            spec
            for debit, credit, ccy in pairs
            for spec in ([(_either(credit), ccy)] if credit in one_side else [(debit, ccy), (credit, ccy)])
        ],
        *[(fee, C_NET_CCY) for fee in C_FEES],
    ]
    plan, bad_amount = amounts_plan(frame, source_file, specs)
    has_gross = pl.col(C_GROSS_DEBIT).is_not_null() | pl.col(C_GROSS_CREDIT).is_not_null()
    has_net = pl.col(C_NET_DEBIT).is_not_null() | pl.col(C_NET_CREDIT).is_not_null()
    no_amount = first_row(frame, ~has_gross & ~has_net)
    if no_amount is not None:
        raise FormatError.at(
            name,
            "the row has no amount: all Gross and Net debit/credit columns are empty",
            row=_int(no_amount[ROW]),
            field=C_NET_CREDIT,
            hint="Every SDR row carries a gross or a net amount; re-export the report.",
        )

    def signed(debit: str, credit: str) -> pl.Expr:
        if credit in one_side:
            either = pl.col(minor_col(_either(credit)))
            return pl.when(pl.col(debit).is_not_null()).then(-either).otherwise(either).fill_null(0)
        return pl.col(minor_col(credit)).fill_null(0) - pl.col(minor_col(debit)).fill_null(0)

    gross = signed(C_GROSS_DEBIT, C_GROSS_CREDIT)
    net = pl.when(has_net).then(signed(C_NET_DEBIT, C_NET_CREDIT)).otherwise(pl.lit(None, pl.Int64))
    fee = pl.sum_horizontal([pl.col(minor_col(f)).fill_null(0) for f in C_FEES])
    typ = pl.col(C_TYPE)
    payment_level = pl.col(C_PSP_REF).is_not_null()
    line_kind = typ.replace_strict(LINE_KIND, default="other", return_dtype=pl.String)
    mod_ref = pl.col(C_MOD_REF)
    tz_minutes = (
        pl.lit(TZ_OFFSET_MINUTES[str(same[C_TZ])], pl.Int64)
        if C_TZ in same
        else pl.col(C_TZ).replace_strict(TZ_OFFSET_MINUTES, return_dtype=pl.Int64)
    )
    batch_id = (
        pl.lit(f"{same[C_MERCHANT]}:{same[C_BATCH]}", pl.String)
        if C_MERCHANT in same and C_BATCH in same
        else pl.concat_str([pl.col(C_MERCHANT), pl.lit(":"), pl.col(C_BATCH)])
    )

    def upper(column: str) -> pl.Expr:
        value = same.get(column, "")
        if value is None:
            return pl.lit(None, pl.String)
        return pl.lit(value.upper(), pl.String) if column in same else pl.col(column).str.to_uppercase()

    one_ccy = C_GROSS_CCY in same and C_NET_CCY in same and same[C_GROSS_CCY] == same[C_NET_CCY]
    currency = (
        upper(C_NET_CCY)
        if one_ccy
        else pl.when(has_gross).then(upper(C_GROSS_CCY)).otherwise(upper(C_NET_CCY))
    )

    # A modification's own merchant reference, when there is one (most reports have none at all).
    merchant_ref = (
        pl.col(C_MERCHANT_REF)
        if frame.get_column(C_MOD_MERCHANT_REF).null_count() == frame.height
        else pl.coalesce(pl.col(C_MOD_MERCHANT_REF), pl.col(C_MERCHANT_REF))
    )

    # One lazy plan from here to the output columns (parsed in parallel, nothing in between kept).
    out = (
        plan.with_columns(local.alias("__local"))
        .select(
            pl.lit(PSP).alias("psp"),
            pl.lit(name).alias("source_file"),
            pl.col(ROW).alias("source_row"),
            pl.lit(file_sha256).alias("file_sha256"),
            batch_id.alias("batch_id"),
            pl.col(C_MERCHANT).alias("account_id"),
            typ.alias("record_type"),
            line_kind.alias("line_kind"),
            line_kind.is_in(list(frames.PLAYER_LINE_KINDS)).alias("moves_player_money"),
            pl.when(pl.any_horizontal([typ == t for t in _OWN_PSP_REF_TYPES]))
            .then(pl.col(C_PSP_REF))
            .when(payment_level)
            .then(mod_ref)
            .otherwise(pl.lit(None, pl.String))
            .alias("movement_reference"),
            pl.col(C_PSP_REF).alias("payment_reference"),
            merchant_ref.alias("merchant_reference"),
            # The reference text of the payout rows (a handful), cut to the transfer reference below.
            pl.when(typ == "MerchantPayout")
            .then(mod_ref)
            .otherwise(pl.lit(None, pl.String))
            .alias("payout_reference"),
            # Batch-level rows carry free text in Modification Reference (fee period, invoice number, payout
            # transfer reference): kept as the row's remittance text.
            pl.when(payment_level).then(pl.lit(None, pl.String)).otherwise(mod_ref).alias("remittance_info"),
            (pl.col("__local") - pl.duration(minutes=tz_minutes))
            .dt.replace_time_zone("UTC")
            .alias("booked_at"),
            pl.col("__local").dt.date().alias("booking_date"),
            pl.when(has_gross).then(gross).otherwise(net).alias("amount_minor"),
            currency.alias("currency"),
            fee.alias("fee_minor"),
            net.alias("net_amount_minor"),
            upper(C_NET_CCY).alias("net_currency"),
            pl.col(C_RATE).alias("exchange_rate"),
            pl.col(C_NET_DEBIT).alias("__net_debit"),
            pl.col(C_NET_CREDIT).alias("__net_credit"),
            pl.col(C_CREATED).alias("__created"),
            pl.col("__local").is_null().alias("__bad_date"),
            bad_amount.alias("__bad_amount"),
        )
        .collect()
    )
    if out.get_column("__bad_amount").any():
        # The same rows, parsed column by column, name the field and the raw value of the first bad one.
        amounts_to_minor(frame, source_file, side_by_side)
        raise_first_bad_amount(plan, bad_amount, source_file, specs)
    bad_date = first_row(out, pl.col("__bad_date"))
    if bad_date is not None:
        raise FormatError.at(
            name,
            "not a date and time of the form YYYY-MM-DD HH:MM:SS",
            row=_int(bad_date["source_row"]),
            field=C_CREATED,
            value=bad_date["__created"],
            hint="Re-export the report; Creation Date must be the Adyen timestamp text.",
        )
    out = _payout_references(out)
    _check_payout_totals(out, name)
    return finish(out, source_file)


def _either(credit: str) -> str:
    """The column holding a debit/credit pair's one filled side."""
    return f"__either__{credit}"


def _payout_references(out: pl.DataFrame) -> pl.DataFrame:
    """A MerchantPayout row's Modification Reference is ``<transfer reference> batch <n>``: keep the
    transfer reference, which the bank credit carries. Only the payout rows are touched."""
    rows = out.select(pl.col("payout_reference").is_not_null().arg_true()).to_series()
    if rows.len() == 0:
        return out
    text = out.get_column("payout_reference").gather(rows)
    cut = text.to_frame().select(
        pl.when(pl.col("payout_reference").str.contains(" batch", literal=True))
        .then(pl.col("payout_reference").str.split(" batch").list.first().str.strip_chars())
        .otherwise(pl.col("payout_reference"))
    )
    return out.with_columns(out.get_column("payout_reference").scatter(rows, cut.to_series()))


def _check_payout_totals(out: pl.DataFrame, name: str) -> None:
    """Per batch and net currency: Σ net of the other rows = amount paid out by the MerchantPayout row(s)."""
    is_payout = pl.col("record_type") == "MerchantPayout"
    net = pl.col("net_amount_minor").fill_null(0)
    sums = [
        pl.col("source_row").filter(is_payout).min().alias("payout_row"),
        net.filter(~is_payout).sum().alias("others"),
        net.filter(is_payout).sum().alias("payout"),
    ]
    keys = ("batch_id", "net_currency")
    single = out.select([pl.col(c).eq_missing(pl.col(c).first()).all() for c in keys]).row(0)
    # The usual file is one batch in one currency: plain sums, without hashing a million keys.
    totals = (
        out.lazy().select(*[pl.col(c).first() for c in keys], *sums)
        if all(single)
        else out.lazy().group_by(*keys).agg(sums)
    )
    groups = (
        totals.filter(pl.col("payout_row").is_not_null() & (pl.col("others") + pl.col("payout") != 0))
        .sort("payout_row")
        .collect()
    )
    if groups.height == 0:
        return
    g = groups.row(0, named=True)
    row = out.filter(pl.col("source_row") == g["payout_row"]).row(0, named=True)
    field, value = (
        (C_NET_DEBIT, row["__net_debit"])
        if row["__net_debit"] is not None
        else (C_NET_CREDIT, row["__net_credit"])
    )
    ccy = str(g["net_currency"])
    others = _major(int(g["others"]), ccy)
    paid = _major(-int(g["payout"]), ccy)
    raise FormatError.at(
        name,
        f"control total mismatch for batch {g['batch_id']} ({ccy}): the other rows net to {others} "
        f"but the MerchantPayout pays out {paid}",
        row=_int(g["payout_row"]),
        field=field,
        value=value,
        hint="The file is incomplete or altered; ask Adyen to re-send the settlement details report.",
    )


def _major(amount_minor: int, currency: str) -> str:
    return to_major_str(amount_minor, currency)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None
