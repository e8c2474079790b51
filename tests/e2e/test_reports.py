"""Finance reports on the demo data: figures tie out to the outcome export to the minor unit, the workbook
opens with its sheets and formats, and the HTML report's charts draw in headless Chromium."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from reconciliation_pipeline import pipeline
from reconciliation_pipeline.lake import Lake
from reconciliation_pipeline.money import exponent
from reconciliation_pipeline.reports import CSV_NAMES, ReportFiles, read_report
from reconciliation_pipeline.store import db

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
RECON = str(Path(sys.executable).with_name("recon"))
ARTIFACTS = ROOT / "test-artifacts"
FIRST, LAST = dt.date(2026, 3, 2), dt.date(2026, 3, 7)
DAYS = [FIRST + dt.timedelta(days=n) for n in range((LAST - FIRST).days + 1)]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SIGN = {"deposit": 1, "chargeback_reversal": 1, "withdrawal": -1, "refund": -1, "chargeback": -1}


class Demo:
    def __init__(self, root: Path, env: dict[str, str], stdout: str) -> None:
        self.root, self.env, self.stdout = root, env, stdout
        self.lake = Lake(root / "data")
        self.db_url = f"sqlite:///{root / 'data' / 'recon.db'}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    root = tmp_path_factory.mktemp("reports-demo")
    env = {
        **os.environ,
        "RECON_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "COLUMNS": "250",
    }
    env.pop("RECON_DATABASE_URL", None)
    done = subprocess.run(
        [RECON, "demo", "--seed", "11", "--days", "6", "--per-day", "80"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return Demo(root, env, done.stdout)


@pytest.fixture(scope="module")
def export(demo: Demo) -> pl.DataFrame:
    out = demo.root / "export.parquet"
    subprocess.run(
        [RECON, "outcomes", "export", "--format", "parquet", "--out", str(out)],
        env=demo.env,
        check=True,
        capture_output=True,
    )
    return pl.read_parquet(out)


@pytest.fixture(scope="module")
def rebuilt(demo: Demo) -> dict[dt.date, ReportFiles]:
    """Every date's report built again from the final store: the demo built each one as of its own run,
    when later dates had not yet changed its records' statuses. Built over a copy of the demo's lake, so
    the demo's own report files stay as the asset wrote them."""
    copy = Lake(demo.root / "rebuilt")
    shutil.copytree(demo.lake.lake, copy.lake)
    engine = db.make_engine(demo.db_url)
    try:
        return {day: pipeline.build_daily_report(copy, day, engine) for day in DAYS}
    finally:
        engine.dispose()


# --- independent expectations, from the export and the lake with Polars ---------------------------------


def _lake(demo: Demo, table: str) -> pl.DataFrame:
    return pl.read_parquet(demo.lake.lake_table(table) / "date=*" / "*.parquet")


def _ledger(demo: Demo, export: pl.DataFrame) -> pl.DataFrame:
    tx = _lake(demo, "transactions").select(
        "transaction_id", "business_date", "kind", "currency", "jurisdiction", "amount_minor"
    )
    rows = export.filter(pl.col("record") == "ledger").join(
        tx, on=["transaction_id", "business_date"], how="left"
    )
    assert rows["amount_minor"].null_count() == 0, "every ledger record of the export has its lake row"
    return rows.with_columns(signed=pl.col("amount_minor") * pl.col("kind").replace_strict(SIGN))


def _settlement(demo: Demo, export: pl.DataFrame) -> pl.DataFrame:
    lines = _lake(demo, "settlement_lines").select(
        "psp",
        "source_file",
        "source_row",
        pl.col("booking_date").alias("business_date"),
        "line_kind",
        "moves_player_money",
        "amount_minor",
        "currency",
        "fee_minor",
        "net_currency",
    )
    rows = export.filter(pl.col("record") == "settlement").join(
        lines, on=["psp", "source_file", "source_row", "business_date"], how="left"
    )
    assert rows["amount_minor"].null_count() == 0, "every settlement record of the export has its lake row"
    return rows


