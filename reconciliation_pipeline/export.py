"""The outcome export of DESIGN.md, from the outcome store."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from sqlalchemy.engine import Engine

from .lake import atomic_write
from .store import db, service


def read_export(engine: Engine) -> pl.DataFrame:
    with db.session_scope(engine) as session:
        return service.export_outcomes(session)


def write_export(engine: Engine, out: Path, fmt: str) -> pl.DataFrame:
    frame = read_export(engine)
    if fmt == "csv":
        atomic_write(out, frame.write_csv)
    elif fmt == "parquet":
        atomic_write(out, frame.write_parquet)
    else:
        raise ValueError(f"unknown export format {fmt!r}: use csv or parquet")
    return frame
