"""Prometheus metrics of the pipeline, and how they leave a batch process.

Two kinds, exported two ways (``docs/observability.md``):

* **Run metrics** (:data:`PIPELINE_METRICS`): what the last run of each step did — durations, last
  success or failure, records reconciled per status, measured accuracy, landing lag. Pipeline steps
  are batch processes (a Dagster step, ``recon land``), so nothing is there to scrape when Prometheus
  comes by. When a step ends, :func:`export_step` writes its samples, in the text exposition format,
  to ``<data dir>/metrics/<step>.prom`` (atomically: a node-exporter textfile collector can read the
  folder) and, when ``RECON_PUSHGATEWAY_URL`` is set, pushes them to the Pushgateway under
  ``job="recon_pipeline", step="<step>"`` (replacing that step's previous push).
* **Store metrics** (:data:`STORE_METRICS`): the state of the outcome store — records per status,
  open exceptions by age — read from the database at scrape time by :class:`StoreCollector`, which the
  partner API registers on its ``/metrics``: the API pod is long-running and already scraped.

Every metric name the dashboards and alert rules use is defined here (:func:`metric_names`; a test
checks ``deploy/``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from .lake import atomic_write_bytes

log = logging.getLogger(__name__)
PUSH_JOB = "recon_pipeline"
#: Age buckets of open exceptions, in days since the business date they were opened on: (label, low, high).
AGE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0-1d", 0, 1),
    ("2-3d", 2, 3),
    ("4-7d", 4, 7),
    ("8-30d", 8, 30),
    ("31d+", 31, None),
)


@dataclass(frozen=True)
class MetricDef:
    name: str
    help: str
    labels: tuple[str, ...] = ()


def _defs(*items: MetricDef) -> dict[str, MetricDef]:
    return {m.name: m for m in items}


PIPELINE_METRICS = _defs(
    MetricDef("recon_pipeline_step_duration_seconds", "Wall time of the step's last run", ("step",)),
    MetricDef(
        "recon_pipeline_step_last_success_timestamp_seconds",
        "Unix time the step last finished without error",
        ("step",),
    ),
    MetricDef(
        "recon_pipeline_step_last_failure_timestamp_seconds",
        "Unix time the step last raised an error",
        ("step",),
    ),
    MetricDef(
        "recon_pipeline_records_reconciled",
        "Records the last reconciliation decided, per record kind and status",
        ("record", "status"),
    ),
    MetricDef(
        "recon_pipeline_accuracy_ratio",
        "Accuracy of the last reconciliation measured against a ground truth (demo and test data only)",
    ),
    MetricDef(
        "recon_pipeline_records_published",
        "Outcome rows the last publish wrote to the store, per action",
        ("action",),
    ),
    MetricDef(
        "recon_landing_lag_seconds",
        "Landing lag of the last flush: time from an event's occurred_at to its file being durable, "
        "for the oldest event of the flush",
        ("source",),
    ),
    MetricDef(
        "recon_landing_events",
        "Events in the last landing flush, per source and result",
        ("source", "result"),
    ),
    MetricDef(
        "recon_landing_last_flush_timestamp_seconds",
        "Unix time landed files were last made durable",
        ("source",),
    ),
    MetricDef(
        "recon_ingest_files", "Files received by this ingest process, per PSP and status", ("psp", "status")
    ),
)

STORE_METRICS = _defs(
    MetricDef(
        "recon_records", "Records in the outcome store, per record kind and status", ("record", "status")
    ),
    MetricDef(
        "recon_open_exceptions",
        "Open exceptions per category and age (days since the business date they opened on)",
        ("category", "age"),
    ),
    MetricDef(
        "recon_open_exceptions_oldest_age_days", "Age in days of the oldest open exception, 0 when none"
    ),
    MetricDef(
        "recon_outcomes_last_update_timestamp_seconds",
        "Unix time an outcome was last written to the store, 0 when none",
    ),
)


def metric_names() -> set[str]:
    """Every metric name this code exports (run and store metrics), as Prometheus sees them."""
    return set(PIPELINE_METRICS) | set(STORE_METRICS)


# --------------------------------------------------------------------------- run metrics

_lock = threading.Lock()
#: step -> metric name -> label values -> value
_samples: dict[str, dict[str, dict[tuple[str, ...], float]]] = defaultdict(lambda: defaultdict(dict))


def _check(name: str, labels: dict[str, str]) -> tuple[str, ...]:
    spec = PIPELINE_METRICS.get(name)
    if spec is None:
        raise KeyError(f"{name!r} is not a pipeline metric; define it in PIPELINE_METRICS")
    if set(labels) != set(spec.labels):
        raise ValueError(f"{name} takes labels {spec.labels}, not {tuple(labels)}")
    return tuple(str(labels[k]) for k in spec.labels)


def set_value(step: str, name: str, value: float, labels: dict[str, str] | None = None) -> None:
    """Set one sample of a run metric; it is exported with ``step``'s metrics."""
    key = _check(name, labels or {})
    with _lock:
        _samples[step][name][key] = float(value)


