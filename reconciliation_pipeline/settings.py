"""The one configuration model of the platform, read from ``RECON_*`` environment variables.

Defaults are the embedded ones ``recon demo`` runs on: a ``./data`` folder for the lake and a SQLite
outcome store inside it. Production sets ``RECON_DATABASE_URL`` to PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import os
from functools import cached_property
from pathlib import Path
from typing import Literal
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
    fx_tolerance_minor: int = Field(
        default=2, ge=0, description="Cross-currency: |PSP rate x amount - booked| allowed, in minor units"
    )
    rules: dict[str, list[str]] | None = Field(
        default=None,
        description='Matching rules per PSP, as JSON: {"paypal": ["exact_ref", "merchant_ref"]}; '
        "PSPs not named use every rule",
    )
    ground_truth: Path | None = Field(
        default=None, description="A ground-truth file (demo data): the accuracy check compares with it"
    )
    accuracy_threshold: float = Field(default=0.998, ge=0, le=1)
    code_version: str = Field(default="0.1.0", description="Recorded in every audit event")
    topic: str = Field(default="payments.transactions.v1")

    # Partner API (partner_api/, docs/partner-api.md)
    sandbox_data_dir: Path | None = Field(
        default=None, description="Lake of the sandbox environment; default data_dir/sandbox"
    )
    sandbox_database_url: str | None = Field(
        default=None, description="Outcome store of the sandbox environment; default SQLite in its lake"
    )
    redis_url: str | None = Field(
        default=None, description="Redis for the API rate limits (redis://H:P/0); unset: in-process limiter"
    )
    api_rate_per_s: float = Field(default=50.0, gt=0, description="Requests a second per API key (refill)")
    api_burst: int = Field(default=100, ge=1, description="Token bucket size per API key")
    api_key_cache_s: float = Field(
        default=5.0, ge=0, description="How long a verified API key is cached in-process (revocation delay)"
    )
    idempotency_ttl_hours: float = Field(default=24.0, ge=24, description="How long idempotency keys live")
    idempotency_lock_s: float = Field(
        default=60.0, gt=0, description="After this, an in-flight idempotency key may be taken over"
    )
    api_max_upload_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="Largest settlement upload")
    # Observability (reconciliation_pipeline/telemetry.py, metrics.py; docs/observability.md)
    otel_exporter: Literal["memory", "console", "otlp", "none"] | None = Field(
        default=None,
        description="Span exporter; unset: OTEL_TRACES_EXPORTER, else memory. otlp reads the standard "
        "OTEL_EXPORTER_OTLP_* variables",
    )
    log_level: str = Field(default="INFO", description="Level of the JSON logs on stderr")
    log_format: Literal["json", "text"] = Field(default="json", description="json: one object a line")
    pushgateway_url: str | None = Field(
        default=None, description="Prometheus Pushgateway the pipeline steps push their run metrics to"
    )

    @field_validator("business_tz")
    @classmethod
    def _known_tz(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone, with the zone's name in the message
        return value

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        from .matching.engine import CONFIGURABLE_RULES

        for psp, names in (value or {}).items():
            unknown = sorted(set(names) - CONFIGURABLE_RULES)
            if unknown:
                raise ValueError(
                    f"RECON_RULES for {psp!r} names unknown rules {unknown}; "
                    f"configurable rules are {sorted(CONFIGURABLE_RULES)}"
                )
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

    @property
    def sandbox_data_path(self) -> Path:
        return (self.sandbox_data_dir or self.data_dir / "sandbox").expanduser().resolve()

    @property
    def sandbox_db_url(self) -> str:
        if self.sandbox_database_url:
            return self.sandbox_database_url
        return f"sqlite:///{self.sandbox_data_path / 'recon.db'}"


def dagster_home() -> Path:
    """``DAGSTER_HOME`` as an absolute, existing folder (default ``./dagster_home``)."""
    home = Path(os.environ.get("DAGSTER_HOME") or "dagster_home").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_settings() -> Settings:
    return Settings()
