"""The report views: DuckDB SQL (``sql/*.sql``) over the Parquet lake and the outcome export.

The SQL does the arithmetic in integer minor units; this module only wires the inputs (lake tables
as ``read_parquet`` views, the export as a registered frame) and hands back Polars frames.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from ..frames import LEDGER_SCHEMA, OUTCOME_SCHEMA, SETTLEMENT_LINE_SCHEMA, conform
from ..lake import Lake
from . import accuracy

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
BASE_SQL = "report_base.sql"
CHECKS_SQL = "report_checks.sql"
#: View name -> SQL file. The order is the order of the workbook's sheets and the HTML's sections.
VIEW_SQL: dict[str, str] = {
    "summary": "daily_summary.sql",
    "payouts": "payouts.sql",
    "exceptions": "exceptions.sql",
    "ageing": "exception_ageing.sql",
    "accuracy": "accuracy_over_time.sql",
    "fees": "fee_analysis.sql",
}
VIEWS = tuple(VIEW_SQL)


@dataclass(frozen=True)
class ReportData:
    """Every view of one business date's report, as computed by the SQL."""

    day: dt.date
    views: dict[str, pl.DataFrame]
    #: Records of the date in the export whose amounts are not in the lake (record, psp, records).
    missing_amounts: pl.DataFrame

    def __getitem__(self, view: str) -> pl.DataFrame:
        return self.views[view]


def _lake_files(lake: Lake, table: str) -> list[str]:
    folder = lake.lake_table(table)
    return sorted(str(p) for p in folder.glob("date=*/*.parquet")) if folder.exists() else []


def _register_table(
    con: duckdb.DuckDBPyConnection, name: str, files: list[str], schema: dict[str, pl.DataType]
) -> None:
    if files:
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {name} AS "
            f"SELECT * FROM read_parquet([{listed}], union_by_name = true, hive_partitioning = false)"
        )
    else:
        con.register(name, pl.DataFrame(schema=schema).to_arrow())


def _integers(frame: pl.DataFrame) -> pl.DataFrame:
    """DuckDB sums BIGINTs into DECIMAL(38,0): back to Int64, refusing (not wrapping) an overflow."""
    casts = [
        pl.col(name).cast(pl.Int64, strict=True)
        for name, dtype in frame.schema.items()
        if (isinstance(dtype, pl.Decimal) and dtype.scale == 0) or dtype in (pl.Int32, pl.Int128)
    ]
    return frame.with_columns(casts) if casts else frame


#: The store's exception queue as the report reads it (one row per queue item).
QUEUE_SCHEMA: dict[str, pl.DataType] = {"record_key": pl.String(), "state": pl.String()}


def query_reports(
    lake: Lake,
    day: dt.date,
    outcomes: pl.DataFrame,
    *,
    exception_queue: pl.DataFrame | None = None,
    sql_dir: Path = SQL_DIR,
) -> ReportData:
    """Run every report query for ``day`` over the lake and ``outcomes`` (the outcome export).

    ``exception_queue`` (record_key, state) lets the ageing leave out exceptions an operator resolved.
    """
    queue = pl.DataFrame(schema=QUEUE_SCHEMA) if exception_queue is None else exception_queue
    con = duckdb.connect()
    try:
        con.register("outcomes", conform(outcomes, OUTCOME_SCHEMA).to_arrow())
        con.register("exception_queue", conform(queue, QUEUE_SCHEMA).to_arrow())
        _register_table(con, "transactions", _lake_files(lake, "transactions"), LEDGER_SCHEMA)
        _register_table(
            con, "settlement_lines", _lake_files(lake, "settlement_lines"), SETTLEMENT_LINE_SCHEMA
        )
        _register_table(con, "accuracy_history", _lake_files(lake, accuracy.TABLE), accuracy.SCHEMA)
        con.execute(f"SET VARIABLE report_date = DATE '{day.isoformat()}'")
        con.execute((sql_dir / BASE_SQL).read_text())
        views = {name: _integers(con.sql((sql_dir / f).read_text()).pl()) for name, f in VIEW_SQL.items()}
        missing = _integers(con.sql((sql_dir / CHECKS_SQL).read_text()).pl())
    finally:
        con.close()
    return ReportData(day, views, missing)
