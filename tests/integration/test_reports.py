"""The report SQL and writers on a small hand-made lake: each rule that the demo data cannot show
(a payout the bank under-credited, a record whose amount is missing, fees charged in another currency)
is pinned here, on real DuckDB over real Parquet files."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from reconciliation_pipeline.frames import LEDGER_SCHEMA, OUTCOME_SCHEMA, SETTLEMENT_LINE_SCHEMA, conform
from reconciliation_pipeline.lake import Lake, atomic_write_parquet
from reconciliation_pipeline.reports import query_reports, write_reports
from reconciliation_pipeline.reports.charts import bar_chart, line_chart
from reconciliation_pipeline.reports.money_format import display, excel_format, to_major

DAY = dt.date(2026, 3, 2)
SHA = "0" * 64


@pytest.mark.parametrize(
    ("minor", "currency", "shown", "major", "fmt"),
    [
        (123456, "EUR", "1,234.56", Decimal("1234.56"), "#,##0.00;[Red]-#,##0.00"),
        (-5, "EUR", "-0.05", Decimal("-0.05"), "#,##0.00;[Red]-#,##0.00"),
        (123456, "JPY", "123,456", Decimal("123456"), "#,##0;[Red]-#,##0"),
        (123456, "KWD", "123.456", Decimal("123.456"), "#,##0.000;[Red]-#,##0.000"),
        (9_007_199_254_740_993, "EUR", "90,071,992,547,409.93", Decimal("90071992547409.93"), None),
    ],
)
def test_amounts_show_their_currency_digits_exactly(
    minor: int, currency: str, shown: str, major: Decimal, fmt: str | None
) -> None:
    assert display(minor, currency) == shown
    assert to_major(minor, currency) == major  # exact beyond a float's 2**53
    if fmt:
        assert excel_format(currency) == fmt


def _frame(text: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    raw = pl.read_csv(io.StringIO(text), separator="|", infer_schema_length=0)
    raw = raw.with_columns(pl.col(c).str.strip_chars() for c in raw.columns).rename(lambda c: c.strip())
    casts = []
    for name in raw.columns:
        dtype = schema[name]
        expr = pl.col(name).replace("", None)
        if dtype == pl.Boolean():
            expr = expr == "true"
        elif dtype == pl.Date():
            expr = expr.str.to_date()
        elif isinstance(dtype, pl.Datetime):
            expr = expr.str.to_datetime(time_zone="UTC")
        casts.append(expr.cast(dtype).alias(name))
    return conform(raw.select(casts), schema)


LEDGER = """
event_id | transaction_id | psp   | psp_reference | kind    | amount_minor | currency | jurisdiction | occurred_at          | business_date
e1       | tx-1           | adyen | P1            | deposit | 10000        | SEK      | SE           | 2026-03-02T10:00:00Z | 2026-03-02
e2       | tx-2           | adyen | P2            | refund  | 2500         | EUR      | MT           | 2026-03-02T11:00:00Z | 2026-03-02
e3       | tx-3           | adyen | P3            | deposit | 700          | EUR      | DE           | 2026-03-02T12:00:00Z | 2026-03-02
"""
LINES = """
psp   | source_file | source_row | line_kind       | moves_player_money | batch_id | amount_minor | currency | fee_minor | net_amount_minor | net_currency | booking_date
adyen | a.csv       | 1          | capture         | true               | B1       | 10000        | SEK      | 9         | 881              | EUR          | 2026-03-02
adyen | a.csv       | 2          | refund          | true               | B1       | -2500        | EUR      | 0         | -2500            | EUR          | 2026-03-02
adyen | a.csv       | 3          | fee             | false              | B1       | -40          | EUR      | 0         | -40              | EUR          | 2026-03-02
adyen | a.csv       | 4          | merchant_payout | false              | B1       | -1659        | EUR      | 0         | -1659            | EUR          | 2026-03-02
bank  | s.xml       | 1          | bank_credit     | false              | S1       | 1600         | EUR      | 0         | 1600             | EUR          | 2026-03-02
"""
OUTCOMES = """
record     | transaction_id | psp   | source_file | source_row | status    | match_id | rule_id     | exception_category | business_date
ledger     | tx-1           | adyen |             |            | matched   | M1       | exact_ref   |                    | 2026-03-02
ledger     | tx-2           | adyen |             |            | matched   | M2       | exact_ref   |                    | 2026-03-02
ledger     | tx-3           | adyen |             |            | pending   |          | lag_window  |                    | 2026-03-02
ledger     | tx-9           | adyen |             |            | exception |          | exact_ref   | duplicate_booking  | 2026-03-02
settlement |                | adyen | a.csv       | 1          | matched   | M1       | exact_ref   |                    | 2026-03-02
settlement |                | adyen | a.csv       | 2          | matched   | M2       | exact_ref   |                    | 2026-03-02
settlement |                | adyen | a.csv       | 3          | matched   | F1       | fee_row     |                    | 2026-03-02
settlement |                | adyen | a.csv       | 4          | matched   | P1       | payout_bank |                    | 2026-03-02
settlement |                | bank  | s.xml       | 1          | matched   | P1       | payout_bank |                    | 2026-03-02
"""


@pytest.fixture
def small(tmp_path: Path) -> tuple[Lake, pl.DataFrame]:
    lake = Lake(tmp_path / "data")
    lake.ensure()
    lines = _frame(LINES, SETTLEMENT_LINE_SCHEMA).with_columns(
        file_sha256=pl.lit(SHA), record_type=pl.col("line_kind")
    )
    atomic_write_parquet(
        lake.lake_table("transactions", DAY) / "part-0.parquet", _frame(LEDGER, LEDGER_SCHEMA)
    )
    atomic_write_parquet(lake.lake_table("settlement_lines", DAY) / "part-0.parquet", lines)
    return lake, _frame(OUTCOMES, OUTCOME_SCHEMA)


def test_jurisdiction_fees_and_payout_breaks_on_a_small_lake(small: tuple[Lake, pl.DataFrame]) -> None:
    lake, outcomes = small
    data = query_reports(lake, DAY, outcomes)
    summary = data["summary"]

    def row(currency: str, jurisdiction: str | None, psp: str = "adyen") -> dict[str, object]:
        match = summary.filter(
            (pl.col("psp") == psp)
            & (pl.col("currency") == currency)
            & pl.col("jurisdiction").eq_missing(pl.lit(jurisdiction, pl.String))
        )
        assert match.height == 1, summary
        return match.row(0, named=True)

    # the SEK capture inherits the jurisdiction of the deposit it matched; its fee is charged in EUR
    assert row("SEK", "SE")["settled_minor"] == 10000
    assert row("SEK", "SE")["fees_minor"] == 0
    assert row("EUR", "SE")["fees_minor"] == 9
    # a refund is signed from the merchant's view; the pending deposit is counted as pending
    assert row("EUR", "MT")["booked_minor"] == -2500
    assert row("EUR", "DE")["ledger_pending_minor"] == 700
    # the fee row and the payout have no jurisdiction; the bank credited 59 cents less than paid out
    unattributed = row("EUR", None)
    assert unattributed["fees_minor"] == 40
    assert (unattributed["payout_minor"], unattributed["bank_credit_minor"]) == (1659, 1600)
    assert unattributed["payout_minus_bank_minor"] == 59
    assert row("EUR", None, psp="bank")["settlement_records"] == 1
    payouts = data["payouts"].row(0, named=True)
    assert payouts["net_settled_minor"] == 881 - 2500 - 40
    assert payouts["batch_minus_payout_minor"] == 881 - 2500 - 40 - 1659
    # tx-9 is in the export but not in the lake: counted, and reported as missing its amount
    assert data.missing_amounts.to_dicts() == [{"record": "ledger", "psp": "adyen", "records": 1}]
    assert summary["duplicate_booking"].sum() == 1


def test_a_payout_break_and_a_missing_amount_show_in_the_html(
    small: tuple[Lake, pl.DataFrame], tmp_path: Path
) -> None:
    lake, outcomes = small
    files = write_reports(query_reports(lake, DAY, outcomes), tmp_path / "out")
    assert files.headline["payout_breaks"] == 1
    assert files.headline["missing_amounts"] == 1
    page = files.html.read_text()
    assert '<td class="num flag">0.59</td>' in page
    assert "have no amount in the lake" in page


def test_charts_draw_marks_and_say_when_there_is_nothing() -> None:
    svg = bar_chart("t", ["a", "b"], [("x", [1, 0]), ("y", [2, 3])])
    assert svg.count('class="bar"') == 3  # zero-length segments are not drawn
    empty = bar_chart("t", ["a"], [("x", [0])], empty_message="No exceptions")
    assert 'class="chart empty"' in empty and "No exceptions" in empty
    line = line_chart("t", ["d1", "d2", "d3"], [("rate", [0.5, None, 1.0])])
    assert line.count('class="point"') == 2 and "<polyline" not in line  # a gap splits the line


def test_the_ageing_leaves_out_exceptions_an_operator_resolved(small: tuple[Lake, pl.DataFrame]) -> None:
    lake, outcomes = small
    unresolved = query_reports(lake, DAY, outcomes)["ageing"]
    assert unresolved["records"].sum() == 1
    queue = pl.DataFrame({"record_key": ["ledger:tx-9", "ledger:tx-9"], "state": ["resolved", "resolved"]})
    assert query_reports(lake, DAY, outcomes, exception_queue=queue)["ageing"].is_empty()
    # a resolved item followed by a new open one (the matcher reopened it) is still outstanding
    reopened = pl.DataFrame({"record_key": ["ledger:tx-9", "ledger:tx-9"], "state": ["resolved", "open"]})
    assert query_reports(lake, DAY, outcomes, exception_queue=reopened)["ageing"]["records"].sum() == 1
