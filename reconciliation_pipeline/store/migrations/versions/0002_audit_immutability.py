"""Audit trail immutability, enforced by the database (issue 8).

PostgreSQL:

* the JSON columns of ``audit_events`` become ``json`` (not ``jsonb``): ``json`` keeps the text
  exactly as inserted, which is the canonical text the event's hash was computed over, so the chain
  can be verified from the stored text alone (and by the server itself, see ``audit.verify_chain``);
  rows already stored are rewritten in canonical form before the triggers exist;
* a trigger refuses ``UPDATE`` and ``DELETE`` (per row) and ``TRUNCATE`` (per statement) on
  ``audit_events``, whoever asks, owner included;
* a ``NOLOGIN`` group role for the application (``RECON_DB_APP_ROLE``, default ``recon_app``) is
  created if missing. It may ``SELECT`` and ``INSERT`` ``audit_events`` and use its sequence, read
  ``alembic_version``, and do ordinary DML on every other table of the schema, including tables later
  migrations create (default privileges). Production logs in as a role that is a member of it
  (``CREATE ROLE recon_pipeline LOGIN PASSWORD ... IN ROLE recon_app``); see ``docs/audit.md``.

Both: ``exceptions.resolution_evidence`` keeps what an operator relied on when resolving.

SQLite: ``BEFORE UPDATE`` and ``BEFORE DELETE`` triggers on ``audit_events`` that ``RAISE(ABORT)``
(SQLite has no ``TRUNCATE``; ``DELETE`` without ``WHERE`` fires the trigger too).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Environment variable naming the application's group role (PostgreSQL).
APP_ROLE_ENV = "RECON_DB_APP_ROLE"
DEFAULT_APP_ROLE = "recon_app"
JSON_COLUMNS = ("inputs", "chain", "outcome")
REFUSED = "audit_events is append-only"
JSON_T = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def app_role() -> str:
    """The application role's name; a plain identifier (it is interpolated into DDL)."""
    name = os.environ.get(APP_ROLE_ENV, DEFAULT_APP_ROLE)
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"{APP_ROLE_ENV}={name!r} is not a plain lower-case SQL identifier")
    return name


PG_TRIGGERS = f"""
CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION '{REFUSED}: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'audit events are never changed or removed; append a correcting event instead';
END
$fn$;
DROP TRIGGER IF EXISTS audit_events_no_update_delete ON audit_events;
CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();
DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events;
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();
"""


def _pg_roles(role: str) -> str:
    return f"""
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{role}') THEN
        BEGIN
            CREATE ROLE {role} NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created concurrently by a migration of another database of the cluster
        END;
    END IF;
END
$do$;
DO $do$
DECLARE
    s text := current_schema();
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {role}', s);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO {role}', s);
    EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO {role}', s);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I
                    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}', s);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I
                    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role}', s);
END
$do$;
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON audit_events FROM {role};
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM {role};
GRANT SELECT, INSERT ON audit_events TO {role};
GRANT SELECT ON alembic_version TO {role};
"""


SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, '{REFUSED}: UPDATE refused'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, '{REFUSED}: DELETE refused'); END""",
)


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _pg_json_columns() -> None:
    """jsonb -> json, then every stored value rewritten as the canonical text that was hashed."""
    for name in JSON_COLUMNS:
        op.alter_column(
            "audit_events",
            name,
            type_=sa.JSON(),
            existing_type=postgresql.JSONB(),
            existing_nullable=True,
            postgresql_using=f"{name}::text::json",
        )
    conn = op.get_bind()
    cols = ", ".join(f"{c}::text" for c in JSON_COLUMNS)
    rows = conn.execute(sa.text(f"SELECT seq, {cols} FROM audit_events ORDER BY seq")).all()
    updates = []
    for seq, *texts in rows:
        canon = [None if t is None else _canonical(json.loads(t)) for t in texts]
        if canon != list(texts):
            updates.append({"seq": seq, **dict(zip(JSON_COLUMNS, canon, strict=True))})
    if updates:
        sets = ", ".join(f"{c} = CAST(:{c} AS json)" for c in JSON_COLUMNS)
        conn.execute(sa.text(f"UPDATE audit_events SET {sets} WHERE seq = :seq"), updates)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.add_column("exceptions", sa.Column("resolution_evidence", JSON_T, nullable=True))
    if dialect == "postgresql":
        _pg_json_columns()
        op.execute(PG_TRIGGERS)
        op.execute(_pg_roles(app_role()))
    elif dialect == "sqlite":
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update_delete ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS audit_events_refuse_change()")
        for name in JSON_COLUMNS:
            op.alter_column(
                "audit_events",
                name,
                type_=postgresql.JSONB(),
                existing_type=sa.JSON(),
                existing_nullable=True,
                postgresql_using=f"{name}::jsonb",
            )
        # The role is cluster-wide (other databases may use it): it is left in place.
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
    with op.batch_alter_table("exceptions") as batch:
        batch.drop_column("resolution_evidence")
