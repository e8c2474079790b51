"""One writer per file format of the demo data set.

Each writer takes rows that the generator already decided on (integer minor units, UTC instants, ids)
and lays them out in the PSP's own published format (``/work/shared/formats/*.md``). Large files are
built column-wise with Polars; the camt.053 statements (a few entries a day) use string templates.
Every writer is deterministic: the same input gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import polars as pl

from reconciliation_pipeline.money import exponent, to_major_str

# --------------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------------


def major_expr(amount: pl.Expr, currency: pl.Expr) -> pl.Expr:
    """Integer minor units to decimal major-unit text, per row's currency (vectorised ``to_major_str``).

    Null amounts stay null (an empty CSV field). Currencies are upper- or lower-case ISO codes.
    """
    cur = currency.str.to_uppercase()
    absolute = amount.abs()
    sign = pl.when(amount < 0).then(pl.lit("-")).otherwise(pl.lit(""))

    def text(exp: int) -> pl.Expr:
        if exp == 0:
            return sign + absolute.cast(pl.String)
        unit = 10**exp
        whole = (absolute // unit).cast(pl.String)
        return sign + whole + pl.lit(".") + (absolute % unit).cast(pl.String).str.zfill(exp)

    def codes(exp: int) -> list[str]:
        return [c for c in _KNOWN_CODES if exponent(c) == exp]

    return (
        pl.when(amount.is_null())
        .then(pl.lit(None, dtype=pl.String))
        .when(cur.is_in(codes(2)))
        .then(text(2))
        .when(cur.is_in(codes(0)))
        .then(text(0))
        .when(cur.is_in(codes(3)))
        .then(text(3))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


_KNOWN_CODES = ("EUR", "GBP", "SEK", "USD", "JPY", "KWD")


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------------------------
# Transaction events (JSON lines)
# --------------------------------------------------------------------------------------------------------

EVENT_FIELDS = (
    "event_id",
    "transaction_id",
    "psp",
    "psp_reference",
    "original_transaction_id",
    "kind",
    "amount_minor",
    "currency",
    "occurred_at",
    "player_id",
    "brand",
    "jurisdiction",
    "trace_id",
)


def write_events(path: Path, events: pl.DataFrame, extra_lines: Sequence[tuple[int, str]] = ()) -> Path:
    """Write ``events`` (columns :data:`EVENT_FIELDS`, ``occurred_at`` already RFC 3339 text) as JSON lines.

    ``extra_lines`` are raw lines (e.g. schema-breaking events) inserted before the event at the given
    0-based position of ``events``.
    """
    frame = events.select(EVENT_FIELDS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        start = 0
        for wanted, line in sorted(extra_lines):
            position = max(0, min(wanted, frame.height))
            if position > start:
                handle.write(frame.slice(start, position - start).write_ndjson().encode("utf-8"))
            handle.write(line.rstrip("\n").encode("utf-8") + b"\n")
            start = position
        if start < frame.height:
            handle.write(frame.slice(start).write_ndjson().encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------------------------
# Adyen settlement details report
# --------------------------------------------------------------------------------------------------------

ADYEN_COLUMNS = (
    "Company Account",
    "Merchant Account",
    "Psp Reference",
    "Merchant Reference",
    "Payment Method",
    "Creation Date",
    "TimeZone",
    "Type",
    "Modification Reference",
    "Gross Currency",
    "Gross Debit (GC)",
    "Gross Credit (GC)",
    "Exchange Rate",
    "Net Currency",
    "Net Debit (NC)",
    "Net Credit (NC)",
    "Commission (NC)",
    "Markup (NC)",
    "Scheme Fees (NC)",
    "Interchange (NC)",
    "Payment Method Variant",
    "Modification Merchant Reference",
    "Batch Number",
    "Reserved4",
    "Reserved5",
    "Reserved6",
    "Reserved7",
    "Reserved8",
    "Reserved9",
    "Reserved10",
)
ADYEN_AMOUNT_COLUMNS = {
    "gross_debit": "Gross Debit (GC)",
    "gross_credit": "Gross Credit (GC)",
    "net_debit": "Net Debit (NC)",
    "net_credit": "Net Credit (NC)",
    "commission": "Commission (NC)",
    "markup": "Markup (NC)",
    "scheme_fees": "Scheme Fees (NC)",
    "interchange": "Interchange (NC)",
}


def write_adyen_sdr(path: Path, rows: pl.DataFrame) -> Path:
    """Write one Adyen settlement details report (classic 30-column layout).

    ``rows`` columns: company, merchant_account, psp_reference, merchant_reference, payment_method,
    creation_date (local text), timezone, type, modification_reference, currency, exchange_rate,
    payment_method_variant, modification_merchant_reference, batch_number, and the integer minor-unit
    (nullable) amounts gross_debit, gross_credit, net_debit, net_credit, commission, markup, scheme_fees,
    interchange. The optional column gross_currency (nullable) gives the currency of the gross amounts when it
    differs from the net (settlement) currency; the net amounts and fees are always in ``currency``.
    """
    ccy = pl.col("currency")
    gross_ccy = pl.coalesce(pl.col("gross_currency"), ccy) if "gross_currency" in rows.columns else ccy
    out = rows.select(
        pl.col("company").alias("Company Account"),
        pl.col("merchant_account").alias("Merchant Account"),
        pl.col("psp_reference").alias("Psp Reference"),
        pl.col("merchant_reference").alias("Merchant Reference"),
        pl.col("payment_method").alias("Payment Method"),
        pl.col("creation_date").alias("Creation Date"),
        pl.col("timezone").alias("TimeZone"),
        pl.col("type").alias("Type"),
        pl.col("modification_reference").alias("Modification Reference"),
        gross_ccy.alias("Gross Currency"),
        major_expr(pl.col("gross_debit"), gross_ccy).alias("Gross Debit (GC)"),
        major_expr(pl.col("gross_credit"), gross_ccy).alias("Gross Credit (GC)"),
        pl.col("exchange_rate").alias("Exchange Rate"),
        ccy.alias("Net Currency"),
        *[
            major_expr(pl.col(src), ccy).alias(dst)
            for src, dst in ADYEN_AMOUNT_COLUMNS.items()
            if src not in ("gross_debit", "gross_credit")
        ],
        pl.col("payment_method_variant").alias("Payment Method Variant"),
        pl.col("modification_merchant_reference").alias("Modification Merchant Reference"),
        pl.col("batch_number").cast(pl.String).alias("Batch Number"),
        *[pl.lit(None, dtype=pl.String).alias(f"Reserved{i}") for i in range(4, 11)],
    ).select(ADYEN_COLUMNS)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_csv(path, null_value="", line_terminator="\n")
    return path


# --------------------------------------------------------------------------------------------------------
# Stripe itemized payout reconciliation report
# --------------------------------------------------------------------------------------------------------

STRIPE_COLUMNS = (
    "automatic_payout_id",
    "automatic_payout_effective_at_utc",
    "balance_transaction_id",
    "created_utc",
    "available_on_utc",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "source_id",
    "description",
    "customer_facing_amount",
    "customer_facing_currency",
    "charge_id",
    "payment_intent_id",
    "payment_method_type",
    "card_brand",
    "payment_metadata[order_id]",
)
_TS = "%Y-%m-%d %H:%M:%S"


def write_stripe_itemized(path: Path, rows: pl.DataFrame) -> Path:
    """Write one ``payout_reconciliation.itemized.5`` CSV with the pinned column list.

    ``rows`` columns: automatic_payout_id, payout_effective_at, created, available_on (UTC datetimes),
    balance_transaction_id, currency (upper-case; written lower-case), gross, fee (integer minor units,
    signed gross, fee positive = charged; net = gross - fee), reporting_category, source_id, description,
    customer_facing_amount (nullable, signed like gross, minor units of its currency), charge_id,
    payment_intent_id, payment_method_type, card_brand, order_id; optional customer_facing_currency
    (upper-case, nullable: ``currency``) when the customer paid in another currency than the one settled.
    """
    ccy = pl.col("currency")
    facing_ccy = (
        pl.coalesce(pl.col("customer_facing_currency"), ccy)
        if "customer_facing_currency" in rows.columns
        else ccy
    )
    out = rows.select(
        pl.col("automatic_payout_id"),
        pl.col("payout_effective_at").dt.strftime(_TS).alias("automatic_payout_effective_at_utc"),
        pl.col("balance_transaction_id"),
        pl.col("created").dt.strftime(_TS).alias("created_utc"),
        pl.col("available_on").dt.strftime(_TS).alias("available_on_utc"),
        ccy.str.to_lowercase().alias("currency"),
        major_expr(pl.col("gross"), ccy).alias("gross"),
        major_expr(pl.col("fee"), ccy).alias("fee"),
        major_expr(pl.col("gross") - pl.col("fee"), ccy).alias("net"),
        pl.col("reporting_category"),
        pl.col("source_id"),
        pl.col("description"),
        major_expr(pl.col("customer_facing_amount"), facing_ccy).alias("customer_facing_amount"),
        pl.when(pl.col("customer_facing_amount").is_null())
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(facing_ccy.str.to_lowercase())
        .alias("customer_facing_currency"),
        pl.col("charge_id"),
        pl.col("payment_intent_id"),
        pl.col("payment_method_type"),
        pl.col("card_brand"),
        pl.col("order_id").alias("payment_metadata[order_id]"),
    ).select(STRIPE_COLUMNS)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_csv(path, null_value="", line_terminator="\n")
    return path


# --------------------------------------------------------------------------------------------------------
# PayPal settlement report (STL)
# --------------------------------------------------------------------------------------------------------

PAYPAL_CH = (
    "Transaction ID",
    "Invoice ID",
    "PayPal Reference ID",
    "PayPal Reference ID Type",
    "Transaction Event Code",
    "Transaction Initiation Date",
    "Transaction Completion Date",
    "Transaction Debit or Credit",
    "Gross Transaction Amount",
    "Gross Transaction Currency",
    "Fee Debit or Credit",
    "Fee Amount",
    "Fee Currency",
    "Custom Field",
    "Consumer ID",
    "Payment Tracking ID",
    "Store ID",
    "Bank Reference ID",
    "Credit Transactional Fee",
    "Credit Promotional Fee",
    "Credit Term",
)
PAYPAL_TS = "%Y/%m/%d %H:%M:%S %z"


def paypal_units(amount_minor: pl.Expr, currency: pl.Expr) -> pl.Expr:
    """Minor units to STL units: major x 100 regardless of the currency's exponent (JPY 500 -> 50000)."""
    factor = pl.when(currency == "JPY").then(100).when(currency == "KWD").then(None).otherwise(1)
    return amount_minor * factor


