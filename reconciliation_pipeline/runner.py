"""Running the assets for a range of business dates through Dagster (``recon run``, ``recon demo``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from .defs.assets import ASSETS
from .defs.resources import ReconResource
from .settings import dagster_home


@dataclass
class DateRun:
    day: dt.date
    run_id: str
    success: bool
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None


def dates(first: dt.date, last: dt.date) -> list[dt.date]:
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def run_range(
    first: dt.date,
    last: dt.date,
    *,
    resource: ReconResource | None = None,
    instance: dg.DagsterInstance | None = None,
    on_date: Callable[[DateRun], None] | None = None,
    log_level: str = "WARNING",
) -> list[DateRun]:
    """Materialise every asset, checks included, one Dagster run per business date, in date order.

    Stops at the first date whose run fails or whose blocking check fails: later dates build on it.
    Runs are recorded in the instance at ``DAGSTER_HOME``, so the UI shows them.
    """
    if instance is None:
        dagster_home()
        instance = dg.DagsterInstance.get()
    resource = resource or ReconResource()
    results: list[DateRun] = []
    for day in dates(first, last):
        result = dg.materialize(
            ASSETS,
            partition_key=day.isoformat(),
            instance=instance,
            resources={"recon": resource},
            raise_on_error=False,
            tags={"recon/command": "run"},
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        failed = [
            f"{e.asset_key.to_user_string()}:{e.check_name}"
            for e in result.get_asset_check_evaluations()
            if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
        ]
        error = None
        if not result.success:
            failures = [ev for ev in result.all_events if ev.is_step_failure]
            error = failures[0].message if failures else "run failed"
        run = DateRun(day, result.run_id, result.success and not failed, failed, error)
        results.append(run)
        if on_date:
            on_date(run)
        if not run.success:
            break
    return results
