"""The partner API benchmark at a smoke size: it loads PostgreSQL, serves both apps with uvicorn, drives
them and prints its figures (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def _bench_databases(pg_url: str) -> set[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE 'recon_bench_api_%'")
            )
            return {str(row[0]) for row in rows}
    finally:
        engine.dispose()


def test_api_benchmark_prints_its_ratio_and_sizing(pg_url: str) -> None:
    before = _bench_databases(pg_url)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_api.py"),
            "--transactions",
            "2000",
            "--duration",
            "2",
            "--warmup",
            "1",
            "--connections",
            "8",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "ratio full stack / bare endpoint:" in out
    assert "weekend peak 6500 req/s:" in out
    assert "2,000 transactions" in out
    for label in ("bare FastAPI one-row read", "partner API transaction status"):
        line = next(line for line in out.splitlines() if line.startswith(label))
        assert "req/s" in line and "p99" in line and "errors 0" in line, line
    # the open loop: every configuration at one constant offered rate, with the rate it achieved
    assert "open loop (constant rate" in out
    for label in ("bare FastAPI one-row read", "partner API transaction status"):
        line = next(line for line in out.splitlines() if line.startswith(f"  open loop, {label}"))
        assert "achieved" in line and "p99" in line and "max" in line and "errors 0" in line, line
    assert "open loop at" in out and "goal < 50 ms" in out
    # its throwaway database is dropped (only a database named with --database is kept for reuse)
    assert _bench_databases(pg_url) == before