def test_the_demo_says_where_the_reports_are(demo: Demo) -> None:
    out = demo.stdout.replace("\n", "")
    folder = demo.lake.reports / f"date={LAST.isoformat()}"
    assert str(folder / f"reconciliation_report_{LAST.isoformat()}.html") in out
    assert str(folder / f"reconciliation_report_{LAST.isoformat()}.xlsx") in out
    for day in DAYS:
        files = read_report(demo.lake.reports, day)
        assert files is not None, f"the daily_report asset wrote no report for {day}"
        assert files.html.exists() and files.xlsx.exists()
        assert {p.name for p in files.csv.values()} == set(CSV_NAMES.values())


def test_ledger_figures_tie_out_to_the_export(
    demo: Demo, export: pl.DataFrame, rebuilt: dict[dt.date, ReportFiles]
) -> None:
    ledger = _ledger(demo, export)
    keys = ["psp", "currency", "jurisdiction"]
    for day, files in rebuilt.items():
        want = (
            ledger.filter(pl.col("business_date") == day)
            .group_by(keys)
            .agg(
                booked_count=pl.len().cast(pl.Int64),
                booked_minor=pl.col("signed").sum(),
                **{
                    f"ledger_{s}_count": (pl.col("status") == s).sum().cast(pl.Int64)
                    for s in ("matched", "pending", "exception")
                },
                **{
                    f"ledger_{s}_minor": pl.col("signed").filter(pl.col("status") == s).sum()
                    for s in ("matched", "pending", "exception")
                },
            )
            .sort(keys)
        )
        got = (
            pl.read_csv(files.csv["summary"])
            .filter(pl.col("booked_count") > 0)
            .select(want.columns)
            .sort(keys)
        )
        assert want.height > 0
        assert_frame_equal(got, want, check_column_order=False, check_dtypes=False)


def test_settlement_fee_and_exception_figures_tie_out_to_the_export(
    demo: Demo, export: pl.DataFrame, rebuilt: dict[dt.date, ReportFiles]
) -> None:
    settlement = _settlement(demo, export)
    for day, files in rebuilt.items():
        summary = pl.read_csv(files.csv["summary"])
        day_export = export.filter(pl.col("business_date") == day)
        day_lines = settlement.filter(pl.col("business_date") == day)
        # every record of the date is counted once, with its status
        assert summary["booked_count"].sum() == day_export.filter(pl.col("record") == "ledger").height
        assert summary["settlement_records"].sum() == day_lines.height
        for status in ("matched", "pending", "exception"):
            n = day_export.filter(pl.col("status") == status).height
            assert summary[f"ledger_{status}_count"].sum() + summary[f"settlement_{status}_count"].sum() == n
        # exceptions by category, both in the summary's columns and in the exceptions view
        by_cat = day_export.filter(pl.col("status") == "exception").group_by("exception_category").len()
        exceptions = pl.read_csv(files.csv["exceptions"])
        for category, n in by_cat.iter_rows():
            assert summary[category].sum() == n, (day, category)
            assert exceptions.filter(pl.col("exception_category") == category)["records"].sum() == n
        assert summary["exceptions"].sum() == by_cat["len"].sum()
        # settled gross per PSP and currency, player-money rows only, to the minor unit
        want = (
            day_lines.filter(pl.col("moves_player_money"))
            .group_by("psp", "currency")
            .agg(settled_minor=pl.col("amount_minor").sum())
        )
        got = summary.group_by("psp", "currency").agg(pl.col("settled_minor").sum())
        joined = want.join(got, on=["psp", "currency"], how="full", coalesce=True).fill_null(0)
        assert (joined["settled_minor"] == joined["settled_minor_right"]).all(), joined
        # fees per PSP and the currency they are charged in
        fees = (
            day_lines.with_columns(
                fee=pl.col("fee_minor").fill_null(0)
                + pl.when(pl.col("line_kind") == "fee").then(-pl.col("amount_minor")).otherwise(0),
                currency=pl.coalesce("net_currency", "currency"),
            )
            .group_by("psp", "currency")
            .agg(pl.col("fee").sum())
        )
        got_fees = summary.group_by("psp", "currency").agg(pl.col("fees_minor").sum())
        joined = fees.join(got_fees, on=["psp", "currency"], how="full", coalesce=True).fill_null(0)
        assert (joined["fee"] == joined["fees_minor"]).all(), joined
        assert summary["fees_minor"].sum() > 0


