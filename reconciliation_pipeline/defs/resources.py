"""The one resource every asset takes: the platform settings, the lake and the outcome store."""

from __future__ import annotations

from functools import cached_property

import dagster as dg
from sqlalchemy.engine import Engine

from ..lake import Lake
from ..settings import Settings
from ..store import db


class ReconResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Settings from ``RECON_*``; fields set here override the environment (tests, deployments)."""

    data_dir: str | None = None
    database_url: str | None = None
    ground_truth: str | None = None

    @cached_property
    def settings(self) -> Settings:
        fields = {
            "data_dir": self.data_dir,
            "database_url": self.database_url,
            "ground_truth": self.ground_truth,
        }
        return Settings(**{k: v for k, v in fields.items() if v})  # type: ignore[arg-type]

    @cached_property
    def lake(self) -> Lake:
        lake = Lake(self.settings.data_path)
        lake.ensure()
        return lake

    @cached_property
    def engine(self) -> Engine:
        engine = db.make_engine(self.settings.db_url)
        db.migrate(engine)
        return engine
