"""The matching rules, each pinned by a small truth table."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from reconciliation_pipeline.frames import LEDGER_SCHEMA, SETTLEMENT_LINE_SCHEMA, conform, plain_strings
from reconciliation_pipeline.matching import engine, reconcile
from reconciliation_pipeline.matching.accuracy import measure
from reconciliation_pipeline.matching.book import LEDGER as LEDGER_SIDE
from reconciliation_pipeline.matching.book import MATCHED, PENDING, Book
from reconciliation_pipeline.matching.book import SETTLEMENT as SETTLEMENT_SIDE

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


# ---------------------------------------------------------------------------------------------------------
# The awkward cases: splits, cross-currency, order of settlement, late chargebacks, per-PSP rules
# ---------------------------------------------------------------------------------------------------------

AWKWARD_LEDGER = ledger("""transaction_id|psp|psp_reference|original_transaction_id|kind|amount_minor|currency|business_date
sp-1|adyen|SPLIT1||deposit|1000|EUR|2026-03-02
sp-2|adyen|SPLIT2||deposit|900|EUR|2026-03-05
sp-3|adyen|SPLIT3||deposit|900|EUR|2026-03-05
sb-1|paypal|BOOK1||deposit|300|EUR|2026-03-02
sb-2|paypal|BOOK1||deposit|200|EUR|2026-03-02
fx-1|stripe|pi_fx1||deposit|2700|JPY|2026-03-02
fx-2|adyen|FX2||deposit|10000|EUR|2026-03-02
fx-3|adyen|FX3||deposit|10000|EUR|2026-03-02
dep-9|adyen|D9||deposit|5000|EUR|2026-03-01
ref-9|adyen|R9|dep-9|refund|1000|EUR|2026-03-02
old-1|stripe|pi_old||deposit|4000|EUR|2026-02-01
cb-1|stripe|du_old|old-1|chargeback|4000|EUR|2026-03-03
""")

AWKWARD_LINES = lines("""psp|source_file|source_row|line_kind|movement_reference|merchant_reference|payout_reference|remittance_info|amount_minor|currency|booking_date|presentment_amount_minor|presentment_currency|net_currency|exchange_rate
adyen|a.csv|1|capture|SPLIT1|sp-1|||600|EUR|2026-03-02||||
adyen|b.csv|1|capture|SPLIT1|sp-1|||400|EUR|2026-03-04||||
adyen|b.csv|2|capture|SPLIT2|sp-2|||500|EUR|2026-03-05||||
adyen|b.csv|3|capture|SPLIT3|sp-3|||300|EUR|2026-03-05||||
adyen|b.csv|4|capture|SPLIT3|sp-3|||300|EUR|2026-03-06||||
paypal|p.csv|1|capture|BOOK1|sb-1|||500|EUR|2026-03-03||||
stripe|s.csv|1|capture|pi_fx1|fx-1|||1650|EUR|2026-03-03|2700|JPY||
adyen|a.csv|3|capture|FX2|fx-2|||115000|SEK|2026-03-03|||EUR|0.0869565
adyen|a.csv|4|capture|FX3|fx-3|||115000|SEK|2026-03-03|||EUR|0.0900000
adyen|a.csv|5|refund|R9|dep-9|||-1000|EUR|2026-03-02||||
adyen|c.csv|1|capture|D9|dep-9|||5000|EUR|2026-03-04||||
stripe|s.csv|2|chargeback|du_old|old-1|||-4000|EUR|2026-03-04||||
""")

AWKWARD_CASES = """key|status|category|rule|group_with
ledger:sp-1|matched||split_settlement|settlement:adyen:a.csv:1 settlement:adyen:b.csv:1
ledger:sp-2|exception|amount_mismatch|ref_mismatch|settlement:adyen:b.csv:2
ledger:sp-3|pending||split_settlement|settlement:adyen:b.csv:3 settlement:adyen:b.csv:4
ledger:sb-1|matched||split_booking|ledger:sb-2 settlement:paypal:p.csv:1
ledger:fx-1|matched||cross_currency|settlement:stripe:s.csv:1
ledger:fx-2|matched||cross_currency|settlement:adyen:a.csv:3
ledger:fx-3|exception|currency_mismatch|ref_mismatch|settlement:adyen:a.csv:4
ledger:ref-9|matched||exact_ref|settlement:adyen:a.csv:5
ledger:dep-9|matched||exact_ref|settlement:adyen:c.csv:1
ledger:cb-1|matched||exact_ref|settlement:stripe:s.csv:2
ledger:old-1|exception|missing_in_psp|lag_window|
"""


@pytest.fixture(scope="module")
def awkward() -> pl.DataFrame:
    return reconcile(AWKWARD_LEDGER, AWKWARD_LINES, as_of=AS_OF, lag_days=3).outcomes


@pytest.mark.parametrize(
    "case",
    pl.read_csv(io.StringIO(AWKWARD_CASES), separator="|").iter_rows(named=True),
    ids=lambda c: c["key"],
)
def test_awkward_truth_table(awkward: pl.DataFrame, case: dict[str, str | None]) -> None:
    row = awkward.filter(pl.col("record_key") == case["key"]).row(0, named=True)
    assert (row["status"], row["exception_category"], row["rule_id"]) == (
        case["status"],
        case["category"],
        case["rule"],
    )
    members = set(str(case["group_with"] or "").split()) | {str(case["key"])}
    if row["match_id"] is not None:
        group = set(awkward.filter(pl.col("match_id") == row["match_id"])["record_key"].to_list())
        assert group == members
    elif row["status"] != "pending":
        assert members == {case["key"]}
    for other in members - {case["key"]}:
        other_row = awkward.filter(pl.col("record_key") == other).row(0, named=True)
        assert other_row["status"] == row["status"]


def test_a_split_settlement_completes_when_its_last_part_arrives() -> None:
    lone = AWKWARD_LEDGER.filter(pl.col("transaction_id") == "sp-1")
    parts = AWKWARD_LINES.filter(pl.col("movement_reference") == "SPLIT1")
    before = reconcile(lone, parts, as_of=dt.date(2026, 3, 3), lag_days=3).outcomes
    assert set(before["exception_category"].to_list()) == {"amount_mismatch"}  # one part: 600 of 1000
    after = reconcile(lone, parts, as_of=dt.date(2026, 3, 4), lag_days=3).outcomes
    assert set(after["status"].to_list()) == {"matched"} and after["match_id"].n_unique() == 1


def test_cross_currency_outside_the_tolerance_is_not_matched() -> None:
    out = reconcile(AWKWARD_LEDGER, AWKWARD_LINES, as_of=AS_OF, lag_days=3, fx_tolerance_minor=0).outcomes
    # 115000 SEK x 0.0869565 = 9999.9975 EUR cents -> 10000: still within 0.
    assert out.filter(pl.col("record_key") == "ledger:fx-2")["rule_id"][0] == "cross_currency"
    tighter = AWKWARD_LINES.with_columns(
        exchange_rate=pl.when(pl.col("movement_reference") == "FX2")
        .then(pl.lit("0.0869"))
        .otherwise("exchange_rate")
    )
    out = reconcile(AWKWARD_LEDGER, tighter, as_of=AS_OF, lag_days=3, fx_tolerance_minor=2).outcomes
    assert out.filter(pl.col("record_key") == "ledger:fx-2")["exception_category"][0] == "currency_mismatch"


def test_rules_can_be_switched_off_per_psp() -> None:
    everything = reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3).outcomes
    no_merchant_ref = reconcile(
        LEDGER, LINES, as_of=AS_OF, lag_days=3, rules={"adyen": ["exact_ref", "ref_mismatch"]}
    ).outcomes
    assert outcome_of(everything, "ledger:tx-4")[0] == "matched"
    assert outcome_of(no_merchant_ref, "ledger:tx-4")[:2] == ("exception", "missing_in_psp")
    # Stripe keeps every rule.
    assert outcome_of(no_merchant_ref, "ledger:tx-10")[0] == "matched"


def test_exceptions_carry_evidence() -> None:
    result = reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3)
    evidence = dict(result.evidence.iter_rows())
    exceptions = result.outcomes.filter(pl.col("status") == "exception")["record_key"].to_list()
    assert set(exceptions) <= set(evidence)
    dup = json.loads(evidence["ledger:tx-6"])
    assert dup["duplicate_of"] == "ledger:tx-1" and dup["settled_by"] == "settlement:adyen:a.csv:1"
    mismatch = json.loads(evidence["ledger:tx-2"])
    assert mismatch["difference_minor"] == -1 and mismatch["counterpart"] == "settlement:adyen:a.csv:2"


def test_a_split_settlement_still_short_when_its_window_closes_is_one_mismatch_group() -> None:
    # SPLIT3: booked 900 on 03-05, two parts of 300 arrived; on 03-09 the window (3 days) has closed.
    lone = AWKWARD_LEDGER.filter(pl.col("transaction_id") == "sp-3")
    parts = AWKWARD_LINES.filter(pl.col("movement_reference") == "SPLIT3")
    result = reconcile(lone, parts, as_of=dt.date(2026, 3, 9), lag_days=3)
    out = result.outcomes
    assert out.height == 3
    assert set(out["status"]) == {"exception"} and set(out["exception_category"]) == {"amount_mismatch"}
    assert set(out["rule_id"]) == {"split_settlement"} and out["match_id"].n_unique() == 1
    assert out["match_id"][0] == "M-sp-3"
    # every settlement part carries the booking's transaction id
    assert set(out["transaction_id"]) == {"sp-3"}
    evidence = {key: json.loads(text) for key, text in result.evidence.iter_rows()}
    assert set(evidence) == set(out["record_key"])
    booking = evidence["ledger:sp-3"]
    assert (booking["booked_amount_minor"], booking["settled_amount_minor"]) == (900, 600)
    assert booking["difference_minor"] == -300 and booking["parts"] == 2
    assert set(booking["counterparts"]) == {"settlement:adyen:b.csv:3", "settlement:adyen:b.csv:4"}
    part = evidence["settlement:adyen:b.csv:4"]
    assert part["counterpart"] == "ledger:sp-3" and part["rule_nearly_matched"] == "split_settlement"
    # one day earlier the window is still open: the booking and both parts wait
    earlier = reconcile(lone, parts, as_of=dt.date(2026, 3, 8), lag_days=3).outcomes
    assert set(earlier["status"]) == {"pending"}


def test_split_parts_that_overshoot_the_booking_are_one_mismatch_group_at_once() -> None:
    lone = AWKWARD_LEDGER.filter(pl.col("transaction_id") == "sp-1")
    extra = AWKWARD_LINES.filter(pl.col("movement_reference") == "SPLIT1").with_columns(
        amount_minor=pl.lit(700, pl.Int64)
    )
    out = reconcile(lone, extra, as_of=dt.date(2026, 3, 4), lag_days=3).outcomes
    assert out.height == 3 and out["match_id"].n_unique() == 1
    assert set(out["exception_category"]) == {"amount_mismatch"} and set(out["rule_id"]) == {
        "split_settlement"
    }


def test_lazy_inputs_give_the_same_outcomes_and_the_sink_writes_them(tmp_path: Path) -> None:
    eager = reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3)
    lazy = reconcile(LEDGER.lazy(), LINES.lazy(), as_of=AS_OF, lag_days=3)
    assert_frame_equal(lazy.outcomes, eager.outcomes)
    assert_frame_equal(lazy.evidence, eager.evidence)
    lazy.sink_outcomes(tmp_path / "outcomes.parquet")
    written = pl.read_parquet(tmp_path / "outcomes.parquet")
    # low-cardinality columns are written from their codes: Enums to Polars, the same values
    assert isinstance(written.schema["status"], pl.Enum)
    assert_frame_equal(plain_strings(written), eager.outcomes)
    # and plain strings to any other Parquet reader
    import duckdb

    described = duckdb.sql(f"DESCRIBE SELECT * FROM '{tmp_path / 'outcomes.parquet'}'").fetchall()
    types = {row[0]: row[1] for row in described}
    coded = ("record", "psp", "source_file", "status", "rule_id", "exception_category")
    assert {types[c] for c in coded} == {"VARCHAR"}


def test_record_keys_and_match_ids_are_the_same_without_the_prefix_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Settlement record keys and match ids gather their "psp:file:" prefix from a table of the few
    (psp, file) pairs; with too many pairs for a table they are assembled row by row, alike."""
    from reconciliation_pipeline.matching import engine

    gathered = reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3).outcomes
    monkeypatch.setattr(engine, "_MAX_PREFIXES", 0)
    assembled = reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3).outcomes
    assert_frame_equal(gathered, assembled)
    settled = gathered.filter(pl.col("record") == "settlement").row(0, named=True)
    assert (
        settled["record_key"]
        == f"settlement:{settled['psp']}:{settled['source_file']}:{settled['source_row']}"
    )
    assert gathered["match_id"].drop_nulls().str.starts_with("M-").all()


