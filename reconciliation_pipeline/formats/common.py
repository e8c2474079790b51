"""Vectorised helpers the CSV and XML parsers share: reading CSV as text, exact decimal amounts to
minor units, finding the first bad row, and the final contract check."""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandera.errors
import polars as pl

from reconciliation_pipeline import frames
from reconciliation_pipeline.formats.errors import FormatError
from reconciliation_pipeline.money import MoneyError, exponent, known_currency, to_minor

ROW = "__row"  # 1-based data row (header excluded), added to every CSV frame
BOM = b"\xef\xbb\xbf"

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
    only_listed: bool = False,
) -> pl.DataFrame:
    """Read a single-header CSV with every column as text, plus a 1-based data-row column :data:`ROW`.

    Every empty and quoted-empty (``""``) value reads as null.
    With ``only_listed``, only the ``required`` and ``used`` columns are materialised (the others are
    still tokenised, so a ragged row is still refused), which saves most of the read on wide reports.
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
    columns: list[str] | None = None
    if only_listed:
        header = next(csv.reader([first_line(data)]), [])
        by_name = {h.strip(): h for h in header}
        if len(by_name) == len(header):  # otherwise let the full read report the duplicate names
            wanted = dict.fromkeys([*required, *used])
            columns = [by_name[c] for c in wanted if c in by_name] or None
    try:
        # null_values: an empty field and a quoted empty ("") both read as null, in the reader itself.
        frame = pl.read_csv(data, infer_schema=False, columns=columns, null_values=[""])
    except pl.exceptions.PolarsError as exc:
        raise _csv_read_error(data, name, what, exc) from exc
    frame = frame.rename({c: c.strip() for c in frame.columns if c != c.strip()})
    for column in required:
        if column not in frame.columns:
            found = frame.columns if columns is None else [h.strip() for h in header]
            raise FormatError.at(
                name,
                f"the header has no {column!r} column, which the {what} must have",
                field=column,
                value=None,
                hint="Re-export the report with the standard columns "
                f"(header found: {', '.join(found)[:300]}).",
            )
    if frame.height == 0:
        raise FormatError.at(
            name,
            f"no data rows: the file ({what}) has a header line only",
            hint="An empty report is not a settlement file; ingest the report that has rows.",
        )
    return frame.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW))


def constant_values(frame: pl.DataFrame, columns: Sequence[str]) -> dict[str, str | None]:
    """The columns of ``columns`` that hold one value on every row (null included), with that value.

    One cheap pass (no hashing). Parsers use it for the usual shape of a report (one merchant account,
    one batch, one time zone, one currency) to compute a per-row value once instead of per row."""
    if frame.height == 0:
        return {}
    flags = frame.select([pl.col(c).eq_missing(pl.col(c).first()).all().alias(c) for c in columns]).row(
        0, named=True
    )
    return {c: frame.get_column(c)[0] for c in columns if flags[c]}


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
    same = constant_values(frame, [column])  # the usual column: one currency (no hashing needed)
    values: list[str] = (
        [v for v in same.values() if v is not None]
        if same
        else frame.get_column(column).drop_nulls().unique().sort().to_list()
    )
    for value in values:
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


#: Fraction digits beyond which ``10**n`` leaves int64; such amounts are exact only when zero.
_MAX_FRACTION_DIGITS = 18


def _minor_parts(field: str) -> list[pl.Expr]:
    """Stage one: the text without its decimal point as an int64, and the number of fraction digits.

    The integer parse is Polars' strict one (optional sign, ASCII digits), so spaces, exponents,
    separators and a second point all give null.
    """
    text = pl.col(field)
    dot = text.str.find(".", literal=True)
    return [
        text.str.replace(".", "", literal=True, n=1).cast(pl.Int64, strict=False).alias(f"__digits{field}"),
        pl.when(dot.is_null())
        .then(pl.lit(0, pl.Int64))
        # ".-5": the sign would pass the integer parse once the point is gone.
        .when(text.str.starts_with(".-") | text.str.starts_with(".+"))
        .then(pl.lit(None, pl.Int64))
        .otherwise(text.str.len_bytes().cast(pl.Int64) - dot.cast(pl.Int64) - 1)
        .alias(f"__fraclen{field}"),
    ]


def _minor_value(field: str, exp: pl.Expr, out: str) -> pl.Expr:
    """Stage two: scale to the currency's exponent, exactly (integer arithmetic only, no floats)."""
    digits, frac_len = pl.col(f"__digits{field}"), pl.col(f"__fraclen{field}")
    exp64 = exp.cast(pl.Int64)
    ten = pl.lit(10, pl.Int64)
    extra = ten.pow((frac_len - exp64).clip(0, _MAX_FRACTION_DIGITS))
    ok = (
        ((frac_len <= _MAX_FRACTION_DIGITS) | (digits == 0))
        # the one int64 whose absolute value is not an int64 (it would wrap to itself, a small number)
        & (digits != pl.lit(-(2**63), pl.Int64))
        & (digits.abs() // ten.pow(frac_len.clip(0, _MAX_FRACTION_DIGITS)) < ten.pow(_MAX_INT_DIGITS))
    )
    value = (
        pl.when(frac_len <= exp64)
        .then(digits * ten.pow((exp64 - frac_len).clip(0)))
        # More fraction digits than the currency has: exact only if the extra ones are zeros (1.230 EUR).
        .when(digits % extra == 0)
        .then(digits // extra)
    )
    return pl.when(ok).then(value).otherwise(pl.lit(None, pl.Int64)).alias(out)


def minor_units_many(frame: pl.DataFrame, specs: Sequence[tuple[str, pl.Expr, str]]) -> pl.DataFrame:
    """Add, for every ``(field, exponent expr, out)``, column ``out``: decimal major-unit text in ``field``
    → int64 minor units at that exponent.

    Null when empty or not exact: trailing fraction zeros beyond the exponent are accepted (``1.230`` EUR
    = 123), any other extra digit, a malformed number, more than 14 integer digits, or digits that do not
    fit a 64-bit integer once the point is removed (more than 18 in all: ISO 20022 amounts have at most
    18, ``totalDigits``; ``10000000000000.000000`` has 20) gives null (the caller reports it).
    """
    if not specs:
        return frame
    return _with_minor_units(frame.lazy(), specs).collect()


def _with_minor_units(lf: pl.LazyFrame, specs: Sequence[tuple[str, pl.Expr, str]]) -> pl.LazyFrame:
    """The two stages as one lazy plan: each string operation runs once, all columns in parallel, and
    nothing in between is materialised (about twice as fast as eager stages)."""
    if not specs:
        return lf
    lf = lf.with_columns([e for field, _, _ in specs for e in _minor_parts(field)])
    lf = lf.with_columns([_minor_value(field, exp, out) for field, exp, out in specs])
    return lf.drop([f"__{p}{field}" for field, _, _ in specs for p in ("digits", "fraclen")])


def minor_units(frame: pl.DataFrame, field: str, exp: pl.Expr, out: str) -> pl.DataFrame:
    """One column of :func:`minor_units_many`."""
    return minor_units_many(frame, [(field, exp, out)])


def minor_col(field: str) -> str:
    return f"__minor__{field}"


def amounts_to_minor(frame: pl.DataFrame, source_file: str, specs: Sequence[tuple[str, str]]) -> pl.DataFrame:
    """Add ``minor_col(field)`` for every ``(amount field, currency field)`` in ``specs``.

    Every non-empty amount must be a plain decimal, exact in its currency's minor units, with a known
    currency; the first row that is not raises :class:`FormatError` naming row, field and value.
    """
    plan, bad = amounts_plan(frame, source_file, specs)
    out = plan.with_columns(bad.alias("__bad_amount")).collect()
    if out.get_column("__bad_amount").any():
        raise_first_bad_amount(plan, bad, source_file, specs)
    return out.drop("__bad_amount")


def amounts_plan(
    frame: pl.DataFrame, source_file: str, specs: Sequence[tuple[str, str]]
) -> tuple[pl.LazyFrame, pl.Expr]:
    """The lazy half of :func:`amounts_to_minor`: ``frame`` with ``minor_col(field)`` added for every spec,
    and the mask of rows holding an amount that did not convert. Unknown currencies raise here already.

    A caller that folds the plan into its own (one collect for the whole parse) must check the mask and
    call :func:`raise_first_bad_amount` on the rows it flags."""
    exps: dict[str, pl.Expr] = {}
    for _, cur in specs:
        if cur not in exps:
            mapping = currency_exponents(frame, cur, source_file)
            if len(mapping) == 1:  # the usual case, one currency per column: no per-row lookup
                only = next(iter(mapping.values()))
                exps[cur] = pl.when(pl.col(cur).is_not_null()).then(pl.lit(only, pl.Int64))
            else:
                exps[cur] = pl.col(cur).replace_strict(mapping, default=None, return_dtype=pl.Int64)
    empty = [field for field, _ in specs if frame.get_column(field).null_count() == frame.height]
    # An all-empty column (common: the unused debit or credit side) needs no parsing.
    lf = frame.lazy().with_columns([pl.lit(None, pl.Int64).alias(minor_col(field)) for field in empty])
    plan = _with_minor_units(
        lf, [(field, exps[cur], minor_col(field)) for field, cur in specs if field not in empty]
    )
    bad = pl.any_horizontal(
        [
            pl.col(field).is_not_null() & pl.col(minor_col(field)).is_null()
            for field, _ in specs
            if field not in empty
        ]
        or [pl.lit(False)]
    )
    return plan, bad


def raise_first_bad_amount(
    plan: pl.LazyFrame, bad: pl.Expr, source_file: str, specs: Sequence[tuple[str, str]]
) -> None:
    """Raise the :class:`FormatError` naming the first row that ``bad`` flags in ``plan`` (both from
    :func:`amounts_plan`): its row, the field, the raw value and why; nothing if no row is flagged."""
    first = plan.filter(bad).head(1).collect()
    if first.height == 0:
        return
    hit = first.row(0, named=True)
    for field, cur in specs:
        raw, currency = hit[field], hit[cur]
        if raw is not None and hit[minor_col(field)] is None:
            raise amount_error(
                basename(source_file),
                hit[ROW],
                field,
                str(raw),
                None if currency is None else str(currency),
                currency_field=cur,
            )


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
        hint="Amounts of 10^14 major units or more, or of more than 18 digits in all (trailing zeros "
        "included), are not supported; check the file.",
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
