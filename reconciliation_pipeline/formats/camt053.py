"""ISO 20022 camt.053 bank-to-customer statement → settlement lines (``psp = "bank"``).

Format: ``/work/shared/formats/camt053.md``. Parsed by local element name, so every version
``camt.053.001.NN`` (02, 08, …) is read by the same code: v02 ``<Sts>BOOK</Sts>`` and v08
``<Sts><Cd>BOOK</Cd></Sts>``, ``Dt`` or ``DtTm`` in date choices, ``Dbtr/Nm`` or ``Dbtr/Pty/Nm``.

Every ``Ntry`` becomes one line (``source_row`` = its position among all ``Ntry`` of the document);
entries whose status is not ``BOOK`` are kept, with the status appended to ``record_type``
(``CRDT/PMNT/RCDT/ESCT;PDNG``), and are left out of the balance check ``OPBD + Σ BOOK = CLBD``.

Documents with a DTD or entity declarations are refused before parsing (no defusedxml here).
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import polars as pl

from reconciliation_pipeline import frames
from reconciliation_pipeline.formats.common import BOM, basename, finish, sha256_hex
from reconciliation_pipeline.formats.errors import FormatError
from reconciliation_pipeline.money import MoneyError, known_currency, to_major_str, to_minor

FORMAT = "camt053"
PSP = "bank"

NAMESPACE_RE = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.\d{2}$")
_SNIFF_RE = re.compile(rb"urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.\d{2}")
_AMOUNT_RE = re.compile(r"^\+?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")

#: ISO 20022 usage rule for RvslInd: the CdtDbtInd of a reversal entry already gives the direction of
#: the reversal booking (a CRDT reversal cancels an earlier debit), so the sign is NOT flipped again.
#: The entry keeps a ``;RVSL`` suffix in ``record_type``. Set True only for a bank known to send
#: the original entry's direction on reversals (its balance check would fail otherwise).
REVERSAL_FLIPS_SIGN = False

_OPENING = ("OPBD", "PRCD")
_CLOSING = "CLBD"


def looks_like(data: bytes) -> bool:
    head = data[:65536]
    if head.startswith(BOM):
        head = head[len(BOM) :]
    return head.lstrip().startswith(b"<") and _SNIFF_RE.search(head) is not None


# -- element helpers ---------------------------------------------------------------------------------


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _ns(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def _children(el: ET.Element, name: str) -> Iterator[ET.Element]:
    return (c for c in el if _local(c.tag) == name)


def _child(el: ET.Element | None, *path: str) -> ET.Element | None:
    for name in path:
        if el is None:
            return None
        el = next(_children(el, name), None)
    return el


def _text(el: ET.Element | None, *path: str) -> str | None:
    found = _child(el, *path)
    if found is None or found.text is None:
        return None
    value = found.text.strip()
    return value or None


class _Parser:
    def __init__(self, data: bytes, source_file: str, file_sha256: str | None = None) -> None:
        self.data = data
        self.file_sha256 = file_sha256 or sha256_hex(data)
        self.name = basename(source_file)
        self.rows: dict[str, list[object]] = {k: [] for k in frames.SETTLEMENT_LINE_SCHEMA}
        self.index = 0

    def error(
        self,
        message: str,
        row: int | None,
        field: str | None,
        value: object = None,
        hint: str = "Ask the bank to re-send the statement and ingest it again.",
    ) -> FormatError:
        return FormatError.at(self.name, message, row=row, field=field, value=value, hint=hint)

    def run(self) -> pl.DataFrame:
        data = self.data
        if not data.strip():
            raise self.error(
                "the file is empty; expected a camt.053 XML statement",
                None,
                None,
                hint="Check that the transfer completed and ingest the complete file.",
            )
        upper = data.upper()
        if b"<!DOCTYPE" in upper or b"<!ENTITY" in upper:
            raise self.error(
                "the XML document declares a DTD or entities, which are refused",
                None,
                None,
                hint="camt.053 statements never need a DOCTYPE; ask the bank for a plain ISO 20022 document.",
            )
        try:
            root = ET.fromstring(data)
        except ET.ParseError as exc:
            line, column = exc.position
            raise self.error(
                f"not well-formed XML ({exc})",
                None,
                None,
                f"line {line}, column {column}",
                hint="The file is truncated or corrupt; ingest the complete statement.",
            ) from None
        document = (
            root
            if _local(root.tag) == "Document"
            else next((el for el in root.iter() if _local(el.tag) == "Document"), None)
        )
        if document is None or not NAMESPACE_RE.match(_ns(document.tag)):
            found = _ns(document.tag) if document is not None else _local(root.tag)
            raise self.error(
                "not a camt.053 document: no Document in a camt.053.001.NN namespace",
                None,
                "Document",
                found,
                hint="Check that this is a camt.053 bank statement and --psp bank.",
            )
        statement_root = _child(document, "BkToCstmrStmt")
        statements = list(_children(statement_root, "Stmt")) if statement_root is not None else []
        if not statements:
            raise self.error(
                "the document has no BkToCstmrStmt/Stmt",
                None,
                "BkToCstmrStmt/Stmt",
                hint="The file is truncated or not a statement; ingest the complete statement.",
            )
        for stmt in statements:
            self.statement(stmt)
        return self.frame()

    def statement(self, stmt: ET.Element) -> None:
        stmt_id = _text(stmt, "Id")
        if stmt_id is None:
            raise self.error("the statement has no Id", None, "Stmt/Id")
        account = _text(stmt, "Acct", "Id", "IBAN") or _text(stmt, "Acct", "Id", "Othr", "Id")
        balances: dict[str, tuple[int, str, str]] = {}
        for bal in _children(stmt, "Bal"):
            code = _text(bal, "Tp", "CdOrPrtry", "Cd") or _text(bal, "Tp", "CdOrPrtry", "Prtry")
            if code in (*_OPENING, _CLOSING) and code not in balances:
                field = f"Stmt/Bal/{code}"
                amount, currency, raw = self.amount(_child(bal, "Amt"), None, f"{field}/Amt")
                sign = self.sign(_text(bal, "CdtDbtInd"), None, f"{field}/CdtDbtInd")
                balances[code] = (sign * amount, currency, raw)
        booked: dict[str, int] = {}
        for entry in _children(stmt, "Ntry"):
            self.index += 1
            signed, currency, status = self.entry(entry, stmt_id, account)
            if status == "BOOK":
                booked[currency] = booked.get(currency, 0) + signed
        opening = next((balances[c] for c in _OPENING if c in balances), None)
        closing = balances.get(_CLOSING)
        if opening is not None and closing is not None:
            currency = closing[1]
            expected = opening[0] + booked.get(currency, 0)
            if opening[1] != currency or expected != closing[0]:
                raise self.error(
                    f"control total mismatch in statement {stmt_id}: opening balance "
                    f"{to_major_str(opening[0], opening[1])} {opening[1]} + booked entries "
                    f"{to_major_str(booked.get(currency, 0), currency)} = "
                    f"{to_major_str(expected, currency)}, "
                    f"but the closing balance is {to_major_str(closing[0], currency)} {currency}",
                    None,
                    "Bal/CLBD",
                    closing[2],
                    hint="The statement is incomplete or altered; ask the bank to re-send it.",
                )

    def entry(self, entry: ET.Element, stmt_id: str, account: str | None) -> tuple[int, str, str]:
        row = self.index
        amount, currency, _ = self.amount(_child(entry, "Amt"), row, "Ntry/Amt")
        indicator = _text(entry, "CdtDbtInd")
        sign = self.sign(indicator, row, "Ntry/CdtDbtInd")
        reversal = (_text(entry, "RvslInd") or "").lower() in ("true", "1")
        if reversal and REVERSAL_FLIPS_SIGN:
            sign = -sign
        signed = sign * amount

        sts = _child(entry, "Sts")
        status = _text(sts, "Cd") or _text(sts, "Prtry") or _text(entry, "Sts")
        if status is None:
            raise self.error("the entry has no status", row, "Ntry/Sts")

        booking = _child(entry, "BookgDt")
        field = "Ntry/BookgDt"
        if booking is None:  # not booked yet (PDNG/INFO): fall back to the value date
            booking, field = _child(entry, "ValDt"), "Ntry/ValDt"
        booked_at, booking_date = self.date(booking, row, field)

        domain = _child(entry, "BkTxCd", "Domn")
        codes = [_text(domain, "Cd"), _text(domain, "Fmly", "Cd"), _text(domain, "Fmly", "SubFmlyCd")]
        if domain is None:
            codes = [_text(entry, "BkTxCd", "Prtry", "Cd")]
        record_type = "/".join([str(indicator), *[c for c in codes if c]])
        if status != "BOOK":
            record_type += f";{status}"
        if reversal:
            record_type += ";RVSL"

        texts: list[str] = []
        for details in _children(entry, "NtryDtls"):
            for tx in _children(details, "TxDtls"):
                e2e = _text(tx, "Refs", "EndToEndId")
                if e2e and e2e.upper() != "NOTPROVIDED":
                    texts.append(e2e)
                for rmt in _children(tx, "RmtInf"):
                    texts.extend(t.text.strip() for t in _children(rmt, "Ustrd") if t.text and t.text.strip())
        extra = _text(entry, "AddtlNtryInf")
        if extra:
            texts.append(extra)

        kind = "bank_credit" if signed > 0 or (signed == 0 and sign > 0) else "bank_debit"
        values = {
            "psp": PSP,
            "source_file": self.name,
            "source_row": row,
            "file_sha256": "",
            "batch_id": stmt_id,
            "account_id": account,
            "record_type": record_type,
            "line_kind": kind,
            "moves_player_money": False,
            "movement_reference": _text(entry, "AcctSvcrRef"),
            "payment_reference": None,
            "merchant_reference": None,
            "payout_reference": None,
            "remittance_info": " | ".join(texts) or None,
            "booked_at": booked_at,
            "booking_date": booking_date,
            "amount_minor": signed,
            "currency": currency,
            "fee_minor": 0,
            "net_amount_minor": signed,
            "net_currency": currency,
            "exchange_rate": None,
        }
        for key, value in values.items():
            self.rows[key].append(value)
        return signed, currency, status

    # -- value helpers ------------------------------------------------------------------------------

    def amount(self, el: ET.Element | None, row: int | None, field: str) -> tuple[int, str, str]:
        if el is None or el.text is None or not el.text.strip():
            raise self.error("the amount is missing", row, field)
        raw = el.text.strip()
        currency = (el.get("Ccy") or "").strip().upper()
        if not currency:
            raise self.error("the amount has no Ccy attribute", row, f"{field}/@Ccy", raw)
        if not re.fullmatch(r"[A-Z]{3}", currency) or not known_currency(currency):
            raise self.error(
                "unknown currency",
                row,
                f"{field}/@Ccy",
                el.get("Ccy"),
                hint="Use an ISO 4217 code this platform knows (money.py); if the currency is "
                "real, add its exponent to money.py first.",
            )
        if not _AMOUNT_RE.match(raw):
            raise self.error("not an unsigned decimal amount (the direction is CdtDbtInd)", row, field, raw)
        try:
            return to_minor(raw, currency), currency, raw
        except MoneyError as exc:
            raise self.error(
                str(exc),
                row,
                field,
                raw,
                hint="The bank sent more decimals than the currency has; ask the bank.",
            ) from None

    def sign(self, indicator: str | None, row: int | None, field: str) -> int:
        if indicator == "CRDT":
            return 1
        if indicator == "DBIT":
            return -1
        raise self.error("expected CRDT or DBIT", row, field, indicator)

    def date(self, el: ET.Element | None, row: int, field: str) -> tuple[dt.datetime | None, dt.date]:
        day, stamp = _text(el, "Dt"), _text(el, "DtTm")
        try:
            if day is not None:
                # Some banks put a date-time into Dt: keep the date as written.
                return None, dt.date.fromisoformat(day[:10])
            if stamp is not None:
                moment = dt.datetime.fromisoformat(stamp)
                booked_at = moment.astimezone(dt.UTC) if moment.tzinfo is not None else None
                return booked_at, dt.date.fromisoformat(stamp[:10])
        except ValueError:
            raise self.error(
                "not an ISO 8601 date or date-time", row, f"{field}/{'Dt' if day else 'DtTm'}", day or stamp
            ) from None
        raise self.error("the entry has no booking or value date", row, f"{field}/Dt")

    def frame(self) -> pl.DataFrame:
        schema = frames.SETTLEMENT_LINE_SCHEMA
        self.rows["file_sha256"] = [self.file_sha256] * self.index
        frame = pl.DataFrame(
            {k: pl.Series(k, v, dtype=schema[k]) for k, v in self.rows.items() if len(v) == self.index}
        )
        return finish(frame, self.name)


def parse(data: bytes, source_file: str, *, file_sha256: str | None = None) -> pl.DataFrame:
    """``file_sha256``: the checksum of ``data`` when the caller has computed it already."""
    return _Parser(data, source_file, file_sha256).run()
