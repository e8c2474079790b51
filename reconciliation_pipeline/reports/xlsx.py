"""The workbook: one sheet per report view, frozen headers, amounts in major units with the currency's
ISO 4217 digits (JPY 0, EUR 2, KWD 3), written with openpyxl."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from .layout import NONE_TEXT, PERCENT_COLUMNS, VIEW_LAYOUT, is_amount, label, visible
from .money_format import excel_format, to_major
from .queries import ReportData

HEADER_FONT = Font(bold=True, color="FFFFFF")
HEADER_FILL = PatternFill("solid", fgColor="1F3A5F")
DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
PERCENT_FORMAT = "0.00%"
BPS_FORMAT = "#,##0.00"
COUNT_FORMAT = "#,##0"


def _cell(column: str, value: Any, currency: str | None) -> tuple[Any, str | None]:
    """The value to store and its number format."""
    if value is None:
        return (NONE_TEXT, None) if column in ("jurisdiction",) else (None, None)
    if is_amount(column):
        return to_major(int(value), currency), excel_format(currency)
    if column in PERCENT_COLUMNS:
        return float(value), PERCENT_FORMAT
    if column.endswith("_bps"):
        return float(value), BPS_FORMAT
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None), DATETIME_FORMAT
    if isinstance(value, dt.date):
        return value, DATE_FORMAT
    if isinstance(value, bool):
        return value, None
    if isinstance(value, int):
        return value, COUNT_FORMAT
    return value, None


def _sheet(wb: Workbook, title: str, frame: pl.DataFrame, key_columns: int) -> None:
    ws = wb.create_sheet(title)
    columns = visible(frame)
    ws.append([label(c) for c in columns])
    for cell in ws[1]:
        cell.font = HEADER_FONT
        cell.fill = HEADER_FILL
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
    widths = [max(10, min(40, len(label(c)) + 2)) for c in columns]
    for row_index, row in enumerate(frame.iter_rows(named=True), start=2):
        currency = row.get("currency")
        for col_index, column in enumerate(columns, start=1):
            value, number_format = _cell(column, row[column], currency)
            cell = ws.cell(row=row_index, column=col_index, value=value)
            if number_format:
                cell.number_format = number_format
            widths[col_index - 1] = max(widths[col_index - 1], min(40, len(str(value)) + 2))
    for col_index, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(col_index)].width = width
    ws.row_dimensions[1].height = 32
    ws.freeze_panes = ws.cell(row=2, column=key_columns + 1)
    if frame.height:
        ws.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{frame.height + 1}"


def write_workbook(data: ReportData, path: Path, *, generated_at: dt.datetime) -> Path:
    """Write the workbook to ``path`` (the caller makes the write atomic)."""
    wb = Workbook()
    about = wb.active
    assert about is not None
    about.title = "About"
    about.append(["Daily reconciliation report", data.day.isoformat()])
    about.append(["Generated (UTC)", generated_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")])
    about.append(
        [
            "Amounts",
            "Major units of each row's currency, with the currency's ISO 4217 digits; the CSV files "
            "beside this workbook hold the same figures as integer minor units.",
        ]
    )
    about.append(["Statuses", "The latest status of each record in the outcome store when the report ran."])
    for record, psp, records in data.missing_amounts.iter_rows():
        about.append(["Warning", f"{records} {record} record(s) of {psp} have no amount in the lake"])
    about.append([])
    about.append(["Sheet", "What it shows"])
    for view in VIEW_LAYOUT.values():
        about.append([view.title, view.description])
    about.column_dimensions["A"].width = 22
    about.column_dimensions["B"].width = 120
    for cell in about["A"]:
        cell.font = Font(bold=True)
    about.freeze_panes = "A2"
    for name, view in VIEW_LAYOUT.items():
        _sheet(wb, view.title, data[name], view.key_columns)
    wb.move_sheet("About", offset=len(VIEW_LAYOUT))
    wb.active = 0
    wb.save(path)
    return path