def test_payouts_tie_out_to_the_psp_files_and_the_bank_statements(
    demo: Demo, export: pl.DataFrame, rebuilt: dict[dt.date, ReportFiles]
) -> None:
    settlement = _settlement(demo, export)
    bank = (
        settlement.filter((pl.col("psp") == "bank") & (pl.col("line_kind") == "bank_credit"))
        .group_by("match_id")
        .agg(bank=pl.col("amount_minor").sum())
    )
    checked = 0
    for day, files in rebuilt.items():
        payouts = (
            settlement.filter((pl.col("business_date") == day) & (pl.col("line_kind") == "merchant_payout"))
            .join(bank, on="match_id", how="left")
            .select("psp", "source_file", "source_row", payout=-pl.col("amount_minor"), bank=pl.col("bank"))
            .sort("psp", "source_file", "source_row")
        )
        got = pl.read_csv(files.csv["payouts"]).sort("psp", "source_file", "source_row")
        assert got["payout_minor"].to_list() == payouts["payout"].to_list()
        assert got["bank_credit_minor"].to_list() == payouts["bank"].fill_null(0).to_list()
        # the demo's payouts all arrived in full and add up to their batches
        assert (got["payout_minus_bank_minor"] == 0).all()
        assert (got["batch_minus_payout_minor"] == 0).all()
        summary = pl.read_csv(files.csv["summary"])
        assert summary["payout_minor"].sum() == payouts["payout"].sum()
        checked += got.height
    assert checked > 10


def test_ageing_counts_every_open_exception(
    export: pl.DataFrame, rebuilt: dict[dt.date, ReportFiles]
) -> None:
    for day, files in rebuilt.items():
        ageing = pl.read_csv(files.csv["ageing"], try_parse_dates=True)
        open_ = export.filter((pl.col("status") == "exception") & (pl.col("business_date") <= day))
        assert ageing["records"].sum() == open_.height
        if open_.height:
            oldest = open_["business_date"].min()
            assert ageing["oldest_business_date"].min() == oldest
            assert ageing["oldest_age_days"].max() == (day - oldest).days  # type: ignore[operator]


def test_accuracy_over_time_has_every_date_and_the_measured_accuracy(
    demo: Demo, export: pl.DataFrame, rebuilt: dict[dt.date, ReportFiles]
) -> None:
    accuracy = pl.read_csv(rebuilt[LAST].csv["accuracy"], try_parse_dates=True)
    assert accuracy["business_date"].to_list() == DAYS
    per_date = export.group_by("business_date").agg(records=pl.len()).sort("business_date")
    assert accuracy["records"].to_list() == per_date["records"].to_list()
    # the demo's ground truth is evaluated on its as-of date, and recorded in the lake for the report
    measured = accuracy.filter(pl.col("accuracy").is_not_null())
    assert measured["business_date"].to_list() == [LAST]
    assert measured["accuracy"][0] == 1.0
    recorded = pl.read_parquet(demo.lake.lake_table("accuracy", LAST) / "part-0.parquet")
    overall = recorded.filter(pl.col("category") == "overall")
    assert overall["records"][0] == measured["truth_records"][0] > 0


