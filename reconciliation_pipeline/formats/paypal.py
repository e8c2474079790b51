"""PayPal Settlement Report (STL) → settlement lines.

Format: ``/work/shared/formats/paypal-settlement-report.md``. A ragged, record-type-prefixed CSV
(``RH FH SH CH SB SF SC RF RC FF``); only ``SB`` lines are transactions, mapped by the preceding ``CH``
names. Amounts are unsigned integers in hundredths of the major unit *regardless of the currency*
(``10000`` = 100.00 USD = 100 JPY), with the direction in separate ``CR``/``DR`` columns.

The csv module splits the lines (ragged, mixed quoting); the ``SB`` fields are then validated and converted
column-wise with Polars, so a 1M-record file does not run a Python loop per value.

Control totals checked (all in the file's own integer units, so exactly):

* per section (``SH``…``SC``) and currency: ``SF`` total gross credit / debit and total fee credit /
  debit equal the sums over the section's ``SB`` rows, and beginning balance + net = ending balance;
  ``SC`` equals the number of ``SB`` rows of the section, and every currency used by an ``SB`` row has
  an ``SF`` line;
* ``RF``/``RC`` the same over the whole report, when the report is complete in this file (the file has
  both the report header ``RH`` and the report footer ``RF``; a report split over several files has
  ``RH`` in the first and ``RF`` in the last, and those totals cannot be verified from one file);
* ``FF``: the file's record count. The spec example counts every line of the file including ``FF``
  itself; we accept that count or the count without the ``FF`` line (blank lines are not counted).

A file must end with ``FF`` and every section must be closed by ``SC``: a file without them is truncated.
Problems in ``SB`` rows are reported before footer mismatches.
"""

from __future__ import annotations

import csv
import datetime as dt
import gc
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import polars as pl

from reconciliation_pipeline import frames
from reconciliation_pipeline.formats.common import BOM, basename, finish, sha256_hex
from reconciliation_pipeline.formats.errors import FormatError
from reconciliation_pipeline.money import MoneyError, exponent, known_currency, to_minor

FORMAT = "paypal_stl"
PSP = "paypal"

RECORD_TYPES = ("RH", "FH", "SH", "CH", "SB", "SF", "SC", "RF", "RC", "FF")
_DATE_FORMAT = "%Y/%m/%d %H:%M:%S %z"
_RESEND = "The file is truncated or altered; ask PayPal to re-send it."


def _norm(name: str) -> str:
    """Header-name key: whitespace removed, case-folded (``Transaction  Debit or Credit`` and the old
    ``TransactionDebitOrCredit`` both become ``transactiondebitorcredit``)."""
    return "".join(name.split()).casefold()


K_TXN = _norm("Transaction ID")
K_INVOICE = _norm("Invoice ID")
K_REF = _norm("PayPal Reference ID")
K_CODE = _norm("Transaction Event Code")
K_COMPLETED = _norm("Transaction Completion Date")
K_DC = _norm("Transaction Debit or Credit")
K_GROSS = _norm("Gross Transaction Amount")
K_GROSS_CCY = _norm("Gross Transaction Currency")
K_FEE_DC = _norm("Fee Debit or Credit")
K_FEE = _norm("Fee Amount")
K_FEE_CCY = _norm("Fee Currency")
K_BANK_REF = _norm("Bank Reference ID")
REQUIRED = {
    K_TXN: "Transaction ID",
    K_CODE: "Transaction Event Code",
    K_COMPLETED: "Transaction Completion Date",
    K_DC: "Transaction Debit or Credit",
    K_GROSS: "Gross Transaction Amount",
    K_GROSS_CCY: "Gross Transaction Currency",
    K_FEE_DC: "Fee Debit or Credit",
    K_FEE: "Fee Amount",
    K_FEE_CCY: "Fee Currency",
}
OPTIONAL = {K_INVOICE: "Invoice ID", K_REF: "PayPal Reference ID", K_BANK_REF: "Bank Reference ID"}

