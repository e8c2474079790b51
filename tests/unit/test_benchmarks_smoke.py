"""Benchmarks run at a smoke size: they must work and print their ratios (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_adyen_parse_benchmark_prints_a_ratio() -> None:
    out = run_benchmark("bench_adyen_parse.py", "--rows", "2000", "--repeat", "1")
    assert "ratio parse / read_csv:" in out
    assert "peak" in out


def test_matching_benchmark_prints_its_ratios() -> None:
    out = run_benchmark("bench_matching.py", "--records", "2000", "--repeat", "1")
    assert "ratio reconcile / polars key join:" in out
    assert "ratio duckdb / polars key join:" in out
    assert "(Polars = DuckDB)" in out
    for label in ("baseline polars key join", "duckdb SQL key join", "matching.reconcile"):
        line = next(line for line in out.splitlines() if line.startswith(label))
        assert "peak" in line and "M records/s" in line, line
    assert "goals:" in out
    assert "machine: nproc" in out
