"""SQLAlchemy 2 models of the outcome store.

Money is an integer number of minor units (``BigInteger``) next to its ISO 4217 currency
(``String(3)``); timestamps are timezone-aware UTC on every backend (:class:`UTCDateTime`); JSON
columns are ``JSONB`` on PostgreSQL and ``JSON`` elsewhere. The tables themselves are created by the
Alembic migrations in ``migrations/versions`` (never by ``create_all`` at runtime); a test checks
that the models and the migrations agree.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

UTC = dt.UTC

#: JSON everywhere, JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")
#: Autoincrementing 64-bit key; SQLite only autoincrements an ``INTEGER PRIMARY KEY``.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores ``timestamptz``; SQLite stores naive UTC text. Values written are converted to
    UTC (naive values are taken as UTC); values read are always aware UTC datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Transaction(Base):
    """A ledger record: one booked transaction (``frames.LEDGER_SCHEMA``)."""

    __tablename__ = "transactions"

    transaction_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128))
    psp: Mapped[str] = mapped_column(String(32))
    psp_reference: Mapped[str | None] = mapped_column(String(128), index=True)
    original_transaction_id: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    occurred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    player_id: Mapped[str | None] = mapped_column(String(128))
    brand: Mapped[str | None] = mapped_column(String(64))
    jurisdiction: Mapped[str | None] = mapped_column(String(2))
    trace_id: Mapped[str | None] = mapped_column(String(64))
    business_date: Mapped[dt.date | None] = mapped_column(Date)
    kafka_topic: Mapped[str | None] = mapped_column(String(255))
    kafka_partition: Mapped[int | None] = mapped_column(Integer)
    kafka_offset: Mapped[int | None] = mapped_column(BigInteger)
    landed_file: Mapped[str | None] = mapped_column(String(1024))


class SettlementLine(Base):
    """One normalised row of a PSP settlement file or bank statement (``frames.SETTLEMENT_LINE_SCHEMA``)."""

    __tablename__ = "settlement_lines"

    record_key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    psp: Mapped[str] = mapped_column(String(32))
    source_file: Mapped[str] = mapped_column(String(512))
    source_row: Mapped[int] = mapped_column(BigInteger)
    file_sha256: Mapped[str] = mapped_column(String(64))
    batch_id: Mapped[str | None] = mapped_column(String(255))
    account_id: Mapped[str | None] = mapped_column(String(255))
    record_type: Mapped[str | None] = mapped_column(String(128))
    line_kind: Mapped[str | None] = mapped_column(String(64))
    moves_player_money: Mapped[bool | None] = mapped_column(Boolean)
    movement_reference: Mapped[str | None] = mapped_column(String(255), index=True)
    payment_reference: Mapped[str | None] = mapped_column(String(255))
    merchant_reference: Mapped[str | None] = mapped_column(String(255), index=True)
    payout_reference: Mapped[str | None] = mapped_column(String(255))
    remittance_info: Mapped[str | None] = mapped_column(Text)
    booked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    booking_date: Mapped[dt.date | None] = mapped_column(Date)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    fee_minor: Mapped[int | None] = mapped_column(BigInteger)
    net_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    net_currency: Mapped[str | None] = mapped_column(String(3))
    exchange_rate: Mapped[str | None] = mapped_column(String(64))


class IngestedFile(Base):
    """A settlement file or bank statement the platform received, accepted or quarantined."""

    __tablename__ = "ingested_files"
    __table_args__ = (UniqueConstraint("psp", "batch_key"),)

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    psp: Mapped[str] = mapped_column(String(32))
    original_name: Mapped[str] = mapped_column(String(512))
    stored_path: Mapped[str | None] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))  # accepted | quarantined
    reason: Mapped[Any] = mapped_column(JSONType, nullable=True)
    # The PSP's own batch identity; NULLs are distinct, so only known batches are deduplicated.
    batch_key: Mapped[str | None] = mapped_column(String(255))
    registered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class MatchGroup(Base):
    """The records a rule paired; every outcome row of the group carries its ``match_id``."""

    __tablename__ = "match_groups"

    match_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    rule_id: Mapped[str | None] = mapped_column(String(128))
    business_date: Mapped[dt.date | None] = mapped_column(Date)
    as_of_date: Mapped[dt.date] = mapped_column(Date)
    run_id: Mapped[str | None] = mapped_column(String(128))


class Outcome(Base):
    """The latest reconciliation outcome of one ledger or settlement record (the outcome export)."""

    __tablename__ = "outcomes"

    # ``ledger:{transaction_id}`` or ``settlement:{psp}:{source_file}:{source_row}``
    record_key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    record: Mapped[str] = mapped_column(String(16))  # ledger | settlement
    transaction_id: Mapped[str | None] = mapped_column(String(128), index=True)
    psp: Mapped[str | None] = mapped_column(String(32))
    source_file: Mapped[str | None] = mapped_column(String(512))
    source_row: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), index=True)  # matched | exception | pending
    match_id: Mapped[str | None] = mapped_column(
        ForeignKey("match_groups.match_id"),
        index=True,  # the partner API reads a match group's records
    )
    rule_id: Mapped[str | None] = mapped_column(String(128))
    exception_category: Mapped[str | None] = mapped_column(String(64))
    business_date: Mapped[dt.date | None] = mapped_column(Date)
    as_of_date: Mapped[dt.date] = mapped_column(Date)
    run_id: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The payment's W3C trace id: the ledger record's own, or that of the ledger record a settlement
    # record matched (migration 0004, observability).
    trace_id: Mapped[str | None] = mapped_column(String(64), index=True)


class ExceptionItem(Base):
    """An exception of the operator's queue; at most one open per record at a time."""

    __tablename__ = "exceptions"
    __table_args__ = (
        Index(
            "uq_exceptions_open_record_key",
            "record_key",
            unique=True,
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    record_key: Mapped[str] = mapped_column(ForeignKey("outcomes.record_key"), index=True)
    category: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)  # open | resolved
    opened_as_of: Mapped[dt.date] = mapped_column(Date)
    evidence: Mapped[Any] = mapped_column(JSONType, nullable=True)
    resolution_code: Mapped[str | None] = mapped_column(String(64))
    resolution_note: Mapped[str | None] = mapped_column(Text)
    resolved_by: Mapped[str | None] = mapped_column(String(255))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # What the operator relied on when resolving (documents by SHA-256, references); the matcher's
    # ``evidence`` above is kept as it was (migration 0002).
    resolution_evidence: Mapped[Any] = mapped_column(JSONType, nullable=True)


class AuditEvent(Base):
    """One link of the hash-chained audit trail (see :mod:`reconciliation_pipeline.store.audit`)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(128))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(1024), index=True)
    # ``json`` (not ``jsonb``) on PostgreSQL too: the stored text is exactly the canonical text that
    # was hashed (migration 0002), so the chain verifies from the stored text alone.
    inputs: Mapped[Any] = mapped_column(JSON, nullable=True)
    chain: Mapped[Any] = mapped_column(JSON, nullable=True)
    outcome: Mapped[Any] = mapped_column(JSON, nullable=True)
    trace_id: Mapped[str | None] = mapped_column(String(64))
    # Unique: two events can never claim the same predecessor, so the chain cannot fork.
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class IdempotencyKey(Base):
    """A partner API idempotency key and the response it produced (``partner_api.idempotency``).

    Reserved ``in_flight`` (with a ``lock_token`` and ``locked_until``) before the call runs; set to
    ``completed`` with the response in the same transaction as the call's state change.
    """

    __tablename__ = "idempotency_keys"

    partner_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # in_flight | completed
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[Any] = mapped_column(JSONType, nullable=True)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    request_method: Mapped[str | None] = mapped_column(String(8))
    request_path: Mapped[str | None] = mapped_column(String(1024))
    lock_token: Mapped[str | None] = mapped_column(String(64))
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Partner(Base):
    """A PSP or B2B brand that uses the partner API (``recon partners add``).

    Ownership: the partner sees the ledger transactions whose ``psp`` equals its ``psp`` (when set)
    and whose ``brand`` equals its ``brand`` (when set); at least one of the two is set.
    """

    __tablename__ = "partners"

    partner_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    psp: Mapped[str | None] = mapped_column(String(32))
    brand: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """One API key of a partner: only the SHA-256 of the secret is stored."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.partner_id"), index=True)
    environment: Mapped[str] = mapped_column(String(16))  # sandbox | live
    secret_sha256: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(255))  # comma-separated: read,disputes,upload,operator
    rate_per_s: Mapped[float | None] = mapped_column(Float)
    burst: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Dispute(Base):
    """A dispute a partner raised about one of its transactions."""

    __tablename__ = "disputes"

    dispute_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    partner_id: Mapped[str] = mapped_column(String(64), index=True)
    transaction_id: Mapped[str] = mapped_column(String(128), index=True)
    reason: Mapped[str] = mapped_column(String(64))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    note: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))  # open | resolved
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    trace_id: Mapped[str | None] = mapped_column(String(64))


__all__ = [
    "ApiKey",
    "AuditEvent",
    "Base",
    "Dispute",
    "ExceptionItem",
    "IdempotencyKey",
    "IngestedFile",
    "MatchGroup",
    "Outcome",
    "Partner",
    "SettlementLine",
    "Transaction",
    "UTCDateTime",
    "utcnow",
]