def record_step(step: str, seconds: float, *, ok: bool) -> None:
    set_value(step, "recon_pipeline_step_duration_seconds", seconds, {"step": step})
    name = (
        "recon_pipeline_step_last_success_timestamp_seconds"
        if ok
        else ("recon_pipeline_step_last_failure_timestamp_seconds")
    )
    set_value(step, name, time.time(), {"step": step})


def record_reconciled(outcomes: pl.DataFrame) -> None:
    """Records the last reconciliation decided, per record kind and status (step ``reconcile``)."""
    with _lock:  # only this run's combinations: a status absent now must not keep an earlier run's count
        _samples["reconcile"].pop("recon_pipeline_records_reconciled", None)
    for record, status, n in outcomes.group_by("record", "status").len().iter_rows():
        set_value("reconcile", "recon_pipeline_records_reconciled", n, {"record": record, "status": status})


def record_published(applied: object) -> None:
    """What the last publish wrote (an ``ApplyResult``: inserted, changed, ... per action)."""
    for action in (
        "inserted",
        "changed",
        "unchanged",
        "skipped_older",
        "exceptions_opened",
        "exceptions_resolved",
    ):
        set_value("publish", "recon_pipeline_records_published", getattr(applied, action), {"action": action})


def record_accuracy(ratio: float) -> None:
    set_value("accuracy", "recon_pipeline_accuracy_ratio", ratio)


def record_landing(
    *, source: str, landed: int, dead_lettered: int, oldest_occurred_at: dt.datetime | None
) -> None:
    """One landing flush (step ``land_<source>``; source ``kafka`` or ``file``): events landed and
    dead-lettered, the lag of its oldest event, the time it became durable. A replayed file's lag is
    only its age, so file landings record none."""
    step = f"land_{source}"
    now = time.time()
    set_value(step, "recon_landing_events", landed, {"source": source, "result": "landed"})
    set_value(step, "recon_landing_events", dead_lettered, {"source": source, "result": "dead_lettered"})
    set_value(step, "recon_landing_last_flush_timestamp_seconds", now, {"source": source})
    if oldest_occurred_at is not None:
        at = oldest_occurred_at if oldest_occurred_at.tzinfo else oldest_occurred_at.replace(tzinfo=dt.UTC)
        set_value(step, "recon_landing_lag_seconds", max(now - at.timestamp(), 0.0), {"source": source})


def record_ingest(*, psp: str, status: str) -> None:
    """One file received by ``recon ingest`` (step ``ingest``): counted per PSP and status."""
    with _lock:
        values = _samples["ingest"]["recon_ingest_files"]
        values[(psp, status)] = values.get((psp, status), 0.0) + 1


def step_registry(step: str) -> CollectorRegistry:
    """A registry holding ``step``'s samples (only the metrics the step set)."""
    registry = CollectorRegistry()
    with _lock:
        samples = {name: dict(values) for name, values in _samples.get(step, {}).items()}
    for name, values in sorted(samples.items()):
        spec = PIPELINE_METRICS[name]
        gauge = Gauge(name, spec.help, spec.labels, registry=registry)
        for key, value in values.items():
            (gauge.labels(*key) if spec.labels else gauge).set(value)
    return registry


def export_step(step: str, metrics_dir: Path | None, *, pushgateway: str | None = None) -> Path | None:
    """Write ``step``'s samples to ``metrics_dir/<step>.prom`` and push them to the Pushgateway
    (``pushgateway`` or ``RECON_PUSHGATEWAY_URL``) when one is configured. Returns the file written."""
    registry = step_registry(step)
    target = None
    if metrics_dir is not None:
        target = metrics_dir / f"{step}.prom"
        atomic_write_bytes(target, generate_latest(registry))
    if pushgateway is None:
        from .settings import Settings

        pushgateway = Settings().pushgateway_url
    url = pushgateway
    if url:
        push_to_gateway(url, job=PUSH_JOB, registry=registry, grouping_key={"step": step})
    return target


