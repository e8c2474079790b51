"""The partner API's access-log formatter writes the same JSON as the platform's JsonLogFormatter."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random

import pytest

from partner_api.observability import FastJsonLogFormatter, _timestamp
from reconciliation_pipeline.telemetry import JsonLogFormatter


def test_timestamps_match_datetime_isoformat() -> None:
    rng = random.Random(5)
    edges = [0.0005, 0.9995, 0.0000005, 0.9999995, 0.5]
    for _ in range(20_000):
        created = rng.randrange(1_000_000_000, 2_000_000_000) + rng.choice([*edges, rng.random()])
        expected = dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds")
        assert _timestamp(created) == expected, created


@pytest.mark.parametrize(
    "extra",
    [
        {"http_status": 200, "partner_id": None, "duration_ms": 1.25, "http_route": "/v1/é"},
        {"big": 2**70},  # beyond orjson's integers
        {"when": dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC), "keys": {1: "a"}},  # json.dumps(default=str)
    ],
)
def test_lines_equal_the_standard_formatter(extra: dict[str, object]) -> None:
    record = logging.LogRecord("partner_api.access", logging.INFO, __file__, 1, "%s %s", ("GET", "/x"), None)
    record.__dict__.update(extra)
    assert json.loads(FastJsonLogFormatter().format(record)) == json.loads(JsonLogFormatter().format(record))
