"""Landing events from a JSON-lines replay: schema validation, dead letters, dates, idempotence."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciliation_pipeline.frames import LANDED_SCHEMA
from reconciliation_pipeline.lake import Lake
from reconciliation_pipeline.landing import check_event, land_jsonl


def event(n: int, **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": f"ev-{n}",
        "transaction_id": f"tx-{n}",
        "psp": "adyen",
        "psp_reference": f"P{n:015d}",
        "kind": "deposit",
        "amount_minor": 1000 + n,
        "currency": "EUR",
        "occurred_at": "2026-03-02T10:00:00+01:00",
        "player_id": "pl-1",
        "brand": "lucky",
        "jurisdiction": "MT",
        "trace_id": "0" * 31 + "1",
    }
    base.update(overrides)
    return base


def write_lines(path: Path, items: list[object]) -> Path:
    path.write_text("".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items))
    return path


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "data")
    lake.ensure()
    return lake


def test_valid_events_land_by_business_date_in_malta_time(lake: Lake, tmp_path: Path) -> None:
    src = write_lines(
        tmp_path / "events.jsonl",
        [
            event(1),
            event(2, occurred_at="2026-03-01T23:30:00Z"),  # 00:30 on 2 March in Malta
            event(3, occurred_at="2026-03-02T22:59:59Z"),  # 23:59:59 on 2 March in Malta
            event(4, occurred_at="2026-03-02T23:00:00Z"),  # midnight: 3 March
        ],
    )
    result = land_jsonl(src, lake=lake, tz="Europe/Malta")
    assert result.landed == 4 and result.quarantined == 0
    assert result.business_dates == {dt.date(2026, 3, 2), dt.date(2026, 3, 3)}
    day2 = pl.read_parquet(lake.landing_transactions_date(dt.date(2026, 3, 2)))
    assert sorted(day2["transaction_id"].to_list()) == ["tx-1", "tx-2", "tx-3"]
    assert day2.schema == pl.Schema(LANDED_SCHEMA)
    assert day2["amount_minor"].dtype == pl.Int64


def test_bad_events_are_dead_lettered_with_row_and_field_and_do_not_stop_the_rest(
    lake: Lake, tmp_path: Path
) -> None:
    src = write_lines(
        tmp_path / "events.jsonl",
        [
            event(1),
            event(2, amount_minor="12.50"),
            "{not json",
            {k: v for k, v in event(4).items() if k != "currency"},
            event(5, jurisdiction="Malta"),
            event(6),
        ],
    )
    result = land_jsonl(src, lake=lake, tz="Europe/Malta")
    assert result.landed == 2
    assert [(p.row, p.field) for p in result.problems] == [
        (2, "amount_minor"),
        (3, None),
        (4, "currency"),
        (5, "jurisdiction"),
    ]
    assert all(p.file == "events.jsonl" for p in result.problems)
    assert "12.50" in str(result.problems[0])
    assert result.dead_letter is not None
    letters = [json.loads(line) for line in result.dead_letter.read_text().splitlines()]
    assert [item["row"] for item in letters] == [2, 3, 4, 5]
    assert letters[1]["original"] == "{not json"
    assert all(item["hint"] for item in letters)


def test_replaying_the_same_file_rewrites_the_same_files(lake: Lake, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "events.jsonl", [event(1), event(2)])
    first = land_jsonl(src, lake=lake, tz="Europe/Malta")
    second = land_jsonl(src, lake=lake, tz="Europe/Malta")
    assert first.files == second.files
    landed = list(lake.landing_transactions.rglob("*.parquet"))
    assert len(landed) == 1
    assert not list(lake.landing_transactions.rglob("*.tmp"))


def test_timestamps_are_stored_in_utc() -> None:
    parsed, problem = check_event(json.dumps(event(1)).encode(), source="x", row=1)
    assert problem is None and parsed is not None
    from reconciliation_pipeline.landing import events_frame

    frame = events_frame([parsed], [(None, None, None)])
    assert frame["occurred_at"][0] == dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def test_additional_property_is_named() -> None:
    _, problem = check_event(json.dumps(event(1, amount=10.5)).encode(), source="x", row=7)
    assert problem is not None and problem.field == "amount" and problem.row == 7


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"occurred_at": "2026-02-30T10:00:00Z"}, "occurred_at"),  # the shape of a date, not a date
        ({"occurred_at": "2026-03-02 10:00"}, "occurred_at"),
        ({"amount_minor": -5}, "amount_minor"),
        ({"kind": "bonus"}, "kind"),
        ({"psp": "Adyen"}, "psp"),
        ({"trace_id": "XYZ"}, "trace_id"),
        ({"event_id": ""}, "event_id"),
    ],
)
def test_compiled_and_reference_validators_agree(overrides: dict[str, object], field: str) -> None:
    from reconciliation_pipeline.landing import event_validator

    bad = event(1, **overrides)
    _, problem = check_event(json.dumps(bad).encode(), source="x", row=3)
    assert problem is not None and problem.field == field and problem.row == 3
    good = event(1)
    assert check_event(json.dumps(good).encode(), source="x", row=1)[1] is None
    assert not list(event_validator().iter_errors(good))


_MUTATIONS = st.sampled_from(
    [
        ("amount_minor", "12"),
        ("amount_minor", 12.5),
        ("amount_minor", True),
        ("amount_minor", -1),
        ("amount_minor", 2**40),
        ("brand", 5),
        ("brand", ""),
        ("brand", "b" * 65),
        ("currency", "eur"),
        ("currency", "EURO"),
        ("kind", "bonus"),
        ("psp", "Adyen"),
        ("psp", "a"),
        ("trace_id", None),
        ("trace_id", "A" * 32),
        ("trace_id", "0" * 32),
        ("psp_reference", None),
        ("psp_reference", "x" * 129),
        ("occurred_at", "2026-03-02T10:00:00Z"),
        ("occurred_at", "2026-03-02T10:00:00.5-05:00"),
        ("occurred_at", "2026-02-30T10:00:00Z"),
        ("occurred_at", "2026-03-02"),
        ("jurisdiction", "mt"),
        ("extra", 1),
        ("event_id", ""),
        ("original_transaction_id", "tx-0"),
        ("player_id", None),
    ]
)


@given(
    st.lists(st.lists(_MUTATIONS, max_size=2), min_size=1, max_size=30),
    st.lists(st.sampled_from(["{oops", "[]", "null", '"text"']), max_size=2),
)
@settings(max_examples=80, deadline=None)
def test_batch_validation_agrees_with_the_reference_validator(
    mutations: list[list[tuple[str, object]]], junk: list[str]
) -> None:
    from reconciliation_pipeline.landing import events_frame, validate_batch

    raws = []
    for n, changes in enumerate(mutations):
        item = event(n)
        for key, value in changes:
            item[key] = value
        raws.append(json.dumps(item).encode())
    raws += [j.encode() for j in junk]
    rows = list(range(1, len(raws) + 1))
    good, frame, problems = validate_batch(raws, source="x", rows=rows)
    reference = [check_event(raw, source="x", row=row) for raw, row in zip(raws, rows, strict=True)]
    assert good == [i for i, (_, problem) in enumerate(reference) if problem is None]
    assert [(i, p) for i, p in problems] == [(i, p) for i, (_, p) in enumerate(reference) if p is not None]
    expected = events_frame(
        [e for e, p in reference if p is None and e is not None], [(None, None, None)] * len(good)
    )
    assert frame.equals(expected.drop("kafka_topic", "kafka_partition", "kafka_offset"))
