"""RFC 9457 problem details for every error the API returns.

Every error body is ``application/problem+json`` with ``type``, ``title``, ``status``, ``detail``,
``instance`` (the request path) and ``trace_id`` (the W3C trace id of the request, to quote to
support). Problem types specific to this API are tag URIs listed in ``docs/partner-api.md``;
plain HTTP errors use ``about:blank``.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from reconciliation_pipeline.telemetry import current_ids

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "tag:recon.partner-api,2026:problem:"
log = logging.getLogger("partner_api")


def problem_type(slug: str) -> str:
    return TYPE_PREFIX + slug


class Problem(BaseModel):
    """An RFC 9457 problem detail; extension members (``errors``, ``trace_id``...) may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", examples=["about:blank"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(ge=400, le=599, examples=[404])
    detail: str | None = Field(default=None, examples=["no transaction 'tx-1' visible to this key"])
    instance: str | None = Field(default=None, examples=["/v1/transactions/tx-1"])
    trace_id: str | None = Field(default=None, description="W3C trace id of the request")


class ProblemError(Exception):
    """Raise anywhere in a request to answer with this problem."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = problem_type(slug) if slug else "about:blank"
        self.title = title or _title(status)
        self.headers = headers or {}
        self.extra = extra


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    if instance is not None:
        body["instance"] = instance
    trace_id, _ = current_ids()
    if trace_id is not None:
        body["trace_id"] = trace_id
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def from_error(exc: ProblemError, instance: str | None) -> JSONResponse:
    return problem(
        exc.status,
        exc.title,
        exc.detail,
        type_=exc.type,
        instance=instance,
        headers=exc.headers,
        **exc.extra,
    )


def install(app: FastAPI) -> None:
    """Answer every error as problem+json: HTTP errors, validation errors, ours and unexpected ones."""

    @app.exception_handler(ProblemError)
    async def _ours(request: Request, exc: ProblemError) -> JSONResponse:
        return from_error(exc, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(
            exc.status_code,
            _title(exc.status_code),
            str(exc.detail),
            instance=request.url.path,
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"location": [str(p) for p in e["loc"]], "message": e["msg"]} for e in exc.errors()]
        return problem(
            422,
            "Unprocessable Content",
            "the request is not valid: "
            + "; ".join(f"{'.'.join(e['location'])}: {e['message']}" for e in errors),
            type_=problem_type("validation"),
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(
            500,
            "Internal Server Error",
            "the server failed to answer this request; quote the trace_id to support",
            instance=request.url.path,
        )


def _title(status: int) -> str:
    if status == 422:
        return "Unprocessable Content"  # RFC 9110's name (Python's http module has the older one)
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