def test_hash_collisions_in_exact_ref_never_pair_unequal_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """exact_ref joins on a 64-bit hash of the key and checks each pair column by column: with every
    key hashing alike (every record collides with every other) the outcomes must not change."""
    expected = reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3)
    awkward = reconcile(AWKWARD_LEDGER, AWKWARD_LINES, as_of=AS_OF, lag_days=3)
    monkeypatch.setattr(engine, "_key_hash", lambda *columns: pl.lit(7, pl.UInt64))
    assert_frame_equal(reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3).outcomes, expected.outcomes)
    assert_frame_equal(reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3).evidence, expected.evidence)
    collided = reconcile(AWKWARD_LEDGER, AWKWARD_LINES, as_of=AS_OF, lag_days=3)
    assert_frame_equal(collided.outcomes, awkward.outcomes)


def test_a_hash_collision_between_one_booking_and_one_settlement_row_pairs_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    books = LEDGER.filter(pl.col("transaction_id") == "tx-1")  # P1, 1000 EUR
    rows = LINES.filter(pl.col("movement_reference") == "P2")  # P2, 499 EUR
    monkeypatch.setattr(engine, "_key_hash", lambda *columns: pl.lit(7, pl.UInt64))
    out = reconcile(books, rows, as_of=AS_OF, lag_days=3).outcomes
    # the two collide, their keys differ: neither is paired, each falls through to the fallbacks
    assert outcome_of(out, "ledger:tx-1")[:2] == ("exception", "missing_in_psp")
    assert outcome_of(out, "settlement:adyen:a.csv:2")[:2] == ("exception", "missing_in_ledger")


