"""The operator's exception queue: list, show and resolve exceptions (``recon exceptions``).

Exceptions are opened and auto-resolved by :func:`service.apply_outcomes`; an operator resolves the
rest by hand with a reason code from :class:`ResolutionCode`, their name and the evidence they relied
on. Resolving never deletes anything: the row keeps the matcher's evidence, gains the resolution and
its evidence, and an ``exception.resolved`` audit event records who, why and with what, in the same
transaction. Resolved exceptions stay listed (``state="resolved"`` or ``"all"``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import os
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from reconciliation_pipeline.store.audit import AuditEventIn, append_event_rows, lock_chain, normalise_chain
from reconciliation_pipeline.store.models import AuditEvent, ExceptionItem, Outcome

UTC = dt.UTC
OPERATOR_ENV = "RECON_OPERATOR"


class ResolutionCode(StrEnum):
    """Why an operator closed an exception (auto codes are the pipeline's own)."""

    matched_manually = "matched_manually"  # paired by hand with its counterpart (named in the evidence)
    psp_corrected = "psp_corrected"  # the PSP corrected it in a later file or by a statement
    ledger_corrected = "ledger_corrected"  # the booking was corrected in the operator's ledger
    refund_recovered = "refund_recovered"  # a duplicate or excess settlement was paid back
    written_off = "written_off"  # accepted as a loss or gain (below a threshold, approved)
    chargeback_accepted = "chargeback_accepted"  # the chargeback stands; nothing to recover
    not_an_exception = "not_an_exception"  # the data was right; the matcher's call was wrong
    other = "other"  # anything else: a note is required


#: Codes the pipeline itself uses when an outcome leaves the exception state.
AUTO_CODES = ("auto_rematched", "auto_recategorised")
STATES = ("open", "resolved", "all")


def default_operator() -> str:
    """Who is resolving: ``RECON_OPERATOR``, else the login name."""
    name = os.environ.get(OPERATOR_ENV)
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown-operator"


@dataclasses.dataclass(frozen=True)
class QueueItem:
    """An exception with the record it is about."""

    id: int
    state: str
    category: str
    record_key: str
    record: str | None
    transaction_id: str | None
    psp: str | None
    source_file: str | None
    source_row: int | None
    status: str | None
    business_date: dt.date | None
    opened_as_of: dt.date
    age_days: int
    resolution_code: str | None
    resolution_note: str | None
    resolved_by: str | None
    resolved_at: dt.datetime | None
    evidence: Any
    resolution_evidence: Any


def _query(state: str) -> Select[Any]:
    stmt = select(ExceptionItem, Outcome).outerjoin(Outcome, Outcome.record_key == ExceptionItem.record_key)
    if state != "all":
        stmt = stmt.where(ExceptionItem.state == state)
    return stmt


def _item(exc: ExceptionItem, out: Outcome | None, today: dt.date) -> QueueItem:
    return QueueItem(
        id=exc.id,
        state=exc.state,
        category=exc.category,
        record_key=exc.record_key,
        record=None if out is None else out.record,
        transaction_id=None if out is None else out.transaction_id,
        psp=None if out is None else out.psp,
        source_file=None if out is None else out.source_file,
        source_row=None if out is None else out.source_row,
        status=None if out is None else out.status,
        business_date=None if out is None else out.business_date,
        opened_as_of=exc.opened_as_of,
        age_days=(today - exc.opened_as_of).days,
        resolution_code=exc.resolution_code,
        resolution_note=exc.resolution_note,
        resolved_by=exc.resolved_by,
        resolved_at=exc.resolved_at,
        evidence=exc.evidence,
        resolution_evidence=exc.resolution_evidence,
    )


def list_exceptions(
    session: Session,
    *,
    state: str = "open",
    psp: str | None = None,
    category: str | None = None,
    min_age_days: int | None = None,
    max_age_days: int | None = None,
    today: dt.date | None = None,
    limit: int | None = None,
) -> list[QueueItem]:
    """Exceptions, oldest first; age is days since the business date that opened them."""
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    today = today or dt.datetime.now(UTC).date()
    stmt = _query(state)
    if psp is not None:
        stmt = stmt.where(Outcome.psp == psp)
    if category is not None:
        stmt = stmt.where(ExceptionItem.category == category)
    if min_age_days is not None:
        stmt = stmt.where(ExceptionItem.opened_as_of <= today - dt.timedelta(days=min_age_days))
    if max_age_days is not None:
        stmt = stmt.where(ExceptionItem.opened_as_of >= today - dt.timedelta(days=max_age_days))
    stmt = stmt.order_by(ExceptionItem.opened_as_of, ExceptionItem.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_item(exc, out, today) for exc, out in session.execute(stmt).all()]


def get_exception(session: Session, exception_id: int, *, today: dt.date | None = None) -> QueueItem:
    row = session.execute(_query("all").where(ExceptionItem.id == exception_id)).first()
    if row is None:
        raise LookupError(
            f"exception {exception_id} does not exist (see `recon exceptions list --state all`)"
        )
    return _item(row[0], row[1], today or dt.datetime.now(UTC).date())


def history(session: Session, record_key: str) -> list[AuditEvent]:
    """Every audit event about the record, in chain order."""
    return list(
        session.scalars(select(AuditEvent).where(AuditEvent.entity_id == record_key).order_by(AuditEvent.seq))
    )


def resolve(
    session: Session,
    *,
    exception_id: int,
    code: ResolutionCode | str,
    note: str | None,
    by: str,
    evidence: Sequence[dict[str, Any]] = (),
    chain: dict[str, Any] | None = None,
    trace_id: str | None = None,
) -> QueueItem:
    """Resolve an open exception by hand and write ``exception.resolved`` in the same transaction.

    ``evidence``: what the decision relied on, e.g. ``{"kind": "document", "name": ..., "sha256": ...}``
    or ``{"kind": "reference", "value": "JIRA-123"}``; kept on the row and in the audit event.
    """
    try:
        code = ResolutionCode(code)
    except ValueError:
        allowed = ", ".join(c.value for c in ResolutionCode)
        raise ValueError(f"resolution code {code!r} is not one of: {allowed}") from None
    if not by or not by.strip():
        raise ValueError("who resolves must be named (--by or RECON_OPERATOR)")
    if code is ResolutionCode.other and not (note and note.strip()):
        raise ValueError("resolution code 'other' needs a note saying why")
    lock_chain(session)
    item = session.get(ExceptionItem, exception_id)
    if item is None:
        raise LookupError(
            f"exception {exception_id} does not exist (see `recon exceptions list --state all`)"
        )
    if item.state != "open":
        raise ValueError(
            f"exception {exception_id} is already {item.state} ({item.resolution_code} by {item.resolved_by} "
            f"at {item.resolved_at:%Y-%m-%d %H:%M} UTC)"
            if item.resolved_at
            else f"exception {exception_id} is already {item.state}"
        )
    kept = [dict(e) for e in evidence]
    item.state = "resolved"
    item.resolution_code = code.value
    item.resolution_note = note
    item.resolved_by = by
    item.resolved_at = dt.datetime.now(UTC)
    item.resolution_evidence = kept or None
    session.flush()
    append_event_rows(
        session,
        [
            AuditEventIn(
                actor=by,
                action="exception.resolved",
                entity_type="exception",
                entity_id=item.record_key,
                inputs={
                    "exception_id": item.id,
                    "category": item.category,
                    "opened_as_of": item.opened_as_of,
                },
                chain=normalise_chain(chain or {"asset": "recon exceptions resolve"}),
                outcome={
                    "state": "resolved",
                    "resolution_code": code.value,
                    "resolution_note": note,
                    "resolved_by": by,
                    "evidence": kept,
                },
                trace_id=trace_id,
                occurred_at=item.resolved_at,
            )
        ],
    )
    return get_exception(session, exception_id)


__all__ = [
    "AUTO_CODES",
    "OPERATOR_ENV",
    "QueueItem",
    "ResolutionCode",
    "default_operator",
    "get_exception",
    "history",
    "list_exceptions",
    "resolve",
]
