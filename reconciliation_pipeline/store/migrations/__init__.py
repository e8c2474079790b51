"""Alembic migrations of the outcome store (applied by ``store.db.migrate``)."""
