"""Partner API throughput: transaction status over 1M outcomes in PostgreSQL, against a bare endpoint.

    .venv/bin/python benchmarks/bench_api.py --transactions 1000000  # smoke: --transactions 2000 --duration 2

1. Creates a fresh PostgreSQL database, migrates it, and bulk-loads with ``COPY``: N ledger transactions
   (Adyen, EUR), N ledger outcomes (90% matched, 6% pending, 4% exceptions) and, for each matched one,
   its match group, settlement outcome and settlement line (so ``GET /v1/transactions/{id}`` returns
   real evidence). ``ANALYZE`` afterwards.
2. Serves, side by side, with ``uvicorn`` (one worker each, 127.0.0.1, access log off):
   * baseline: ``benchmarks/bare_api.py``, a bare FastAPI endpoint reading one transaction row;
   * candidate: ``partner_api.main:app``, the full stack: API key auth (SHA-256, constant-time), a
     Redis Lua token bucket per key (in-process when Redis is absent), OpenTelemetry spans for the
     request and its SQL (default in-memory exporter), Prometheus metrics, a JSON access log line,
     the ownership-filtered status query with its evidence.
3. Drives them in turn with ``wrk`` (``--connections`` 64, random transaction ids; an asyncio ``httpx``
   client when wrk is not installed) after a warm-up, in ``--rounds`` interleaved slices (so a drifting
   load on a shared machine hits every configuration alike), and prints requests/s, p50, p99, the
   ratio to the baseline, the CPU the API process used a request (and the per-core ratio, the figure
   that holds on a busy machine) and, from the per-core rate, how many cores and pods reach the
   6,500 requests/s weekend peak; also the same with 10% of traces sampled. This closed loop runs the
   servers at saturation: its latencies measure the queue of ``--connections`` requests, not the service.
4. Then drives each server in turn with an open loop (``open_loop.py``, the wrk2 model): the same
   ``--connections`` at one constant offered rate, by default the sizing's operating point (70% of the
   full stack's per-core rate just measured: a 1-vCPU pod at 70% CPU), latency counted from when each
   request was due (no coordinated omission); prints p50/p99/p99.9/max and the rate achieved, and says
   so when a server did not keep up with the offered rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from open_loop import OpenLoopResult, run_open_loop  # noqa: E402 - found through the path above

PEAK_RPS = 6500
GOAL_RATIO = 0.7
GOAL_P99_MS = 50.0
DEFAULT_ADMIN = os.environ.get(
    "RECON_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class Result:
    label: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    server_cpu_s: float
    db_cpu_s: float
    seconds: float

    @property
    def server_cores(self) -> float:
        return self.server_cpu_s / self.seconds

    @property
    def per_core_rps(self) -> float:
        return self.rps / self.server_cores if self.server_cores else float("nan")


# --------------------------------------------------------------------------- data


def tid(i: int) -> str:
    return f"tx-{i:08d}"


def _copy(cursor: object, table: str, columns: list[str], rows: Iterator[str]) -> None:
    buf = io.StringIO()
    for count, line in enumerate(rows, start=1):
        buf.write(line)
        if count % 200_000 == 0:
            buf.seek(0)
            cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buf)  # type: ignore[attr-defined]
            buf = io.StringIO()
    buf.seek(0)
    cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buf)  # type: ignore[attr-defined]


def load(url: str, n: int, seed: int = 7) -> dict[str, int]:
    """Bulk-load N transactions with their outcomes and evidence with COPY; returns row counts."""
    import psycopg2
    from sqlalchemy.engine import make_url

    from reconciliation_pipeline.store import db

    db.migrate(url)
    rng = random.Random(seed)
    statuses = [
        "matched" if r < 0.90 else "pending" if r < 0.96 else "exception"
        for r in (rng.random() for _ in range(n))
    ]
    amounts = [rng.randrange(100, 500_000) for _ in range(n)]
    sa = make_url(url)
    conn = psycopg2.connect(host=sa.host, port=sa.port or 5432, user=sa.username, dbname=sa.database)
    ts, day = "2026-03-02 10:00:00+00", "2026-03-02"
    with conn, conn.cursor() as cur:
        _copy(
            cur,
            "transactions",
            [
                "transaction_id",
                "event_id",
                "psp",
                "psp_reference",
                "kind",
                "amount_minor",
                "currency",
                "occurred_at",
                "brand",
                "business_date",
            ],
            (
                f"{tid(i)}\tev-{i}\tadyen\tPSP{i:010d}\tdeposit\t{amounts[i]}\tEUR\t{ts}\tcasino-a\t{day}\n"
                for i in range(n)
            ),
        )
        matched = [i for i in range(n) if statuses[i] == "matched"]
        _copy(
            cur,
            "match_groups",
            ["match_id", "rule_id", "business_date", "as_of_date"],
            (f"m-{i}\texact_ref\t{day}\t{day}\n" for i in matched),
        )
        cols = [
            "record_key",
            "record",
            "transaction_id",
            "psp",
            "source_file",
            "source_row",
            "status",
            "match_id",
            "rule_id",
            "exception_category",
            "business_date",
            "as_of_date",
            "updated_at",
        ]

        def outcomes() -> Iterator[str]:
            for i in range(n):
                st = statuses[i]
                m = f"m-{i}" if st == "matched" else "\\N"
                rule = "exact_ref" if st == "matched" else "\\N"
                cat = "missing_in_psp" if st == "exception" else "\\N"
                yield (
                    f"ledger:{tid(i)}\tledger\t{tid(i)}\tadyen\t\\N\t\\N\t{st}\t{m}\t{rule}\t{cat}"
                    f"\t{day}\t{day}\t{ts}\n"
                )
            for row, i in enumerate(matched, start=1):
                yield (
                    f"settlement:adyen:batch_{i // 50_000}.csv:{row}\tsettlement\t{tid(i)}\tadyen"
                    f"\tbatch_{i // 50_000}.csv\t{row}"
                    f"\tmatched\tm-{i}\texact_ref\t\\N\t{day}\t{day}\t{ts}\n"
                )

        _copy(cur, "outcomes", cols, outcomes())
        _copy(
            cur,
            "settlement_lines",
            [
                "record_key",
                "psp",
                "source_file",
                "source_row",
                "file_sha256",
                "batch_id",
                "record_type",
                "line_kind",
                "moves_player_money",
                "booking_date",
                "amount_minor",
                "currency",
            ],
            (
                f"settlement:adyen:batch_{i // 50_000}.csv:{row}\tadyen\tbatch_{i // 50_000}.csv\t{row}"
                f"\t{'0' * 64}\t{i // 50_000}"
                f"\tSettled\tcapture\tt\t{day}\t{amounts[i]}\tEUR\n"
                for row, i in enumerate(matched, start=1)
            ),
        )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ANALYZE")
        cur.execute("SELECT count(*) FROM outcomes")
        outcome_rows = int(cur.fetchone()[0])  # type: ignore[index]
    conn.close()
    return {"transactions": n, "outcomes": outcome_rows, "settlement_lines": len(matched)}


def reuse(url: str, n: int) -> dict[str, int] | None:
    """The row counts of a database :func:`load` filled with ``n`` transactions, else ``None``."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            try:
                got = conn.execute(
                    text(
                        "SELECT (SELECT count(*) FROM transactions), (SELECT count(*) FROM outcomes), "
                        "(SELECT count(*) FROM settlement_lines)"
                    )
                ).one()
            except Exception:
                return None
    finally:
        engine.dispose()
    if int(got[0]) != n:
        return None
    return {"transactions": n, "outcomes": int(got[1]), "settlement_lines": int(got[2])}


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds(database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving ``database`` (the server runs on this machine)."""
    import psycopg2

    out: dict[int, float] = {}
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
            )
            for (pid,) in cur.fetchall():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    out[int(pid)] = cpu_seconds(int(pid))
    finally:
        conn.close()
    return out


def db_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


@contextlib.contextmanager
def serve(target: str, env: dict[str, str], ready_path: str) -> Iterator[tuple[str, int]]:
    """uvicorn serving ``target``; yields once ``ready_path`` answers 200 (the app's stores are open)."""
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=str(ROOT),
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{target} exited:\n{log.read().decode(errors='replace')[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}{ready_path}", timeout=30).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target} did not start within 60 s")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


# --------------------------------------------------------------------------- load


_WRK_SCRIPT = """
local n = {n}
local prefix = "{prefix}"
local auth = "{auth}"
math.randomseed(os.time())
request = function()
  local path = string.format("%s%08d", prefix, math.random(0, n - 1))
  if auth ~= "" then
    return wrk.format("GET", path, {{["Authorization"] = auth}})
  end
  return wrk.format("GET", path)
end
"""


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(text)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(  # noqa: PLR0917
    url: str, prefix: str, n: int, auth: str, connections: int, seconds: float, threads: int
) -> tuple[float, float, float, int, int]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_WRK_SCRIPT.format(n=n, prefix=prefix, auth=auth))
        script = f.name
    try:
        done = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--latency",
                "--timeout",
                "10s",
                "-s",
                script,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(script)
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return rps, p50, p99, total, errors


def run_httpx(  # noqa: PLR0917
    url: str, prefix: str, n: int, auth: str, connections: int, seconds: float
) -> tuple[float, float, float, int, int]:
    """The fallback load generator: ``connections`` asyncio workers, each one request at a time."""
    import httpx

    latencies: list[float] = []
    errors = 0

    async def main() -> float:
        nonlocal errors
        headers = {"Authorization": auth} if auth else {}
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=url, limits=limits, headers=headers, timeout=10) as client:
            stop = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal errors
                rng = random.Random()
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    r = await client.get(f"{prefix}{rng.randrange(n):08d}")
                    latencies.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        errors += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            return time.perf_counter() - started

    elapsed = asyncio.run(main())
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return len(latencies) / elapsed, pick(0.5), pick(0.99), len(latencies), errors


