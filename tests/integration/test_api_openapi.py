"""The OpenAPI contract: the committed document is the served one, every state-changing call has a
request example, and schemathesis finds no server error and no response outside the document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from partner_api.openapi import COMMITTED, render
from tests.integration.api_fixtures import Api, build_api, make_settings


def test_committed_openapi_is_the_served_one(api: Api) -> None:
    served = api.client.get("/openapi.json").json()
    assert render(served) == COMMITTED.read_text(), (
        "partner_api/openapi.json is stale: run `python -m partner_api.openapi`"
    )


def test_every_state_changing_call_has_a_request_example_and_an_idempotency_key() -> None:
    doc = json.loads(COMMITTED.read_text())
    changing = [
        (p, m, op)
        for p, item in doc["paths"].items()
        for m, op in item.items()
        if m in ("post", "put", "patch", "delete")
    ]
    assert len(changing) == 3
    for path, method, op in changing:
        contents = op["requestBody"]["content"]
        assert any(c.get("examples") for c in contents.values()), f"{method} {path} has no request example"
        header = [p for p in op["parameters"] if p["in"] == "header" and p["name"] == "Idempotency-Key"]
        assert header and header[0]["required"] is True, f"{method} {path}"
        for status in ("400", "409", "422", "429"):
            assert "application/problem+json" in op["responses"][status]["content"], (path, status)


def test_every_error_response_is_documented_as_problem_json() -> None:
    doc = json.loads(COMMITTED.read_text())
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, resp in op["responses"].items():
                if int(status) >= 400:
                    assert list(resp["content"]) == ["application/problem+json"], (method, path, status)


@pytest.fixture
def fuzz_api(tmp_path: Path) -> Iterator[tuple[Api, str]]:
    settings_ = make_settings(
        tmp_path, f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'sandbox.db'}"
    )
    for api in build_api(settings_):
        key = api.partner(scopes="read,disputes,upload,operator")
        for i in range(3):
            tx = api.txn(transaction_id=f"tx-{i}", psp_reference=f"REF{i}")
            api.matched(tx)
        yield api, key


def test_schemathesis_finds_no_server_error_and_no_undocumented_response(fuzz_api: tuple[Api, str]) -> None:
    """Bounded: a few derandomised examples per operation (about 80 requests in all)."""
    api, key = fuzz_api
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 12
    seen: dict[str, set[int]] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            response = case.call_and_validate(
                headers={"Authorization": f"Bearer {key}"},
                checks=[
                    checks.not_a_server_error,
                    checks.status_code_conformance,
                    checks.content_type_conformance,
                    checks.response_schema_conformance,
                    checks.response_headers_conformance,
                ],
            )
            seen.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)

        fuzz()
    assert len(seen) == 12
    assert all(401 not in codes for codes in seen.values()), seen  # the key was used: real answers
    assert 200 in seen["GET /v1/transactions"] and 200 in seen["GET /v1/ops/exceptions"], seen
