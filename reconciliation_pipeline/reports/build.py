"""One business date's report files: CSV per view (integer minor units), the XLSX workbook and the HTML
report, plus the headline figures and a Markdown preview for Dagster's asset metadata."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ..lake import atomic_write
from .html import render_html
from .money_format import display
from .queries import VIEWS, ReportData
from .xlsx import write_workbook

#: CSV file name of each view (``daily_summary.csv`` keeps the name the first report had).
CSV_NAMES: dict[str, str] = {
    "summary": "daily_summary.csv",
    "payouts": "payouts_vs_bank.csv",
    "exceptions": "exceptions_by_category.csv",
    "ageing": "exception_ageing.csv",
    "accuracy": "accuracy_over_time.csv",
    "fees": "fee_analysis.csv",
}


@dataclass(frozen=True)
class ReportFiles:
    day: dt.date
    folder: Path
    xlsx: Path
    html: Path
    csv: dict[str, Path]
    headline: dict[str, Any] = field(default_factory=dict)
    preview_md: str = ""


def report_folder(reports_root: Path, day: dt.date) -> Path:
    return reports_root / f"date={day.isoformat()}"


def headline(data: ReportData) -> dict[str, Any]:
    """The few numbers a person looks at first (counts; amounts are per currency, in the views)."""
    s, p, a = data["summary"], data["payouts"], data["accuracy"]
    today = a.filter(pl.col("business_date") == data.day)
    accuracy = today["accuracy"][0] if today.height and today["accuracy"][0] is not None else None

    def total(*columns: str) -> int:
        return int(sum(int(s[c].sum()) for c in columns))

    return {
        "business_date": data.day.isoformat(),
        "booked": total("booked_count"),
        "settlement_records": total("settlement_records"),
        "matched": total("ledger_matched_count", "settlement_matched_count"),
        "pending": total("ledger_pending_count", "settlement_pending_count"),
        "exceptions": total("exceptions"),
        "open_exceptions": int(data["ageing"]["records"].sum()),
        "payouts": p.height,
        "payout_breaks": int(
            p.filter(
                (pl.col("payout_minus_bank_minor") != 0) | (pl.col("batch_minus_payout_minor") != 0)
            ).height
        ),
        "missing_amounts": int(data.missing_amounts["records"].sum()),
        "accuracy": accuracy,
    }


def preview_markdown(data: ReportData, head: dict[str, Any]) -> str:
    """A compact Markdown table per PSP and currency (jurisdictions added up) for the Dagster UI."""
    by = (
        data["summary"]
        .group_by("psp", "currency")
        .agg(
            pl.col("booked_count").sum(),
            pl.col("booked_minor").sum(),
            pl.col("settled_count").sum(),
            pl.col("settled_minor").sum(),
            matched=pl.col("ledger_matched_count").sum() + pl.col("settlement_matched_count").sum(),
            pending=pl.col("ledger_pending_count").sum() + pl.col("settlement_pending_count").sum(),
            exceptions=pl.col("exceptions").sum(),
            fees_minor=pl.col("fees_minor").sum(),
            payout_minor=pl.col("payout_minor").sum(),
            bank_credit_minor=pl.col("bank_credit_minor").sum(),
        )
        .sort("psp", "currency")
    )
    lines = [
        f"**{head['business_date']}**: {head['booked']:,} booked, {head['settlement_records']:,} settlement "
        f"records; {head['matched']:,} matched, {head['pending']:,} pending, "
        f"{head['exceptions']:,} exceptions "
        f"({head['open_exceptions']:,} open over all dates); payouts not matching the bank: "
        f"{head['payout_breaks']} of {head['payouts']}.",
        "",
        "| PSP | currency | booked | booked amount | settled | settled amount | matched | pending "
        "| exceptions "
        "| fees | payout | bank credit |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in by.iter_rows(named=True):
        c = r["currency"]
        lines.append(
            f"| {r['psp']} | {c} | {r['booked_count']:,} | {display(r['booked_minor'], c)} "
            f"| {r['settled_count']:,} "
            f"| {display(r['settled_minor'], c)} | {r['matched']:,} | {r['pending']:,} | {r['exceptions']:,} "
            f"| {display(r['fees_minor'], c)} | {display(r['payout_minor'], c)} "
            f"| {display(r['bank_credit_minor'], c)} |"
        )
    return "\n".join(lines)


def write_reports(data: ReportData, folder: Path, *, generated_at: dt.datetime | None = None) -> ReportFiles:
    """Write every output of one date's report into ``folder``, each file atomically."""
    when = generated_at or dt.datetime.now(dt.UTC)
    day = data.day.isoformat()
    csv: dict[str, Path] = {}
    for view in VIEWS:
        frame = data[view]
        csv[view] = atomic_write(folder / CSV_NAMES[view], frame.write_csv)
    head = headline(data)
    xlsx = atomic_write(
        folder / f"reconciliation_report_{day}.xlsx", lambda tmp: write_workbook(data, tmp, generated_at=when)
    )
    page = render_html(data, head, generated_at=when)
    html = atomic_write(
        folder / f"reconciliation_report_{day}.html", lambda tmp: tmp.write_text(page, encoding="utf-8")
    )
    return ReportFiles(data.day, folder, xlsx, html, csv, head, preview_markdown(data, head))


def summary_line(files: ReportFiles, *, with_date: bool = True) -> str:
    """One line for a person: the date's counts."""
    h = files.headline
    acc = "" if h.get("accuracy") is None else f", accuracy {h['accuracy']:.2%}"
    prefix = f"{h['business_date']}: " if with_date else ""
    return (
        f"{prefix}{h['booked']:,} booked, {h['matched']:,} matched, {h['pending']:,} pending, "
        f"{h['exceptions']:,} exceptions, {h['payout_breaks']} payout break(s){acc}"
    )


def read_report(reports_root: Path, day: dt.date) -> ReportFiles | None:
    """The files of a report already written for ``day`` (``None`` when there is none), with its headline
    recomputed from the CSV files: what ``recon run`` prints after each date."""
    folder = report_folder(reports_root, day)
    csv = {view: folder / name for view, name in CSV_NAMES.items()}
    if not all(path.exists() for path in csv.values()):
        return None
    views = {view: pl.read_csv(path, try_parse_dates=True) for view, path in csv.items()}
    if views["accuracy"].height:
        views["accuracy"] = views["accuracy"].with_columns(pl.col("business_date").cast(pl.Date))
    missing = pl.DataFrame(schema={"record": pl.String, "psp": pl.String, "records": pl.Int64})
    data = ReportData(day, views, missing)
    head = headline(data)
    name = f"reconciliation_report_{day.isoformat()}"
    return ReportFiles(day, folder, folder / f"{name}.xlsx", folder / f"{name}.html", csv, head)