def test_a_record_decided_twice_is_refused() -> None:
    book = Book(3, 2, engine.RULES)
    book.decide(LEDGER_SIDE, np.array([0, 2]), rule="exact_ref", status=MATCHED)
    with pytest.raises(AssertionError, match="decided twice"):
        book.decide(LEDGER_SIDE, np.array([1, 2]), rule="lag_window", status=PENDING)
    with pytest.raises(AssertionError, match="decided twice"):
        book.decide(SETTLEMENT_SIDE, np.array([1, 1]), rule="unmatched", status=PENDING)


def test_duplicates_pair_in_canonical_order_whatever_the_row_order() -> None:
    """Three bookings and two settlement rows of one key: the two earliest bookings pair with the two
    first rows (file, row), the last booking is the duplicate, in any input order."""
    books = ledger("""transaction_id|psp|psp_reference|original_transaction_id|kind|amount_minor|currency|business_date
d-3|adyen|DUP||deposit|100|EUR|2026-03-04
d-1|adyen|DUP||deposit|100|EUR|2026-03-02
d-2|adyen|DUP||deposit|100|EUR|2026-03-03
""")
    rows = lines("""psp|source_file|source_row|line_kind|movement_reference|merchant_reference|payout_reference|remittance_info|amount_minor|currency|booking_date
adyen|b.csv|1|capture|DUP||||100|EUR|2026-03-05
adyen|a.csv|9|capture|DUP||||100|EUR|2026-03-05
""")
    for seed in range(4):
        out = reconcile(
            books.sample(fraction=1.0, shuffle=True, seed=seed),
            rows.sample(fraction=1.0, shuffle=True, seed=seed),
            as_of=AS_OF,
            lag_days=3,
        ).outcomes
        assert outcome_of(out, "ledger:d-1")[2] == "M-adyen:a.csv:9"
        assert outcome_of(out, "ledger:d-2")[2] == "M-adyen:b.csv:1"
        assert outcome_of(out, "ledger:d-3")[:2] == ("exception", "duplicate_booking")