def _q(expr: pl.Expr) -> pl.Expr:
    """A double-quoted varchar field (empty string when null)."""
    return pl.lit('"') + expr.fill_null("").str.replace_all('"', '""', literal=True) + pl.lit('"')


@dataclass(frozen=True)
class StlHeader:
    account_id: str
    generated_at: str  # "YYYY/MM/DD HH:MM:SS +hhmm"
    period_start: str
    period_end: str
    beginning_balance: dict[str, int] = field(default_factory=dict)  # currency -> STL units (signed)


def write_paypal_stl(path: Path, header: StlHeader, rows: pl.DataFrame, currencies: Sequence[str]) -> Path:
    """Write one PayPal STL file (one section, one account) from SB ``rows``.

    ``rows`` columns (in SB order): transaction_id, invoice_id, reference_id, reference_id_type, event_code,
    initiated_at, completed_at (local text with offset), debit_credit ("CR"/"DR"), gross (STL units,
    unsigned), currency, fee_debit_credit (nullable), fee (STL units, nullable), custom_field, consumer_id,
    bank_reference_id. Section and report footers (SF/RF per currency, SC/RC counts, FF line count) are
    computed here from the rows and the header's beginning balances.
    """
    sb = rows.select(
        (
            pl.lit('"SB",')
            + pl.concat_str(
                [
                    _q(pl.col("transaction_id")),
                    _q(pl.col("invoice_id")),
                    _q(pl.col("reference_id")),
                    _q(pl.col("reference_id_type")),
                    _q(pl.col("event_code")),
                    pl.col("initiated_at"),
                    pl.col("completed_at"),
                    _q(pl.col("debit_credit")),
                    pl.col("gross").cast(pl.String),
                    _q(pl.col("currency")),
                    _q(pl.col("fee_debit_credit")),
                    pl.col("fee").cast(pl.String).fill_null(""),
                    _q(pl.when(pl.col("fee").is_null()).then(pl.lit("")).otherwise(pl.col("currency"))),
                    _q(pl.col("custom_field")),
                    _q(pl.col("consumer_id")),
                    _q(pl.lit("")),
                    _q(pl.lit("")),
                    _q(pl.col("bank_reference_id")),
                    pl.lit(""),
                    pl.lit(""),
                    pl.lit(""),
                ],
                separator=",",
            )
        ).alias("line")
    )["line"]
    totals = (
        rows.group_by("currency")
        .agg(
            pl.col("gross").filter(pl.col("debit_credit") == "CR").sum().alias("gross_cr"),
            pl.col("gross").filter(pl.col("debit_credit") == "DR").sum().alias("gross_dr"),
            pl.col("fee").filter(pl.col("fee_debit_credit") == "CR").sum().alias("fee_cr"),
            pl.col("fee").filter(pl.col("fee_debit_credit") == "DR").sum().alias("fee_dr"),
            pl.len().alias("count"),
        )
        .rows_by_key("currency", named=True, unique=True)
    )
    footers: list[str] = []
    for ccy in currencies:
        if ccy not in totals:
            continue
        t = totals[ccy]
        begin = header.beginning_balance.get(ccy, 0)
        end = begin + t["gross_cr"] - t["gross_dr"] + t["fee_cr"] - t["fee_dr"]

        def bal(value: int) -> str:
            return f'"{"CR" if value >= 0 else "DR"}",{abs(value)}'

        footers.append(
            f'"{ccy}",{t["gross_cr"]},{t["gross_dr"]},{t["fee_cr"]},{t["fee_dr"]},{bal(begin)},{bal(end)},'
            f"{bal(begin)},{bal(end)},{bal(0)},{bal(0)},{t['count']}"
        )
    n_sb = rows.height
    lines = [
        f'"RH",{header.generated_at},"A","{header.account_id}",009,',
        '"FH",01',
        f'"SH",{header.period_start},{header.period_end},"{header.account_id}",""',
        '"CH",' + ",".join(f'"{name}"' for name in PAYPAL_CH),
    ]
    body = "\n".join(sb.to_list())
    tail = [f'"SF",{f}' for f in footers] + [f'"SC",{n_sb}'] + [f'"RF",{f}' for f in footers]
    tail += [f'"RC",{n_sb}']
    total_lines = len(lines) + n_sb + len(tail) + 1
    tail.append(f'"FF",{total_lines}')
    text = "\n".join(lines) + "\n" + (body + "\n" if n_sb else "") + "\n".join(tail) + "\n"
    return _write_text(path, text)