def reset() -> None:
    """Forget every recorded sample (tests)."""
    with _lock:
        _samples.clear()


# --------------------------------------------------------------------------- store metrics


def age_bucket(days: int) -> str:
    for label, low, high in AGE_BUCKETS:
        if days >= low and (high is None or days <= high):
            return label
    return AGE_BUCKETS[0][0]  # opened "in the future" (a business date ahead of today): youngest


class StoreCollector(Collector):
    """Reads the outcome store when scraped (:data:`STORE_METRICS`).

    Two grouped queries (outcomes per status, open exceptions per category and opening date) and two
    maxima; results are cached ``ttl_seconds`` so frequent scrapes do not each scan the store.
    """

    def __init__(
        self, engine: Engine, *, business_tz: str = "Europe/Malta", ttl_seconds: float = 30.0
    ) -> None:
        self.engine = engine
        self.tz = ZoneInfo(business_tz)
        self.ttl_seconds = ttl_seconds
        self._cache: tuple[float, list[Metric]] | None = None
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(m.name, m.help, labels=m.labels) for m in STORE_METRICS.values()]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cache is None or now - self._cache[0] > self.ttl_seconds:
                try:
                    self._cache = (now, self._read())
                except Exception as exc:  # a store outage must not fail the whole scrape
                    log.warning("store metrics unavailable: %s", exc)
                    return iter([])
            return iter(self._cache[1])

    def _read(self) -> list[Metric]:
        from .store.models import ExceptionItem, Outcome

        today = dt.datetime.now(self.tz).date()
        fam = {m.name: GaugeMetricFamily(m.name, m.help, labels=m.labels) for m in STORE_METRICS.values()}
        with self.engine.connect() as conn:
            for record, status, n in conn.execute(
                select(Outcome.record, Outcome.status, func.count()).group_by(Outcome.record, Outcome.status)
            ):
                fam["recon_records"].add_metric([record, status], n)
            by_age: dict[tuple[str, str], int] = defaultdict(int)
            oldest = 0
            for category, opened, n in conn.execute(
                select(ExceptionItem.category, ExceptionItem.opened_as_of, func.count())
                .where(ExceptionItem.state == "open")
                .group_by(ExceptionItem.category, ExceptionItem.opened_as_of)
            ):
                days = max((today - opened).days, 0)
                oldest = max(oldest, days)
                by_age[(category, age_bucket(days))] += n
            for (category, age), n in sorted(by_age.items()):
                fam["recon_open_exceptions"].add_metric([category, age], n)
            fam["recon_open_exceptions_oldest_age_days"].add_metric([], oldest)
            last = conn.execute(select(func.max(Outcome.updated_at))).scalar()
        last_ts = 0.0
        if last is not None:
            last = last if isinstance(last, dt.datetime) else dt.datetime.fromisoformat(str(last))
            last_ts = (last if last.tzinfo else last.replace(tzinfo=dt.UTC)).timestamp()
        fam["recon_outcomes_last_update_timestamp_seconds"].add_metric([], last_ts)
        return list(fam.values())


_installed_store: dict[int, StoreCollector] = {}


def install_store_metrics(
    database_url: str, *, business_tz: str, registry: CollectorRegistry | None = None
) -> StoreCollector:
    """Register a :class:`StoreCollector` on ``registry`` (default: prometheus_client's global one, which
    the partner API's ``/metrics`` serves), once per registry; a later call with another store URL
    re-points it. The collector gets an engine of its own (no request tracing on scrape queries)."""
    from prometheus_client import REGISTRY

    from .store import db

    target = registry or REGISTRY
    with _lock:
        collector = _installed_store.get(id(target))
        if collector is None:
            collector = StoreCollector(db.make_engine(database_url), business_tz=business_tz)
            target.register(collector)
            _installed_store[id(target)] = collector
        elif collector.engine.url.render_as_string(hide_password=False) != database_url:
            collector.engine.dispose()
            collector.engine = db.make_engine(database_url)
            collector.tz = ZoneInfo(business_tz)
            collector._cache = None
        return collector


__all__ = [
    "AGE_BUCKETS",
    "PIPELINE_METRICS",
    "PUSH_JOB",
    "STORE_METRICS",
    "MetricDef",
    "StoreCollector",
    "age_bucket",
    "export_step",
    "install_store_metrics",
    "metric_names",
    "record_accuracy",
    "record_ingest",
    "record_landing",
    "record_published",
    "record_reconciled",
    "record_step",
    "reset",
    "set_value",
    "step_registry",
]
