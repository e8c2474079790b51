"""Reads of the outcome store for the partner API, always filtered to what the principal may see.

Ownership (documented in ``docs/partner-api.md``): a partner sees the ledger transactions whose
``psp`` is its PSP (when it has one) and whose ``brand`` is its brand (when it has one); settlement
batches and files of its PSP. Anything else is reported exactly like something that does not exist
(``None`` here, ``404`` at the API), so a partner cannot even learn whether another's id exists.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
from typing import Any

from sqlalchemy import ColumnElement, Select, String, and_, bindparam, func, literal, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from reconciliation_pipeline.store.models import (
    Dispute,
    ExceptionItem,
    IngestedFile,
    Outcome,
    SettlementLine,
    Transaction,
)

from .auth import Principal
from .problems import ProblemError

TXN = Transaction.__table__
OUT = Outcome.__table__
LINES = SettlementLine.__table__
EXC = ExceptionItem.__table__
_T = TXN.c
_O = OUT.c
_S = LINES.c
_E = EXC.c

TXN_COLUMNS = (
    "transaction_id",
    "psp",
    "psp_reference",
    "original_transaction_id",
    "kind",
    "amount_minor",
    "currency",
    "occurred_at",
    "brand",
    "jurisdiction",
    "business_date",
    "trace_id",
)


def _ledger_key() -> ColumnElement[str]:
    """``'ledger:' || transactions.transaction_id``: the outcome key of a ledger record (its PK)."""
    return literal("ledger:", String()) + _T.transaction_id


def owned(principal: Principal) -> ColumnElement[bool]:
    """The ownership condition on ``transactions`` for ``principal``."""
    conditions: list[ColumnElement[bool]] = []
    if principal.psp is not None:
        conditions.append(_T.psp == principal.psp)
    if principal.brand is not None:
        conditions.append(_T.brand == principal.brand)
    if not conditions:  # a partner without psp and brand sees nothing (never created by the CLI)
        return _T.transaction_id.is_(None)
    return and_(true(), *conditions)


# --------------------------------------------------------------------------- cursors


def encode_cursor(last: Any) -> str:
    raw = json.dumps({"after": last}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Any:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError):
        raise ProblemError(
            400, "the cursor is not one this API returned; start again without it", slug="invalid-cursor"
        ) from None
    return value


# --------------------------------------------------------------------------- transactions


@functools.lru_cache(maxsize=8)
def _status_statement(*, by_reference: bool, psp: bool, brand: bool) -> Select[Any]:
    """The status query, built once per shape (with bound parameters ``key``, ``psp``, ``brand``)."""
    lo = OUT.alias("lo")
    so = OUT.alias("so")
    where: list[ColumnElement[bool]] = [
        (_T.psp_reference if by_reference else _T.transaction_id) == bindparam("key", type_=String())
    ]
    if psp:
        where.append(_T.psp == bindparam("psp", type_=String()))
    if brand:
        where.append(_T.brand == bindparam("brand", type_=String()))
    if not (psp or brand):
        where.append(_T.transaction_id.is_(None))
    return (
        select(
            *(_T[c] for c in TXN_COLUMNS),
            lo.c.status,
            lo.c.match_id,
            lo.c.rule_id,
            lo.c.exception_category,
            lo.c.as_of_date,
            _E.id.label("exception_id"),
            _E.category.label("exception_open_category"),
            _E.opened_as_of,
            so.c.psp.label("s_psp"),
            so.c.source_file.label("s_source_file"),
            so.c.source_row.label("s_source_row"),
            so.c.status.label("s_status"),
            _S.amount_minor.label("s_amount_minor"),
            _S.currency.label("s_currency"),
            _S.booking_date.label("s_booking_date"),
            _S.record_type.label("s_record_type"),
            _S.batch_id.label("s_batch_id"),
        )
        .select_from(TXN)
        .outerjoin(lo, lo.c.record_key == _ledger_key())
        .outerjoin(EXC, and_(_E.record_key == lo.c.record_key, _E.state == "open"))
        .outerjoin(so, and_(so.c.match_id == lo.c.match_id, so.c.record == "settlement"))
        .outerjoin(LINES, _S.record_key == so.c.record_key)
        .where(*where)
        .order_by(_T.transaction_id, so.c.psp, so.c.source_file, so.c.source_row)
        .limit(1000)
    )


def transaction_status(
    session: Session | Connection,
    principal: Principal,
    *,
    transaction_id: str | None = None,
    psp_reference: str | None = None,
) -> dict[str, Any] | None:
    """One visible transaction with its outcome, open exception and matched settlement records.

    One query: the transaction, its ledger outcome, the settlement outcomes of the same match group
    and their lines, and the open exception (at most one by the store's unique index).
    """
    params: dict[str, Any] = {"key": transaction_id if transaction_id is not None else psp_reference}
    if principal.psp is not None:
        params["psp"] = principal.psp
    if principal.brand is not None:
        params["brand"] = principal.brand
    stmt = _status_statement(
        by_reference=transaction_id is None, psp=principal.psp is not None, brand=principal.brand is not None
    )
    rows = session.execute(stmt, params).mappings().all()
    if not rows:
        return None
    ids = {r["transaction_id"] for r in rows}
    if len(ids) > 1:
        raise ProblemError(
            409,
            f"{len(ids)} of your transactions carry PSP reference {psp_reference!r}: "
            f"{', '.join(sorted(ids)[:10])}; ask by transaction id",
            slug="ambiguous-psp-reference",
            transaction_ids=sorted(ids)[:10],
        )
    first = rows[0]
    out: dict[str, Any] = {c: first[c] for c in TXN_COLUMNS}
    out.update(
        status=first["status"],
        match_id=first["match_id"],
        rule_id=first["rule_id"],
        exception_category=first["exception_category"],
        as_of_date=first["as_of_date"],
        open_exception=(
            None
            if first["exception_id"] is None
            else {
                "exception_id": first["exception_id"],
                "category": first["exception_open_category"],
                "opened_as_of": first["opened_as_of"],
            }
        ),
        settlements=[
            {
                "psp": r["s_psp"],
                "source_file": r["s_source_file"],
                "source_row": r["s_source_row"],
                "status": r["s_status"],
                "amount_minor": r["s_amount_minor"],
                "currency": r["s_currency"],
                "booking_date": r["s_booking_date"],
                "record_type": r["s_record_type"],
                "batch_id": r["s_batch_id"],
            }
            for r in rows
            if r["s_source_file"] is not None
        ],
    )
    return out


def list_transactions(
    session: Session,
    principal: Principal,
    *,
    status: str | None,
    kind: str | None,
    currency: str | None,
    psp_reference: str | None,
    business_date_from: dt.date | None,
    business_date_to: dt.date | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Visible transactions in ``transaction_id`` order after the cursor; ``(rows, next cursor)``."""
    after = decode_cursor(cursor)
    if after is not None and not isinstance(after, str):
        raise ProblemError(400, "the cursor is not one this API returned", slug="invalid-cursor")
    where: list[ColumnElement[bool]] = [owned(principal)]
    if after is not None:
        where.append(_T.transaction_id > after)
    if kind is not None:
        where.append(_T.kind == kind)
    if currency is not None:
        where.append(_T.currency == currency)
    if psp_reference is not None:
        where.append(_T.psp_reference == psp_reference)
    if business_date_from is not None:
        where.append(_T.business_date >= business_date_from)
    if business_date_to is not None:
        where.append(_T.business_date <= business_date_to)
    if status is not None:
        where.append(_O.status == status)
    stmt = (
        select(
            _T.transaction_id,
            _T.psp,
            _T.psp_reference,
            _T.kind,
            _T.amount_minor,
            _T.currency,
            _T.business_date,
            _O.status,
            _O.exception_category,
        )
        .select_from(TXN)
        .outerjoin(OUT, _O.record_key == _ledger_key())
        .where(*where)
        .order_by(_T.transaction_id)
        .limit(limit + 1)
    )
    rows = [dict(r) for r in session.execute(stmt).mappings()]
    next_cursor = encode_cursor(rows[limit - 1]["transaction_id"]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def transaction_visible(session: Session, principal: Principal, transaction_id: str) -> Transaction | None:
    return session.scalars(
        select(Transaction).where(Transaction.transaction_id == transaction_id, owned(principal))
    ).first()


# --------------------------------------------------------------------------- settlement batches and files


def settlement_batch(session: Session, principal: Principal, batch_id: str) -> dict[str, Any] | None:
    """Lines of a PSP batch by reconciliation status and currency, and the files that carried it."""
    if principal.psp is None:
        return None
    base = and_(_S.batch_id == batch_id, _S.psp == principal.psp)
    by_status = session.execute(
        select(
            func.coalesce(_O.status, "unreconciled"),
            _S.currency,
            func.count(),
            func.sum(_S.amount_minor),
        )
        .select_from(LINES)
        .outerjoin(OUT, _O.record_key == _S.record_key)
        .where(base)
        .group_by(func.coalesce(_O.status, "unreconciled"), _S.currency)
        .order_by(func.coalesce(_O.status, "unreconciled"), _S.currency)
    ).all()
    if not by_status:
        return None
    files = session.execute(
        select(
            _S.source_file,
            _S.file_sha256,
            func.count(),
            func.min(_S.booking_date),
            func.max(_S.booking_date),
        )
        .where(base)
        .group_by(_S.source_file, _S.file_sha256)
        .order_by(_S.source_file)
    ).all()
    registered = {
        f.sha256: f
        for f in session.scalars(
            select(IngestedFile).where(IngestedFile.sha256.in_([row[1] for row in files]))
        )
    }
    statuses: dict[str, int] = {}
    totals: dict[str, dict[str, int]] = {}
    for status, currency, count, amount in by_status:
        statuses[status] = statuses.get(status, 0) + int(count)
        t = totals.setdefault(currency, {"lines": 0, "amount_minor": 0})
        t["lines"] += int(count)
        t["amount_minor"] += int(amount or 0)
    lines = sum(statuses.values())
    return {
        "batch_id": batch_id,
        "psp": principal.psp,
        "lines": lines,
        "by_status": statuses,
        "reconciled": statuses.get("unreconciled", 0) == 0 and statuses.get("pending", 0) == 0,
        "totals": [{"currency": c, **v} for c, v in sorted(totals.items())],
        "files": [
            {
                "source_file": name,
                "sha256": sha,
                "lines": int(count),
                "first_booking_date": first,
                "last_booking_date": last,
                "registered_at": None if sha not in registered else registered[sha].registered_at,
            }
            for name, sha, count, first, last in files
        ],
    }


def settlement_file(session: Session, principal: Principal, sha256: str) -> dict[str, Any] | None:
    if principal.psp is None:
        return None
    found = session.scalars(
        select(IngestedFile).where(IngestedFile.sha256 == sha256, IngestedFile.psp == principal.psp)
    ).first()
    if found is None:
        return None
    lines, _batches = session.execute(
        select(func.count(), func.count(func.distinct(_S.batch_id))).where(_S.file_sha256 == sha256)
    ).one()
    return {
        "sha256": found.sha256,
        "psp": found.psp,
        "name": found.original_name,
        "status": found.status,
        "reason": found.reason,
        "batch_key": found.batch_key,
        "registered_at": found.registered_at,
        "lines_stored": int(lines),
    }


# --------------------------------------------------------------------------- disputes and exceptions


def dispute(session: Session, principal: Principal, dispute_id: str) -> Dispute | None:
    return session.scalars(
        select(Dispute).where(Dispute.dispute_id == dispute_id, Dispute.partner_id == principal.partner_id)
    ).first()


def list_exceptions(
    session: Session,
    *,
    state: str | None,
    category: str | None,
    psp: str | None,
    limit: int,
    cursor: str | None,
    id_: int | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """The exception queue (oldest first), keyset-paginated on the exception id."""
    after = decode_cursor(cursor)
    if after is not None and not isinstance(after, int):
        raise ProblemError(400, "the cursor is not one this API returned", slug="invalid-cursor")
    where: list[ColumnElement[bool]] = []
    if id_ is not None:
        where.append(_E.id == id_)
    if after is not None:
        where.append(_E.id > after)
    if state is not None:
        where.append(_E.state == state)
    if category is not None:
        where.append(_E.category == category)
    if psp is not None:
        where.append(_O.psp == psp)
    stmt = (
        select(
            _E.id.label("exception_id"),
            _E.record_key,
            _O.record,
            _O.transaction_id,
            _O.psp,
            _O.source_file,
            _O.source_row,
            _E.category,
            _E.state,
            _E.opened_as_of,
            _E.evidence,
            _E.resolution_code,
            _E.resolution_note,
            _E.resolved_by,
            _E.resolved_at,
        )
        .select_from(EXC)
        .join(OUT, _O.record_key == _E.record_key)
        .where(*where)
        .order_by(_E.id)
        .limit(limit + 1)
    )
    rows = [dict(r) for r in session.execute(stmt).mappings()]
    next_cursor = encode_cursor(rows[limit - 1]["exception_id"]) if len(rows) > limit else None
    return rows[:limit], next_cursor
