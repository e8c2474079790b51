"""Alembic environment of the outcome store.

Driven programmatically by :func:`reconciliation_pipeline.store.db.migrate`: the Config is built in
code (no ``alembic.ini``). When the caller passes an open connection in
``config.attributes["connection"]`` it is used as is (its transaction is the caller's); otherwise an
engine is made from ``sqlalchemy.url``. On PostgreSQL an advisory lock serialises concurrent
upgrades (several Dagster pods starting at once).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from reconciliation_pipeline.store.models import Base

#: ``pg_advisory_xact_lock`` key of schema migrations (distinct from the audit chain's).
MIGRATION_LOCK_KEY = 7_020_240_101

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from reconciliation_pipeline.store.db import make_engine

    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic: neither a connection nor sqlalchemy.url was given")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
