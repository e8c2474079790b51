"""Adyen Settlement details report (SDR) → settlement lines.

Format: ``/work/shared/formats/adyen-settlement-details.md``. One header line, comma-separated, mapped by
header name (columns may be reordered, post-2023 extra columns are ignored). Every column is read as text;
only the amount columns are turned into integer minor units, exactly (no floats).

This module also holds the small vectorised CSV helpers the Stripe parser shares (``read_csv_strings``,
``amounts_to_minor``, ``first_row``, ``finish``); they sit here because the formats package has one module
per format and no private helper module yet.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandera.errors
import polars as pl

from reconciliation_pipeline import frames
from reconciliation_pipeline.formats.errors import FormatError
from reconciliation_pipeline.money import MoneyError, exponent, known_currency, to_major_str, to_minor

FORMAT = "adyen_settlement_details"
PSP = "adyen"

ROW = "__row"  # 1-based data row (header excluded), added to every CSV frame
BOM = b"\xef\xbb\xbf"

# --------------------------------------------------------------------------------------------------------
# Shared helpers (also used by stripe.py, paypal.py and camt053.py)
# --------------------------------------------------------------------------------------------------------

#: A plain decimal in major units: optional sign, digits with an optional fraction, or a leading-dot
#: fraction (``.11``). No exponents, no thousands separators, no decimal comma.
DECIMAL_RE = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$"
_DECIMAL = re.compile(DECIMAL_RE)
#: Integer digits accepted before the decimal point (keeps every scaled amount inside int64).
_MAX_INT_DIGITS = 14


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def basename(source_file: str) -> str:
    return re.split(r"[\\/]", source_file)[-1] or source_file


def first_line(data: bytes, limit: int = 65536) -> str:
    """The first line of ``data`` (BOM stripped) as text, for cheap format sniffing."""
    head = data[:limit]
    if head.startswith(BOM):
        head = head[len(BOM) :]
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    return line.decode("utf-8", errors="replace")


def read_csv_strings(
    data: bytes,
    source_file: str,
    *,
    what: str,
    required: Sequence[str],
    used: Iterable[str] = (),
) -> pl.DataFrame:
    """Read a single-header CSV with every column as text, plus a 1-based data-row column :data:`ROW`.

    In the ``required`` and ``used`` columns, empty and quoted-empty (``""``) values become null.
    Raises :class:`FormatError` for an empty file, bytes that are not UTF-8, unreadable CSV, a missing
    required column, or a header with no data rows.
    """
    name = basename(source_file)
    if data.startswith(BOM):
        data = data[len(BOM) :]
    if not data or data.isspace():
        raise FormatError.at(
            name,
            f"the file is empty; expected a CSV file ({what}) with a header line",
            hint="Check that the transfer completed and ingest the complete file.",
        )
    _refuse_truncated_last_line(data, name, what)
    try:
        frame = pl.read_csv(io.BytesIO(data), infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise _csv_read_error(data, name, what, exc) from exc
    frame = frame.rename({c: c.strip() for c in frame.columns if c != c.strip()})
    for column in required:
        if column not in frame.columns:
            raise FormatError.at(
                name,
                f"the header has no {column!r} column, which the {what} must have",
                field=column,
                value=None,
                hint="Re-export the report with the standard columns "
                f"(header found: {', '.join(frame.columns)[:300]}).",
            )
    if frame.height == 0:
        raise FormatError.at(
            name,
            f"no data rows: the file ({what}) has a header line only",
            hint="An empty report is not a settlement file; ingest the report that has rows.",
        )
    cols = list(dict.fromkeys([*required, *used]))
    cols = [c for c in cols if c in frame.columns]
    return frame.with_columns(
        [pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in cols]
        + [pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW)]
    )


def _refuse_truncated_last_line(data: bytes, name: str, what: str) -> None:
    """A file cut off mid-line (no final line end, fewer fields than the header or an open quote) is
    refused whole, before any parsing."""
    tail = data.rstrip(b" \t")
    if tail.endswith((b"\n", b"\r")) or b"\n" not in tail:
        return
    header = next(csv.reader([tail.split(b"\n", 1)[0].decode("utf-8", "replace").strip()]), [])
    last = tail.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")
    fields = next(csv.reader([last]), [])
    open_quote = last.count('"') % 2 == 1
    if len(fields) < len(header) or open_quote:
        complete = len(fields) - 1 if open_quote else len(fields)
        raise FormatError.at(
            name,
            f"the last line is cut off ({max(complete, 0)} of the header's {len(header)} fields"
            f"{', inside a quoted value' if open_quote else ''}, no line end): the {what} was truncated",
            row=tail.count(b"\n"),
            field=header[max(complete, 0)] if header else None,
            value=last[-40:],
            hint="Fetch the complete file again from the PSP and ingest it; nothing of this file was loaded.",
        )


def _csv_read_error(data: bytes, name: str, what: str, exc: Exception) -> FormatError:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = data.count(b"\n", 0, bad.start) + 1
        return FormatError.at(
            name,
            "the file is not UTF-8 text",
            row=line - 1 if line > 1 else None,
            value=data[bad.start : bad.start + 4].hex(" "),
            hint=f"Settlement files are UTF-8; this byte sequence is at line {line}. "
            "Re-download the original file (do not open and re-save it in a spreadsheet).",
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return FormatError.at(
        name,
        f"not a readable CSV file ({what}): {first}",
        hint="Check that the file is an unmodified comma-separated export.",
    )


def first_row(frame: pl.DataFrame, mask: pl.Expr) -> dict[str, Any] | None:
    """The first row of ``frame`` where ``mask`` is true, as a dict, or None."""
    index = frame.select(mask.fill_null(False).arg_true().first()).item()
    return None if index is None else frame.row(int(index), named=True)


def currency_exponents(frame: pl.DataFrame, column: str, source_file: str) -> dict[str, int]:
    """Map each distinct (non-null) value of ``column`` to its ISO 4217 exponent; unknown → FormatError."""
    mapping: dict[str, int] = {}
    for value in frame.get_column(column).drop_nulls().unique().sort().to_list():
        code = value.upper()
        if not re.fullmatch(r"[A-Z]{3}", code) or not known_currency(code):
            hit = first_row(frame, pl.col(column) == value)
            row = None if hit is None else hit[ROW]
            raise FormatError.at(
                basename(source_file),
                "unknown currency",
                row=row if isinstance(row, int) else None,
                field=column,
                value=value,
                hint="Use an ISO 4217 currency code this platform knows (money.py); "
                "if the currency is real, add its exponent to money.py first.",
            )
        mapping[value] = exponent(code)
    return mapping


def minor_units(frame: pl.DataFrame, field: str, exp: pl.Expr, out: str) -> pl.DataFrame:
    """Add column ``out``: decimal major-unit text in ``field`` → int64 minor units at exponent ``exp``.

    Null when empty or not exact: trailing fraction zeros beyond the exponent are accepted (``1.230`` EUR
    = 123), any other extra digit, a malformed number or more than 14 integer digits gives null (the
    caller reports it). Integer arithmetic on the split parts, no floats; computed in two stages so that
    each string operation runs once.
    """
    text = pl.col(field)
    parts = text.str.strip_chars_start("+-").str.split_exact(".", 1)
    frame = frame.with_columns(
        parts.struct.field("field_0").str.strip_chars_start("0").alias("__int"),
        parts.struct.field("field_1").fill_null("").str.strip_chars_end("0").alias("__frac"),
        text.str.contains(DECIMAL_RE).alias("__syntax"),
        text.str.starts_with("-").alias("__neg"),
    )
    frac_len = pl.col("__frac").str.len_bytes().cast(pl.Int64)
    exp64 = exp.cast(pl.Int64)
    ok = pl.col("__syntax") & (frac_len <= exp64) & (pl.col("__int").str.len_bytes() <= _MAX_INT_DIGITS)
    ten = pl.lit(10, pl.Int64)
    magnitude = pl.col("__int").cast(pl.Int64, strict=False).fill_null(0) * ten.pow(exp64.clip(0)) + pl.col(
        "__frac"
    ).cast(pl.Int64, strict=False).fill_null(0) * ten.pow((exp64 - frac_len).clip(0))
    value = pl.when(pl.col("__neg")).then(-magnitude).otherwise(magnitude)
    return frame.with_columns(pl.when(ok).then(value).otherwise(pl.lit(None, pl.Int64)).alias(out)).drop(
        "__int", "__frac", "__syntax", "__neg"
    )


def minor_col(field: str) -> str:
    return f"__minor__{field}"


def amounts_to_minor(
    frame: pl.DataFrame,
    source_file: str,
    specs: Sequence[tuple[str, str]],
    *,
    upper: bool = False,
) -> pl.DataFrame:
    """Add ``minor_col(field)`` for every ``(amount field, currency field)`` in ``specs``.

    Every non-empty amount must be a plain decimal, exact in its currency's minor units, with a known
    currency; the first row that is not raises :class:`FormatError` naming row, field and value.
    """
    name = basename(source_file)
    exps: dict[str, pl.Expr] = {}
    for _, cur in specs:
        if cur not in exps:
            mapping = currency_exponents(frame, cur, source_file)
            exps[cur] = pl.col(f"__exp__{cur}")
            frame = frame.with_columns(
                pl.col(cur)
                .replace_strict(mapping, default=None, return_dtype=pl.Int64)
                .alias(f"__exp__{cur}")
            )
    for field, cur in specs:
        if frame.get_column(field).null_count() == frame.height:
            # An all-empty column (common: the unused debit or credit side) needs no parsing.
            frame = frame.with_columns(pl.lit(None, pl.Int64).alias(minor_col(field)))
        else:
            frame = minor_units(frame, field, exps[cur], minor_col(field))
    bad = [pl.col(field).is_not_null() & pl.col(minor_col(field)).is_null() for field, _ in specs]
    hit = first_row(frame, pl.any_horizontal(bad))
    if hit is not None:
        for field, cur in specs:
            raw, currency = hit[field], hit[cur]
            if raw is not None and hit[minor_col(field)] is None:
                raise amount_error(
                    name,
                    hit[ROW],
                    field,
                    str(raw),
                    None if currency is None else str(currency),
                    currency_field=cur,
                )
    return frame


def amount_error(
    name: str, row: object, field: str, raw: str, currency: str | None, *, currency_field: str
) -> FormatError:
    row_no = row if isinstance(row, int) else None
    if currency is None:
        return FormatError.at(
            name,
            f"an amount is given but {currency_field!r} is empty",
            row=row_no,
            field=currency_field,
            value=raw,
            hint="Every amount needs its currency; re-export the report.",
        )
    if not _DECIMAL.match(raw):
        return FormatError.at(
            name,
            "not a decimal amount in major units",
            row=row_no,
            field=field,
            value=raw,
            hint="Amounts must look like 12.30 (dot as decimal separator, no thousands "
            "separators); re-export the report with '.' as the decimal separator.",
        )
    try:
        to_minor(raw, currency)
    except MoneyError as exc:
        return FormatError.at(
            name,
            str(exc),
            row=row_no,
            field=field,
            value=raw,
            hint=f"{currency.upper()} amounts have {exponent(currency)} decimals; "
            "the PSP must re-issue the file.",
        )
    return FormatError.at(
        name,
        "amount is out of range",
        row=row_no,
        field=field,
        value=raw,
        hint="Amounts above 10^14 major units are not supported; check the file.",
    )


def finish(frame: pl.DataFrame, source_file: str) -> pl.DataFrame:
    """Conform to :data:`frames.SETTLEMENT_LINE_SCHEMA` and validate with the pandera contract."""
    out = frames.conform(frame, frames.SETTLEMENT_LINE_SCHEMA)
    try:
        frames.SettlementLineModel.validate(out)
    except (pandera.errors.SchemaError, pandera.errors.SchemaErrors) as exc:
        raise FormatError.at(
            basename(source_file),
            f"parsed rows break the settlement-line contract: {str(exc)[:500]}",
            hint="This is a parser defect or an unsupported variant of the format; report it with the file.",
        ) from exc
    return out


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


def parse(data: bytes, source_file: str) -> pl.DataFrame:
    name = basename(source_file)
    frame = read_csv_strings(data, source_file, what="Adyen settlement details report", required=REQUIRED)

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

    # Time zone abbreviations and creation timestamps.
    unknown_tz = first_row(frame, ~pl.col(C_TZ).is_in(list(TZ_OFFSET_MINUTES)))
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
    local = pl.col(C_CREATED).str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False)
    frame = frame.with_columns(local.alias("__local"))
    bad_date = first_row(frame, pl.col("__local").is_null())
    if bad_date is not None:
        raise FormatError.at(
            name,
            "not a date and time of the form YYYY-MM-DD HH:MM:SS",
            row=_int(bad_date[ROW]),
            field=C_CREATED,
            value=bad_date[C_CREATED],
            hint="Re-export the report; Creation Date must be the Adyen timestamp text.",
        )

    # Amounts → minor units.
    specs = [
        (C_GROSS_DEBIT, C_GROSS_CCY),
        (C_GROSS_CREDIT, C_GROSS_CCY),
        (C_NET_DEBIT, C_NET_CCY),
        (C_NET_CREDIT, C_NET_CCY),
        *[(fee, C_NET_CCY) for fee in C_FEES],
    ]
    frame = amounts_to_minor(frame, source_file, specs)
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
        return pl.col(minor_col(credit)).fill_null(0) - pl.col(minor_col(debit)).fill_null(0)

    gross = signed(C_GROSS_DEBIT, C_GROSS_CREDIT)
    net = pl.when(has_net).then(signed(C_NET_DEBIT, C_NET_CREDIT)).otherwise(pl.lit(None, pl.Int64))
    fee = pl.sum_horizontal([pl.col(minor_col(f)).fill_null(0) for f in C_FEES])
    typ = pl.col(C_TYPE)
    payment_level = pl.col(C_PSP_REF).is_not_null()
    line_kind = typ.replace_strict(LINE_KIND, default="other", return_dtype=pl.String)
    mod_ref = pl.col(C_MOD_REF)
    payout_ref = (
        pl.when(mod_ref.str.contains(" batch", literal=True))
        .then(mod_ref.str.split(" batch").list.first().str.strip_chars())
        .otherwise(mod_ref)
    )
    tz_minutes = pl.col(C_TZ).replace_strict(TZ_OFFSET_MINUTES, return_dtype=pl.Int64)

    out = frame.select(
        pl.lit(PSP).alias("psp"),
        pl.lit(name).alias("source_file"),
        pl.col(ROW).alias("source_row"),
        pl.lit(sha256_hex(data)).alias("file_sha256"),
        pl.concat_str([pl.col(C_MERCHANT), pl.lit(":"), pl.col(C_BATCH)]).alias("batch_id"),
        pl.col(C_MERCHANT).alias("account_id"),
        typ.alias("record_type"),
        line_kind.alias("line_kind"),
        line_kind.is_in(list(frames.PLAYER_LINE_KINDS)).alias("moves_player_money"),
        pl.when(typ.is_in(list(_OWN_PSP_REF_TYPES)))
        .then(pl.col(C_PSP_REF))
        .when(payment_level)
        .then(mod_ref)
        .otherwise(pl.lit(None, pl.String))
        .alias("movement_reference"),
        pl.col(C_PSP_REF).alias("payment_reference"),
        pl.coalesce(pl.col(C_MOD_MERCHANT_REF), pl.col(C_MERCHANT_REF)).alias("merchant_reference"),
        pl.when(typ == "MerchantPayout")
        .then(payout_ref)
        .otherwise(pl.lit(None, pl.String))
        .alias("payout_reference"),
        # Batch-level rows carry free text in Modification Reference (fee period, invoice number, payout
        # transfer reference): kept as the row's remittance text.
        pl.when(payment_level).then(pl.lit(None, pl.String)).otherwise(mod_ref).alias("remittance_info"),
        (pl.col("__local") - pl.duration(minutes=tz_minutes)).dt.replace_time_zone("UTC").alias("booked_at"),
        pl.col("__local").dt.date().alias("booking_date"),
        pl.when(has_gross).then(gross).otherwise(net).alias("amount_minor"),
        pl.when(has_gross)
        .then(pl.col(C_GROSS_CCY))
        .otherwise(pl.col(C_NET_CCY))
        .str.to_uppercase()
        .alias("currency"),
        fee.alias("fee_minor"),
        net.alias("net_amount_minor"),
        pl.col(C_NET_CCY).str.to_uppercase().alias("net_currency"),
        pl.col(C_RATE).alias("exchange_rate"),
        pl.col(C_NET_DEBIT).alias("__net_debit"),
        pl.col(C_NET_CREDIT).alias("__net_credit"),
    )
    _check_payout_totals(out, name)
    return finish(out, source_file)


def _check_payout_totals(out: pl.DataFrame, name: str) -> None:
    """Per batch and net currency: Σ net of the other rows = amount paid out by the MerchantPayout row(s)."""
    is_payout = pl.col("record_type") == "MerchantPayout"
    net = pl.col("net_amount_minor").fill_null(0)
    groups = (
        out.group_by("batch_id", "net_currency")
        .agg(
            pl.col("source_row").filter(is_payout).min().alias("payout_row"),
            net.filter(~is_payout).sum().alias("others"),
            net.filter(is_payout).sum().alias("payout"),
        )
        .filter(pl.col("payout_row").is_not_null() & (pl.col("others") + pl.col("payout") != 0))
        .sort("payout_row")
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
