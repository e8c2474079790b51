"""One transaction end to end, from the platform's own data (``recon audit trace``).

Booking (the Kafka topic, partition and offset of the event and the landed file it was read from, the
ledger batch that stored it), settlement (the PSP file and row it matched, how that file arrived), the
rule that decided it, every outcome it had (the audit events of its outcome record, oldest first), its
exceptions and their resolutions, and the partner API calls about it (audit events whose entity is
the transaction, whose inputs name it, or that concern a dispute raised about it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from reconciliation_pipeline.store.models import (
    AuditEvent,
    ExceptionItem,
    IngestedFile,
    MatchGroup,
    Outcome,
    SettlementLine,
    Transaction,
)

#: Entity types of the pipeline's own events; anything else naming the transaction is an API call.
PIPELINE_ENTITY_TYPES = ("outcome", "exception", "ledger_batch", "settlement_batch", "file", "partition")


@dataclasses.dataclass
class SettlementTrace:
    line: SettlementLine | None
    outcome: Outcome | None
    file: IngestedFile | None
    file_events: list[AuditEvent]
    how: str  # "matched" (same match group) or "references" (names the transaction, not matched)


@dataclasses.dataclass
class TransactionTrace:
    transaction_id: str
    transaction: Transaction | None
    ledger_batches: list[AuditEvent]
    outcome: Outcome | None
    match_group: MatchGroup | None
    settlements: list[SettlementTrace]
    history: list[AuditEvent]
    exceptions: list[ExceptionItem]
    api_calls: list[AuditEvent]

    @property
    def found(self) -> bool:
        return self.transaction is not None or self.outcome is not None or bool(self.api_calls)


def _ledger_key(transaction_id: str) -> str:
    return f"ledger:{transaction_id}"


def _settlement_key(line: SettlementLine) -> str:
    return f"settlement:{line.psp}:{line.source_file}:{line.source_row}"


def _ledger_batches(session: Session, txn: Transaction | None) -> list[AuditEvent]:
    """The ledger batch events of the transaction's business date (the first one inserted it)."""
    if txn is None or txn.business_date is None:
        return []
    day = txn.business_date.isoformat()
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "ledger.upserted").order_by(AuditEvent.seq)
    )
    out = []
    for ev in events:
        span = (ev.inputs or {}).get("business_dates") or [None, None]
        partition = (ev.chain or {}).get("partition")
        if partition == day or (span[0] is not None and span[0] <= day <= (span[1] or span[0])):
            out.append(ev)
    return out


def _settlements(session: Session, txn: Transaction | None, outcome: Outcome | None) -> list[SettlementTrace]:
    found: dict[str, SettlementTrace] = {}
    if outcome is not None and outcome.match_id is not None:
        rows = session.execute(
            select(Outcome, SettlementLine)
            .outerjoin(SettlementLine, SettlementLine.record_key == Outcome.record_key)
            .where(Outcome.match_id == outcome.match_id, Outcome.record == "settlement")
            .order_by(Outcome.psp, Outcome.source_file, Outcome.source_row)
        ).all()
        for out, line in rows:
            found[out.record_key] = SettlementTrace(line, out, None, [], "matched")
    if txn is not None:
        refs = [SettlementLine.merchant_reference == txn.transaction_id]
        if txn.psp_reference:
            refs += [
                SettlementLine.movement_reference == txn.psp_reference,
                SettlementLine.payment_reference == txn.psp_reference,
            ]
        for line in session.scalars(
            select(SettlementLine).where(or_(*refs)).order_by(SettlementLine.record_key)
        ):
            if line.record_key not in found:
                found[line.record_key] = SettlementTrace(
                    line, session.get(Outcome, line.record_key), None, [], "references"
                )
    for item in found.values():
        if item.line is not None:
            item.file = session.get(IngestedFile, item.line.file_sha256)
            item.file_events = list(
                session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.entity_id == item.line.file_sha256)
                    .order_by(AuditEvent.seq)
                )
            )
    return list(found.values())


def _api_calls(session: Session, transaction_id: str) -> list[AuditEvent]:
    direct = list(
        session.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.entity_type.not_in(PIPELINE_ENTITY_TYPES),
                or_(
                    AuditEvent.entity_id.in_([transaction_id, f"transaction:{transaction_id}"]),
                    AuditEvent.inputs["transaction_id"].as_string() == transaction_id,
                ),
            )
            .order_by(AuditEvent.seq)
        )
    )
    # later events about the same dispute name the dispute, not the transaction
    disputes = {ev.entity_id for ev in direct if ev.entity_type == "dispute"}
    if disputes:
        seen = {ev.seq for ev in direct}
        more = session.scalars(
            select(AuditEvent).where(AuditEvent.entity_id.in_(sorted(disputes))).order_by(AuditEvent.seq)
        )
        direct += [ev for ev in more if ev.seq not in seen]
    return sorted(direct, key=lambda ev: ev.seq)


def trace_transaction(session: Session, transaction_id: str) -> TransactionTrace:
    """Everything the store knows about ``transaction_id``; ``.found`` is false when it knows nothing."""
    txn = session.get(Transaction, transaction_id)
    outcome = session.get(Outcome, _ledger_key(transaction_id))
    group = None if outcome is None or outcome.match_id is None else session.get(MatchGroup, outcome.match_id)
    settlements = _settlements(session, txn, outcome)
    keys = [_ledger_key(transaction_id)]
    for s in settlements:
        if s.outcome is not None:
            keys.append(s.outcome.record_key)
        elif s.line is not None:
            keys.append(_settlement_key(s.line))
    history = list(
        session.scalars(
            select(AuditEvent)
            .where(AuditEvent.entity_id.in_(keys), AuditEvent.entity_type.in_(("outcome", "exception")))
            .order_by(AuditEvent.seq)
        )
    )
    exceptions = list(
        session.scalars(
            select(ExceptionItem).where(ExceptionItem.record_key.in_(keys)).order_by(ExceptionItem.id)
        )
    )
    return TransactionTrace(
        transaction_id=transaction_id,
        transaction=txn,
        ledger_batches=_ledger_batches(session, txn),
        outcome=outcome,
        match_group=group,
        settlements=settlements,
        history=history,
        exceptions=exceptions,
        api_calls=_api_calls(session, transaction_id),
    )


def describe(value: Any) -> str:
    """A short one-line text of an event's JSON part."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={describe(v)}" for k, v in value.items() if v is not None) or "-"
    if isinstance(value, list):
        return "[" + ", ".join(describe(v) for v in value) + "]"
    return str(value)


__all__ = ["SettlementTrace", "TransactionTrace", "describe", "trace_transaction"]
