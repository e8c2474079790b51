"""Parse a large Adyen settlement details report and compare with a bare ``polars.read_csv``.

    .venv/bin/python benchmarks/bench_adyen_parse.py [--rows 1000000]

Prints wall time and peak memory of both, each in a fresh process, and the ratio (goal: within 2x).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _measure import measure

from reconciliation_pipeline.demo.writers import ADYEN_COLUMNS

HEADER = list(ADYEN_COLUMNS)  # the classic 30 columns, as the demo writer writes them


def write_report(path: Path, rows: int) -> None:
    """A valid one-batch report, shaped like a day of a real one: ``rows`` payment rows (about 95%
    captures, 4% refunds, 1% chargebacks) with their own creation times through the day, and the
    MerchantPayout row that balances them. One merchant account, batch, time zone and currency, as in an
    Adyen report (it is per batch)."""
    n = pl.int_range(0, rows, eager=True)
    gross = 1000 + (n * 7919) % 100_000  # minor units
    fee = 10 + (n % 90)
    kind = (n * 2_654_435_761) % 100
    typ = pl.select(
        pl.when(kind < 95)
        .then(pl.lit("Settled"))
        .when(kind < 99)
        .then(pl.lit("Refunded"))
        .otherwise(pl.lit("Chargeback"))
    ).to_series()
    credit = typ == "Settled"
    net = pl.select(pl.when(credit).then(gross - fee).otherwise(gross + fee)).to_series()  # unsigned
    seconds = (n * 37) % 86_400
    created = (
        "2026-03-02 "
        + (seconds // 3600).cast(pl.String).str.zfill(2)
        + ":"
        + (seconds // 60 % 60).cast(pl.String).str.zfill(2)
        + ":"
        + (seconds % 60).cast(pl.String).str.zfill(2)
    )

    def major(col: pl.Series) -> pl.Series:
        return (col // 100).cast(pl.String) + "." + (col % 100).cast(pl.String).str.zfill(2)

    def side(is_side: pl.Series, col: pl.Series) -> pl.Series:
        return pl.select(pl.when(is_side).then(major(col)).otherwise(pl.lit(""))).to_series()

    frame = pl.DataFrame(
        {
            "Company Account": "BenchCo",
            "Merchant Account": "BenchCasinoEUR",
            "Psp Reference": n.cast(pl.String).str.zfill(16),
            "Merchant Reference": "tx-" + n.cast(pl.String),
            "Payment Method": "visa",
            "Creation Date": created,
            "TimeZone": "CET",
            "Type": typ,
            "Modification Reference": "M" + n.cast(pl.String).str.zfill(15),
            "Gross Currency": "EUR",
            "Gross Debit (GC)": side(~credit, gross),
            "Gross Credit (GC)": side(credit, gross),
            "Exchange Rate": "1",
            "Net Currency": "EUR",
            "Net Debit (NC)": side(~credit, net),
            "Net Credit (NC)": side(credit, net),
            "Commission (NC)": "",
            "Markup (NC)": major(fee),
            "Scheme Fees (NC)": "",
            "Interchange (NC)": "",
            "Payment Method Variant": "visaclassic",
            "Modification Merchant Reference": "",
            "Batch Number": "812",
            **{f"Reserved{i}": "" for i in range(4, 11)},
        }
    )
    total = int(pl.select(pl.when(credit).then(net).otherwise(-net)).to_series().sum())
    assert total > 0, "the bench batch must pay out"
    payout = {c: "" for c in HEADER} | {
        "Company Account": "BenchCo",
        "Merchant Account": "BenchCasinoEUR",
        "Creation Date": "2026-03-03 06:00:00",
        "TimeZone": "CET",
        "Type": "MerchantPayout",
        "Modification Reference": "TX0000000812XT batch 812",
        "Gross Currency": "EUR",
        "Net Currency": "EUR",
        "Net Debit (NC)": f"{total // 100}.{total % 100:02d}",
        "Batch Number": "812",
    }
    pl.concat([frame.select(HEADER), pl.DataFrame([payout]).select(HEADER)]).write_csv(path)


def bare_read(path: str, warmup: bool) -> int:
    return pl.read_csv(path, infer_schema=False).height


def full_parse(path: str, warmup: bool) -> int:
    from reconciliation_pipeline.formats import adyen

    return adyen.parse(Path(path).read_bytes(), Path(path).name).height


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "settlement_detail_report_batch_812.csv"
        write_report(path, args.rows)
        size_mib = path.stat().st_size / 2**20
        base = measure("bench_adyen_parse", "bare_read", str(path), repeat=args.repeat)
        cand = measure("bench_adyen_parse", "full_parse", str(path), repeat=args.repeat)
    assert base.result == cand.result == args.rows + 1, (base.result, cand.result)
    ratio = cand.seconds / base.seconds
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"polars {pl.__version__}"
    )
    print(f"file: {args.rows + 1:,} rows, {size_mib:.0f} MiB")
    print(f"baseline polars.read_csv (all text): {base.seconds:8.3f} s  peak {base.peak_mib:7.0f} MiB")
    print(f"adyen.parse (validated, minor units): {cand.seconds:8.3f} s  peak {cand.peak_mib:7.0f} MiB")
    print(f"ratio parse / read_csv: {ratio:.2f}x (goal <= 2x)")
    cpu_ratio = cand.cpu_seconds / base.cpu_seconds if base.cpu_seconds else float("nan")
    print(
        f"CPU time (all threads): read_csv {base.cpu_seconds:.3f} s, parse {cand.cpu_seconds:.3f} s, "
        f"ratio {cpu_ratio:.2f}x (steadier than wall time when the machine is shared)"
    )
    return {"ratio": ratio, "cpu_ratio": cpu_ratio, "baseline_s": base.seconds, "parse_s": cand.seconds}


if __name__ == "__main__":
    main()
