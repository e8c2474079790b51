"""Deterministic demo data set: transaction events, PSP settlement files, bank statements, ground truth."""

from reconciliation_pipeline.demo.generator import DemoConfig, DemoManifest, generate

__all__ = ["DemoConfig", "DemoManifest", "generate"]
