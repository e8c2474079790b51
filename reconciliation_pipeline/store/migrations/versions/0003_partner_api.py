"""Partner API tables (partners, API keys, disputes) and the idempotency key's lock columns (issue 9).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "partners",
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("psp", sa.String(32), nullable=True),
        sa.Column("brand", sa.String(64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("partner_id", name="pk_partners"),
        sa.UniqueConstraint("name", name="uq_partners_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("environment", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(255), nullable=False),
        sa.Column("rate_per_s", sa.Float(), nullable=True),
        sa.Column("burst", sa.Integer(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("revoked_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="pk_api_keys"),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.partner_id"], name="fk_api_keys_partner_id_partners"
        ),
    )
    op.create_index("ix_api_keys_partner_id", "api_keys", ["partner_id"])
    op.create_table(
        "disputes",
        sa.Column("dispute_id", sa.String(64), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("transaction_id", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("trace_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("dispute_id", name="pk_disputes"),
    )
    op.create_index("ix_disputes_partner_id", "disputes", ["partner_id"])
    op.create_index("ix_disputes_transaction_id", "disputes", ["transaction_id"])
    # the partner API reads the records of a match group (transaction status with its evidence)
    op.create_index("ix_outcomes_match_id", "outcomes", ["match_id"])
    op.add_column("idempotency_keys", sa.Column("request_method", sa.String(8), nullable=True))
    op.add_column("idempotency_keys", sa.Column("request_path", sa.String(1024), nullable=True))
    op.add_column("idempotency_keys", sa.Column("lock_token", sa.String(64), nullable=True))
    op.add_column("idempotency_keys", sa.Column("locked_until", _ts(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("locked_until")
        batch.drop_column("lock_token")
        batch.drop_column("request_path")
        batch.drop_column("request_method")
    op.drop_index("ix_outcomes_match_id", table_name="outcomes")
    op.drop_table("disputes")
    op.drop_table("api_keys")
    op.drop_table("partners")
