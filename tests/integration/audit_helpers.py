"""Tampering with the audit trail the way only an administrator could: around the database's own guards.

The triggers of migration 0002 refuse UPDATE and DELETE on ``audit_events`` for everybody; a
PostgreSQL superuser can still switch triggers off for a session (``session_replication_role =
replica``), and whoever holds the SQLite file can drop the triggers. These helpers do exactly that,
so tests can show that verification catches what the guards were bypassed for.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

SQLITE_TRIGGER_NAMES = ("audit_events_no_update", "audit_events_no_delete")


@contextmanager
def as_superuser(engine: Engine) -> Iterator[Connection]:
    """A connection (in a transaction that commits) on which the audit triggers do not fire."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            yield conn
            return
        saved = (
            conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'"
            )
            .scalars()
            .all()
        )
        for name in SQLITE_TRIGGER_NAMES:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
        yield conn
        for sql in saved:
            conn.exec_driver_sql(sql)
