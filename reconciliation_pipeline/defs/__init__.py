"""Dagster only: assets, partitions, checks and resources. Thin shells over the pure code."""
