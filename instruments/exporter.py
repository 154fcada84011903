"""Writing the catalogue layout: import templates and exports (CSV, XLSX, JSON).

Every text cell that a spreadsheet would evaluate as a formula (starting with = + - @, tab or CR) is written with a
leading apostrophe in CSV and XLSX, so a hostile instrument name cannot run in a reader's spreadsheet.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Mapping
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from booking.core.spreadsheets import XlsxBook
from instruments.columns import COLUMNS, Col, write_cell
from instruments.rules import neutralise_cell
from instruments.service import public_url

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CONTACT_FIELDS = {"contact_name", "contact_phone", "contact_email"}
HEADERS = [c.header for c in COLUMNS]


def disposition(filename: str) -> str:
    return f"attachment; filename=\"export\"; filename*=UTF-8''{quote(filename)}"


def record_values(row: Mapping[Any, Any], show_contact: bool) -> list[Any]:
    """One exported row, in column order, as spreadsheet values."""
    out: list[Any] = []
    for col in COLUMNS:
        if col.field == "institution":
            value: Any = row["institution_name"]
        elif col.field == "facility":
            value = row["facility_name"]
        elif col.field == "chains":
            value = list(row["chain_names"] or [])
        elif col.field == "url":
            value = public_url(row["id"])
        elif col.field in CONTACT_FIELDS and not show_contact:
            value = None
        else:
            value = row[col.field]
        out.append(write_cell(col, value))
    return out


def _sheet_text(value: Any) -> Any:
    return neutralise_cell(value) if isinstance(value, str) else value


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return neutralise_cell(str(value))


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([_csv_text(v) for v in values])
    return buffer.getvalue()


async def csv_chunks(rows: AsyncIterator[Mapping[Any, Any]], show_contact: bool) -> AsyncIterator[bytes]:
    # A BOM so spreadsheet programs open the UTF-8 file as UTF-8.
    yield ("\ufeff" + _csv_line(HEADERS)).encode("utf-8")
    batch: list[str] = []
    async for row in rows:
        batch.append(_csv_line(record_values(row, show_contact)))
        if len(batch) >= 500:
            yield "".join(batch).encode("utf-8")
            batch = []
    if batch:
        yield "".join(batch).encode("utf-8")


def _json_value(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


async def json_chunks(rows: AsyncIterator[Mapping[Any, Any]], show_contact: bool) -> AsyncIterator[bytes]:
    """A JSON array of objects keyed by the same Chinese headers, in the same order."""
    yield b"["
    first = True
    async for row in rows:
        obj = {h: _json_value(v) for h, v in zip(HEADERS, record_values(row, show_contact), strict=True)}
        yield (("" if first else ",") + json.dumps(obj, ensure_ascii=False)).encode("utf-8")
        first = False
    yield b"]"


def _workbook(rows: list[list[Any]]) -> bytes:
    book = XlsxBook()
    ws = book.sheet("仪器", [28 if col.kind == "text" else 16 for col in COLUMNS])
    book.row(ws, 0, HEADERS)
    for r, values in enumerate(rows, start=1):
        book.row(ws, r, [_sheet_text(v) for v in values])
    return book.close()


async def xlsx_bytes(rows: AsyncIterator[Mapping[Any, Any]], show_contact: bool) -> bytes:
    values = [record_values(row, show_contact) async for row in rows]
    # Writing a workbook is CPU-bound: keep it off the event loop.
    return await asyncio.to_thread(_workbook, values)


def _notes(col: Col) -> str:
    parts = ["必填" if col.required else "选填"]
    if col.labels:
        parts.append("可选：" + "、".join(col.labels.values()))
    if col.note:
        parts.append(col.note)
    return "；".join(parts)


def template_xlsx() -> bytes:
    book = XlsxBook()
    # Codes with leading zeros must stay text: the code columns are formatted as text for whatever is typed in.
    text = book.format(num_format="@")
    ws = book.sheet("仪器", [max(14, len(col.header) * 2 + 2) for col in COLUMNS],
                    column_formats=[text if col.kind == "code6" else None for col in COLUMNS])
    book.row(ws, 0, HEADERS, [book.format(bold=True, font_color="#B3261E" if col.required else "#000000")
                              for col in COLUMNS])
    notes = book.sheet("填写说明", [24, 90], freeze_header=False)
    book.row(notes, 0, ["列名", "说明"])
    for r, col in enumerate(COLUMNS, start=1):
        book.row(notes, r, [col.header, _notes(col)])
    return book.close()


def template_csv() -> bytes:
    return ("\ufeff" + _csv_line(HEADERS)).encode("utf-8")
