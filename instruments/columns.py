"""The spreadsheet layout shared by the import template, the importer and every export: one column per national
field, headed by the national field name in Chinese, in the national platform's order, then what booking adds.

Cells are converted between their spreadsheet text and the record's values here, so import and export agree and
an exported file imports back unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from booking.core.regions import CITIES
from instruments.models import (
    CUSTOMS_LABELS,
    FEE_UNIT_LABELS,
    FUNDING_LABELS,
    SHARING_MODE_LABELS,
    SOURCE_LABELS,
    STATUS_LABELS,
    USAGE_KIND_LABELS,
)
from instruments.reference import COUNTRIES

WAN = Decimal(10000)
_CITY_BY_NAME = {name: code for code, name in CITIES.items()}
_COUNTRY_BY_NAME = {name: code for code, name in COUNTRIES.items()}
_TRUE = {"是", "y", "yes", "true", "1", "√", "有"}
_FALSE = {"否", "n", "no", "false", "0", "×", "无"}
_LIST_SPLIT = re.compile(r"[;；,，、\s]+")


class CellError(ValueError):
    """A cell that cannot be read; the message names what was expected."""


@dataclass(frozen=True)
class Col:
    header: str
    field: str
    kind: str = "text"  # text | code6 | wan | money | date | bool | enum | city | country | list
    labels: dict[str, str] = dc_field(default_factory=dict)
    required: bool = False
    note: str = ""
    importable: bool = True


COLUMNS: tuple[Col, ...] = (
    Col("所属单位", "institution", note="单位全称；仪器管理员导入本单位仪器时可留空"),
    Col(
        "所在单位仪器内部编码",
        "asset_number",
        required=True,
        note="本单位资产编号，单位内唯一；重复导入按此更新",
    ),
    Col("中文名称", "name", required=True),
    Col("英文名称", "name_en"),
    Col("设备分类编码", "category_code", "code6", required=True, note="6 位，如 010200（质谱仪器）"),
    Col("仪器来源", "source", "enum", SOURCE_LABELS),
    Col("仪器类别", "usage_kind", "enum", USAGE_KIND_LABELS),
    Col(
        "原值（万元）", "original_value", "wan", required=True, note="万元，最多 6 位小数（精确到元以下两位）"
    ),
    Col("产地国别", "country_code", "country", note="GB/T 2659 两字母代码或中文名，如 CN、美国"),
    Col("规格型号", "model"),
    Col("生产制造商", "manufacturer"),
    Col("启用日期", "start_date", "date", note="YYYY-MM-DD，不能晚于今天"),
    Col("主要技术指标", "specs", note="≤500 字"),
    Col("主要功能", "functions", note="≤300 字"),
    Col("主要学科领域", "subjects", "list", note="GB/T 13745 代码，最多 4 个，用分号分隔"),
    Col("服务内容", "service_content", note="≤200 字"),
    Col("典型成果", "achievements"),
    Col("对外开放共享规定", "sharing_rules", note="≤500 字"),
    Col("参考收费标准", "fee_text"),
    Col("所在市州", "city_code", "city", note="市州代码或名称，如 510700 或 绵阳市；留空取单位所在市州"),
    Col("所在区县代码", "county_code", "code6"),
    Col("安放地址", "street"),
    Col("联系人", "contact_name"),
    Col("联系电话", "contact_phone"),
    Col("电子邮箱", "contact_email"),
    Col("共享模式", "sharing_mode", "enum", SHARING_MODE_LABELS, required=True),
    Col("运行状态", "status", "enum", STATUS_LABELS, note="留空为 正常"),
    Col("主要购置经费来源", "funding_source", "enum", FUNDING_LABELS),
    Col("所属单位内部门", "department"),
    Col("海关监管情况", "customs_status", "enum", CUSTOMS_LABELS),
    Col("所属实验室/平台", "facility", note="本单位已登记的实验室/平台名称"),
    Col("收费方式", "fee_unit", "enum", FEE_UNIT_LABELS),
    Col("内部单价（元）", "fee_internal", "money"),
    Col("外部单价（元）", "fee_external", "money"),
    Col("最低收费（元）", "fee_minimum", "money"),
    Col("需培训取得资质", "qualification_required", "bool", note="是/否"),
    Col("接受创新券", "accepts_vouchers", "bool", note="是/否；仅外部共享仪器"),
    Col("产业链", "chains", "list", note="平台已有的产业链标签，用分号分隔"),
    Col("限制公开（军民融合）", "restricted", "bool", note="是：只有授权用户可见"),
    Col("照片网址", "photo_url"),
    Col("预约服务网址", "url", importable=False, note="导出时填写；导入时忽略"),
)

BY_HEADER: dict[str, Col] = {c.header: c for c in COLUMNS}
HEADER_OF: dict[str, str] = {c.field: c.header for c in COLUMNS}
# Alternative headers seen in national-platform spreadsheets.
ALIASES: dict[str, str] = {
    "仪器名称": "中文名称",
    "名称": "中文名称",
    "内部编码": "所在单位仪器内部编码",
    "资产编号": "所在单位仪器内部编码",
    "分类编码": "设备分类编码",
    "原值": "原值（万元）",
    "原值(万元)": "原值（万元）",
    "产地": "产地国别",
    "启用时间": "启用日期",
    "邮箱": "电子邮箱",
    "电话": "联系电话",
    "所属单位名称": "所属单位",
}


# ---- reading cells ----------------------------------------------------------------------------------------------


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    value = str(raw).strip()
    return value or None


# Numbers of 10^15 and more, far above any amount a cell may hold (原值 ≤ 100 亿元), are refused before they are
# computed with: arithmetic on 1e9999999999 overflows the decimal context (checked by exponent, not by value).
_TOO_LARGE_DIGITS = 15


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text.replace(",", "").replace("，", ""))
    except InvalidOperation:
        raise CellError("应为数字") from None
    if not value.is_finite():
        raise CellError("应为数字")
    if value and value.adjusted() >= _TOO_LARGE_DIGITS:  # 1e30, 1e9999999999: refused before any arithmetic
        raise CellError("数值过大")
    if value and value.adjusted() < -_TOO_LARGE_DIGITS:  # 1e-9999999999 would round to 0 without a word
        raise CellError("数值过小")
    return value


def read_cell(col: Col, raw: Any) -> Any:
    """Spreadsheet cell → record value (None for a blank cell). Raises CellError with a Chinese message."""
    if col.kind == "date" and isinstance(raw, datetime | date):
        return raw.date() if isinstance(raw, datetime) else raw
    if col.kind in ("wan", "money") and isinstance(raw, int | float) and not isinstance(raw, bool):
        # A spreadsheet keeps the binary float of what a formula computed (68.53999999999999) and shows it to 15
        # significant digits (68.54): the cell is read as shown.
        raw = format(raw, ".15g") if isinstance(raw, float) else str(raw)
    if col.kind == "code6" and isinstance(raw, int | float) and not isinstance(raw, bool):
        # Spreadsheets drop the leading zero of 010200.
        raw = str(int(raw)).zfill(6)
    if col.kind == "city" and isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = str(int(raw))
    text = _text(raw)
    if text is None:
        return None
    from instruments.rules import unneutralise_cell

    text = unneutralise_cell(text)
    kind = col.kind
    if kind == "text":
        return text
    if kind == "code6":
        if not re.fullmatch(r"\d{1,6}", text):
            raise CellError("应为 6 位数字代码")
        return text.zfill(6)
    if kind == "wan":
        value = _decimal(text) * WAN
        if value != value.quantize(Decimal("0.01")):
            raise CellError("万元最多 6 位小数")
        return value.quantize(Decimal("0.01"))
    if kind == "money":
        value = _decimal(text)
        if value != value.quantize(Decimal("0.01")):
            raise CellError("金额最多 2 位小数")
        return value.quantize(Decimal("0.01"))
    if kind == "date":
        for fmt in ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y年%m月%d日", "%Y-%m-%d %H:%M:%S"):
            try:
                return datetime.strptime(text, fmt).date()
            except ValueError:
                continue
        raise CellError("日期格式不正确（应为 YYYY-MM-DD）")
    if kind == "bool":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise CellError("应为 是 或 否")
    if kind == "enum":
        for code, label in col.labels.items():
            if text in (label, code):
                return code
        raise CellError(f"取值无效（可选：{'、'.join(col.labels.values())}）")
    if kind == "city":
        if text in CITIES:
            return text
        if text in _CITY_BY_NAME:
            return _CITY_BY_NAME[text]
        raise CellError(f"未知的市州 {text}（应为四川省 21 个市州的代码或名称）")
    if kind == "country":
        if text.upper() in COUNTRIES:
            return text.upper()
        if text in _COUNTRY_BY_NAME:
            return _COUNTRY_BY_NAME[text]
        raise CellError(f"未知的产地国别 {text}（应为两字母代码或中文名，如 CN、美国）")
    if kind == "list":
        return [part for part in _LIST_SPLIT.split(text) if part]
    raise AssertionError(f"unknown column kind {kind}")


# ---- writing cells ----------------------------------------------------------------------------------------------


def wan(value: Decimal) -> Decimal:
    """CNY → 万元, exactly (up to 6 decimals), without trailing zeros beyond two decimals."""
    exact = (Decimal(value) / WAN).quantize(Decimal("0.000001"))
    two = exact.quantize(Decimal("0.01"))
    return two if two == exact else exact.normalize()


def write_cell(col: Col, value: Any) -> Any:
    """Record value → a spreadsheet value (numbers stay numbers, dates stay dates, codes become labels)."""
    if value is None:
        return None
    kind = col.kind
    if kind == "wan":
        return wan(value)
    if kind == "money":
        return Decimal(value)
    if kind == "bool":
        return "是" if value else "否"
    if kind == "enum":
        return col.labels.get(value, value)
    if kind == "city":
        return CITIES.get(value, value)
    if kind == "list":
        return "；".join(value) if value else None
    return value
