"""Trace ids carried onto outcomes — owned by the observability work (issue 11).

``outcomes.trace_id`` is the W3C trace id of the payment the outcome is about: a ledger record's own
(from its transaction event), a settlement record's that of the ledger record it matched. Indexed so
one trace id finds its outcomes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outcomes") as batch:
        batch.add_column(sa.Column("trace_id", sa.String(64), nullable=True))
        batch.create_index("ix_outcomes_trace_id", ["trace_id"])


def downgrade() -> None:
    with op.batch_alter_table("outcomes") as batch:
        batch.drop_index("ix_outcomes_trace_id")
        batch.drop_column("trace_id")