#: SF/RF fields (1-based after the record type) that are checked, with their meaning.
_FOOTER_LABELS = {
    2: "total gross credit",
    3: "total gross debit",
    4: "total fee credit",
    5: "total fee debit",
    7: "beginning balance",
    9: "ending balance",
}
_SPECIAL_KINDS = {
    "T0400": "merchant_payout",
    "T1107": "refund",
    "T1106": "chargeback",
    "T1201": "chargeback",
    "T1202": "chargeback_reversal",
    "T1108": "adjustment",
}


def looks_like(data: bytes) -> bool:
    head = data[:4096]
    if head.startswith(BOM):
        head = head[len(BOM) :]
    first = head.lstrip(b" \t\r\n").split(b",", 1)[0].strip()
    return first in (b"RH", b"FH", b"SH", b'"RH"', b'"FH"', b'"SH"')


@dataclass
class _Totals:
    """Per-currency sums in the file's integer units (hundredths of the major unit)."""

    cr_gross: int = 0
    dr_gross: int = 0
    cr_fee: int = 0
    dr_fee: int = 0

    def field(self, index: int) -> int:
        return (self.cr_gross, self.dr_gross, self.cr_fee, self.dr_fee)[index - 2]


@dataclass
class _Section:
    number: int
    line: int
    account: str | None
    start_date: str | None
    count: int = 0
    footers: list[tuple[int, list[str]]] = field(default_factory=list)
    sc_line: int | None = None


@dataclass
class _Chunk:
    """Consecutive SB rows under one CH layout."""

    columns: dict[str, int]
    labels: dict[str, str]
    rows: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    sections: list[int] = field(default_factory=list)


