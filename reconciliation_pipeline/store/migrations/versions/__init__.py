"""Alembic revisions of the outcome store."""
