"""Reconcile N ledger records against ~N settlement lines and compare with a bare key join.

    .venv/bin/python benchmarks/bench_matching.py [--records 10000000] [--repeat 1]

Generates synthetic but realistic inputs column-wise (numpy + Polars, no per-row Python) and writes
them to Parquet once (``--keep DIR`` keeps them and reuses them on the next run); then, each in a fresh
process reading the same columns of those files (the ones the engine reads, ``LEDGER_COLUMNS`` and
``SETTLEMENT_COLUMNS``):

* baseline: a bare Polars join of ledger and settlement on (psp, reference, signed amount, currency)
  plus the two anti-joins (unmatched ledger, unmatched settlement), signed amount computed here too,
* DuckDB: the same join and two anti-joins in SQL,
* DuckDB: the engine's exact_ref rule in SQL (``sql/exact_ref.sql``); its counts must equal the engine's,
* candidate: ``matching.reconcile(ledger, lines, as_of=<last booking date>, lag_days=3)``, every rule,
  its outcomes streamed to Parquet and its evidence written,
* the same candidate with the whole outcome frame made in memory (``ReconResult.outcomes``).

Prints wall time, CPU time, peak RSS, input records per second and the ratio candidate / baseline, with
the goals (whole rule set within 2x of the baseline, >= 1M input records/s, peak memory < 4 GiB).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _measure import _RUNNER, Measurement

from reconciliation_pipeline.frames import (
    KIND_SIGN,
    LEDGER_SCHEMA,
    SETTLEMENT_LINE_SCHEMA,
    conform,
    plain_strings,
)
from reconciliation_pipeline.matching.engine import LEDGER_COLUMNS, SETTLEMENT_COLUMNS

LAG_DAYS = 3
DAYS = 30
FIRST_DAY = dt.date(2026, 3, 1)
PSPS = ("adyen", "stripe", "paypal")
PSP_WEIGHTS = (0.5, 0.3, 0.2)
CURRENCIES = ("EUR", "GBP", "SEK", "JPY", "KWD")
CCY_WEIGHTS = (0.5, 0.2, 0.15, 0.1, 0.05)
#: Typical amount per currency in minor units (JPY has 0 minor digits, KWD 3).
CCY_SCALE = {"EUR": 5_000, "GBP": 4_000, "SEK": 50_000, "JPY": 7_000, "KWD": 2_000}
LEDGER_KINDS = ("deposit", "withdrawal", "refund", "chargeback")
KIND_WEIGHTS = (0.84, 0.11, 0.04, 0.01)
KIND_TO_LINE = {"deposit": "capture", "withdrawal": "payout_to_player", "refund": "refund"}
KIND_TO_LINE["chargeback"] = "chargeback"
RECORD_TYPE = {
    "adyen": {"capture": "Settled", "refund": "Refunded", "chargeback": "Chargeback"},
    "stripe": {"capture": "charge", "refund": "refund", "chargeback": "dispute"},
    "paypal": {"capture": "T0006", "refund": "T1107", "chargeback": "T1106"},
}
RECORD_TYPE["adyen"] |= {"payout_to_player": "PaidOut", "fee": "Fee"}
RECORD_TYPE["stripe"] |= {"payout_to_player": "transfer", "fee": "fee"}
RECORD_TYPE["paypal"] |= {"payout_to_player": "T0002", "fee": "T0108"}
REF_PREFIX = {"adyen": "88", "stripe": "ch_3Q", "paypal": "9PP"}
#: Share of each kind of mess, per ledger record.
MESS = 0.01
NULL_REF = 0.02
GOAL_RATIO = 2.0
GOAL_RATE = 1_000_000
GOAL_PEAK_MIB = 4096


# ---------------------------------------------------------------------------------------------- data


def _pick(rng: np.random.Generator, n: int, weights: tuple[float, ...]) -> np.ndarray:
    return rng.choice(len(weights), size=n, p=np.asarray(weights) / sum(weights)).astype(np.uint8)


def _decode(codes: np.ndarray, names: tuple[str, ...]) -> pl.Series:
    return pl.Series(codes).replace_strict(dict(enumerate(names)), return_dtype=pl.String)


def generate(out: Path, records: int, seed: int = 20260301) -> dict[str, object]:
    """Write ``ledger.parquet`` and ``lines.parquet`` under ``out``; return what was generated."""
    rng = np.random.default_rng(seed)
    n = records
    ids = np.arange(n, dtype=np.int64)
    ccy_codes = _pick(rng, n, CCY_WEIGHTS)
    kind_codes = _pick(rng, n, KIND_WEIGHTS)
    scale = np.asarray([CCY_SCALE[c] for c in CURRENCIES], dtype=np.float64)[ccy_codes]
    amount = np.maximum(1, (rng.lognormal(0.0, 0.9, n) * scale).astype(np.int64))
    day = rng.integers(0, DAYS, n, dtype=np.int64)
    second = rng.integers(0, 86_400, n, dtype=np.int64)
    lag = rng.integers(0, LAG_DAYS + 1, n, dtype=np.int64)
    # Refunds and chargebacks point at an earlier record, mostly a deposit; ~1% at an unknown one.
    orig = (ids * rng.uniform(0.0, 1.0, n)).astype(np.int64)
    fate = rng.uniform(0.0, 1.0, n)

    frame = pl.DataFrame(
        {
            "i": ids,
            "psp": _decode(_pick(rng, n, PSP_WEIGHTS), PSPS),
            "kind": _decode(kind_codes, LEDGER_KINDS),
            "currency": _decode(ccy_codes, CURRENCIES),
            "amount_minor": amount,
            "day": day,
            "second": second,
            "lag": lag,
            "orig": orig,
            "fate": fate,
            "player": rng.integers(0, max(1, n // 20), n, dtype=np.int64),
            "brand": _decode(_pick(rng, n, (0.6, 0.3, 0.1)), ("royalspin", "nordbet", "lucky7")),
            "jurisdiction": _decode(_pick(rng, n, (0.4, 0.3, 0.2, 0.1)), ("MT", "SE", "GB", "DE")),
        }
    )
    ref = pl.concat_str(
        [
            pl.col("psp").replace_strict(REF_PREFIX, return_dtype=pl.String),
            pl.col("i").cast(pl.String).str.zfill(14),
        ]
    )
    tx = pl.concat_str([pl.lit("tx-"), pl.col("i").cast(pl.String)])
    business_date = pl.lit(FIRST_DAY) + pl.duration(days=pl.col("day"))
    adjustment = pl.col("kind").is_in(["refund", "chargeback"])
    # fate bands: [0, 1%) missing in PSP, [1%, 2%) amount mismatch, [2%, 3%) duplicate settlement,
    # [3%, 4%) duplicate booking, [4%, 4% + NULL_REF) reference not booked, [6%, 7%) unknown original.
    frame = frame.with_columns(
        transaction_id=tx,
        true_ref=ref,
        business_date=business_date,
        occurred_at=(business_date.cast(pl.Datetime("us", "UTC")) + pl.duration(seconds=pl.col("second"))),
        original_transaction_id=pl.when(adjustment & pl.col("fate").is_between(0.06, 0.07, closed="left"))
        .then(pl.concat_str([pl.lit("tx-unknown-"), pl.col("i").cast(pl.String)]))
        .when(adjustment)
        .then(pl.concat_str([pl.lit("tx-"), pl.col("orig").cast(pl.String)]))
        .otherwise(pl.lit(None, pl.String)),
        signed=pl.col("amount_minor") * pl.col("kind").replace_strict(KIND_SIGN, return_dtype=pl.Int64),
    )

    # ---- ledger: every record, plus duplicate bookings of ~1%, with ~2% of references not booked.
    dup_booking = frame.filter(pl.col("fate").is_between(0.03, 0.04, closed="left")).with_columns(
        transaction_id=pl.concat_str([pl.col("transaction_id"), pl.lit("-dup")]),
        occurred_at=pl.col("occurred_at") + pl.duration(minutes=7),
    )
    ledger = pl.concat([frame, dup_booking]).with_columns(
        event_id=pl.concat_str([pl.lit("ev-"), pl.col("transaction_id")]),
        psp_reference=pl.when(pl.col("fate").is_between(0.04, 0.04 + NULL_REF, closed="left"))
        .then(pl.lit(None, pl.String))
        .otherwise(pl.col("true_ref")),
        player_id=pl.concat_str([pl.lit("pl-"), pl.col("player").cast(pl.String)]),
        trace_id=pl.col("transaction_id").str.replace("tx-", "tr-", literal=True),
        kafka_topic=pl.lit("payments.transactions.v1"),
        kafka_partition=(pl.col("i") % 12).cast(pl.Int32),
        kafka_offset=pl.col("i") // 12,
        landed_file=pl.concat_str(
            [
                pl.lit("landing/transactions/date="),
                pl.col("business_date").dt.strftime("%Y-%m-%d"),
                pl.lit("/part-0000.parquet"),
            ]
        ),
    )
    ledger = conform(ledger, LEDGER_SCHEMA)
    ledger.write_parquet(out / "ledger.parquet")
    ledger_rows = ledger.height
    del ledger, dup_booking

    # ---- settlement: one line per movement the PSP saw, minus ~1% missing, ~1% with another amount,
    # ~1% settled twice, plus ~1% the ledger never booked, plus a fee row per file and currency.
    settled = frame.filter(~pl.col("fate").is_between(0.0, 0.01, closed="left")).select(
        "fate",
        "psp",
        "currency",
        "second",
        "lag",
        line_kind=pl.col("kind").replace_strict(KIND_TO_LINE, return_dtype=pl.String),
        movement_reference="true_ref",
        merchant_reference=pl.when(adjustment)
        .then(pl.col("original_transaction_id"))
        .otherwise(pl.col("transaction_id")),
        payment_reference=pl.when(adjustment)
        .then(
            pl.concat_str(
                [pl.col("psp").replace_strict(REF_PREFIX), pl.col("orig").cast(pl.String).str.zfill(14)]
            )
        )
        .otherwise(pl.col("true_ref")),
        business_date="business_date",
        amount_minor=pl.when(pl.col("fate").is_between(0.01, 0.02, closed="left"))
        .then(pl.col("signed") + (pl.col("i") % 499 + 1) * pl.col("signed").sign())
        .otherwise(pl.col("signed")),
    )
    n_unknown = max(1, int(n * MESS))
    unknown = pl.DataFrame(
        {
            "i": np.arange(n, n + n_unknown, dtype=np.int64),
            "psp": _decode(_pick(rng, n_unknown, PSP_WEIGHTS), PSPS),
            "currency": _decode(_pick(rng, n_unknown, CCY_WEIGHTS), CURRENCIES),
            "amount_minor": np.maximum(1, (rng.lognormal(0.0, 0.9, n_unknown) * 5_000).astype(np.int64)),
            "day": rng.integers(0, DAYS, n_unknown, dtype=np.int64),
            "second": rng.integers(0, 86_400, n_unknown, dtype=np.int64),
            "lag": rng.integers(0, LAG_DAYS + 1, n_unknown, dtype=np.int64),
        }
    ).select(
        "psp",
        "currency",
        "second",
        "lag",
        fate=pl.lit(1.0),
        line_kind=pl.lit("capture"),
        movement_reference=pl.concat_str(
            [pl.col("psp").replace_strict(REF_PREFIX), pl.col("i").cast(pl.String).str.zfill(14)]
        ),
        merchant_reference=pl.concat_str([pl.lit("tx-x"), pl.col("i").cast(pl.String)]),
        payment_reference=pl.lit(None, pl.String),
        business_date=pl.lit(FIRST_DAY) + pl.duration(days=pl.col("day")),
        amount_minor="amount_minor",
    )
    unknown = unknown.with_columns(payment_reference=pl.col("movement_reference"))
    doubles = settled.filter(pl.col("fate").is_between(0.02, 0.03, closed="left")).with_columns(
        lag=pl.col("lag") + 1
    )
    lines = pl.concat([settled, doubles, unknown], how="diagonal_relaxed").with_columns(
        booking_date=pl.col("business_date") + pl.duration(days=pl.col("lag"))
    )
    del frame, settled, doubles, unknown
    fees = (
        lines.group_by("psp", "booking_date", "currency")
        .agg(amount_minor=-(pl.col("amount_minor").abs().sum() // 400), second=pl.lit(86_399, pl.Int64))
        .with_columns(
            line_kind=pl.lit("fee"),
            movement_reference=pl.lit(None, pl.String),
            merchant_reference=pl.lit(None, pl.String),
            payment_reference=pl.lit(None, pl.String),
        )
    )
    lines = pl.concat([lines, fees], how="diagonal_relaxed")
    files = lines.select("psp", "booking_date").unique().sort("psp", "booking_date")
    names = []
    for k, (psp, day_) in enumerate(files.iter_rows()):  # one row per settlement file (~100)
        stamp = day_.strftime("%Y%m%d")
        names.append(
            {
                "adyen": f"settlement_detail_report_batch_{800 + k}.csv",
                "stripe": f"payout_reconciliation_{stamp}.csv",
                "paypal": f"STL-{stamp}.01.009.CSV",
            }[psp]
        )
    files = files.with_columns(
        source_file=pl.Series(names),
        file_sha256=pl.Series([hashlib.sha256(name.encode()).hexdigest() for name in names]),
        batch_id=pl.Series([f"B{800 + k}" for k in range(len(names))]),
    )
    record_type = {f"{psp}/{kind}": rt for psp, kinds in RECORD_TYPE.items() for kind, rt in kinds.items()}
    lines = (
        lines.join(files, on=["psp", "booking_date"], how="left")
        .with_columns(
            booked_at=pl.col("booking_date").cast(pl.Datetime("us", "UTC"))
            + pl.duration(seconds=pl.col("second")),
            account_id=pl.concat_str([pl.lit("Casino"), pl.col("currency")]),
            record_type=pl.concat_str([pl.col("psp"), pl.lit("/"), pl.col("line_kind")]).replace_strict(
                record_type, return_dtype=pl.String
            ),
            moves_player_money=pl.col("line_kind") != "fee",
            fee_minor=pl.when(pl.col("line_kind") == "fee")
            .then(0)
            .otherwise(pl.col("amount_minor").abs() // 100),
            net_currency="currency",
            exchange_rate=pl.lit("1"),
        )
        .with_columns(net_amount_minor=pl.col("amount_minor") - pl.col("fee_minor"))
        .sort("source_file", "booked_at", "movement_reference", nulls_last=True)
        .with_columns(source_row=pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("source_file"))
    )
    lines = conform(lines, SETTLEMENT_LINE_SCHEMA)
    lines.write_parquet(out / "lines.parquet")
    as_of = lines["booking_date"].max()
    meta = {
        "records": n,
        "ledger_rows": ledger_rows,
        "line_rows": lines.height,
        "fee_rows": fees.height,
        "as_of": as_of.isoformat(),  # type: ignore[union-attr]
        "lag_days": LAG_DAYS,
    }
    (out / "meta.json").write_text(json.dumps(meta))
    return meta


# ---------------------------------------------------------------------------------- measured functions


def _read(folder: str, warmup: bool) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, object]]:
    """Both inputs, the columns the engine reads (``LEDGER_COLUMNS``, ``SETTLEMENT_COLUMNS``) and no
    others, for the baseline and the candidate alike; a warm-up reads only their first rows (imports,
    thread pool), not the whole files."""
    rows = 2_000 if warmup else None
    meta = json.loads((Path(folder) / "meta.json").read_text())
    ledger = pl.read_parquet(Path(folder) / "ledger.parquet", columns=list(LEDGER_COLUMNS), n_rows=rows)
    lines = pl.read_parquet(Path(folder) / "lines.parquet", columns=list(SETTLEMENT_COLUMNS), n_rows=rows)
    return ledger, lines, meta


def bare_join(folder: str, warmup: bool) -> dict[str, object]:
    started = time.perf_counter()
    ledger, lines, _ = _read(folder, warmup)
    read_s = time.perf_counter() - started
    sign = pl.col("kind").replace_strict(KIND_SIGN, return_dtype=pl.Int64)
    ledger = ledger.select(
        "transaction_id", "psp", "psp_reference", "currency", signed=pl.col("amount_minor") * sign
    )
    lines = lines.select("psp", "source_file", "source_row", "movement_reference", "amount_minor", "currency")
    left = ["psp", "psp_reference", "signed", "currency"]
    right = ["psp", "movement_reference", "amount_minor", "currency"]
    # The pairs (both records' identities) and the records of either side left without a pair.
    matched = ledger.join(lines, left_on=left, right_on=right, how="inner")
    only_ledger = ledger.join(lines, left_on=left, right_on=right, how="anti")
    only_lines = lines.join(ledger, left_on=right, right_on=left, how="anti")
    return {
        "read_s": read_s,
        "matched": matched.height,
        "unmatched_ledger": only_ledger.height,
        "unmatched_settlement": only_lines.height,
    }


def _scan(folder: str, warmup: bool) -> tuple[pl.LazyFrame, pl.LazyFrame, dict[str, object]]:
    """The same files and columns as ``_read``, as lazy scans: the engine reads them itself (it
    projects ``LEDGER_COLUMNS`` / ``SETTLEMENT_COLUMNS``), so the input is held once, compactly."""
    rows = 2_000 if warmup else None
    meta = json.loads((Path(folder) / "meta.json").read_text())
    ledger = pl.scan_parquet(Path(folder) / "ledger.parquet", n_rows=rows).select(LEDGER_COLUMNS)
    lines = pl.scan_parquet(Path(folder) / "lines.parquet", n_rows=rows).select(SETTLEMENT_COLUMNS)
    return ledger, lines, meta


def _as_of(meta: dict[str, object], folder: str, warmup: bool) -> dt.date:
    if warmup:  # the first rows' latest date, so that the warm-up reconciles something
        ledger, lines, _ = _read(folder, warmup)
        return max(ledger["business_date"].max(), lines["booking_date"].max())  # type: ignore[type-var,return-value]
    return dt.date.fromisoformat(str(meta["as_of"]))


def _counts(frame: pl.DataFrame) -> list[list[object]]:
    counts = (
        frame.group_by("record", "status", "exception_category", "rule_id")
        .agg(pl.col("len").sum())
        .sort("record", "status", "exception_category", "rule_id", nulls_last=False)
    )
    return [
        [r["record"], r["status"], r["exception_category"] or "", r["rule_id"], r["len"]]
        for r in counts.iter_rows(named=True)
    ]


def engine(folder: str, warmup: bool) -> dict[str, object]:
    """The candidate: every rule over the scanned inputs, then the outcomes streamed to Parquet
    (``ReconResult.sink_outcomes``, as ``pipeline.run_reconciliation`` writes them) and the evidence
    written, into ``<folder>/candidate/``. Counting what the file holds is the benchmark's check, not
    the candidate's work: ``candidate_counts`` does it afterwards, outside the timed call."""
    from reconciliation_pipeline.matching import reconcile

    ledger, lines, meta = _scan(folder, warmup)
    as_of = _as_of(meta, folder, warmup)
    result = reconcile(ledger, lines, as_of=as_of, lag_days=int(str(meta["lag_days"])))
    out = Path(folder) / "candidate"
    out.mkdir(exist_ok=True)
    result.sink_outcomes(out / "outcomes.parquet")
    result.evidence.write_parquet(out / "evidence.parquet")
    return {"read_s": None, "evidence": result.evidence.height, "outcomes": str(out / "outcomes.parquet")}