def test_hash_groups_give_every_position_once_grouped_by_equal_hashes() -> None:
    """exact_ref's one-sort grouping: each position of left + right appears once, and records with
    equal hashes land in the same run (the low bits carry the position, so unequal hashes may share a
    run too, which the callers' column checks handle)."""
    rng = np.random.default_rng(7)
    left = pl.Series(rng.integers(0, 2**63, 5_000, dtype=np.uint64))
    right = pl.concat([left.sample(3_000, seed=1), pl.Series(rng.integers(0, 2**63, 2_000, dtype=np.uint64))])
    order, starts = engine._hash_groups(left, right)
    assert np.array_equal(np.sort(order), np.arange(10_000))
    hashes = np.concatenate([left.to_numpy(), right.to_numpy()])
    run = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, order.size]))
    run_of = np.empty(order.size, dtype=np.int64)
    run_of[order] = run
    # every pair of equal hashes shares a run
    frame = pl.DataFrame({"h": hashes, "run": run_of})
    assert frame.group_by("h").agg(pl.col("run").n_unique())["run"].max() == 1
    assert starts.size >= frame["h"].n_unique() - 5  # distinct 64-bit hashes stay apart (bar rare collisions)


def test_exact_ref_key_check_gives_the_same_answer_slice_by_slice() -> None:
    """The pair check reads the key columns a slice at a time; the slices must not change a verdict."""
    led = engine._prepare_ledger(LEDGER, AS_OF)
    stl = engine._prepare_settlement(LINES, AS_OF)
    rng = np.random.default_rng(3)
    lid = rng.integers(0, led.height, 50)
    sid = rng.integers(0, stl.height, 50)
    whole = engine._same_keys(led, stl, lid, sid)
    assert np.array_equal(engine._same_keys(led, stl, lid, sid, slice_rows=7), whole)
    # and the verdict is the column comparison itself
    expected = [
        (
            led["psp_reference"][int(i)],
            led["signed"][int(i)],
            str(led["psp"][int(i)]),
            str(led["currency"][int(i)]),
        )
        == (
            stl["movement_reference"][int(j)],
            stl["amount_minor"][int(j)],
            str(stl["psp"][int(j)]),
            str(stl["currency"][int(j)]),
        )
        for i, j in zip(lid, sid, strict=True)
    ]
    assert any(expected) and not all(expected)
    assert whole.tolist() == expected


