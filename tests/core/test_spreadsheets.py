"""The XLSX writer: every value is written as the type it is, never converted (a string that looks like a formula, a
link or a number stays a string), and files read back with openpyxl, which reads what people upload."""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from openpyxl import load_workbook

from booking.core.spreadsheets import XlsxBook

CASES: list[tuple[Any, Any, str, str]] = [
    # value written, value read back, openpyxl data type, number format
    ("=1+1", "=1+1", "s", "General"),
    ('=HYPERLINK("http://evil","x")', '=HYPERLINK("http://evil","x")', "s", "General"),
    ("https://example.cn/a", "https://example.cn/a", "s", "General"),
    ("0816", "0816", "s", "General"),
    ("1.5e3", "1.5e3", "s", "General"),
    ("成都市", "成都市", "s", "General"),
    ("", None, "n", "General"),
    (42, 42, "n", "General"),
    (Decimal("523456.78"), 523456.78, "n", "General"),
    (0.25, 0.25, "n", "General"),
    (True, True, "b", "General"),
    (date(2019, 5, 6), "2019-05-06", "d", "yyyy-mm-dd"),
]


def read_back(content: bytes) -> Any:
    return load_workbook(io.BytesIO(content))


@pytest.mark.parametrize(("value", "expected", "data_type", "number_format"), CASES)
def test_values_keep_their_type(value: Any, expected: Any, data_type: str, number_format: str) -> None:
    book = XlsxBook()
    ws = book.sheet("表", [10])
    book.row(ws, 0, ["列"])
    book.row(ws, 1, [value])
    cell = read_back(book.close())["表"]["A2"]
    got = cell.value.date().isoformat() if data_type == "d" else cell.value
    assert (got, cell.data_type, cell.number_format) == (expected, data_type, number_format)


def test_formats_widths_frozen_header_and_empty_cells() -> None:
    book = XlsxBook()
    money = book.format(num_format="#,##0.00")
    assert book.format(num_format="#,##0.00") is money  # shared, not one per cell
    ws = book.sheet("报表", [30, 12])
    book.row(ws, 0, ["名称", "金额"], [book.format(bold=True)] * 2)
    book.row(ws, 1, ["甲", Decimal("1234.5")], [None, money])
    book.row(ws, 2, [None, 7], [None, money])
    sheet = read_back(book.close())["报表"]
    assert sheet.freeze_panes == "A2"
    assert sheet["A1"].font.b and not sheet["A2"].font.b
    assert sheet["B2"].number_format == "#,##0.00" and sheet["B2"].value == 1234.5
    assert sheet["A3"].value is None and sheet["B3"].value == 7
    assert round(sheet.column_dimensions["A"].width) == 31  # Excel adds its padding to the character width
