"""Landing operator transaction events into ``landing/transactions/date=YYYY-MM-DD/``.

Every event is checked against the transaction-event v1 JSON Schema. A bad event is dead-lettered to
``quarantine/transactions/`` with its reason, original bytes and position, and never stops the stream.
Good events are written as Parquet, one file per business date and source slice, atomically and under
a deterministic name so that replaying the same source rewrites the same files instead of adding copies.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import fastjsonschema
import orjson
import polars as pl
from fastjsonschema import JsonSchemaValueException
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from .formats.errors import Problem
from .frames import EVENT_COLUMNS, KINDS, LANDED_SCHEMA
from .lake import Lake, atomic_write_bytes, atomic_write_parquet, sha256_file

EVENT_HINT = (
    "The event was dead-lettered and not landed; fix it at the producer and re-send it "
    "(same event_id) so it lands once."
)


def _schema() -> dict[str, Any]:
    path = resources.files("reconciliation_pipeline").joinpath("schemas/transaction-event.v1.json")
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


@lru_cache(maxsize=1)
def event_validator() -> Draft202012Validator:
    """The reference validator of transaction-event v1 (Draft 2020-12, formats checked): it words
    the problem of an event the compiled validator refused."""
    schema = _schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


@lru_cache(maxsize=1)
def compiled_validator() -> Callable[[Any], Any]:
    """The schema compiled to Python code (fastjsonschema), about 25x faster than the reference
    validator: the hot path. The schema uses only keywords that mean the same in draft 7."""
    schema = {**_schema(), "$schema": "http://json-schema.org/draft-07/schema#"}
    return fastjsonschema.compile(schema)


def _field_of(error: ValidationError) -> str:
    path = "/".join(str(part) for part in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        required: list[str] = list(error.validator_value or [])  # type: ignore[arg-type]
        missing = [name for name in required if name not in error.instance]
        return "/".join(filter(None, [path, missing[0] if missing else ""]))
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        allowed = set(schema.get("properties", {}))
        extra = sorted(set(error.instance) - allowed)
        return "/".join(filter(None, [path, extra[0] if extra else ""]))
    return path or "(event)"


def check_event(raw: bytes, *, source: str, row: int) -> tuple[dict[str, Any] | None, Problem | None]:
    """Parse and validate one event. Returns ``(event, None)`` or ``(None, problem)``."""
    try:
        event = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, Problem(
            source,
            row,
            None,
            raw[:200].decode("utf-8", "replace"),
            f"not a JSON object ({exc.msg if hasattr(exc, 'msg') else exc})",
            EVENT_HINT,
        )
    try:
        compiled_validator()(event)
        _utc(event["occurred_at"])  # a real instant, not only the shape of one
        return event, None
    except (JsonSchemaValueException, ValueError):
        pass  # word the problem with the reference validator below
    errors = sorted(event_validator().iter_errors(event), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        name = _field_of(first)
        value = None
        if isinstance(event, dict) and first.absolute_path:
            value = json.dumps(event.get(str(first.absolute_path[0])))
        return None, Problem(
            source, row, name, value, f"breaks transaction-event v1: {first.message}", EVENT_HINT
        )
    value = json.dumps(event.get("occurred_at")) if isinstance(event, dict) else None
    return None, Problem(
        source, row, "occurred_at", value, "not a valid RFC 3339 date-time with an offset", EVENT_HINT
    )


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def events_frame(
    events: list[dict[str, Any]], positions: list[tuple[str | None, int | None, int | None]]
) -> pl.DataFrame:
    """Valid events plus their Kafka position (topic, partition, offset) as a LANDED_SCHEMA frame."""
    columns: dict[str, list[Any]] = {name: [] for name in LANDED_SCHEMA}
    for event, (topic, partition, offset) in zip(events, positions, strict=True):
        for name in LANDED_SCHEMA:
            if name == "occurred_at":
                columns[name].append(_utc(event["occurred_at"]))
            elif name == "kafka_topic":
                columns[name].append(topic)
            elif name == "kafka_partition":
                columns[name].append(partition)
            elif name == "kafka_offset":
                columns[name].append(offset)
            else:
                columns[name].append(event.get(name))
    return pl.DataFrame(columns, schema=LANDED_SCHEMA)


_STR = (str,)
_OPT_STR = (str, type(None))
#: JSON types per field of transaction-event v1 (``bool`` is not an integer in JSON Schema).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "event_id": _STR,
    "transaction_id": _STR,
    "psp": _STR,
    "psp_reference": _OPT_STR,
    "original_transaction_id": _OPT_STR,
    "kind": _STR,
    "amount_minor": (int,),
    "currency": _STR,
    "occurred_at": _STR,
    "player_id": _STR,
    "brand": _STR,
    "jurisdiction": _STR,
    "trace_id": _OPT_STR,
}
_SCALARS = frozenset({str, int, type(None)})
_DECODED = {name: (pl.Int64() if name == "amount_minor" else pl.String()) for name in _FIELD_TYPES}


def _length(name: str, low: int, high: int) -> pl.Expr:
    return pl.col(name).str.len_chars().is_between(low, high)


#: The schema's value rules as one vectorised expression (types and keys are checked per row first).
_VALID = pl.all_horizontal(
    pl.col(
        [
            "event_id",
            "transaction_id",
            "psp",
            "kind",
            "amount_minor",
            "currency",
            "occurred_at",
            "player_id",
            "brand",
            "jurisdiction",
        ]
    ).is_not_null(),
    _length("event_id", 1, 128),
    _length("transaction_id", 1, 128),
    pl.col("psp").str.contains(r"^[a-z][a-z0-9_]{1,31}$"),
    pl.col("psp_reference").is_null() | _length("psp_reference", 0, 128),
    pl.col("original_transaction_id").is_null() | _length("original_transaction_id", 0, 128),
    pl.col("kind").is_in(list(KINDS)),
    pl.col("amount_minor") >= 0,
    pl.col("currency").str.contains(r"^[A-Z]{3}$"),
    pl.col("__at").is_not_null(),
    _length("player_id", 1, 64),
    _length("brand", 1, 64),
    _length("jurisdiction", 2, 2) & pl.col("jurisdiction").str.contains(r"^[A-Z]{2}$"),
    pl.col("trace_id").is_null() | pl.col("trace_id").str.contains(r"^[0-9a-f]{32}$"),
)
_RFC3339 = "%Y-%m-%dT%H:%M:%S%.f%:z"


def validate_batch(
    raws: Sequence[bytes], *, source: str, rows: Sequence[int]
) -> tuple[list[int], pl.DataFrame, list[tuple[int, Problem]]]:
    """Validate a batch of raw events at once.

    Returns the indices of the valid events, their frame (EVENT_COLUMNS, in that order) and
    ``(index, problem)`` for the invalid ones. The fast path decodes with orjson, checks keys and JSON
    types per row and the schema's value rules vectorised over the batch; any event it doubts goes
    through :func:`check_event` (the reference validator), which has the last word and the wording.
    """
    decoded: list[dict[str, Any]] = []
    fast: list[int] = []
    slow: list[int] = []
    for index, raw in enumerate(raws):
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            slow.append(index)
            continue
        # Every value a string or null except amount_minor, the one integer (bool is not one).
        if (
            type(item) is dict
            and item.keys() <= _FIELD_TYPES.keys()
            and type(item.get("amount_minor")) is int
            and (types := list(map(type, item.values()))).count(int) == 1
            and set(types) <= _SCALARS
        ):
            decoded.append(item)
            fast.append(index)
        else:
            slow.append(index)
    frame = pl.DataFrame(decoded, schema=_DECODED) if decoded else pl.DataFrame(schema=_DECODED)
    frame = frame.with_columns(
        __at=pl.col("occurred_at")
        .str.replace(r"[zZ]$", "+00:00")
        .str.to_datetime(_RFC3339, time_zone="UTC", strict=False)
    )
    ok = frame.select(_VALID.fill_null(False)).to_series()
    good_frame = frame.filter(ok)
    good = [i for i, keep in zip(fast, ok.to_list(), strict=True) if keep]
    slow += [i for i, keep in zip(fast, ok.to_list(), strict=True) if not keep]
    extra: list[dict[str, Any]] = []
    extra_idx: list[int] = []
    problems: list[tuple[int, Problem]] = []
    for index in sorted(slow):
        event, problem = check_event(raws[index], source=source, row=rows[index])
        if problem is not None:
            problems.append((index, problem))
        else:  # the reference validator accepts what the fast path doubted
            assert event is not None
            extra.append(event)
            extra_idx.append(index)
    out = good_frame.select(
        *[pl.col(n) for n in EVENT_COLUMNS if n != "occurred_at"], occurred_at=pl.col("__at")
    ).select(list(EVENT_COLUMNS))
    if extra:
        more = events_frame(extra, [(None, None, None)] * len(extra)).select(list(EVENT_COLUMNS))
        order = good + extra_idx
        out = pl.concat([out, more]).with_columns(__i=pl.Series(order)).sort("__i").drop("__i")
        good = sorted(order)
    return good, out.cast(EVENT_COLUMNS), problems  # type: ignore[arg-type]


def with_business_date(frame: pl.DataFrame, tz: str) -> pl.DataFrame:
    return frame.with_columns(pl.col("occurred_at").dt.convert_time_zone(tz).dt.date().alias("business_date"))


@dataclass
class LandResult:
    landed: int = 0
    quarantined: int = 0
    files: list[Path] = field(default_factory=list)
    dead_letter: Path | None = None
    problems: list[Problem] = field(default_factory=list)
    business_dates: set[dt.date] = field(default_factory=set)


def write_landed(frame: pl.DataFrame, lake: Lake, tz: str, stem: str) -> dict[dt.date, Path]:
    """Write valid events split by business date as ``date=D/<stem>.parquet`` (atomic, idempotent)."""
    written: dict[dt.date, Path] = {}
    if frame.is_empty():
        return written
    dated = with_business_date(frame, tz)
    for (day,), part in dated.partition_by("business_date", as_dict=True, maintain_order=True).items():
        assert isinstance(day, dt.date)
        path = lake.landing_transactions_date(day) / f"{stem}.parquet"
        atomic_write_parquet(path, part.drop("business_date"))
        written[day] = path
    return written


def write_dead_letter(path: Path, rejects: list[dict[str, Any]]) -> Path:
    body = "".join(json.dumps(item, sort_keys=True) + "\n" for item in rejects)
    return atomic_write_bytes(path, body.encode())


def _numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.strip()
            if stripped:
                yield number, stripped


def land_lines(
    lines: Iterable[tuple[int, bytes]], *, source: str, lake: Lake, tz: str, stem: str
) -> LandResult:
    """Validate numbered JSON lines and land them; bad lines go to the dead-letter file."""
    result = LandResult()
    numbered = list(lines)
    raws = [raw for _, raw in numbered]
    _, valid, problems = validate_batch(raws, source=source, rows=[n for n, _ in numbered])
    rejects: list[dict[str, Any]] = []
    for index, problem in problems:
        result.problems.append(problem)
        rejects.append(
            {
                **problem.as_dict(),
                "original": raws[index].decode("utf-8", "replace"),
                "topic": None,
                "partition": None,
                "offset": None,
            }
        )
    frame = valid.with_columns(
        kafka_topic=pl.lit(None, pl.String),
        kafka_partition=pl.lit(None, pl.Int32),
        kafka_offset=pl.lit(None, pl.Int64),
    ).select(list(LANDED_SCHEMA))
    written = write_landed(frame, lake, tz, stem)
    result.files = list(written.values())
    result.business_dates = set(written)
    result.landed = frame.height
    result.quarantined = len(rejects)
    if rejects:
        result.dead_letter = write_dead_letter(
            lake.quarantine / "transactions" / f"{stem}.rejects.jsonl", rejects
        )
    return result


def land_jsonl(path: Path, *, lake: Lake, tz: str | ZoneInfo) -> LandResult:
    """Land a file of events (one JSON object a line), as ``recon land --from-jsonl`` does.

    File names carry the source's checksum, so landing the same file twice rewrites the same files.
    """
    from . import metrics
    from .telemetry import step_span

    tz_name = tz.key if isinstance(tz, ZoneInfo) else tz
    with step_span("land_file", {"source": path.name}, metrics_dir=lake.root / "metrics"):
        stem = f"jsonl-{path.stem}-{sha256_file(path)[:16]}"
        result = land_lines(_numbered_lines(path), source=path.name, lake=lake, tz=tz_name, stem=stem)
        metrics.record_landing(
            source="file", landed=result.landed, dead_lettered=result.quarantined, oldest_occurred_at=None
        )
        return result