def test_a_record_given_twice_in_one_decision_is_refused() -> None:
    book = Book(5, 2, engine.RULES)
    with pytest.raises(AssertionError, match=r"ids \[3\] given more than once"):
        book.decide(LEDGER_SIDE, np.array([3, 1, 3]), rule="exact_ref", status=MATCHED)


def test_row_numbers_from_the_table_or_cast_give_the_same_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record keys and match ids take the row number's text from a table of every row up to the
    largest; without the table (rows too large to list) each number is cast: the same outcomes."""
    tabled = reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3).outcomes
    monkeypatch.setattr(engine, "_MAX_ROW_TEXTS", 0)
    cast = reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3).outcomes
    assert_frame_equal(tabled, cast)
    assert tabled.filter(pl.col("record") == "settlement")["record_key"].str.contains(r":\d+$").all()


def test_anchor_codes_widen_when_the_records_do_not_fit_four_bytes() -> None:
    from reconciliation_pipeline.matching.book import code_type

    assert code_type(20_000_000) is np.int32
    assert code_type(2**31 - 1) is np.int32
    assert code_type(2**31) is np.int64
    book = Book(3, 2, engine.RULES)
    assert book.anchor[LEDGER_SIDE].dtype == np.int32 and book.tx.dtype == np.int32


def test_late_settlement_columns_must_come_back_for_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The columns only the later rules use are read again after exact_ref, by row id; an input whose
    rows come back in another order is refused, never given another row's exchange rate."""
    known = engine._known_lines
    calls = []

    def reordered(lines: pl.DataFrame | pl.LazyFrame, as_of: dt.date) -> pl.LazyFrame:
        calls.append(1)
        plan = known(lines, as_of)
        if len(calls) == 1:
            return plan
        return known(lines.lazy().reverse(), as_of)  # the second read sees the rows backwards

    monkeypatch.setattr(engine, "_known_lines", reordered)
    with pytest.raises(ValueError, match="another order"):
        reconcile(LEDGER, LINES, as_of=AS_OF, lag_days=3)
    assert len(calls) == 2
