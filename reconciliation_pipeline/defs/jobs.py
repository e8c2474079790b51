"""The partitioned job that materialises every asset of one business date, and its daily schedule."""

import dagster as dg

from .assets import ASSETS
from .partitions import business_date_partitions

reconcile_job = dg.define_asset_job(
    "reconcile_business_date",
    selection=dg.AssetSelection.assets(*ASSETS),
    partitions_def=business_date_partitions,
    description="Every asset of one business date, checks included (what `recon run` does per date).",
    # The assets form one chain over a day's data: a process per step (the multiprocess default) only
    # adds interpreter start-ups. Runs execute in their own process (or run pod) in one go; choose
    # `multiprocess` in the launchpad's config if ever needed.
    config={"execution": {"config": {"in_process": {}}}},
)

#: After the daily cut-off (local midnight in RECON_BUSINESS_TZ), reconcile the day that just closed.
daily_schedule = dg.build_schedule_from_partitioned_job(reconcile_job, hour_of_day=2, minute_of_hour=0)
