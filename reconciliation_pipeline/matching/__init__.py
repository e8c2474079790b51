"""The matching engine: pure Polars functions, no Dagster or database imports."""

from .engine import RULES, ReconResult, reconcile

__all__ = ["RULES", "ReconResult", "reconcile"]
