"""The Dagster code location: loads ``defs/`` and nothing else (``workspace.yaml`` points here)."""

from __future__ import annotations

import dagster as dg

from .defs.assets import ASSETS
from .defs.resources import ReconResource

defs = dg.Definitions(
    assets=ASSETS,
    resources={"recon": ReconResource()},
)
