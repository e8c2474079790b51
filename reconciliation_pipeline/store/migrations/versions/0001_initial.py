"""Initial schema of the outcome store: ledger, settlement lines, files, outcomes, exceptions, audit.

Every table is written out explicitly (no autogenerate at runtime); ``tests/integration/test_store.py``
checks that it agrees with ``store/models.py``.

Revision ID: 0001
Revises:
Create Date: 2024-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_T = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGPK_T = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "transactions",
        sa.Column("transaction_id", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("psp", sa.String(32), nullable=False),
        sa.Column("psp_reference", sa.String(128), nullable=True),
        sa.Column("original_transaction_id", sa.String(128), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("occurred_at", _ts(), nullable=True),
        sa.Column("player_id", sa.String(128), nullable=True),
        sa.Column("brand", sa.String(64), nullable=True),
        sa.Column("jurisdiction", sa.String(2), nullable=True),
        sa.Column("trace_id", sa.String(64), nullable=True),
        sa.Column("business_date", sa.Date(), nullable=True),
        sa.Column("kafka_topic", sa.String(255), nullable=True),
        sa.Column("kafka_partition", sa.Integer(), nullable=True),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=True),
        sa.Column("landed_file", sa.String(1024), nullable=True),
        sa.PrimaryKeyConstraint("transaction_id", name="pk_transactions"),
    )
    op.create_index("ix_transactions_psp_reference", "transactions", ["psp_reference"])

    op.create_table(
        "settlement_lines",
        sa.Column("record_key", sa.String(1024), nullable=False),
        sa.Column("psp", sa.String(32), nullable=False),
        sa.Column("source_file", sa.String(512), nullable=False),
        sa.Column("source_row", sa.BigInteger(), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("batch_id", sa.String(255), nullable=True),
        sa.Column("account_id", sa.String(255), nullable=True),
        sa.Column("record_type", sa.String(128), nullable=True),
        sa.Column("line_kind", sa.String(64), nullable=True),
        sa.Column("moves_player_money", sa.Boolean(), nullable=True),
        sa.Column("movement_reference", sa.String(255), nullable=True),
        sa.Column("payment_reference", sa.String(255), nullable=True),
        sa.Column("merchant_reference", sa.String(255), nullable=True),
        sa.Column("payout_reference", sa.String(255), nullable=True),
        sa.Column("remittance_info", sa.Text(), nullable=True),
        sa.Column("booked_at", _ts(), nullable=True),
        sa.Column("booking_date", sa.Date(), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("fee_minor", sa.BigInteger(), nullable=True),
        sa.Column("net_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("net_currency", sa.String(3), nullable=True),
        sa.Column("exchange_rate", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("record_key", name="pk_settlement_lines"),
    )
    op.create_index("ix_settlement_lines_movement_reference", "settlement_lines", ["movement_reference"])
    op.create_index("ix_settlement_lines_merchant_reference", "settlement_lines", ["merchant_reference"])

    op.create_table(
        "ingested_files",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("psp", sa.String(32), nullable=False),
        sa.Column("original_name", sa.String(512), nullable=False),
        sa.Column("stored_path", sa.String(2048), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", JSON_T, nullable=True),
        sa.Column("batch_key", sa.String(255), nullable=True),
        sa.Column("registered_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_ingested_files"),
        sa.UniqueConstraint("psp", "batch_key", name="uq_ingested_files_psp_batch_key"),
    )

    op.create_table(
        "match_groups",
        sa.Column("match_id", sa.String(255), nullable=False),
        sa.Column("rule_id", sa.String(128), nullable=True),
        sa.Column("business_date", sa.Date(), nullable=True),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("match_id", name="pk_match_groups"),
    )

    op.create_table(
        "outcomes",
        sa.Column("record_key", sa.String(1024), nullable=False),
        sa.Column("record", sa.String(16), nullable=False),
        sa.Column("transaction_id", sa.String(128), nullable=True),
        sa.Column("psp", sa.String(32), nullable=True),
        sa.Column("source_file", sa.String(512), nullable=True),
        sa.Column("source_row", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("match_id", sa.String(255), nullable=True),
        sa.Column("rule_id", sa.String(128), nullable=True),
        sa.Column("exception_category", sa.String(64), nullable=True),
        sa.Column("business_date", sa.Date(), nullable=True),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("record_key", name="pk_outcomes"),
        sa.ForeignKeyConstraint(
            ["match_id"], ["match_groups.match_id"], name="fk_outcomes_match_id_match_groups"
        ),
    )
    op.create_index("ix_outcomes_transaction_id", "outcomes", ["transaction_id"])
    op.create_index("ix_outcomes_status", "outcomes", ["status"])

    op.create_table(
        "exceptions",
        sa.Column("id", BIGPK_T, autoincrement=True, nullable=False),
        sa.Column("record_key", sa.String(1024), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_as_of", sa.Date(), nullable=False),
        sa.Column("evidence", JSON_T, nullable=True),
        sa.Column("resolution_code", sa.String(64), nullable=True),
        sa.Column("resolution_note", sa.Text(), nullable=True),
        sa.Column("resolved_by", sa.String(255), nullable=True),
        sa.Column("resolved_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_exceptions"),
        sa.ForeignKeyConstraint(
            ["record_key"], ["outcomes.record_key"], name="fk_exceptions_record_key_outcomes"
        ),
    )
    op.create_index("ix_exceptions_record_key", "exceptions", ["record_key"])
    op.create_index("ix_exceptions_state", "exceptions", ["state"])
    op.create_index(
        "uq_exceptions_open_record_key",
        "exceptions",
        ["record_key"],
        unique=True,
        sqlite_where=sa.text("state = 'open'"),
        postgresql_where=sa.text("state = 'open'"),
    )

    op.create_table(
        "audit_events",
        sa.Column("seq", BIGPK_T, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("occurred_at", _ts(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("entity_type", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.String(1024), nullable=False),
        sa.Column("inputs", JSON_T, nullable=True),
        sa.Column("chain", JSON_T, nullable=True),
        sa.Column("outcome", JSON_T, nullable=True),
        sa.Column("trace_id", sa.String(64), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_events"),
        sa.UniqueConstraint("prev_hash", name="uq_audit_events_prev_hash"),
        sa.UniqueConstraint("hash", name="uq_audit_events_hash"),
    )
    op.create_index("ix_audit_events_entity_id", "audit_events", ["entity_id"])

    op.create_table(
        "idempotency_keys",
        sa.Column("partner_id", sa.String(128), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_headers", JSON_T, nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("partner_id", "idempotency_key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("audit_events")
    op.drop_table("exceptions")
    op.drop_table("outcomes")
    op.drop_table("match_groups")
    op.drop_table("ingested_files")
    op.drop_table("settlement_lines")
    op.drop_table("transactions")