def candidate_counts(outcomes: Path) -> list[list[object]]:
    """(record, status, category, rule, count) of the outcome file the candidate wrote; then removes it."""
    by = ("record", "status", "exception_category", "rule_id")
    counts = pl.scan_parquet(outcomes).group_by(by).len().collect()
    shutil.rmtree(outcomes.parent)
    return _counts(plain_strings(counts))


def engine_in_memory(folder: str, warmup: bool) -> dict[str, object]:
    """The same rules with the whole outcome frame made in memory (``ReconResult.outcomes``, what
    ``pipeline.run_reconciliation`` wrote until it streamed its outcomes too)."""
    from reconciliation_pipeline.matching import reconcile

    ledger, lines, meta = _scan(folder, warmup)
    as_of = _as_of(meta, folder, warmup)
    result = reconcile(ledger, lines, as_of=as_of, lag_days=int(str(meta["lag_days"])))
    counts = result.outcomes.group_by("record", "status", "exception_category", "rule_id").len()
    return {"read_s": None, "evidence": result.evidence.height, "counts": _counts(counts)}


def _duckdb_inputs(folder: str, warmup: bool) -> tuple[object, float]:
    import duckdb

    led, stl = (str(Path(folder) / name) for name in ("ledger.parquet", "lines.parquet"))
    limit = "LIMIT 2000" if warmup else ""
    con = duckdb.connect()
    started = time.perf_counter()
    con.execute(
        f"CREATE TABLE ledger AS SELECT {', '.join(LEDGER_COLUMNS)} FROM read_parquet('{led}') {limit}"
    )
    con.execute(
        f"CREATE TABLE lines AS SELECT {', '.join(SETTLEMENT_COLUMNS)} FROM read_parquet('{stl}') {limit}"
    )
    return con, time.perf_counter() - started


