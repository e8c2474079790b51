"""``/v1/disputes``: a partner raises a dispute about one of its transactions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from reconciliation_pipeline.telemetry import current_ids

from .. import idempotency, service
from ..auth import DisputesPrincipal, Principal, ReadPrincipal
from ..deps import Runtime, RuntimeDep, read_session
from ..openapi import errors
from ..problems import ProblemError
from ..queries import dispute, transaction_visible
from ..schemas import DisputeIn, DisputeOut

router = APIRouter(prefix="/v1/disputes", tags=["disputes"])

EXAMPLES = {
    "amount": {
        "summary": "The PSP settled less than was booked",
        "value": {
            "transaction_id": "tx-2026-03-02-000123",
            "reason": "amount_mismatch",
            "amount_minor": 1250,
            "currency": "EUR",
            "note": "Settled 98.75 EUR in batch 812, booked 100.00 EUR",
        },
    },
    "whole": {
        "summary": "Dispute the whole amount",
        "value": {"transaction_id": "tx-2026-03-02-000124", "reason": "not_recognised"},
    },
}


@router.post(
    "",
    status_code=201,
    response_model=DisputeOut,
    responses=errors(403, 404, 409, 422),
)
def raise_dispute(
    request: Request,
    principal: DisputesPrincipal,
    runtime: RuntimeDep,
    body: Annotated[DisputeIn, Body(openapi_examples=EXAMPLES)],
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="Unique per intended dispute, e.g. a UUID; kept 24 h"),
    ] = None,
) -> Response:
    """Raise a dispute about one of your transactions (audited; safe to retry with the same key)."""
    payload = body.model_dump(mode="json")

    def handler(session: Session) -> Response:
        return _raise(session, runtime, principal, body)

    return idempotency.run(request, runtime, principal, key=idempotency_key, payload=payload, handler=handler)


def _raise(session: Session, runtime: Runtime, principal: Principal, body: DisputeIn) -> Response:
    txn = transaction_visible(session, principal, body.transaction_id)
    if txn is None:
        raise ProblemError(
            404, f"no transaction {body.transaction_id!r} visible to this API key", slug="not-found"
        )
    if body.currency is not None and body.currency != txn.currency:
        raise ProblemError(
            422,
            f"currency {body.currency} is not the transaction's currency {txn.currency}",
            slug="currency-mismatch",
        )
    amount = body.amount_minor if body.amount_minor is not None else abs(txn.amount_minor)
    if amount > abs(txn.amount_minor) or amount <= 0:
        raise ProblemError(
            422,
            f"amount_minor {amount} must be between 1 and the transaction's amount {abs(txn.amount_minor)} "
            f"({txn.currency} minor units)",
            slug="amount-out-of-range",
        )
    existing = service.open_dispute_for(
        session, partner_id=principal.partner_id, transaction_id=txn.transaction_id
    )
    if existing is not None:
        raise ProblemError(
            409,
            f"dispute {existing.dispute_id} is already open for transaction {txn.transaction_id!r}",
            slug="dispute-already-open",
            dispute_id=existing.dispute_id,
        )
    created = service.raise_dispute(
        session,
        partner_id=principal.partner_id,
        actor=principal.actor,
        transaction=txn,
        reason=body.reason,
        amount_minor=amount,
        note=body.note,
        trace_id=current_ids()[0],
        code_version=runtime.settings.code_version,
    )
    return idempotency.response_json(
        201, service.dispute_json(created), headers={"Location": f"/v1/disputes/{created.dispute_id}"}
    )


@router.get("/{dispute_id}", response_model=DisputeOut, responses=errors(403, 404))
def get_dispute(
    dispute_id: Annotated[str, Path(min_length=1, max_length=64)],
    principal: ReadPrincipal,
    runtime: RuntimeDep,
) -> Any:
    """One of your disputes."""
    with read_session(runtime.engine(principal.environment)) as session:
        found = dispute(session, principal, dispute_id)
        if found is None:
            raise ProblemError(404, f"no dispute {dispute_id!r} visible to this API key", slug="not-found")
        return service.dispute_json(found)
