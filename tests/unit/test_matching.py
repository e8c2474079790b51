"""The matching rules, each pinned by a small truth table."""

from __future__ import annotations

import datetime as dt
import io

import polars as pl
import pytest

from reconciliation_pipeline.frames import LEDGER_SCHEMA, SETTLEMENT_LINE_SCHEMA, conform
from reconciliation_pipeline.matching import reconcile
from reconciliation_pipeline.matching.accuracy import measure

AS_OF = dt.date(2026, 3, 6)


def ledger(table: str) -> pl.DataFrame:
    frame = pl.read_csv(io.StringIO(table), separator="|", infer_schema_length=0).with_columns(
        pl.col("amount_minor").cast(pl.Int64),
        pl.col("business_date").str.to_date(),
    )
    frame = frame.with_columns(
        event_id=pl.concat_str([pl.lit("e-"), pl.col("transaction_id")]),
        occurred_at=pl.col("business_date").cast(pl.Datetime("us", "UTC")) + pl.duration(hours=12),
        player_id=pl.lit("p1"),
        brand=pl.lit("b1"),
        jurisdiction=pl.lit("MT"),
    )
    return conform(frame, LEDGER_SCHEMA)


def lines(table: str) -> pl.DataFrame:
    frame = pl.read_csv(io.StringIO(table), separator="|", infer_schema_length=0).with_columns(
        pl.col("amount_minor").cast(pl.Int64),
        pl.col("source_row").cast(pl.Int64),
        pl.col("booking_date").str.to_date(),
        moves_player_money=pl.col("line_kind").is_in(["capture", "refund", "chargeback", "payout_to_player"]),
        file_sha256=pl.lit("0" * 64),
        record_type=pl.col("line_kind"),
    )
    return conform(frame, SETTLEMENT_LINE_SCHEMA)


def outcome_of(result: pl.DataFrame, key: str) -> tuple[str, str | None, str | None]:
    row = result.filter(pl.col("record_key") == key).row(0, named=True)
    return row["status"], row["exception_category"], row["match_id"]


LEDGER = ledger("""transaction_id|psp|psp_reference|original_transaction_id|kind|amount_minor|currency|business_date
tx-1|adyen|P1||deposit|1000|EUR|2026-03-02
tx-2|adyen|P2||deposit|500|EUR|2026-03-02
tx-3|adyen|P3||deposit|700|EUR|2026-03-02
tx-4|adyen|||deposit|900|JPY|2026-03-02
tx-5|adyen|R5|tx-1|refund|200|EUR|2026-03-03
tx-6|adyen|P1||deposit|1000|EUR|2026-03-02
tx-7|adyen|P7||deposit|100|EUR|2026-03-01
tx-8|adyen|P8||deposit|100|KWD|2026-03-05
tx-9|adyen|R9|tx-unknown|refund|50|EUR|2026-03-04
tx-10|stripe|du_1|tx-1|chargeback|300|EUR|2026-03-04
tx-11|stripe|du_1|tx-1|chargeback_reversal|300|EUR|2026-03-05
""")

LINES = lines("""psp|source_file|source_row|line_kind|movement_reference|merchant_reference|payout_reference|remittance_info|amount_minor|currency|booking_date
adyen|a.csv|1|capture|P1|tx-1|||1000|EUR|2026-03-03
adyen|a.csv|2|capture|P2|tx-2|||499|EUR|2026-03-03
adyen|a.csv|3|capture|P3|tx-3|||700|GBP|2026-03-03
adyen|a.csv|4|capture|X4|tx-4|||900|JPY|2026-03-03
adyen|a.csv|5|refund|R5|tx-1|||-200|EUR|2026-03-03
adyen|a.csv|6|capture|P99|tx-99|||10|EUR|2026-03-03
adyen|a.csv|7|fee|||||-5|EUR|2026-03-03
adyen|a.csv|8|merchant_payout|||TX1||-1000|EUR|2026-03-03
adyen|a.csv|9|refund|R9|tx-unknown|||-50|EUR|2026-03-04
adyen|a.csv|10|refund|R5|tx-1|||-200|EUR|2026-03-04
stripe|s.csv|1|chargeback|du_1|tx-1|||-300|EUR|2026-03-04
stripe|s.csv|2|chargeback_reversal|du_1|tx-1|||300|EUR|2026-03-05
bank|b.xml|1|bank_credit||||TX1 batch 3, CasinoEUR|1000|EUR|2026-03-03
bank|b.xml|2|bank_debit||||fee|-25|EUR|2026-03-03
""")