def test_the_workbook_has_its_sheets_frozen_headers_and_currency_digits(
    rebuilt: dict[dt.date, ReportFiles],
) -> None:
    from openpyxl import load_workbook

    files = rebuilt[LAST]
    wb = load_workbook(files.xlsx)
    assert wb.sheetnames == [
        "Summary",
        "Payouts vs bank",
        "Exceptions",
        "Exception ageing",
        "Accuracy over time",
        "Fee analysis",
        "About",
    ]
    for name in wb.sheetnames:
        ws = wb[name]
        assert ws.freeze_panes is not None and ws.freeze_panes.endswith("2"), (name, ws.freeze_panes)
    ws = wb["Summary"]
    assert ws.freeze_panes == "D2"
    header = [c.value for c in ws[1]]
    assert header[:5] == ["psp", "currency", "jurisdiction", "booked count", "booked"]
    booked = header.index("booked") + 1
    summary = pl.read_csv(files.csv["summary"])
    seen: set[str] = set()
    for r, row in enumerate(summary.iter_rows(named=True), start=2):
        currency = row["currency"]
        cell = ws.cell(row=r, column=booked)
        assert ws.cell(row=r, column=2).value == currency
        digits = exponent(currency)
        fmt = cell.number_format.split(";")[0]
        assert fmt == ("#,##0" + ("." + "0" * digits if digits else "")), (currency, cell.number_format)
        # the stored value is the amount in major units, exact to the minor unit
        assert round(float(cell.value) * 10**digits) == row["booked_minor"], (currency, cell.value)
        seen.add(currency)
    assert {"JPY", "EUR", "KWD"} <= seen


def test_the_html_report_is_self_contained(rebuilt: dict[dt.date, ReportFiles]) -> None:
    text = rebuilt[LAST].html.read_text()
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text
    assert text.count('<svg class="chart"') == 5


@pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)
def test_the_html_report_draws_its_charts_in_headless_chromium(rebuilt: dict[dt.date, ReportFiles]) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    files = rebuilt[LAST]
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1800")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(files.html.as_uri())
        charts = driver.execute_script(
            """
            return Array.from(document.querySelectorAll('svg.chart')).map(svg => {
              const box = svg.getBoundingClientRect();
              const marks = Array.from(svg.querySelectorAll('rect.bar, circle.point'))
                .map(m => m.getBBox()).filter(b => b.width > 0 && b.height > 0).length;
              return {label: svg.getAttribute('aria-label'), width: box.width, height: box.height, marks};
            });
            """
        )
        resources = driver.execute_script("return performance.getEntriesByType('resource').length")
        ARTIFACTS.mkdir(exist_ok=True)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1400, min(int(height) + 100, 8000))
        driver.save_screenshot(str(ARTIFACTS / f"report-{LAST.isoformat()}.png"))
    finally:
        driver.quit()
    assert len(charts) == 5, charts
    for chart in charts:
        assert chart["width"] > 0 and chart["height"] > 0, chart
        assert chart["marks"] > 0, f"chart {chart['label']!r} drew no bars or points"
    assert resources == 0, "the report fetched something: it must be self-contained"
    assert (ARTIFACTS / f"report-{LAST.isoformat()}.png").stat().st_size > 10_000


def test_the_daily_report_asset_puts_a_preview_and_the_paths_in_its_metadata(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", demo.env["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("daily_report"))
    assert event is not None and event.asset_materialization is not None
    metadata = event.asset_materialization.metadata
    assert event.asset_materialization.partition == LAST.isoformat()
    preview = metadata["preview"].value
    assert isinstance(preview, str) and "| PSP | currency |" in preview and "| adyen | KWD |" in preview
    assert Path(str(metadata["html_report"].value)).exists()
    assert Path(str(metadata["xlsx_report"].value)).exists()
    assert metadata["payout_breaks"].value == 0


def test_recon_run_prints_a_summary_per_date_and_the_report(demo: Demo) -> None:
    done = subprocess.run(
        [RECON, "run", "--from", LAST.isoformat(), "--to", LAST.isoformat()],
        env=demo.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.replace("\n", "")
    files = read_report(demo.lake.reports, LAST)
    assert files is not None
    h = files.headline
    assert f"{h['booked']:,} booked, {h['matched']:,} matched, {h['pending']:,} pending" in out
    assert str(files.html) in out
