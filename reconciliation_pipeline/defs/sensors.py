"""Sensors that turn newly landed files into runs of the business dates they touch.

Run keys are derived from file checksums, so the same file never starts two runs: Dagster skips a
run request whose key this sensor has already used.
"""

import datetime as dt
import hashlib
import json

import dagster as dg

from ..ingest import register_landed
from ..lake import sha256_file
from .jobs import reconcile_job
from .resources import ReconResource

SETTLEMENT_SENSOR = "settlement_file_sensor"
LANDED_SENSOR = "landed_transactions_sensor"


def _later_published_dates(recon: ReconResource, first: dt.date) -> list[dt.date]:
    """Dates after ``first`` already reconciled: their view must be refreshed too, in date order."""
    base = recon.lake.lake_table("outcomes")
    if not base.exists():
        return []
    days = [dt.date.fromisoformat(p.name.removeprefix("date=")) for p in base.glob("date=*")]
    return sorted(d for d in days if d > first)


def _requests(
    dates: set[dt.date], key: str, recon: ReconResource, tags: dict[str, str]
) -> list[dg.RunRequest]:
    if not dates:
        return []
    wanted = sorted(dates | set(_later_published_dates(recon, min(dates))))
    return [
        dg.RunRequest(run_key=f"{key}:{day.isoformat()}", partition_key=day.isoformat(), tags=tags)
        for day in wanted
    ]


@dg.sensor(
    job=reconcile_job,
    name=SETTLEMENT_SENSOR,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def settlement_file_sensor(context: dg.SensorEvaluationContext, recon: ReconResource) -> dg.SensorResult:
    """Registers each new file in `landing/settlements/<psp>/` and `landing/bank/` once (by checksum):
    a valid file is parsed and runs are requested for the business dates it touches; a refused file is
    moved to quarantine with its reason; a file seen before (same bytes or same PSP batch) starts nothing."""
    requests: list[dg.RunRequest] = []
    skipped: list[str] = []
    chain: dict[str, object] = {"sensor": SETTLEMENT_SENSOR, "run_id": "", "asset": "", "partition": ""}
    for outcome in register_landed(recon.lake, recon.engine, actor=SETTLEMENT_SENSOR, chain=chain):
        if outcome.status != "accepted":
            skipped.append(outcome.message)
            context.log.warning(outcome.message)
            continue
        requests += _requests(
            set(outcome.business_dates),
            f"settlement:{outcome.sha256}",
            recon,
            {"recon/trigger": "settlement_file", "recon/file": outcome.name},
        )
    skip = None if requests else ("; ".join(skipped) or "no new settlement files")
    return dg.SensorResult(run_requests=requests, skip_reason=skip)


@dg.sensor(
    job=reconcile_job,
    name=LANDED_SENSOR,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def landed_transactions_sensor(context: dg.SensorEvaluationContext, recon: ReconResource) -> dg.SensorResult:
    """Requests a run for each business date whose `landing/transactions/date=…/` files changed. The run
    key is the checksum of the date's files, so the same files never start two runs."""
    cursor: dict[str, float] = json.loads(context.cursor) if context.cursor else {}
    base = recon.lake.landing_transactions
    requests: list[dg.RunRequest] = []
    if base.exists():
        for folder in sorted(base.glob("date=*")):
            files = sorted(folder.glob("*.parquet"))
            newest = max((f.stat().st_mtime for f in files), default=0.0)
            if not files or cursor.get(folder.name, -1.0) >= newest:
                continue
            cursor[folder.name] = newest
            digest = hashlib.sha256("".join(f"{f.name}:{sha256_file(f)}" for f in files).encode()).hexdigest()
            day = dt.date.fromisoformat(folder.name.removeprefix("date="))
            requests += _requests(
                {day}, f"landed:{digest[:32]}", recon, {"recon/trigger": "landed_transactions"}
            )
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))


SENSORS = [settlement_file_sensor, landed_transactions_sensor]