def duckdb_sql(folder: str, warmup: bool) -> dict[str, object]:
    """The baseline's key join and two anti-joins in SQL, over the same columns."""
    con, read_s = _duckdb_inputs(folder, warmup)
    signs = " ".join(f"WHEN '{k}' THEN {s}" for k, s in KIND_SIGN.items())
    con.execute(f"CREATE TABLE l AS SELECT *, amount_minor * CASE kind {signs} END AS signed FROM ledger")  # type: ignore[attr-defined]
    on = (
        "l.psp = s.psp AND l.psp_reference = s.movement_reference "
        "AND l.signed = s.amount_minor AND l.currency = s.currency"
    )
    keys = "l.transaction_id, s.psp, s.source_file, s.source_row"
    run = con.execute  # type: ignore[attr-defined]
    run(f"CREATE TABLE matched AS SELECT {keys} FROM l JOIN lines s ON {on}")
    run(f"CREATE TABLE only_l AS SELECT l.transaction_id FROM l ANTI JOIN lines s ON {on}")
    run(f"CREATE TABLE only_s AS SELECT s.psp, s.source_file, s.source_row FROM lines s ANTI JOIN l ON {on}")
    count = {t: run(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("matched", "only_l", "only_s")}
    con.close()  # type: ignore[attr-defined]
    return {
        "read_s": read_s,
        "matched": count["matched"],
        "unmatched_ledger": count["only_l"],
        "unmatched_settlement": count["only_s"],
    }


def duckdb_exact_rule(folder: str, warmup: bool) -> dict[str, object]:
    """The engine's exact_ref rule (k-th with k-th pairing, duplicates on either side) in DuckDB SQL:
    ``sql/exact_ref.sql``, over the same columns."""
    con, read_s = _duckdb_inputs(folder, warmup)
    meta = json.loads((Path(folder) / "meta.json").read_text())
    query = (Path(__file__).resolve().parents[1] / "sql" / "exact_ref.sql").read_text()
    run = con.execute  # type: ignore[attr-defined]
    as_of = dt.date.fromisoformat(str(meta["as_of"]))
    run(f"CREATE TABLE exact AS {query}", {"as_of": as_of})
    counts = dict(run("SELECT outcome, count(*) FROM exact GROUP BY outcome").fetchall())
    con.close()  # type: ignore[attr-defined]
    return {"read_s": read_s, "outcomes": counts}


# ------------------------------------------------------------------------------------------ measuring


def measure_guarded(
    module: str, func: str, arg: str, *, repeat: int, max_rss_mib: float, timeout_s: float
) -> Measurement | str:
    """``_measure.measure`` (same runner: fresh process, warm-up, best of ``repeat``, peak RSS from
    getrusage) with a watchdog: a process above ``max_rss_mib`` or ``timeout_s`` is killed, so a 10M run
    cannot take a shared machine down. Returns the reason as text when it had to kill."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([here, os.path.dirname(here), os.environ.get("PYTHONPATH", "")]),
    }
    best: Measurement | None = None
    for _ in range(repeat):
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            child = subprocess.Popen(
                [sys.executable, "-c", _RUNNER, module, func, arg], stdout=out, stderr=err, env=env, text=True
            )
            started, seen_mib, killed = time.monotonic(), 0.0, ""
            while child.poll() is None:
                seen_mib = max(seen_mib, _rss_mib(child.pid))
                elapsed = time.monotonic() - started
                if seen_mib > max_rss_mib:
                    killed = f"killed above {max_rss_mib:.0f} MiB RSS after {elapsed:.0f} s"
                elif elapsed > timeout_s:
                    killed = f"killed after {timeout_s:.0f} s (RSS {seen_mib:.0f} MiB)"
                if killed:
                    child.kill()
                    child.wait()
                    return killed
                time.sleep(0.2)
            out.seek(0)
            err.seek(0)
            if child.returncode != 0:
                raise RuntimeError(f"{module}.{func} failed:\n{err.read()}")
            data = json.loads(out.read().strip().splitlines()[-1])
        m = Measurement(data["seconds"], data["peak_mib"], data["result"], data.get("cpu_seconds", 0.0))
        if best is None or m.seconds < best.seconds:
            best = m
    assert best is not None
    return best


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# ---------------------------------------------------------------------------------------------- report


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as info:
        ram_kib = int(next(line for line in info if line.startswith("MemTotal")).split()[1])
    usable = len(os.sched_getaffinity(0))
    return f"nproc {usable} ({os.cpu_count()} online), {cpu}, {ram_kib / 2**20:.1f} GiB RAM"


def commit() -> str:
    done = subprocess.run(
        ["git", "log", "-1", "--format=%h"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def _line(label: str, m: Measurement | str, rows: int) -> str:
    if isinstance(m, str):
        return f"{label:<44} {m}"
    read_s = m.result["read_s"]  # type: ignore[index]
    read = f"read {float(read_s):6.2f} s" if read_s is not None else "read inside"
    return (
        f"{label:<44} {m.seconds:8.2f} s  cpu {m.cpu_seconds:8.2f} s  ({read})  "
        f"peak {m.peak_mib:7.0f} MiB  {rows / m.seconds / 1e6:6.2f} M records/s"
    )


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _exact_counts(counts: list[list[object]]) -> dict[str, int]:
    """What exact_ref decided, from the engine's outcome counts: ledger records it paired (an unlinked
    overlay may have turned some into exceptions; the rule id stays) and the duplicates on either side."""
    out = {"matched": 0, "duplicate_booking": 0, "duplicate_settlement": 0}
    for record, _status, category, rule, n in counts:
        if rule != "exact_ref":
            continue
        if category in ("duplicate_booking", "duplicate_settlement"):
            out[str(category)] += int(str(n))
        elif record == "ledger":
            out["matched"] += int(str(n))
    return out


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--keep", type=Path, default=None, help="write the inputs here and keep them (reused when present)"
    )
    parser.add_argument("--max-rss-gib", type=float, default=16.0, help="kill a measured process above this")
    parser.add_argument("--timeout-min", type=float, default=20.0, help="kill a measured process after this")
    parser.add_argument("--generate-into", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate_into is not None:  # the generator runs in its own process: its memory is returned
        print(json.dumps(generate(args.generate_into, args.records)))
        return {}
    print(f"date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}, commit {commit()}")
    print(f"machine: {machine()}")
    print(
        f"{platform.python_implementation()} {platform.python_version()}, polars {pl.__version__}, "
        f"duckdb {__import__('duckdb').__version__}"
    )
    guard = {
        "repeat": args.repeat,
        "max_rss_mib": args.max_rss_gib * 1024,
        "timeout_s": args.timeout_min * 60,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        kept = folder / "meta.json"
        if (
            args.keep is not None
            and kept.exists()
            and json.loads(kept.read_text())["records"] == args.records
        ):
            meta = json.loads(kept.read_text())  # inputs kept by an earlier run with the same size
        else:
            gen = subprocess.run(
                [sys.executable, __file__, "--records", str(args.records), "--generate-into", str(folder)],
                capture_output=True,
                text=True,
                check=True,
            )
            meta = json.loads(gen.stdout.strip().splitlines()[-1])
        gen_s = time.perf_counter() - started
        size_mib = sum((folder / f).stat().st_size for f in ("ledger.parquet", "lines.parquet")) / 2**20
        rows = int(meta["ledger_rows"]) + int(meta["line_rows"])
        print(
            f"inputs: {meta['ledger_rows']:,} ledger + {meta['line_rows']:,} settlement rows "
            f"({meta['fee_rows']:,} fee rows) = {rows:,} records, {size_mib:.0f} MiB Parquet, "
            f"generated in {gen_s:.1f} s; as_of {meta['as_of']}, lag {meta['lag_days']} days",
            flush=True,
        )
        print(f"load average before measuring (1/5/15 min): {load_average()}", flush=True)
        base = measure_guarded("bench_matching", "bare_join", str(folder), **guard)
        duck = measure_guarded("bench_matching", "duckdb_sql", str(folder), **guard)
        exact_sql = measure_guarded("bench_matching", "duckdb_exact_rule", str(folder), **guard)
        cand = measure_guarded("bench_matching", "engine", str(folder), **guard)
        if isinstance(cand, Measurement):
            assert isinstance(cand.result, dict)
            cand.result["counts"] = candidate_counts(Path(str(cand.result["outcomes"])))
        in_memory = measure_guarded("bench_matching", "engine_in_memory", str(folder), **guard)
        print(f"load average after measuring (1/5/15 min): {load_average()}")
    if isinstance(base, Measurement) and isinstance(duck, Measurement):
        b, d = base.result, duck.result
        assert isinstance(b, dict) and isinstance(d, dict)
        assert all(b[k] == d[k] for k in ("matched", "unmatched_ledger", "unmatched_settlement")), (b, d)
        print(
            f"key join result: {b['matched']:,} pairs, {b['unmatched_ledger']:,} ledger and "
            f"{b['unmatched_settlement']:,} settlement unmatched (Polars = DuckDB)"
        )
    for m in (cand, in_memory):
        if isinstance(m, Measurement):
            assert isinstance(m.result, dict)
            total = sum(int(row[-1]) for row in m.result["counts"])
            assert total == rows, (total, rows)
    if isinstance(cand, Measurement):
        assert isinstance(cand.result, dict)
        if isinstance(in_memory, Measurement):
            assert isinstance(in_memory.result, dict) and in_memory.result["counts"] == cand.result["counts"]
        print(
            f"engine outcomes (record, status, category, rule: count); "
            f"{cand.result['evidence']:,} records with evidence:"
        )
        for record, status, category, rule, count in cand.result["counts"]:
            print(f"    {record:<10} {status:<9} {category or '-':<22} {rule:<16} {count:>12,}")
        if isinstance(exact_sql, Measurement):
            assert isinstance(exact_sql.result, dict)
            sql = {k: int(v) for k, v in exact_sql.result["outcomes"].items() if k != "open"}
            engine_exact = _exact_counts(cand.result["counts"])
            assert sql == engine_exact, (sql, engine_exact)
            print(
                f"exact_ref: {sql['matched']:,} pairs, {sql['duplicate_booking']:,} duplicate bookings, "
                f"{sql['duplicate_settlement']:,} duplicate settlements "
                "(engine = sql/exact_ref.sql in DuckDB)"
            )
    print(f"best of {args.repeat}, each in a fresh process; times include reading the Parquet inputs")
    print(_line("baseline polars key join + 2 anti-joins", base, rows))
    print(_line("duckdb SQL key join + 2 anti-joins", duck, rows))
    print(_line("duckdb SQL exact_ref rule (sql/exact_ref.sql)", exact_sql, rows))
    print(_line("matching.reconcile (whole rule set)", cand, rows))
    print(_line("  the same, outcomes in memory", in_memory, rows))
    if not (isinstance(base, Measurement) and isinstance(cand, Measurement)):
        print("ratio reconcile / polars key join: n/a (a process was killed, see above)")
        return {}
    ratio = cand.seconds / base.seconds
    rate = rows / cand.seconds
    print(f"ratio reconcile / polars key join: {ratio:.2f}x (goal <= {GOAL_RATIO:g}x)")
    if base.cpu_seconds:
        print(f"ratio reconcile / polars key join, CPU time: {cand.cpu_seconds / base.cpu_seconds:.2f}x")
    if isinstance(duck, Measurement):
        print(f"ratio duckdb / polars key join: {duck.seconds / base.seconds:.2f}x")
    if isinstance(exact_sql, Measurement):
        print(f"ratio duckdb exact_ref / polars key join: {exact_sql.seconds / base.seconds:.2f}x")
    if isinstance(in_memory, Measurement):
        print(
            f"ratio reconcile (outcomes in memory) / polars key join: {in_memory.seconds / base.seconds:.2f}x"
        )
    print(f"ratio reconcile peak / key join peak: {cand.peak_mib / base.peak_mib:.2f}x")
    print(
        f"goals: whole rule set <= {GOAL_RATIO:g}x key join: {_verdict(ratio <= GOAL_RATIO)} ({ratio:.2f}x); "
        f">= {GOAL_RATE / 1e6:g}M input records/s: {_verdict(rate >= GOAL_RATE)} ({rate / 1e6:.2f}M); "
        f"peak < {GOAL_PEAK_MIB / 1024:g} GiB: {_verdict(cand.peak_mib < GOAL_PEAK_MIB)} "
        f"({cand.peak_mib:.0f} MiB)"
    )
    return {
        "ratio": ratio,
        "baseline_s": base.seconds,
        "engine_s": cand.seconds,
        "engine_peak_mib": cand.peak_mib,
    }


if __name__ == "__main__":
    main()
