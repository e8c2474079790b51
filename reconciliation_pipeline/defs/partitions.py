"""Business-date partitions: one per local day in ``RECON_BUSINESS_TZ``."""

from __future__ import annotations

import dagster as dg

from ..settings import get_settings

_settings = get_settings()

#: One partition per business date, up to and including today (``end_offset=1``).
business_date_partitions = dg.DailyPartitionsDefinition(
    start_date=_settings.partitions_start.isoformat(),
    timezone=_settings.business_tz,
    end_offset=1,
)