@pytest.fixture(scope="module")
def result() -> pl.DataFrame:
    return reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3).outcomes


# key | status | category | shares a group with
CASES = """key|status|category|group_with
ledger:tx-1|matched||settlement:adyen:a.csv:1
ledger:tx-2|exception|amount_mismatch|settlement:adyen:a.csv:2
ledger:tx-3|exception|currency_mismatch|settlement:adyen:a.csv:3
ledger:tx-4|matched||settlement:adyen:a.csv:4
ledger:tx-5|matched||settlement:adyen:a.csv:5
ledger:tx-6|exception|duplicate_booking|
ledger:tx-7|exception|missing_in_psp|
ledger:tx-8|pending||
ledger:tx-9|exception|unlinked_adjustment|settlement:adyen:a.csv:9
ledger:tx-10|matched||settlement:stripe:s.csv:1
ledger:tx-11|matched||settlement:stripe:s.csv:2
settlement:adyen:a.csv:6|exception|missing_in_ledger|
settlement:adyen:a.csv:7|matched||
settlement:adyen:a.csv:8|matched||settlement:bank:b.xml:1
settlement:adyen:a.csv:10|exception|duplicate_settlement|
settlement:bank:b.xml:2|matched||
"""


@pytest.mark.parametrize(
    "case", pl.read_csv(io.StringIO(CASES), separator="|").iter_rows(named=True), ids=lambda c: c["key"]
)
def test_rule_truth_table(result: pl.DataFrame, case: dict[str, str | None]) -> None:
    status, category, match_id = outcome_of(result, str(case["key"]))
    assert (status, category) == (case["status"], case["category"])
    if case["group_with"]:
        other_status, _, other_match = outcome_of(result, str(case["group_with"]))
        assert match_id is not None and match_id == other_match
        assert other_status == status
    elif status == "exception":
        assert match_id is None


def test_every_record_has_exactly_one_outcome(result: pl.DataFrame) -> None:
    assert result.height == LEDGER.height + LINES.height
    assert result["record_key"].n_unique() == result.height


def test_records_after_as_of_are_not_in_view() -> None:
    out = reconcile(LEDGER, LINES, as_of=dt.date(2026, 3, 2), lag_days=3).outcomes
    assert set(out["business_date"].to_list()) <= {dt.date(2026, 3, 1), dt.date(2026, 3, 2)}
    # tx-1's settlement is booked on 03-03: still pending on 03-02.
    assert outcome_of(out, "ledger:tx-1")[0] == "pending"


def test_same_inputs_same_outcomes_whatever_the_row_order() -> None:
    a = reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3).export
    b = reconcile(
        LEDGER.reverse(), LINES.sample(fraction=1.0, shuffle=True, seed=3), as_of=AS_OF, lag_days=3
    ).export
    assert a.equals(b)


def test_pending_becomes_missing_when_the_window_closes() -> None:
    lone = LEDGER.filter(pl.col("transaction_id") == "tx-8")
    for days_later, expected in [(0, "pending"), (3, "pending"), (4, "exception")]:
        as_of = dt.date(2026, 3, 5) + dt.timedelta(days=days_later)
        out = reconcile(lone, LINES.clear(), as_of=as_of, lag_days=3).outcomes
        assert out["status"].to_list() == [expected]


def test_accuracy_counts_group_status_category_and_missing_records(result: pl.DataFrame) -> None:
    export = reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3).export
    assert measure(export, export).overall == 1.0
    # One record wrong, one missing, one extra: 3 wrong out of total+1 distinct keys.
    broken = export.with_columns(
        status=pl.when(pl.col("transaction_id") == "tx-8").then(pl.lit("matched")).otherwise("status")
    )
    broken = broken.filter(pl.col("transaction_id").ne_missing("tx-7"))
    extra = export.filter(pl.col("transaction_id") == "tx-7").with_columns(transaction_id=pl.lit("tx-ghost"))
    acc = measure(pl.concat([broken, extra]), export)
    assert acc.total == export.height + 1
    assert acc.correct == export.height - 2
    # Splitting a matched group makes both of its members wrong.
    split = export.with_columns(
        match_id=pl.when(pl.col("record") == "ledger").then(pl.lit(None)).otherwise("match_id")
    )
    assert measure(split, export).by_category.filter(pl.col("category") == "matched")["accuracy"][0] < 1.0
