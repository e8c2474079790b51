"""``/v1/settlement-batches`` and ``/v1/settlement-files``: batch status, file status, uploads.

An upload goes through the platform's one ingestion path (:func:`reconciliation_pipeline.ingest.
accept_bytes`, the one ``recon ingest`` uses): the file is parsed whole in the PSP's own format, then
accepted into ``landing/settlements/<psp>/`` (where ``settlement_file_sensor`` turns it into runs of the
business dates it touches), recognised as a duplicate, or quarantined with the file, row and field
that are wrong (answered ``422``).

The file's registration (and its ``file.*`` audit event), the ``settlement_file.uploaded`` audit event
and the idempotency record are written in one transaction. Registration is content-addressed too (a file
or PSP batch is registered once), so even a retry under a new key can never count a file twice.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Path, Request, UploadFile
from fastapi.responses import Response
from sqlalchemy.orm import Session

from reconciliation_pipeline.ingest import accept_bytes
from reconciliation_pipeline.lake import sha256_bytes
from reconciliation_pipeline.store.audit import append_event
from reconciliation_pipeline.telemetry import current_ids

from .. import idempotency
from ..auth import ReadPrincipal, UploadPrincipal
from ..deps import RuntimeDep, read_session
from ..openapi import errors
from ..problems import ProblemError, from_error
from ..queries import settlement_batch, settlement_file
from ..schemas import SettlementBatchStatus, SettlementFileStatus, UploadResult

router = APIRouter(prefix="/v1", tags=["settlements"])
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

UPLOAD_EXAMPLE = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "examples": {
                    "adyen": {
                        "summary": "An Adyen settlement details report",
                        "value": {"file": "settlement_detail_report_batch_812.csv", "psp": "adyen"},
                    }
                }
            }
        }
    }
}


def safe_name(name: str | None) -> str:
    """The basename of an uploaded file name, reduced to ``[A-Za-z0-9._-]`` (never a path)."""
    base = PureWindowsPath(PurePosixPath(name or "").name).name
    cleaned = _SAFE.sub("_", base).strip("._")[:200]
    return cleaned or "upload"


@router.get(
    "/settlement-batches/{batch_id}", response_model=SettlementBatchStatus, responses=errors(403, 404)
)
def batch_status(
    batch_id: Annotated[str, Path(min_length=1, max_length=255)],
    principal: ReadPrincipal,
    runtime: RuntimeDep,
) -> Any:
    """Reconciliation status of a settlement batch of your PSP: lines by status, totals, files."""
    with read_session(runtime.engine(principal.environment)) as session:
        found = settlement_batch(session, principal, batch_id)
    if found is None:
        raise ProblemError(404, f"no settlement batch {batch_id!r} visible to this API key", slug="not-found")
    return found


@router.get("/settlement-files/{sha256}", response_model=SettlementFileStatus, responses=errors(403, 404))
def file_status(
    sha256: Annotated[str, Path(pattern="^[0-9a-f]{64}$")], principal: ReadPrincipal, runtime: RuntimeDep
) -> Any:
    """A settlement file of your PSP by its SHA-256: accepted or quarantined (with the reason)."""
    with read_session(runtime.engine(principal.environment)) as session:
        found = settlement_file(session, principal, sha256)
    if found is None:
        raise ProblemError(404, f"no settlement file {sha256} visible to this API key", slug="not-found")
    return found


@router.post(
    "/settlement-files",
    status_code=201,
    response_model=UploadResult,
    responses={
        200: {"description": "Already received (the same file or PSP batch)", "model": UploadResult},
        **errors(403, 409, 413, 422),
    },
    openapi_extra=UPLOAD_EXAMPLE,
)
async def upload(  # noqa: PLR0917 - FastAPI parameters
    request: Request,
    principal: UploadPrincipal,
    runtime: RuntimeDep,
    file: Annotated[UploadFile, File(description="The PSP's settlement file, in the PSP's own format")],
    psp: Annotated[
        str | None, Form(pattern="^(adyen|stripe|paypal)$", description="Default: your PSP")
    ] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    """Upload a settlement file (multipart): checked whole, then ingested like a dropped file.

    `201` accepted, `200` already received, `422` refused (quarantined) with the file, row and field.
    """
    idempotency.check_key(idempotency_key)
    limit = runtime.settings.api_max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ProblemError(413, f"the file is larger than {limit} bytes", slug="upload-too-large")
    target_psp = psp or principal.psp
    if principal.psp is None or target_psp != principal.psp:
        raise ProblemError(
            403,
            f"this API key may upload files of PSP {principal.psp!r} only",
            slug="wrong-psp",
        )
    name = safe_name(file.filename)
    payload = {"psp": target_psp, "name": name, "sha256": sha256_bytes(data), "bytes": len(data)}

    def handler(session: Session) -> Response:
        return _ingest(session, runtime, principal, data=data, name=name, psp=target_psp, payload=payload)

    from fastapi.concurrency import run_in_threadpool

    return await run_in_threadpool(
        lambda: idempotency.run(
            request, runtime, principal, key=idempotency_key, payload=payload, handler=handler
        )
    )


def _ingest(
    session: Session,
    runtime: Any,
    principal: Any,
    *,
    data: bytes,
    name: str,
    psp: str,
    payload: dict[str, Any],
) -> Response:
    trace_id, _ = current_ids()
    env = principal.environment
    outcome = accept_bytes(
        data,
        name=name,
        psp=psp,
        lake=runtime.lake(env),
        engine=runtime.engine(env),
        actor=principal.actor,
        chain={"code_version": runtime.settings.code_version, "asset": "partner_api.upload"},
        session=session,  # registered with the idempotency record, in one transaction
    )
    append_event(
        session,
        actor=principal.actor,
        action="settlement_file.uploaded",
        entity_type="file",
        entity_id=outcome.sha256,
        inputs={**payload, "environment": env},
        chain={"code_version": runtime.settings.code_version},
        outcome={"status": outcome.status, "message": outcome.message, "rows": outcome.rows},
        trace_id=trace_id,
    )
    if outcome.status == "quarantined":
        problem = outcome.problem.as_dict() if outcome.problem is not None else {}
        # answered (and stored for replays) in this transaction, with the audit event above
        return from_error(
            ProblemError(
                422,
                outcome.message,
                slug="settlement-file-refused",
                title="Settlement file refused",
                sha256=outcome.sha256,
                file_problem=problem,
            ),
            "/v1/settlement-files",
        )
    body = {
        "status": outcome.status,
        "sha256": outcome.sha256,
        "psp": psp,
        "name": name,
        "message": outcome.message,
        "rows": outcome.rows,
        "business_dates": [d.isoformat() for d in outcome.business_dates],
    }
    return idempotency.response_json(
        201 if outcome.status == "accepted" else 200,
        body,
        headers={"Location": f"/v1/settlement-files/{outcome.sha256}"},
    )
