"""The audit trail's cost: writing a business date's outcomes with their hash-chained audit events,
against writing the very same rows with plain ``COPY``, and verifying the chain, on PostgreSQL.

* candidate: ``service.apply_outcomes`` of N outcome records in one transaction, what the pipeline's
  publish step does (compare with stored outcomes, write outcomes, match groups and exceptions, one
  audit event per written outcome and per opened exception, hashed onto the chain under its lock);
* baseline: the rows the candidate left in its schema (every table it wrote, audit events with their
  hashes included) dumped beforehand, then ``COPY ... FROM STDIN`` into a fresh schema with the same
  tables, indexes and triggers, in one transaction: writing the same rows without the chain;
* the chain alone: ``audit.append_event_rows`` of N events (the per-event API) and
  ``audit.append_event_frame`` of the same events as an event frame (the publish step's bulk path),
  each against ``COPY`` of the same event rows;
* verification: ``verify_chain`` recomputing every hash, server-side (PostgreSQL hashes) and in Python.

Ratios are baseline time / candidate time (1.0 = the chain costs nothing; goal >= 0.8); rates are
events per second of wall time. Each measurement runs once (``--repeat`` for best of several).

    .venv/bin/python benchmarks/bench_audit.py --records 1000000     # smoke: --records 2000
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import io
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciliation_pipeline.frames import OUTCOME_SCHEMA, conform  # noqa: E402
from reconciliation_pipeline.store import audit, db, service  # noqa: E402

DEFAULT_ADMIN = os.environ.get(
    "RECON_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
DAY = dt.date(2026, 3, 2)
TABLES = ("match_groups", "outcomes", "exceptions", "audit_events")
CHAIN = {"run_id": "bench", "asset": "outcomes", "partition": DAY.isoformat(), "code_version": "bench"}


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"nproc {len(os.sched_getaffinity(0))}, {cpu}, load average {os.getloadavg()[0]:.2f}"


def commit() -> str:
    done = subprocess.run(
        ["git", "log", "-1", "--format=%h"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def business_date(n: int, seed: int = 1) -> pl.DataFrame:
    """N outcome records of one business date, in ledger/settlement pairs: 96% of pairs matched (one match
    id each), the rest split: the ledger record pending or missing in PSP, the settlement record missing in
    the ledger (so about 2% of records open an exception)."""
    rng = np.random.default_rng(seed)
    pairs = (n + 1) // 2
    kind = rng.choice(3, size=pairs, p=[0.96, 0.02, 0.02])  # 0 matched, 1 pending, 2 missing in PSP
    psp = rng.choice(["adyen", "stripe", "paypal"], size=pairs)
    p = pl.DataFrame({"pair": np.arange(pairs), "kind": kind, "psp": psp})
    tx = pl.format("tx-{}", pl.col("pair").cast(pl.String).str.pad_start(9, "0"))
    matched = pl.col("kind") == 0
    ledger = p.select(
        record=pl.lit("ledger"),
        transaction_id=tx,
        psp=pl.col("psp"),
        source_file=pl.lit(None, pl.String),
        source_row=pl.lit(None, pl.Int64),
        status=pl.when(matched)
        .then(pl.lit("matched"))
        .when(pl.col("kind") == 1)
        .then(pl.lit("pending"))
        .otherwise(pl.lit("exception")),
        match_id=pl.when(matched).then(pl.format("m-{}", "pair")),
        rule_id=pl.when(matched).then(pl.lit("exact_ref")),
        exception_category=pl.when(pl.col("kind") == 2).then(pl.lit("missing_in_psp")),
    )
    settlement = p.select(
        record=pl.lit("settlement"),
        transaction_id=pl.when(matched).then(tx),
        psp=pl.col("psp"),
        source_file=pl.format("settlement_{}.csv", "psp"),
        source_row=pl.col("pair").cast(pl.Int64) + 1,
        status=pl.when(matched).then(pl.lit("matched")).otherwise(pl.lit("exception")),
        match_id=pl.when(matched).then(pl.format("m-{}", "pair")),
        rule_id=pl.when(matched).then(pl.lit("exact_ref")),
        exception_category=pl.when(~matched).then(pl.lit("missing_in_ledger")),
    )
    both = pl.concat([ledger, settlement]).with_columns(business_date=pl.lit(DAY))
    return conform(both.head(n), OUTCOME_SCHEMA)


@contextmanager
def database(admin_url: str, keep: str | None = None, *, reuse: bool = False) -> Iterator[str]:
    """A fresh database, dropped at the end; or the database ``keep``, made afresh and kept (``reuse``:
    the one an earlier run kept, as it is)."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = keep or f"bench_audit_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
        if reuse:
            if exists is None:
                raise SystemExit(f"--verify-only: no database {name!r}; run once with --keep-db {name} first")
        else:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        if keep is None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def schema_engine(url: str, schema: str) -> Engine:
    plain = create_engine(url, isolation_level="AUTOCOMMIT")
    with plain.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    plain.dispose()
    engine = db.make_engine(make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}))
    db.migrate(engine)
    return engine


