"""Where things live under ``RECON_DATA_DIR``, and the one way files are written there.

Every file the platform writes into the lake is written to a temporary name in the same folder,
flushed and fsynced, then atomically renamed, so a reader never sees a partial file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

from .frames import plain_strings

#: The one file of a lake table's date partition.
PART = "part-0.parquet"


class Lake:
    """Paths of the embedded lake layout (the same layout maps to object storage in production)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def landing_transactions(self) -> Path:
        return self.landing / "transactions"

    def landing_transactions_date(self, day: dt.date) -> Path:
        return self.landing_transactions / f"date={day.isoformat()}"

    def landing_settlements(self, psp: str) -> Path:
        return self.landing / "bank" if psp == "bank" else self.landing / "settlements" / psp

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    def lake_table(self, table: str, day: dt.date | None = None) -> Path:
        base = self.lake / table
        return base if day is None else base / f"date={day.isoformat()}"

    def read_day(self, table: str, day: dt.date) -> pl.DataFrame | None:
        """The table's file of ``day`` (None when it was never written), with columns written
        dictionary-encoded from codes (the outcomes' statuses, rules, ...) as plain strings again."""
        path = self.lake_table(table, day) / PART
        return plain_strings(pl.read_parquet(path)) if path.exists() else None

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def ensure(self) -> None:
        for path in (
            self.landing_transactions,
            self.landing / "settlements",
            self.landing / "bank",
            self.lake,
            self.quarantine,
            self.reports,
        ):
            path.mkdir(parents=True, exist_ok=True)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)``, fsync the result and rename it to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with tmp.open("rb+") as handle:
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_parquet(path: Path, frame: pl.DataFrame) -> Path:
    return atomic_write(path, lambda tmp: frame.write_parquet(tmp, compression="zstd", statistics=True))
