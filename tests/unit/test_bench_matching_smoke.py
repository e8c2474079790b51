"""The matching benchmark runs at a smoke size: it must work and print its ratios (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_matching_benchmark_prints_its_ratios() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_matching.py"),
            "--records",
            "2000",
            "--repeat",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "ratio reconcile / polars key join:" in out
    assert "ratio duckdb / polars key join:" in out
    assert "(Polars = DuckDB)" in out
    for label in ("baseline polars key join", "duckdb SQL key join", "matching.reconcile"):
        line = next(line for line in out.splitlines() if line.startswith(label))
        assert "peak" in line and "M records/s" in line, line
    assert "goals:" in out
    assert "machine: nproc" in out