def dump(engine: Engine, tables: tuple[str, ...]) -> dict[str, str]:
    """Every row of ``tables`` in COPY text format (outside any timing)."""
    out: dict[str, str] = {}
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        for table in tables:
            buf = io.StringIO()
            cursor.copy_expert(f'COPY "{table}" TO STDOUT', buf)
            out[table] = buf.getvalue()
        cursor.close()
    return out


def copy_in(engine: Engine, data: dict[str, str], cpu: Cpu | None = None) -> None:
    with engine.begin() as conn:
        if cpu is not None:
            cpu.start(conn)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        for table, rows in data.items():
            cursor.copy_expert(f'COPY "{table}" FROM STDIN', io.StringIO(rows))
        cursor.close()
        if cpu is not None:
            cpu.stop()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


_TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) a server process has used so far (the server runs on this machine;
    0.0 when its /proc entry cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class Cpu:
    """CPU seconds of this process and of one server backend between :meth:`start` and :meth:`stop`
    (under load, wall time says little; CPU time is what the work costs)."""

    def __init__(self) -> None:
        self.client = self.server = 0.0
        self._pid = 0

    def start(self, conn: Any) -> None:
        self._pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        self._c0, self._s0 = time.process_time(), backend_cpu(self._pid)

    def stop(self) -> None:
        self.client = time.process_time() - self._c0
        self.server = backend_cpu(self._pid) - self._s0

    def __str__(self) -> str:
        total = self.client + self.server
        return f"CPU {total:.2f} s (Python {self.client:.2f} s + server backend {self.server:.2f} s)"


class ServerCpu:
    """CPU seconds of every server process working for database ``dbname`` (its backends, and the parallel
    workers they start) between :meth:`start` and :meth:`stop`: /proc is sampled every 20 ms, since parallel
    workers exit when their query ends (the last few ms of each are missed)."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.seconds = 0.0
        self.sampling = 0.0  # CPU seconds the sampling thread used (in this process)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _ours(self) -> dict[int, float]:
        found: dict[int, float] = {}
        leaders: set[int] = set()
        workers: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    title = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if not title.startswith("postgres: "):
                continue
            pid = int(entry)
            if "parallel worker for PID " in title:  # "postgres: [cluster: ]parallel worker for PID N"
                workers[pid] = int(title.split("parallel worker for PID ", 1)[1].split()[0])
            elif f" {self.dbname} " in title:
                leaders.add(pid)
        for pid in leaders | {w for w, leader in workers.items() if leader in leaders}:
            found[pid] = backend_cpu(pid)
        return found

    def _run(self) -> None:
        started = time.thread_time()
        while not self._stop.wait(0.02):
            for pid, cpu in self._ours().items():
                self._first.setdefault(pid, self._base.get(pid, 0.0))
                self._last[pid] = max(cpu, self._last.get(pid, 0.0))
        self.sampling = time.thread_time() - started

    def start(self) -> None:
        self._base = self._ours()
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        for pid, cpu in self._ours().items():
            self._first.setdefault(pid, self._base.get(pid, 0.0))
            self._last[pid] = max(cpu, self._last.get(pid, 0.0))
        self.seconds = sum(self._last[p] - self._first[p] for p in self._last)


def verify_measured(engine: Engine, dbname: str, method: str, events: int) -> tuple[float, float, float]:
    """``verify_chain(method)``: wall seconds, client CPU seconds (this process, all threads but the
    sampler's) and server CPU seconds (every backend and parallel worker of the database)."""
    server = ServerCpu(dbname)
    server.start()
    c0 = time.process_time()
    t, result = timed(lambda: audit.verify_chain(engine, method=method))
    server.stop()
    client = time.process_time() - c0 - server.sampling
    assert result.ok and result.count == events, result.reason
    return t, client, server.seconds


def count_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one())


def events_for(frame: pl.DataFrame) -> list[audit.AuditEventIn]:
    """One event per record, shaped like ``outcome.written`` (for the chain-alone measurement)."""
    chain = audit.normalise_chain(CHAIN)
    now = dt.datetime.now(dt.UTC)
    return [
        audit.AuditEventIn(
            actor="bench",
            action="outcome.written",
            entity_type="outcome",
            entity_id=f"{rec}:{tx or file}:{row}",
            inputs={"previous": None, "as_of": DAY.isoformat()},
            chain=chain,
            outcome={
                "status": st,
                "match_id": m,
                "rule_id": r,
                "exception_category": c,
                "transaction_id": tx,
            },
            occurred_at=now,
        )
        for rec, tx, file, row, st, m, r, c in frame.select(
            "record",
            "transaction_id",
            "source_file",
            "source_row",
            "status",
            "match_id",
            "rule_id",
            "exception_category",
        ).iter_rows()
    ]


def verification(
    engine: Engine, dbname: str, events: int, results: dict[str, float], *, skip_python: bool
) -> None:
    """``verify_chain`` of the whole chain, server-side and in Python: rate, and CPU per event (this
    process + every server process of the database, parallel workers included)."""
    methods = [("server", "verify (server-side hashing)")]
    if not skip_python:
        methods.append(("python", "verify (Python, independent)"))
    for method, label in methods:
        t, client, server = verify_measured(engine, dbname, method, events)
        results[f"verify_{method}_rate"] = events / t
        results[f"verify_{method}_cpu_us"] = (client + server) / events * 1e6
        goal = " (goal >= 1,000,000)" if method == "server" else ""
        print(
            f"{label}: {t:.2f} s, {events / t:,.0f} events/s{goal}; CPU {client + server:.2f} s (Python "
            f"{client:.2f} s + server {server:.2f} s), {(client + server) / events * 1e6:.2f} us/event; "
            f"load average {os.getloadavg()[0]:.2f}"
        )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN)
    parser.add_argument("--skip-python-verify", action="store_true")
    parser.add_argument(
        "--keep-db",
        metavar="NAME",
        help="write into database NAME (made afresh) and keep it, for --verify-only runs later",
    )
    parser.add_argument(
        "--verify-only",
        action="store_true",
        help="with --keep-db NAME: only verify the chain an earlier --keep-db run left there",
    )
    args = parser.parse_args(argv)
    if args.verify_only and not args.keep_db:
        parser.error("--verify-only needs --keep-db NAME")
    n = args.records
    print(f"machine: {machine()}")
    records = "" if args.verify_only else f"  records: {n:,}"
    print(f"commit: {commit()}  date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC{records}")
    results: dict[str, float] = {}
    if args.verify_only:
        with database(args.admin_url, args.keep_db, reuse=True) as url:
            cand = db.make_engine(make_url(url).update_query_dict({"options": "-csearch_path=cand_0"}))
            events = count_events(cand)
            print(f"verification only, of the chain kept in database {args.keep_db}: {events:,} events")
            results["events"] = events
            verification(cand, args.keep_db, events, results, skip_python=args.skip_python_verify)
            cand.dispose()
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        return results
    frame = business_date(n)
    events_in = events_for(frame)
    events_df = audit.events_frame(events_in)
    with database(args.admin_url, args.keep_db) as url:
        best_c = best_b = best_ec = best_eb = float("inf")
        events = 0
        cpu_c, cpu_b, cpu_ec, cpu_eb, cpu_fc, cpu_fb = Cpu(), Cpu(), Cpu(), Cpu(), Cpu(), Cpu()
        best_fc = best_fb = float("inf")
        for r in range(args.repeat):
            cand = schema_engine(url, f"cand_{r}")

            def publish(engine: Engine = cand) -> service.ApplyResult:
                with db.session_scope(engine) as s:
                    cpu_c.start(s.connection())
                    done = service.apply_outcomes(s, frame, as_of=DAY, chain=CHAIN, actor="bench")
                    cpu_c.stop()
                    return done

            t_c, _ = timed(publish)
            events = count_events(cand)
            rows = dump(cand, TABLES)
            base = schema_engine(url, f"base_{r}")
            t_b, _ = timed(functools.partial(copy_in, base, rows, cpu_b))
            assert count_events(base) == events
            print(f"  run {r + 1}: publish {t_c:.2f} s, {cpu_c}; plain COPY {t_b:.2f} s, {cpu_b}")
            best_c, best_b = min(best_c, t_c), min(best_b, t_b)

            def against_copy(  # noqa: PLR0917 - a local helper of this loop
                run: int,
                label: str,
                schema: str,
                write: Callable[[Session], object],
                cpu_w: Any,
                cpu_copy: Any,
            ) -> tuple[float, float]:
                """``write`` into a fresh schema, then plain ``COPY`` of the event rows it stored."""
                chained = schema_engine(url, f"{schema}_{run}")

                def append() -> None:
                    with db.session_scope(chained) as s:
                        cpu_w.start(s.connection())
                        write(s)
                        cpu_w.stop()

                t_w, _ = timed(append)
                rows_w = dump(chained, ("audit_events",))
                plain = schema_engine(url, f"{schema}base_{run}")
                t_copy, _ = timed(functools.partial(copy_in, plain, rows_w, cpu_copy))
                print(f"  run {run + 1}: {label} {t_w:.2f} s, {cpu_w}; plain COPY {t_copy:.2f} s, {cpu_copy}")
                chained.dispose()
                plain.dispose()
                return t_w, t_copy

            t_ec, t_eb = against_copy(
                r, "chain append", "chain", lambda s: audit.append_event_rows(s, events_in), cpu_ec, cpu_eb
            )
            best_ec, best_eb = min(best_ec, t_ec), min(best_eb, t_eb)
            t_fc, t_fb = against_copy(
                r, "frame append", "frame", lambda s: audit.append_event_frame(s, events_df), cpu_fc, cpu_fb
            )
            best_fc, best_fb = min(best_fc, t_fc), min(best_fb, t_fb)
            base.dispose()
        results["publish_s"], results["copy_s"] = best_c, best_b
        results["events"] = events
        print(
            f"apply_outcomes (outcomes + match groups + exceptions + audit chain): {best_c:.2f} s, "
            f"{events:,} events, {events / best_c:,.0f} events/s, {n / best_c:,.0f} records/s"
        )
        print(
            f"plain COPY of the same rows (all four tables): {best_b:.2f} s, {events / best_b:,.0f} events/s"
        )
        results["ratio"] = best_b / best_c
        print(f"ratio plain COPY / chained write: {results['ratio']:.2f}x (goal >= 0.8x)")
        results["cpu_ratio"] = (cpu_b.client + cpu_b.server) / max(cpu_c.client + cpu_c.server, 1e-9)
        print(f"  CPU-time ratio (last run, Python + server backend): {results['cpu_ratio']:.2f}x")
        print(f"append_event_rows alone: {best_ec:.2f} s, {n / best_ec:,.0f} events/s")
        print(f"plain COPY of the same event rows: {best_eb:.2f} s, {n / best_eb:,.0f} events/s")
        results["chain_ratio"] = best_eb / best_ec
        print(f"ratio plain COPY / chain append: {results['chain_ratio']:.2f}x")
        results["chain_cpu_ratio"] = (cpu_eb.client + cpu_eb.server) / max(
            cpu_ec.client + cpu_ec.server, 1e-9
        )
        print(f"  CPU-time ratio (last run, Python + server backend): {results['chain_cpu_ratio']:.2f}x")
        print(
            f"append_event_frame alone (the publish step's bulk path): {best_fc:.2f} s, "
            f"{n / best_fc:,.0f} events/s"
        )
        print(f"plain COPY of the same event rows: {best_fb:.2f} s, {n / best_fb:,.0f} events/s")
        results["frame_ratio"] = best_fb / best_fc
        print(f"ratio plain COPY / frame append: {results['frame_ratio']:.2f}x")
        results["frame_cpu_ratio"] = (cpu_fb.client + cpu_fb.server) / max(
            cpu_fc.client + cpu_fc.server, 1e-9
        )
        print(f"  CPU-time ratio (last run, Python + server backend): {results['frame_cpu_ratio']:.2f}x")
        verification(cand, make_url(url).database or "", events, results, skip_python=args.skip_python_verify)
        cand.dispose()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return results


if __name__ == "__main__":
    main()
