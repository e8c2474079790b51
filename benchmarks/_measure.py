"""Run a callable in a fresh subprocess and report its wall time, CPU time and the process's peak RSS.

Benchmarks compare a candidate with a baseline measured the same way in the same run, so the ratio
is what matters; absolute numbers depend on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

_RUNNER = """
import importlib, json, resource, sys, time
module, func, arg = sys.argv[1], sys.argv[2], sys.argv[3]
fn = getattr(importlib.import_module(module), func)
fn(arg, warmup=True)
started, cpu_started = time.perf_counter(), time.process_time()
result = fn(arg, warmup=False)
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "peak_mib": peak_kib / 1024, "result": result}))
"""


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_mib: float
    result: object
    #: CPU time of the process (all threads): steadier than wall time on a shared machine.
    cpu_seconds: float = 0.0


def measure(module: str, func: str, arg: str, *, repeat: int = 3) -> Measurement:
    """Best wall time (and its peak RSS) of ``module.func(arg)`` over ``repeat`` fresh processes."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([here, os.path.dirname(here), os.environ.get("PYTHONPATH", "")]),
    }
    best: Measurement | None = None
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, "-c", _RUNNER, module, func, arg],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{module}.{func} failed:\n{done.stderr}")
        data = json.loads(done.stdout.strip().splitlines()[-1])
        m = Measurement(data["seconds"], data["peak_mib"], data["result"], data["cpu_seconds"])
        if best is None or m.seconds < best.seconds:
            best = m
    assert best is not None
    return best
