"""``/v1/ops``: the operator's exception queue (keys with the ``operator`` scope only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from reconciliation_pipeline.store import exceptions as store_exceptions
from reconciliation_pipeline.telemetry import current_ids

from .. import idempotency
from ..auth import OperatorPrincipal
from ..deps import RuntimeDep, read_session
from ..openapi import errors
from ..problems import ProblemError
from ..queries import list_exceptions
from ..schemas import ExceptionOut, ExceptionPage, ResolveIn

router = APIRouter(prefix="/v1/ops", tags=["operators"])

EXAMPLES = {
    "late": {
        "summary": "The PSP settled it after the lag window",
        "value": {
            "resolution_code": "psp_corrected",
            "note": "Adyen batch 815 row 44, confirmed with the PSP",
        },
    }
}


@router.get("/exceptions", response_model=ExceptionPage, responses=errors(400, 403))
def exceptions(  # noqa: PLR0917 - FastAPI parameters
    principal: OperatorPrincipal,
    runtime: RuntimeDep,
    state: Annotated[str | None, Query(pattern="^(open|resolved)$")] = "open",
    category: Annotated[str | None, Query(max_length=64)] = None,
    psp: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Any:
    """The exception queue of the key's environment, oldest first, with each exception's evidence."""
    with read_session(runtime.engine(principal.environment)) as session:
        rows, next_cursor = list_exceptions(
            session, state=state, category=category, psp=psp, limit=limit, cursor=cursor
        )
    return {"data": rows, "next_cursor": next_cursor}


@router.post(
    "/exceptions/{exception_id}/resolve",
    response_model=ExceptionOut,
    responses=errors(403, 404, 409, 422),
)
def resolve(  # noqa: PLR0917 - FastAPI parameters
    request: Request,
    exception_id: Annotated[int, Path(ge=1, le=2**62)],
    principal: OperatorPrincipal,
    runtime: RuntimeDep,
    body: Annotated[ResolveIn, Body(openapi_examples=EXAMPLES)],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    """Resolve an open exception (writes `exception.resolved` to the audit trail)."""
    payload = {"exception_id": exception_id, **body.model_dump(mode="json")}

    def handler(session: Session) -> Response:
        try:
            store_exceptions.resolve(
                session,
                exception_id=exception_id,
                code=body.resolution_code,
                note=body.note,
                by=f"operator:{principal.partner_id}",
                chain={"code_version": runtime.settings.code_version, "asset": "partner_api.ops"},
                trace_id=current_ids()[0],
            )
        except LookupError:
            raise ProblemError(404, f"no exception {exception_id}", slug="not-found") from None
        except ValueError as exc:
            raise ProblemError(409, str(exc), slug="exception-not-open") from None
        rows, _ = list_exceptions(
            session, state=None, category=None, psp=None, limit=1, cursor=None, id_=exception_id
        )
        return idempotency.response_json(200, ExceptionOut.model_validate(rows[0]).model_dump(mode="json"))

    return idempotency.run(request, runtime, principal, key=idempotency_key, payload=payload, handler=handler)
