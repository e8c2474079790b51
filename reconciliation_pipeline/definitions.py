"""The Dagster code location: loads ``defs/`` and nothing else (``workspace.yaml`` points here)."""

import dagster as dg

from .defs.assets import ASSETS
from .defs.jobs import daily_schedule, reconcile_job
from .defs.resources import ReconResource
from .defs.sensors import SENSORS

defs = dg.Definitions(
    assets=ASSETS,
    jobs=[reconcile_job],
    schedules=[daily_schedule],
    sensors=SENSORS,
    resources={"recon": ReconResource()},
)
