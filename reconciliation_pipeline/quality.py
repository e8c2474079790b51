"""Great Expectations suites (kept as JSON in ``expectations/``) run over Polars frames.

Great Expectations 1.x has no Polars datasource, so a frame is handed over as pandas (through pyarrow)
to an ephemeral context: nothing is written anywhere, the committed JSON suites are the only state.
Suite parameters (``{"$PARAMETER": "records_in_view"}``) are filled per validation, which is how the
row-count reconciliation compares the outcomes with a count of the inputs made independently.

Great Expectations takes seconds to import, so it is imported on first use, not when Dagster loads the
code location.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

EXPECTATIONS_DIR = Path(__file__).resolve().parent.parent / "expectations"
SAMPLE = 10


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation of a suite, as evaluated."""

    expectation: str
    column: str | None
    success: bool
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_sample: list[Any] = field(default_factory=list)
    condition: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class SuiteOutcome:
    suite: str
    success: bool
    rows: int
    expectations: list[ExpectationOutcome]

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success]

    def markdown(self) -> str:
        """A table for the Dagster UI: every expectation, passed or not, with what was seen."""
        lines = [
            "| expectation | column | condition | passed | observed / unexpected |",
            "| --- | --- | --- | --- | --- |",
        ]
        for e in self.expectations:
            seen = e.error or (
                f"{e.unexpected_count} unexpected, e.g. {e.unexpected_sample[:3]}"
                if e.unexpected_count
                else ("" if e.observed is None else str(e.observed))
            )
            lines.append(
                f"| {e.expectation} | {e.column or ''} | {e.condition or ''} | "
                f"{'yes' if e.success else '**no**'} | {seen.replace('|', '/')} |"
            )
        return "\n".join(lines)


def suite_path(name: str) -> Path:
    return EXPECTATIONS_DIR / f"{name}.json"


def suite_names() -> list[str]:
    return sorted(p.stem for p in EXPECTATIONS_DIR.glob("*.json"))


def suite_json(name: str) -> dict[str, Any]:
    """The committed suite, as JSON (raises FileNotFoundError naming the file when it is missing)."""
    path = suite_path(name)
    if not path.exists():
        raise FileNotFoundError(f"no Great Expectations suite {name!r}: expected {path}")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


@cache
def _context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


@cache
def _batch_definition(name: str) -> Any:
    context = _context()
    source = context.data_sources.add_or_update_pandas(f"recon_{name}")
    asset = source.add_dataframe_asset(name)
    return asset.add_batch_definition_whole_dataframe("whole_frame")


def load_suite(name: str) -> Any:
    """The committed JSON suite as a ``great_expectations.ExpectationSuite``."""
    import great_expectations as gx

    return gx.ExpectationSuite(**suite_json(name))


def _condition(kwargs: dict[str, Any]) -> str | None:
    cond = kwargs.get("row_condition")
    if cond is None:
        return None
    if isinstance(cond, dict):
        return str(cond.get("pass_through_filter") or cond)
    return str(getattr(cond, "pass_through_filter", None) or cond)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def validate(frame: pl.DataFrame, suite: str, parameters: dict[str, Any] | None = None) -> SuiteOutcome:
    """Validate ``frame`` against the committed suite ``suite`` with the given suite parameters."""
    expectation_suite = load_suite(suite)
    batch = _batch_definition(suite).get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    result = batch.validate(expectation_suite, expectation_parameters=parameters or {})
    outcomes = []
    for res in result.results:
        config = res.expectation_config
        kwargs = dict(config.kwargs)
        details = res.result or {}
        error = None
        info = res.exception_info or {}
        if info.get("raised_exception"):
            error = str(info.get("exception_message"))
        outcomes.append(
            ExpectationOutcome(
                expectation=config.type,
                column=kwargs.get("column"),
                success=bool(res.success),
                observed=_jsonable(details.get("observed_value")),
                unexpected_count=details.get("unexpected_count"),
                unexpected_sample=[_jsonable(v) for v in (details.get("partial_unexpected_list") or [])][
                    :SAMPLE
                ],
                condition=_condition(kwargs),
                error=error,
            )
        )
    return SuiteOutcome(suite, bool(result.success), frame.height, outcomes)