# --------------------------------------------------------------------------------------------------------
# camt.053 bank statement
# --------------------------------------------------------------------------------------------------------

NS_V02 = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"
NS_V08 = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"


@dataclass(frozen=True)
class CamtEntry:
    amount_minor: int  # unsigned
    credit: bool
    booking_date: dt.date
    account_servicer_ref: str
    domain: tuple[str, str, str]  # BkTxCd Domn/Cd, Fmly/Cd, SubFmlyCd
    end_to_end_id: str | None = None
    debtor_name: str | None = None
    remittance: str | None = None
    additional_info: str | None = None


@dataclass(frozen=True)
class CamtStatement:
    version: str  # "02" or "08"
    message_id: str
    statement_id: str
    created_at: str  # ISO datetime with offset
    sequence_number: int
    iban: str
    currency: str
    date: dt.date
    opening_minor: int  # signed
    entries: tuple[CamtEntry, ...]

    @property
    def closing_minor(self) -> int:
        return self.opening_minor + sum(e.amount_minor if e.credit else -e.amount_minor for e in self.entries)


def _bal(code: str, amount: int, ccy: str, day: dt.date) -> str:
    ind = "CRDT" if amount >= 0 else "DBIT"
    return (
        f"      <Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>"
        f'<Amt Ccy="{ccy}">{to_major_str(abs(amount), ccy)}</Amt><CdtDbtInd>{ind}</CdtDbtInd>'
        f"<Dt><Dt>{day.isoformat()}</Dt></Dt></Bal>\n"
    )


