"""``/v1/transactions``: the status of a transaction and its match evidence."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from reconciliation_pipeline.store import service

from ..deps import SessionDep

router = APIRouter(prefix="/v1/transactions", tags=["transactions"])


class SettlementEvidence(BaseModel):
    psp: str
    source_file: str
    source_row: int
    amount_minor: int
    currency: str
    booking_date: dt.date
    record_type: str | None = None


class TransactionStatus(BaseModel):
    transaction_id: str
    psp: str
    psp_reference: str | None
    kind: str
    amount_minor: int
    currency: str
    business_date: dt.date
    status: str | None
    match_id: str | None
    rule_id: str | None
    exception_category: str | None
    settlements: list[SettlementEvidence]


@router.get(
    "/{transaction_id}",
    response_model=TransactionStatus,
    responses={404: {"description": "Unknown transaction", "content": {"application/problem+json": {}}}},
)
def get_transaction(transaction_id: str, session: SessionDep) -> TransactionStatus:
    """The reconciliation status of one booked transaction, with the settlement records it matched."""
    found = service.get_transaction(session, transaction_id)
    if found is None or found["transaction"] is None:
        raise HTTPException(status_code=404, detail=f"no transaction {transaction_id!r}")
    outcome = found["outcome"] or {}
    return TransactionStatus(
        **{
            name: found["transaction"][name]
            for name in (
                "transaction_id",
                "psp",
                "psp_reference",
                "kind",
                "amount_minor",
                "currency",
                "business_date",
            )
        },
        status=outcome.get("status"),
        match_id=outcome.get("match_id"),
        rule_id=outcome.get("rule_id"),
        exception_category=outcome.get("exception_category"),
        settlements=[
            SettlementEvidence.model_validate(line)
            for line in found["settlement_lines"]
            if line.get("amount_minor") is not None
        ],
    )
