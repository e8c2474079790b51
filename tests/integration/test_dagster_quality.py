"""The Great Expectations suites in `expectations/`: they hold DESIGN.md's vocabulary and they fail on the
defects they are there for (through the real Great Expectations, on Polars frames handed over as pandas)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from reconciliation_pipeline import quality
from reconciliation_pipeline.frames import EXCEPTION_CATEGORIES, RECORDS, STATUSES

DAY = dt.date(2026, 3, 4)


def _value_set(suite: str, column: str) -> set[str]:
    sets = [
        e["kwargs"]["value_set"]
        for e in quality.suite_json(suite)["expectations"]
        if e["type"] == "expect_column_values_to_be_in_set"
        and e["kwargs"]["column"] == column
        and "row_condition" not in e["kwargs"]
    ]
    assert len(sets) == 1, f"{suite}: one in-set expectation on {column}"
    return set(sets[0])


def test_suites_hold_the_vocabulary_of_the_design() -> None:
    assert set(quality.suite_names()) == {"reconciliation_outcomes", "exception_queue"}
    assert _value_set("reconciliation_outcomes", "status") == set(STATUSES)
    assert _value_set("reconciliation_outcomes", "record") == set(RECORDS)
    assert _value_set("reconciliation_outcomes", "exception_category") == set(EXCEPTION_CATEGORIES)
    assert _value_set("exception_queue", "exception_category") == set(EXCEPTION_CATEGORIES)


def test_every_suite_loads_as_a_great_expectations_suite() -> None:
    for name in quality.suite_names():
        suite = quality.load_suite(name)
        assert suite.name == name
        assert len(suite.expectations) == len(quality.suite_json(name)["expectations"])


def test_a_missing_suite_is_named() -> None:
    with pytest.raises(FileNotFoundError, match="no_such_suite"):
        quality.suite_json("no_such_suite")


def _outcomes(rows: list[dict[str, Any]]) -> pl.DataFrame:
    base: dict[str, Any] = {
        "record_key": None,
        "record": "ledger",
        "transaction_id": None,
        "psp": "adyen",
        "source_file": None,
        "source_row": None,
        "status": "matched",
        "match_id": "M-1",
        "rule_id": "exact_ref",
        "exception_category": None,
        "business_date": DAY,
    }
    schema = {
        "record_key": pl.String,
        "record": pl.String,
        "transaction_id": pl.String,
        "psp": pl.String,
        "source_file": pl.String,
        "source_row": pl.Int64,
        "status": pl.String,
        "match_id": pl.String,
        "rule_id": pl.String,
        "exception_category": pl.String,
        "business_date": pl.Date,
    }
    return pl.DataFrame([{**base, **r} for r in rows], schema=schema)


GOOD = [
    {"record_key": "ledger:t1", "transaction_id": "t1"},
    {
        "record_key": "settlement:adyen:f.csv:1",
        "record": "settlement",
        "source_file": "f.csv",
        "source_row": 1,
    },
    {
        "record_key": "ledger:t2",
        "transaction_id": "t2",
        "status": "exception",
        "match_id": None,
        "exception_category": "missing_in_psp",
    },
]
COUNTS = {"records_in_view": 3, "ledger_records_in_view": 2, "settlement_records_in_view": 1}


def _failed(outcome: quality.SuiteOutcome) -> set[tuple[str, str | None]]:
    return {(e.expectation, e.column) for e in outcome.failed}


def test_good_outcomes_pass() -> None:
    outcome = quality.validate(_outcomes(GOOD), "reconciliation_outcomes", COUNTS)
    assert outcome.success, outcome.markdown()
    assert "| expect_column_values_to_be_unique | record_key |" in outcome.markdown()


@pytest.mark.parametrize(
    ("change", "counts", "expected"),
    [
        ({2: {"record_key": "ledger:t1"}}, COUNTS, ("expect_column_values_to_be_unique", "record_key")),
        ({0: {"status": "settled"}}, COUNTS, ("expect_column_values_to_be_in_set", "status")),
        (
            {2: {"exception_category": "fraud"}},
            COUNTS,
            ("expect_column_values_to_be_in_set", "exception_category"),
        ),
        (
            {2: {"exception_category": None}},
            COUNTS,
            ("expect_column_values_to_not_be_null", "exception_category"),
        ),
        (
            {0: {"exception_category": "amount_mismatch"}},
            COUNTS,
            ("expect_column_values_to_be_null", "exception_category"),
        ),
        ({0: {"transaction_id": None}}, COUNTS, ("expect_column_values_to_not_be_null", "transaction_id")),
        ({1: {"source_row": 0}}, COUNTS, ("expect_column_values_to_be_between", "source_row")),
        (
            {},
            {**COUNTS, "records_in_view": 4, "ledger_records_in_view": 3},
            ("expect_table_row_count_to_equal", None),
        ),
    ],
)
def test_each_defect_fails_its_expectation(
    change: dict[int, dict[str, Any]], counts: dict[str, int], expected: tuple[str, str | None]
) -> None:
    rows = [{**row, **change.get(i, {})} for i, row in enumerate(GOOD)]
    outcome = quality.validate(_outcomes(rows), "reconciliation_outcomes", counts)
    assert not outcome.success
    assert expected in _failed(outcome), outcome.markdown()


def test_the_exception_queue_bounds_amounts_and_currencies() -> None:
    queue = pl.DataFrame(
        {
            "record_key": ["ledger:t2", "ledger:t3"],
            "record": ["ledger", "ledger"],
            "exception_category": ["missing_in_psp", "amount_mismatch"],
            "amount_minor": [1_000, 10**12],
            "currency": ["EUR", "eur"],
            "days_open": [0, 3],
        }
    )
    outcome = quality.validate(queue, "exception_queue", {"exceptions_in_outcomes": 2})
    assert _failed(outcome) == {
        ("expect_column_values_to_be_between", "amount_minor"),
        ("expect_column_values_to_match_regex", "currency"),
    }, outcome.markdown()
    ok = quality.validate(
        queue.with_columns(amount_minor=pl.Series([1_000, -5_000]), currency=pl.lit("EUR")),
        "exception_queue",
        {"exceptions_in_outcomes": 2},
    )
    assert ok.success, ok.markdown()
