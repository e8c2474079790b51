"""The audit benchmark at a smoke size: it runs on the real PostgreSQL and prints its ratios and rates
(no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_audit_benchmark_prints_ratios_and_rates(pg_url: str) -> None:  # pg_url: skips when unreachable
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_audit.py"),
            "--records",
            "3000",
            "--admin-url",
            PG_ADMIN_URL,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "machine: nproc" in out and "records: 3,000" in out
    for label in (
        "ratio plain COPY / chained write:",
        "ratio plain COPY / chain append:",
        "verify (server-side hashing):",
        "verify (Python, independent):",
    ):
        assert label in out, out
    line = next(x for x in out.splitlines() if x.startswith("apply_outcomes"))
    events = int(line.split(" s, ")[1].split(" events")[0].replace(",", ""))
    assert events > 3000  # one event per outcome, plus one per exception opened
