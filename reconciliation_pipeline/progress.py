"""Rich progress for work over a range of business dates (``recon run``, ``recon demo``).

On a terminal a bar shows which date is running and how many are done; elsewhere (CI logs, pipes) only
the per-date lines are printed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from .runner import DateRun, dates, run_range


def run_range_with_progress(
    console: Console,
    first: dt.date,
    last: dt.date,
    *,
    on_date: Callable[[DateRun], None] | None = None,
    **run_options: Any,
) -> list[DateRun]:
    """:func:`runner.run_range` with a progress bar on ``console``; ``on_date`` prints each finished date."""
    days = dates(first, last)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"Dagster run for {days[0]}", total=len(days))

        def step(run: DateRun) -> None:
            if on_date is not None:
                on_date(run)
            progress.advance(task)
            later = [d for d in days if d > run.day]
            if later:
                progress.update(task, description=f"Dagster run for {later[0]}")

        return run_range(first, last, on_date=step, **run_options)