class _Parser:
    def __init__(self, data: bytes, source_file: str, file_sha256: str | None = None) -> None:
        self.data = data
        self.file_sha256 = file_sha256 or sha256_hex(data)
        self.name = basename(source_file)
        self.rh_account: str | None = None
        self.has_rh = False
        self.sections: list[_Section] = []
        self.section: _Section | None = None
        self.chunk: _Chunk | None = None
        self.chunks: list[_Chunk] = []
        self.report_footers: list[tuple[int, list[str]]] = []
        self.rc: tuple[int, list[str]] | None = None
        self.records = 0
        self.sb_count = 0
        self.ff_line: int | None = None
        self.exponents: dict[str, int] = {}

    def error(
        self,
        message: str,
        line: int | None,
        field_name: str | None = None,
        value: object = None,
        hint: str = "Ask PayPal to re-send the settlement report and ingest it again.",
    ) -> FormatError:
        return FormatError.at(self.name, message, row=line, field=field_name, value=value, hint=hint)

    # -- driver -------------------------------------------------------------------------------------

    def run(self) -> pl.DataFrame:
        data = self.data[len(BOM) :] if self.data.startswith(BOM) else self.data
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as bad:
            line = data.count(b"\n", 0, bad.start) + 1
            raise self.error(
                "the file is not UTF-8 text",
                line,
                value=data[bad.start : bad.start + 4].hex(" "),
                hint="STL files are UTF-8; re-download the original file (older UTF-16 reports are not "
                "supported).",
            ) from None
        if not text.strip():
            raise self.error(
                "the file is empty; expected a PayPal STL report",
                None,
                hint="Check that the transfer completed and ingest the complete file.",
            )
        reader = csv.reader(io.StringIO(text, newline=""))
        end = 0
        # Millions of small lists are kept until the column-wise pass: the cyclic GC would rescan them
        # again and again (they hold no cycles), so it is paused for the split.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for fields in reader:
                line, end = end + 1, reader.line_num
                if fields and fields[0] == "SB" and self.chunk is not None and self.section is not None:
                    self.on_sb_fast(line, fields)  # the hot path: no per-value work here
                elif any(f.strip() for f in fields):
                    self.record(line, fields)
        except csv.Error as exc:
            raise self.error(f"not readable as CSV: {exc}", end + 1) from exc
        finally:
            if gc_was_enabled:
                gc.enable()
        self.close_file(end)
        frame = self.sb_frame()
        self.check_footers(frame)
        return finish(frame, self.name)

    def record(self, line: int, fields: list[str]) -> None:
        kind = fields[0].lstrip("\ufeff").strip()
        if self.ff_line is not None:
            raise self.error(
                "content after the FF file footer",
                line,
                "record type",
                kind,
                hint="The file was concatenated or altered; ingest the original file.",
            )
        if kind not in RECORD_TYPES:
            if self.records == 0:
                raise self.error(
                    "not a PayPal STL file: the first field is not a record type (RH, FH, SH)",
                    line,
                    "record type",
                    kind[:40],
                    hint="Check that this is a PayPal Settlement Report and the right --psp.",
                )
            raise self.error(
                "unknown record type",
                line,
                "record type",
                kind[:40],
                hint=f"STL lines start with one of {', '.join(RECORD_TYPES)}.",
            )
        self.records += 1
        getattr(self, f"on_{kind.lower()}")(line, fields)

    # -- record handlers ----------------------------------------------------------------------------

    def on_rh(self, line: int, fields: list[str]) -> None:
        self.has_rh = True
        self.rh_account = _field(fields, 3) or None

    def on_fh(self, line: int, fields: list[str]) -> None:
        pass

    def open_section(self, line: int, account: str | None, start_date: str | None) -> _Section:
        section = _Section(number=len(self.sections), line=line, account=account, start_date=start_date)
        self.sections.append(section)
        self.section = section
        return section

    def on_sh(self, line: int, fields: list[str]) -> None:
        if self.section is not None:
            raise self.error(
                f"the section starting at line {self.section.line} has no SC line", line, "SC", hint=_RESEND
            )
        start = _field(fields, 1)
        try:
            start_date = dt.datetime.strptime(start, _DATE_FORMAT).date().isoformat() if start else None
        except ValueError:
            raise self.error(
                "section start is not a date of the form YYYY/MM/DD HH:MM:SS ±hhmm",
                line,
                "SH field 1 (section start)",
                start,
            ) from None
        self.open_section(line, _field(fields, 3) or self.rh_account, start_date)
        self.chunk = None

    def on_ch(self, line: int, fields: list[str]) -> None:
        columns: dict[str, int] = {}
        labels: dict[str, str] = {}
        for index, raw in enumerate(fields[1:], start=1):
            key = _norm(raw)
            if key and key not in columns:
                columns[key] = index
                labels[key] = raw.strip()
        for key, label in REQUIRED.items():
            if key not in columns:
                raise self.error(
                    f"the CH column header has no {label!r} column",
                    line,
                    label,
                    hint="Re-download the report; the SB columns must include the standard ones.",
                )
        self.chunk = _Chunk(columns=columns, labels=labels)
        self.chunks.append(self.chunk)

    def on_sb(self, line: int, fields: list[str]) -> None:
        if self.chunk is None:
            raise self.error("an SB row before any CH column header", line, "record type", "SB")
        if self.section is None:  # files that start without SH: an implicit section
            self.open_section(line, self.rh_account, None)
        self.records -= 1  # counted again by on_sb_fast
        self.on_sb_fast(line, fields)

    def on_sb_fast(self, line: int, fields: list[str]) -> None:
        if self.ff_line is not None:
            self.record(line, fields)  # raises "content after FF"
        chunk, section = self.chunk, self.section
        assert chunk is not None and section is not None
        chunk.rows.append(fields)
        chunk.lines.append(line)
        chunk.sections.append(section.number)
        section.count += 1
        self.sb_count += 1
        self.records += 1

    def on_sf(self, line: int, fields: list[str]) -> None:
        if self.section is None:
            raise self.error("an SF line outside a section", line, "record type", "SF")
        self.section.footers.append((line, fields))

    def on_sc(self, line: int, fields: list[str]) -> None:
        if self.section is None:
            raise self.error("an SC line outside a section", line, "record type", "SC")
        self.check_count("SC", line, fields, self.section.count)
        self.section.sc_line = line
        self.section = None

    def on_rf(self, line: int, fields: list[str]) -> None:
        self.report_footers.append((line, fields))

    def on_rc(self, line: int, fields: list[str]) -> None:
        self.rc = (line, fields)

    def on_ff(self, line: int, fields: list[str]) -> None:
        self.ff_line = line
        count = self.footer_int("FF", line, fields, 1, "record count")
        if count not in (self.records, self.records - 1):
            raise self.error(
                f"the file footer counts {count} lines but the file has {self.records} (FF included)",
                line,
                "FF field 1 (record count)",
                _field(fields, 1),
                hint=_RESEND,
            )

    def close_file(self, last_line: int) -> None:
        if self.section is not None:
            raise self.error(
                f"the section starting at line {self.section.line} has no SC line: the file is truncated",
                last_line,
                "SC",
                hint="Ingest the complete file.",
            )
        if self.ff_line is None:
            raise self.error(
                "no FF file footer: the file is truncated", last_line, "FF", hint="Ingest the complete file."
            )
        if self.has_rh and self.report_footers and self.rc is not None:
            self.check_count("RC", self.rc[0], self.rc[1], self.sb_count)

    # -- SB rows, column-wise -----------------------------------------------------------------------

    def chunk_frame(self, chunk: _Chunk) -> pl.DataFrame:
        rows = chunk.rows
        data: dict[str, Any] = {}
        for key in (*REQUIRED, *OPTIONAL):
            index = chunk.columns.get(key)
            if index is None:
                data[key] = pl.Series(key, [""] * len(rows), dtype=pl.String)
            else:
                data[key] = pl.Series(
                    key, [r[index] if index < len(r) else "" for r in rows], dtype=pl.String
                )
        return pl.DataFrame(data).with_columns(
            pl.Series("__line", chunk.lines, dtype=pl.Int64),
            pl.Series("__section", chunk.sections, dtype=pl.Int64),
            pl.lit(self.chunks.index(chunk), pl.Int64).alias("__chunk"),
        )

    def sb_frame(self) -> pl.DataFrame:
        chunks = [c for c in self.chunks if c.rows]
        if not chunks:
            return frames.empty(frames.SETTLEMENT_LINE_SCHEMA)
        frame = pl.concat([self.chunk_frame(c) for c in chunks])
        frame = frame.with_columns(pl.col(k).str.strip_chars() for k in (*REQUIRED, *OPTIONAL))
        # Currencies: validated per distinct value.
        for key in (K_GROSS_CCY, K_FEE_CCY):
            for value in frame.get_column(key).unique().to_list():
                code = value.upper()
                if value and re.fullmatch(r"[A-Z]{3}", code) and known_currency(code):
                    self.exponents[value] = exponent(code)
        ccy = pl.col(K_GROSS_CCY).str.to_uppercase()
        # A fee without its own currency is in the transaction currency (PayPal charges fees there).
        fee_ccy = pl.when(pl.col(K_FEE_CCY) == "").then(ccy).otherwise(pl.col(K_FEE_CCY).str.to_uppercase())
        gross_exp = pl.col(K_GROSS_CCY).replace_strict(self.exponents, default=None, return_dtype=pl.Int64)
        fee_exp = (
            pl.when(pl.col(K_FEE_CCY) == "")
            .then(gross_exp)
            .otherwise(pl.col(K_FEE_CCY).replace_strict(self.exponents, default=None, return_dtype=pl.Int64))
        )
        frame = frame.with_columns(
            ccy.alias("__ccy"),
            fee_ccy.alias("__fee_ccy"),
            gross_exp.alias("__gexp"),
            fee_exp.alias("__fexp"),
            pl.col(K_GROSS).cast(pl.Int64, strict=False).alias("__gross"),
            pl.when(pl.col(K_FEE) == "")
            .then(pl.lit(0, pl.Int64))
            .otherwise(pl.col(K_FEE).cast(pl.Int64, strict=False))
            .alias("__fee"),
            pl.col(K_COMPLETED)
            .str.strptime(pl.Datetime("us", "UTC"), _DATE_FORMAT, strict=False)
            .alias("booked_at"),
            pl.col(K_COMPLETED)
            .str.extract(r"^(\S+)", 1)
            .str.strptime(pl.Date, "%Y/%m/%d", strict=False)
            .alias("booking_date"),
        )
        frame = frame.with_columns(
            _scaled(pl.col("__gross"), pl.col("__gexp")).alias("__gross_minor"),
            _scaled(pl.col("__fee"), pl.col("__fexp")).alias("__fee_minor"),
        )
        digits = r"^[0-9]{1,17}$"
        checks: list[tuple[str, pl.Expr, str]] = [
            (
                K_CODE,
                ~pl.col(K_CODE).str.contains(r"^T[0-9]{4}$"),
                "not a transaction event code (T + four digits)",
            ),
            (K_DC, ~pl.col(K_DC).is_in(["CR", "DR"]), "expected CR or DR"),
            (K_GROSS_CCY, pl.col("__gexp").is_null(), "unknown currency"),
            (K_GROSS, pl.col(K_GROSS) == "", "the amount is empty"),
            (
                K_GROSS,
                ~pl.col(K_GROSS).str.contains(digits),
                "not an unsigned integer amount (PayPal writes hundredths of the major unit, the sign is "
                "in the CR/DR column)",
            ),
            (K_FEE_DC, ~pl.col(K_FEE_DC).is_in(["CR", "DR", ""]), "expected CR, DR or empty"),
            (
                K_FEE,
                (pl.col(K_FEE) != "") & ~pl.col(K_FEE).str.contains(digits),
                "not an unsigned integer amount (PayPal writes hundredths of the major unit, the sign is "
                "in the CR/DR column)",
            ),
            (K_FEE_DC, (pl.col("__fee") != 0) & (pl.col(K_FEE_DC) == ""), "a fee amount without CR/DR"),
            (K_FEE_CCY, pl.col("__fexp").is_null(), "unknown currency"),
            (K_GROSS, pl.col("__gross_minor").is_null(), "not representable"),
            (K_FEE, pl.col("__fee_minor").is_null(), "not representable"),
            (
                K_COMPLETED,
                pl.col("booked_at").is_null() | pl.col("booking_date").is_null(),
                "not a date of the form YYYY/MM/DD HH:MM:SS ±hhmm",
            ),
        ]
        masks = frame.select(
            [mask.fill_null(True).alias(f"__bad{i}") for i, (_, mask, _) in enumerate(checks)]
        )
        index = masks.select(pl.any_horizontal(pl.all()).arg_true().first()).item()
        if index is not None:
            bad = masks.row(int(index))
            row = frame.row(int(index), named=True)
            labels = {**REQUIRED, **OPTIONAL, **self.chunks[row["__chunk"]].labels}
            for (key, _, message), failed in zip(checks, bad, strict=True):
                if failed:
                    self.raise_sb(row, key, message, labels)

        code = pl.col(K_CODE)
        group = code.str.slice(0, 3)
        line_kind = (
            pl.when(group == "T00")
            .then(pl.when(pl.col(K_DC) == "CR").then(pl.lit("capture")).otherwise(pl.lit("payout_to_player")))
            .when(group == "T01")
            .then(pl.lit("fee"))
            .when(group == "T02")
            .then(pl.lit("adjustment"))
            .otherwise(code.replace_strict(_SPECIAL_KINDS, default="other", return_dtype=pl.String))
        )
        batches = {s.number: _batch(s, self.name) for s in self.sections}
        accounts = {s.number: s.account for s in self.sections}
        gross = (
            pl.when(pl.col(K_DC) == "CR").then(pl.col("__gross_minor")).otherwise(-pl.col("__gross_minor"))
        )
        fee = pl.when(pl.col(K_FEE_DC) == "CR").then(-pl.col("__fee_minor")).otherwise(pl.col("__fee_minor"))
        txn = pl.when(pl.col(K_TXN) != "").then(pl.col(K_TXN))
        out = frame.with_columns(
            pl.lit(PSP).alias("psp"),
            pl.lit(self.name).alias("source_file"),
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"),
            pl.lit(self.file_sha256).alias("file_sha256"),
            pl.col("__section").replace_strict(batches, return_dtype=pl.String).alias("batch_id"),
            pl.col("__section").replace_strict(accounts, return_dtype=pl.String).alias("account_id"),
            code.alias("record_type"),
            line_kind.alias("line_kind"),
            line_kind.is_in(list(frames.PLAYER_LINE_KINDS)).alias("moves_player_money"),
            txn.alias("movement_reference"),
            pl.coalesce(pl.when(pl.col(K_REF) != "").then(pl.col(K_REF)), txn).alias("payment_reference"),
            pl.when(pl.col(K_INVOICE) != "").then(pl.col(K_INVOICE)).alias("merchant_reference"),
            pl.when((code == "T0400") & (pl.col(K_BANK_REF) != ""))
            .then(pl.col(K_BANK_REF))
            .alias("payout_reference"),
            gross.alias("amount_minor"),
            pl.col("__ccy").alias("currency"),
            fee.alias("fee_minor"),
            pl.when(pl.col("__fee_ccy") == pl.col("__ccy")).then(gross - fee).alias("net_amount_minor"),
            pl.col("__fee_ccy").alias("net_currency"),
        )
        return out

    def raise_sb(self, row: dict[str, Any], key: str, message: str, labels: dict[str, str]) -> None:
        line, label, raw = row["__line"], labels.get(key, key), row[key]
        if message == "not representable":
            currency = row["__ccy"] if key == K_GROSS else row["__fee_ccy"]
            try:
                to_minor(str(Decimal(int(raw)) / 100), currency)
            except MoneyError as exc:
                raise self.error(
                    str(exc),
                    line,
                    label,
                    raw,
                    hint=f"{currency} has {exponent(currency)} decimals; PayPal amounts are hundredths of "
                    "the major unit, so this value cannot be represented; ask PayPal.",
                ) from None
            message = "amount out of range"
        if message == "unknown currency":
            raise self.error(
                message,
                line,
                label,
                raw,
                hint="Use an ISO 4217 code this platform knows (money.py); if the currency is real, add its "
                "exponent to money.py first.",
            )
        raise self.error(message, line, label, raw)

    # -- footers ------------------------------------------------------------------------------------

    def check_footers(self, frame: pl.DataFrame) -> None:
        per_section: dict[tuple[int, str], _Totals] = {}
        report: dict[str, _Totals] = {}
        if frame.height:
            sums = self.sums(frame)
            for key, totals in sums.items():
                per_section[key] = totals
                currency = key[1]
                r = report.setdefault(currency, _Totals())
                r.cr_gross += totals.cr_gross
                r.dr_gross += totals.dr_gross
                r.cr_fee += totals.cr_fee
                r.dr_fee += totals.dr_fee
        for section in self.sections:
            footed: set[str] = set()
            for line, fields in section.footers:
                currency = self.footer_currency("SF", line, fields)
                self.check_footer("SF", line, fields, per_section.get((section.number, currency), _Totals()))
                footed.add(currency)
            used = sorted(c for (number, c) in per_section if number == section.number)
            missing = [c for c in used if c not in footed]
            if missing:
                raise self.error(
                    f"the section has SB rows in {missing[0]} but no SF footer for it",
                    section.sc_line,
                    "SF",
                    missing[0],
                    hint=_RESEND,
                )
        if self.has_rh and self.report_footers:  # the whole report is in this file
            footed = set()
            for line, fields in self.report_footers:
                currency = self.footer_currency("RF", line, fields)
                self.check_footer("RF", line, fields, report.get(currency, _Totals()))
                footed.add(currency)
            missing = sorted(set(report) - footed)
            if missing:
                raise self.error(
                    f"the report has SB rows in {missing[0]} but no RF footer for it",
                    self.report_footers[-1][0],
                    "RF",
                    missing[0],
                    hint=_RESEND,
                )

    @staticmethod
    def sums(frame: pl.DataFrame) -> dict[tuple[int, str], _Totals]:
        units = pl.col("__gross")
        fee_units = pl.col("__fee")
        gross = frame.group_by("__section", "__ccy").agg(
            units.filter(pl.col(K_DC) == "CR").sum().alias("cr"),
            units.filter(pl.col(K_DC) == "DR").sum().alias("dr"),
        )
        fees = frame.group_by("__section", "__fee_ccy").agg(
            fee_units.filter(pl.col(K_FEE_DC) == "CR").sum().alias("cr"),
            fee_units.filter(pl.col(K_FEE_DC) == "DR").sum().alias("dr"),
        )
        out: dict[tuple[int, str], _Totals] = {}
        for section, currency, cr, dr in gross.iter_rows():
            totals = out.setdefault((section, currency), _Totals())
            totals.cr_gross, totals.dr_gross = cr, dr
        for section, currency, cr, dr in fees.iter_rows():
            totals = out.setdefault((section, currency), _Totals())
            totals.cr_fee, totals.dr_fee = cr, dr
        return out

    def footer_currency(self, kind: str, line: int, fields: list[str]) -> str:
        if len(fields) < 10:
            raise self.error(
                f"the {kind} line has {len(fields) - 1} fields, expected at least 9", line, kind, hint=_RESEND
            )
        raw = _field(fields, 1)
        code = raw.upper()
        if not re.fullmatch(r"[A-Z]{3}", code) or not known_currency(code):
            raise self.error("unknown currency", line, f"{kind} field 1 (currency)", raw)
        return code

    def footer_int(self, kind: str, line: int, fields: list[str], index: int, label: str) -> int:
        raw = _field(fields, index)
        if not raw.isascii() or not raw.isdigit():
            raise self.error("not an unsigned integer", line, f"{kind} field {index} ({label})", raw)
        return int(raw)

    def check_count(self, kind: str, line: int, fields: list[str], expected: int) -> None:
        count = self.footer_int(kind, line, fields, 1, "record count")
        if count != expected:
            scope = "section" if kind == "SC" else "report"
            raise self.error(
                f"control total mismatch: {kind} counts {count} SB rows but the {scope} has {expected}",
                line,
                f"{kind} field 1 (record count)",
                _field(fields, 1),
                hint=_RESEND,
            )

    def check_footer(self, kind: str, line: int, fields: list[str], totals: _Totals) -> None:
        currency = _field(fields, 1).upper()
        values = {i: self.footer_int(kind, line, fields, i, label) for i, label in _FOOTER_LABELS.items()}
        for index in (2, 3, 4, 5):
            if values[index] != totals.field(index):
                raise self.error(
                    f"control total mismatch for {currency}: {_FOOTER_LABELS[index]} is {values[index]} "
                    f"but the SB rows sum to {totals.field(index)}",
                    line,
                    f"{kind} field {index} ({_FOOTER_LABELS[index]})",
                    _field(fields, index),
                    hint=_RESEND,
                )
        signs = {}
        for index in (6, 8):
            sign = _field(fields, index)
            if sign not in ("CR", "DR"):
                raise self.error("expected CR or DR", line, f"{kind} field {index} (balance sign)", sign)
            signs[index] = 1 if sign == "CR" else -1
        begin, end = signs[6] * values[7], signs[8] * values[9]
        net = values[2] - values[3] + values[4] - values[5]
        if begin + net != end:
            raise self.error(
                f"control total mismatch for {currency}: beginning balance {begin} + net {net} is not "
                f"the ending balance {end}",
                line,
                f"{kind} field 9 (ending balance)",
                _field(fields, 9),
                hint=_RESEND,
            )


def _scaled(units: pl.Expr, exp: pl.Expr) -> pl.Expr:
    """Hundredths of the major unit → minor units at exponent ``exp``; null when not exact."""
    ten = pl.lit(10, pl.Int64)
    up = units * ten.pow((exp - 2).clip(0))
    down_scaled = units * ten.pow(exp.clip(0, 2))
    down = pl.when(down_scaled % 100 == 0).then(down_scaled // 100)
    return pl.when(exp >= 2).then(up).otherwise(down)


def _field(fields: list[str], index: int) -> str:
    return fields[index].strip() if index < len(fields) else ""


def _batch(section: _Section, name: str) -> str | None:
    if section.account and section.start_date:
        return f"{section.account}:{section.start_date}"
    match = re.search(r"STL-(\d{8})\.(\d+)", name, flags=re.IGNORECASE)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def parse(data: bytes, source_file: str, *, file_sha256: str | None = None) -> pl.DataFrame:
    """``file_sha256``: the checksum of ``data`` when the caller has computed it already."""
    return _Parser(data, source_file, file_sha256).run()
