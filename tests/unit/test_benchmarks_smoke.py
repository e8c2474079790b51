"""Benchmarks run at a smoke size: they must work and print their ratio (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_adyen_parse_benchmark_prints_a_ratio() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_adyen_parse.py"),
            "--rows",
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
    assert "ratio parse / read_csv:" in done.stdout
    assert "peak" in done.stdout