@dataclass
class Target:
    label: str
    url: str
    pid: int
    prefix: str
    auth: str


def drive(targets: list[Target], n: int, args: argparse.Namespace) -> list[Result]:
    """Warm each target up, then drive them in turn, ``--rounds`` slices of ``--duration / rounds``
    seconds each (bare, sampled, full, bare, ...): on a shared machine whose load drifts, every
    configuration sees the same mix of quiet and busy moments. Requests, CPU and seconds add up over
    the slices; p50 is the median of the slices' p50, p99 the worst slice's p99."""

    def load_fn(t: Target, seconds: float) -> tuple[float, float, float, int, int]:
        if args.client == "wrk":
            return run_wrk(t.url, t.prefix, n, t.auth, args.connections, seconds, args.threads)
        return run_httpx(t.url, t.prefix, n, t.auth, args.connections, seconds)

    for t in targets:
        load_fn(t, args.warmup)
    slices: dict[str, list[tuple[float, float, int, int, float, float, float]]] = {
        t.label: [] for t in targets
    }
    for _ in range(args.rounds):
        for t in targets:
            cpu0, db0, t0 = cpu_seconds(t.pid), postgres_cpu_seconds(args.database), time.perf_counter()
            _, p50, p99, total, errors = load_fn(t, args.duration / args.rounds)
            seconds = time.perf_counter() - t0
            db_cpu = db_cpu_delta(db0, postgres_cpu_seconds(args.database))
            slices[t.label].append((p50, p99, total, errors, cpu_seconds(t.pid) - cpu0, db_cpu, seconds))
    out = []
    for t in targets:
        got = slices[t.label]
        seconds = sum(x[6] for x in got)
        total = sum(x[2] for x in got)
        p50s = sorted(x[0] for x in got)
        out.append(
            Result(
                t.label,
                total / seconds,
                p50s[len(p50s) // 2],
                max(x[1] for x in got),
                total,
                sum(x[3] for x in got),
                sum(x[4] for x in got),
                sum(x[5] for x in got),
                seconds,
            )
        )
    return out


@dataclass
class OpenLoop:
    label: str
    result: OpenLoopResult
    server_cpu_s: float

    @property
    def server_cores(self) -> float:
        return self.server_cpu_s / self.result.seconds


def drive_open_loop(targets: list[Target], n: int, rate: float, args: argparse.Namespace) -> list[OpenLoop]:
    """Each target in turn at the same constant offered ``rate`` (``open_loop.run_open_loop``:
    ``--connections`` keep-alive connections, latency counted from when each request was due)."""
    out = []
    for t in targets:
        host, port = t.url.removeprefix("http://").rsplit(":", 1)
        headers = {"Authorization": t.auth} if t.auth else {}

        def path(rng: random.Random, prefix: str = t.prefix) -> str:
            return f"{prefix}{rng.randrange(n):08d}"

        cpu0 = cpu_seconds(t.pid)
        result = run_open_loop(
            host,
            int(port),
            path,
            headers,
            rate=rate,
            seconds=args.open_duration,
            connections=args.connections,
        )
        out.append(OpenLoop(t.label, result, cpu_seconds(t.pid) - cpu0))
    return out


# --------------------------------------------------------------------------- main


def redis_url() -> str | None:
    url = os.environ.get("RECON_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return url
    except Exception:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per server")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="slices each server's measured time is cut into (interleaved)"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--client", choices=["wrk", "httpx"], default="wrk" if shutil.which("wrk") else "httpx"
    )
    parser.add_argument("--pg-admin-url", default=DEFAULT_ADMIN)
    parser.add_argument("--keep-db", action="store_true", help="keep the database (its name is printed)")
    parser.add_argument(
        "--database",
        help="use this database: loaded when it does not exist (and kept), reused as it is when it holds "
        "--transactions transactions (so later runs skip the load)",
    )
    parser.add_argument(
        "--sample-ratio",
        type=float,
        default=0.1,
        help="trace sampling of the third configuration (OTEL_TRACES_SAMPLER)",
    )
    parser.add_argument(
        "--open-load",
        type=float,
        default=0.7,
        help="open-loop offered rate as a fraction of the full stack's measured per-core capacity "
        "(the sizing's 70%% CPU a pod)",
    )
    parser.add_argument(
        "--open-rate", type=float, help="open-loop offered rate in requests/s (instead of --open-load)"
    )
    parser.add_argument(
        "--open-duration", type=float, help="seconds of open-loop load per server (default: --duration)"
    )
    args = parser.parse_args(argv)
    if args.open_duration is None:
        args.open_duration = args.duration

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(args.pg_admin_url, isolation_level="AUTOCOMMIT")
    # A named database is kept (and reused by later runs); a throwaway one is dropped at the end.
    keep = args.keep_db or args.database is not None
    name = args.database or f"recon_bench_api_{uuid.uuid4().hex[:8]}"
    args.database = name
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
        if exists is None:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    keep = keep or exists is not None
    url = make_url(args.pg_admin_url).set(database=name).render_as_string(hide_password=False)
    sandbox = (
        make_url(args.pg_admin_url).set(database=name).update_query_dict({"options": "-csearch_path=sandbox"})
    )
    work = Path(tempfile.mkdtemp(prefix="bench_api_"))
    try:
        t0 = time.perf_counter()
        counts = reuse(url, args.transactions) if exists is not None else None
        if counts is None:
            if exists is not None:
                raise SystemExit(
                    f"database {name} does not hold {args.transactions:,} transactions of this benchmark"
                )
            counts = load(url, args.transactions)
            eng = create_engine(url, isolation_level="AUTOCOMMIT")
            with eng.connect() as conn:
                conn.execute(text("CREATE SCHEMA sandbox"))
            eng.dispose()
        load_s = time.perf_counter() - t0
        sandbox_url = sandbox.render_as_string(hide_password=False)

        from partner_api import service
        from reconciliation_pipeline.store import db

        engine = db.make_engine(url)
        with db.session_scope(engine) as session:
            partner, _ = service.create_partner(session, name="bench-adyen", psp="adyen", brand=None)
            key = service.issue_key(
                session, partner=partner, environment="live", scopes="read", rate_per_s=1e9, burst=10**9
            ).key
        engine.dispose()
        rurl = redis_url()
        env = {
            "RECON_DATABASE_URL": url,
            "RECON_SANDBOX_DATABASE_URL": sandbox_url,
            "RECON_DATA_DIR": str(work / "data"),
            "RECON_LOG_LEVEL": "INFO",
            "RECON_OTEL_EXPORTER": "memory",
        }
        if rurl:
            env["RECON_REDIS_URL"] = rurl

        sampled_env = {
            **env,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(args.sample_ratio),
        }
        auth = f"Bearer {key}"
        status = "/v1/transactions/tx-"
        with (
            serve("bare_api:app", env, "/openapi.json") as (bare_url, bare_pid),
            serve("partner_api.main:app", sampled_env, "/v1/ready") as (sampled_url, sampled_pid),
            serve("partner_api.main:app", env, "/v1/ready") as (full_url, full_pid),
        ):
            targets = [
                Target("bare FastAPI one-row read", bare_url, bare_pid, "/bare/tx-", ""),
                Target(
                    f"partner API, {args.sample_ratio:.0%} of traces sampled",
                    sampled_url,
                    sampled_pid,
                    status,
                    auth,
                ),
                Target("partner API transaction status", full_url, full_pid, status, auth),
            ]
            bare, sampled, full = drive(targets, args.transactions, args)
            # the operating point of the sizing: a pod at --open-load of the full stack's per-core rate
            open_rate = args.open_rate or args.open_load * full.per_core_rps
            open_bare, open_sampled, open_full = drive_open_loop(targets, args.transactions, open_rate, args)
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"machine: nproc {os.cpu_count()}, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    print(
        f"data: {counts['transactions']:,} transactions, {counts['outcomes']:,} outcomes, "
        f"{counts['settlement_lines']:,} settlement lines "
        f"({'reused' if exists is not None else 'COPY'} {load_s:.1f} s; database {name}"
        f"{', kept' if keep else ''})"
    )
    print(
        f"saturation (closed loop: {args.client}, {args.connections} connections each sending its next "
        f"request when the last is answered), {args.duration:.0f} s per server in "
        f"{args.rounds} interleaved slices after {args.warmup:.0f} s warm-up; "
        f"rate limiter {'redis' if rurl else 'in-process'}"
    )
    for r in (bare, full, sampled):
        print(
            f"{r.label:<42} {r.rps:9.1f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  "
            f"errors {r.errors}  API process {r.server_cores:.2f} cores "
            f"({r.per_core_rps:.0f} req/s per core, {1000 / r.per_core_rps:.2f} ms CPU a request)  "
            f"PostgreSQL {r.db_cpu_s / r.seconds:.2f} cores"
        )
    ratio = full.rps / bare.rps if bare.rps else float("nan")
    print(f"ratio full stack / bare endpoint: {ratio:.2f}x (goal >= {GOAL_RATIO}x)")
    core_full = full.per_core_rps / bare.per_core_rps
    core_sampled = sampled.per_core_rps / bare.per_core_rps
    print(
        f"per-core ratio (API CPU a request, bare / full stack): {core_full:.2f}x, "
        f"{args.sample_ratio:.0%} sampled: {core_sampled:.2f}x (what holds on a shared machine)"
    )
    print(
        f"p99 at {args.connections} connections, closed loop at saturation: {full.p99_ms:.1f} ms "
        f"(bare {bare.p99_ms:.1f} ms; a queue of {args.connections} requests on one worker, "
        f"latency = connections / throughput)"
    )
    print(
        f"ratio with {args.sample_ratio:.0%} of traces sampled / bare: {sampled.rps / bare.rps:.2f}x, "
        f"p99 {sampled.p99_ms:.1f} ms"
    )
    api_cores = PEAK_RPS / full.per_core_rps if full.per_core_rps else float("nan")
    db_cores = PEAK_RPS * (full.db_cpu_s / max(full.requests, 1))
    pods = math.ceil(api_cores / 0.7) if math.isfinite(api_cores) else -1
    print(
        f"weekend peak {PEAK_RPS} req/s: {api_cores:.1f} API cores at 100% ({pods} pods of 1 vCPU / "
        f"1 uvicorn worker at 70% CPU), plus {db_cores:.1f} PostgreSQL cores"
    )
    per_core_sampled = sampled.per_core_rps
    print(
        f"  with {args.sample_ratio:.0%} of traces sampled: {PEAK_RPS / per_core_sampled:.1f} API cores "
        f"({math.ceil(PEAK_RPS / per_core_sampled / 0.7)} pods)"
    )
    how = (
        f"--open-rate {args.open_rate:g}"
        if args.open_rate
        else f"{args.open_load:.0%} of the full stack's {full.per_core_rps:.0f} req/s per core: a 1-vCPU pod "
        f"at {args.open_load:.0%} CPU"
    )
    print(
        f"open loop (constant rate, latency from when each request was due: no coordinated omission): "
        f"{open_rate:.1f} req/s offered ({how}), {args.connections} connections, "
        f"{args.open_duration:.0f} s per server"
    )
    for o in (open_bare, open_full, open_sampled):
        res = o.result
        print(
            f"  open loop, {o.label:<40} achieved {res.achieved_rps:7.1f} req/s  p50 {res.p50_ms:7.2f} ms  "
            f"p99 {res.p99_ms:7.2f} ms  p99.9 {res.p999_ms:7.2f} ms  max {res.max_ms:7.2f} ms  "
            f"errors {res.errors - res.unanswered}  API process {o.server_cores:.2f} cores  "
            + (
                "kept up"
                if res.kept_up
                else f"DID NOT KEEP UP (got {res.achieved_rps / res.offered_rps:.1%} of the rate offered; "
                f"up to {res.max_queued} requests waited for a free connection; {res.unanswered} of "
                f"{res.scheduled} unanswered at the end)"
            )
            + f"  (generator send lag p99 {res.send_lag_p99_ms:.1f} ms)"
        )
    verdict = "met" if open_full.result.kept_up and open_full.result.p99_ms < GOAL_P99_MS else "not met"
    print(
        f"p99 at {args.connections} connections, open loop at {open_rate:.0f} req/s: "
        f"{open_full.result.p99_ms:.1f} ms (goal < {GOAL_P99_MS:.0f} ms: {verdict}; bare "
        f"{open_bare.result.p99_ms:.1f} ms, {args.sample_ratio:.0%} sampled "
        f"{open_sampled.result.p99_ms:.1f} ms)"
    )

    def open_json(o: OpenLoop) -> dict[str, object]:
        fields = {k: v for k, v in o.result.__dict__.items() if k != "latencies_ms"}
        return {**fields, "kept_up": o.result.kept_up, "server_cpu_s": o.server_cpu_s}

    print(
        "json:",
        json.dumps(
            {
                "ratio": ratio,
                "bare": bare.__dict__,
                "full": full.__dict__,
                "sampled": sampled.__dict__,
                "open_loop": {
                    "offered_rps": open_rate,
                    "bare": open_json(open_bare),
                    "full": open_json(open_full),
                    "sampled": open_json(open_sampled),
                },
            },
            default=str,
        ),
    )
    failed = full.errors > 0 or bare.errors > 0 or sampled.errors > 0
    # a non-2xx answer or a broken connection in the open loop is a failure; requests still unanswered
    # when it stopped are a measurement (the server did not keep up), reported above
    failed = failed or any(
        o.result.errors > o.result.unanswered for o in (open_bare, open_full, open_sampled)
    )
    if failed:
        print("ERROR: some requests failed (non-2xx or socket errors)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
