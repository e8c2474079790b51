"""The one configuration model of the platform, read from ``RECON_*`` environment variables.

Defaults are the embedded ones ``recon demo`` runs on: a ``./data`` folder for the lake and a SQLite
outcome store inside it. Production sets ``RECON_DATABASE_URL`` to PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import os
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Platform settings. Every field can be set as ``RECON_<FIELD_NAME>``."""

    model_config = SettingsConfigDict(env_prefix="RECON_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="landing/, lake/, quarantine/, reports/")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the outcome store; default a SQLite file in data_dir"
    )
    business_tz: str = Field(default="Europe/Malta", description="Time zone of the business day")
    settlement_lag_days: int = Field(default=3, ge=0, le=60)
    lookback_days: int = Field(
        default=35, ge=1, description="How far back a business date's reconciliation looks for open items"
    )
    partitions_start: dt.date = Field(
        default=dt.date(2024, 1, 1), description="First business date Dagster partitions offer"
    )
    code_version: str = Field(default="0.1.0", description="Recorded in every audit event")
    topic: str = Field(default="payments.transactions.v1")

    @field_validator("business_tz")
    @classmethod
    def _known_tz(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone, with the zone's name in the message
        return value

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.business_tz)

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_path / 'recon.db'}"


def dagster_home() -> Path:
    """``DAGSTER_HOME`` as an absolute, existing folder (default ``./dagster_home``)."""
    home = Path(os.environ.get("DAGSTER_HOME") or "dagster_home").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_settings() -> Settings:
    return Settings()
