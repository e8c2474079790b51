"""The OpenAPI document: every error documented as RFC 9457 problem+json, headers of the contract.

The document served at ``/openapi.json`` is also committed as ``partner_api/openapi.json``
(``python -m partner_api.openapi`` rewrites it; a test checks the two are equal).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .problems import PROBLEM_JSON, Problem

COMMITTED = Path(__file__).resolve().parent / "openapi.json"
_DESCRIPTIONS = {
    400: "Bad request (missing or invalid Idempotency-Key, bad cursor)",
    401: "No valid API key",
    403: "The API key lacks the scope this call needs",
    404: "Not found, or not visible to this API key",
    409: "Conflict: the Idempotency-Key is in use by a request still running, or the state forbids it",
    413: "The upload is larger than the limit",
    422: "The request is not valid (or its Idempotency-Key was used for another request)",
    429: "Rate limit of the API key exceeded",
    503: "Not ready",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for these problem statuses (401 and 429 are added to every secured call)."""
    return {code: {"description": _DESCRIPTIONS[code], "model": Problem} for code in codes}


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_HEADERS = {
    "X-Trace-Id": {
        "description": "W3C trace id of this request (quote it to support)",
        "schema": {"type": "string"},
    }
}
_RETRY_AFTER = {"description": "Seconds to wait before retrying", "schema": {"type": "string"}}
_REPLAYED = {
    "description": "`true` when this response is the stored response of an earlier request with the same "
    "Idempotency-Key",
    "schema": {"type": "string", "enum": ["true"]},
}


def build(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        servers=[{"url": "/"}],
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            secured = bool(op.get("security"))
            responses = op.setdefault("responses", {})
            if secured:
                for code in (401, 429):
                    responses.setdefault(str(code), {"description": _DESCRIPTIONS[code]})
            state_changing = method in ("post", "put", "patch", "delete")
            for code, resp in responses.items():
                status = int(code) if code.isdigit() else 0
                if status >= 400:
                    resp["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
                    if status == 422 and resp.get("description") == "Validation Error":
                        resp["description"] = _DESCRIPTIONS[422]
                headers = resp.setdefault("headers", {})
                headers.update(_HEADERS)
                if status in (409, 429):
                    headers["Retry-After"] = _RETRY_AFTER
                if state_changing and (200 <= status < 300 or status in (404, 409, 413, 422)):
                    headers["Idempotent-Replayed"] = _REPLAYED
            for param in op.get("parameters", []):
                if param.get("in") == "header" and param.get("name") == "Idempotency-Key":
                    # optional in the signature so that a missing key is our 400, required in the contract
                    param["required"] = True
                    param["schema"] = {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 255,
                        "pattern": r"^[!-~]+$",
                    }
            if path.startswith("/v1/") and state_changing:
                responses.setdefault("400", {"description": _DESCRIPTIONS[400]})
                responses["400"]["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
                responses["400"].setdefault("headers", dict(_HEADERS))
    return schema


def install(app: FastAPI) -> None:
    def _openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = _openapi  # type: ignore[method-assign]


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:  # pragma: no cover - `python -m partner_api.openapi`
    from .main import app

    COMMITTED.write_text(render(app.openapi()))
    sys.stdout.write(f"wrote {COMMITTED}\n")


if __name__ == "__main__":  # pragma: no cover
    main()
