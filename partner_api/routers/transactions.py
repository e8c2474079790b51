"""``/v1/transactions``: the status of a transaction with its match evidence, and a filtered list."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Response

from ..auth import SECURED, ReadAccess, ReadPrincipal
from ..deps import RuntimeDep, read_session
from ..openapi import errors
from ..problems import ProblemError
from ..queries import list_transactions, transaction_status
from ..schemas import Status, TransactionPage, TransactionStatus

router = APIRouter(prefix="/v1/transactions", tags=["transactions"])
IdPath = Annotated[str, Path(min_length=1, max_length=128, description="The operator's transaction id")]


def _not_found(what: str) -> ProblemError:
    return ProblemError(404, f"no transaction {what} visible to this API key", slug="not-found")


@router.get("", response_model=TransactionPage, responses=errors(400, 403))
def list_(  # noqa: PLR0917 - FastAPI parameters
    principal: ReadPrincipal,
    runtime: RuntimeDep,
    status: Annotated[Status | None, Query()] = None,
    kind: Annotated[
        str | None, Query(pattern="^(deposit|withdrawal|refund|chargeback|chargeback_reversal)$")
    ] = None,
    currency: Annotated[str | None, Query(pattern="^[A-Z]{3}$")] = None,
    psp_reference: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    business_date_from: dt.date | None = None,
    business_date_to: dt.date | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Any:
    """Your transactions in `transaction_id` order, filtered; follow `next_cursor` for the next page."""
    with read_session(runtime.engine(principal.environment)) as session:
        rows, next_cursor = list_transactions(
            session,
            principal,
            status=status,
            kind=kind,
            currency=currency,
            psp_reference=psp_reference,
            business_date_from=business_date_from,
            business_date_to=business_date_to,
            limit=limit,
            cursor=cursor,
        )
    return {"data": rows, "next_cursor": next_cursor}


@router.get(
    "/by-psp-reference/{psp_reference}", response_model=TransactionStatus, responses=errors(403, 404, 409)
)
def by_psp_reference(
    psp_reference: Annotated[str, Path(min_length=1, max_length=128)],
    principal: ReadPrincipal,
    runtime: RuntimeDep,
) -> Any:
    """The status of your transaction with this PSP reference (409 when several carry it)."""
    with read_session(runtime.engine(principal.environment)) as session:
        found = transaction_status(session, principal, psp_reference=psp_reference)
    if found is None:
        raise _not_found(f"with PSP reference {psp_reference!r}")
    return found


@router.get(
    "/{transaction_id}",
    response_model=TransactionStatus,
    responses=errors(403, 404),
    openapi_extra=SECURED,
)
def get_transaction(transaction_id: IdPath, access: ReadAccess) -> Any:
    """The reconciliation status of one of your transactions, with the settlement records it matched."""
    # The hot path. A plain function, so FastAPI runs it in one worker-thread call (the same serving
    # path as benchmarks/bare_api.py): the key's rate limit and scope (Access.engine), then one
    # statement on a plain connection (no ORM identity map), serialised by orjson: the JSON FastAPI
    # would write for TransactionStatus, without validating the dict again (a test checks they agree).
    with access.engine().connect() as conn:
        found = transaction_status(conn, access.principal, transaction_id=transaction_id)
    if found is None:
        raise _not_found(repr(transaction_id))
    return Response(orjson.dumps(found, option=orjson.OPT_UTC_Z), media_type="application/json")