def _entry(e: CamtEntry, ccy: str, v02: bool) -> str:
    ind = "CRDT" if e.credit else "DBIT"
    amt = f'<Amt Ccy="{ccy}">{to_major_str(e.amount_minor, ccy)}</Amt>'
    sts = "<Sts>BOOK</Sts>" if v02 else "<Sts><Cd>BOOK</Cd></Sts>"
    day = e.booking_date.isoformat()
    parts = [
        "      <Ntry>\n",
        f"        {amt}<CdtDbtInd>{ind}</CdtDbtInd>{sts}\n",
        f"        <BookgDt><Dt>{day}</Dt></BookgDt><ValDt><Dt>{day}</Dt></ValDt>\n",
        f"        <AcctSvcrRef>{escape(e.account_servicer_ref)}</AcctSvcrRef>\n",
        f"        <BkTxCd><Domn><Cd>{e.domain[0]}</Cd><Fmly><Cd>{e.domain[1]}</Cd>"
        f"<SubFmlyCd>{e.domain[2]}</SubFmlyCd></Fmly></Domn></BkTxCd>\n",
    ]
    if e.additional_info and not (e.end_to_end_id or e.remittance):
        parts.append(f"        <AddtlNtryInf>{escape(e.additional_info)}</AddtlNtryInf>\n")
    if e.end_to_end_id or e.remittance or e.debtor_name:
        parts.append("        <NtryDtls><TxDtls>\n")
        parts.append(
            f"          <Refs><EndToEndId>{escape(e.end_to_end_id or 'NOTPROVIDED')}</EndToEndId></Refs>\n"
        )
        if not v02:
            parts.append(f"          {amt}<CdtDbtInd>{ind}</CdtDbtInd>\n")
        if e.debtor_name:
            name = escape(e.debtor_name)
            dbtr = f"<Dbtr><Nm>{name}</Nm></Dbtr>" if v02 else f"<Dbtr><Pty><Nm>{name}</Nm></Pty></Dbtr>"
            parts.append(f"          <RltdPties>{dbtr}</RltdPties>\n")
        if e.remittance:
            parts.append(f"          <RmtInf><Ustrd>{escape(e.remittance)}</Ustrd></RmtInf>\n")
        parts.append("        </TxDtls></NtryDtls>\n")
        if e.additional_info:
            parts.append(f"        <AddtlNtryInf>{escape(e.additional_info)}</AddtlNtryInf>\n")
    parts.append("      </Ntry>\n")
    return "".join(parts)


