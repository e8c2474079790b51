"""Finance reports: DuckDB SQL (``sql/``) over the Parquet lake and the outcome export, written as CSV,
an XLSX workbook and a self-contained HTML report with charts. Pure functions: no Dagster here."""

from .accuracy import record_accuracy
from .build import CSV_NAMES, ReportFiles, read_report, report_folder, summary_line, write_reports
from .queries import QUEUE_SCHEMA, VIEWS, ReportData, query_reports

__all__ = [
    "CSV_NAMES",
    "QUEUE_SCHEMA",
    "VIEWS",
    "ReportData",
    "ReportFiles",
    "query_reports",
    "read_report",
    "record_accuracy",
    "report_folder",
    "summary_line",
    "write_reports",
]