def write_camt053(path: Path, stmt: CamtStatement) -> Path:
    """Write one camt.053 document with one statement (version 001.02 or 001.08)."""
    v02 = stmt.version == "02"
    ns = NS_V02 if v02 else NS_V08
    day = stmt.date.isoformat()
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Document xmlns="{ns}">\n'
        "  <BkToCstmrStmt>\n"
        f"    <GrpHdr><MsgId>{stmt.message_id}</MsgId><CreDtTm>{stmt.created_at}</CreDtTm></GrpHdr>\n"
        "    <Stmt>\n"
        f"      <Id>{stmt.statement_id}</Id>\n"
        f"      <ElctrncSeqNb>{stmt.sequence_number}</ElctrncSeqNb>\n"
        f"      <CreDtTm>{stmt.created_at}</CreDtTm>\n"
        f"      <FrToDt><FrDtTm>{day}T00:00:00</FrDtTm><ToDtTm>{day}T23:59:59</ToDtTm></FrToDt>\n"
        f"      <Acct><Id><IBAN>{stmt.iban}</IBAN></Id><Ccy>{stmt.currency}</Ccy></Acct>\n"
        + _bal("OPBD", stmt.opening_minor, stmt.currency, stmt.date)
        + _bal("CLBD", stmt.closing_minor, stmt.currency, stmt.date)
        + "".join(_entry(e, stmt.currency, v02) for e in stmt.entries)
        + "    </Stmt>\n  </BkToCstmrStmt>\n</Document>\n"
    )
    return _write_text(path, text)


# --------------------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------------------

TRUTH_COLUMNS = (
    "record",
    "transaction_id",
    "psp",
    "source_file",
    "source_row",
    "status",
    "match_id",
    "rule_id",
    "exception_category",
    "business_date",
    "scenario",
)


def write_ground_truth(path: Path, truth: pl.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    truth.select(TRUTH_COLUMNS).write_csv(path, null_value="", line_terminator="\n", date_format="%Y-%m-%d")
    return path
