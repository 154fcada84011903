"""The audit's spreadsheets: the report (one sheet per breakdown, Chinese headers, number formats, a definitions
sheet with the as-of date) as XLSX or one sheet as CSV, and service records in the national platform's layout.

The report is built from the same service results the API returns and the pages show, so the three agree.
Every text cell a spreadsheet would evaluate as a formula (= + - @, tab, CR) gets a leading apostrophe.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from booking.audit import service
from booking.audit.rules import AsOf
from booking.auth.principal import Principal
from booking.core.clock import to_local, utcnow
from booking.core.regions import city_name
from booking.core.spreadsheets import XlsxBook
from booking.reservations.models import SERVICE_MODE_LABELS
from booking.usage.models import RATINGS, SERVICE_TYPES
from booking.usage.rules import PAYMENT_STATE_LABELS, payment_state
from instruments.models import SHARING_MODE_LABELS, STATUS_LABELS, USAGE_KIND_LABELS
from instruments.rules import neutralise_cell

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
INT = "#,##0"
DEC = "#,##0.00"
PCT = "0.00%"
RATE = "0.00"
TEXT = "@"


@dataclass(frozen=True)
class Column:
    header: str
    field: str
    fmt: str | None = None  # an Excel number format; None for text
    width: int = 14


@dataclass
class Sheet:
    key: str
    title: str
    columns: list[Column]
    rows: list[Mapping[str, Any]] = field(default_factory=list)


SHEET_KEYS = ("summary", "trend", "by-city", "by-kind", "by-institution", "by-category", "by-chain", "by-band",
              "usage-city", "usage-institution", "usage-instrument", "idle", "saturated", "evaluation",
              "definitions")

_COUNT_COLUMNS = [Column("已登记大型仪器（台套）", "registered", INT), Column("开放共享（台套）", "open", INT),
                  Column("实际共享（台套）", "shared", INT), Column("开放比例", "open_rate", PCT),
                  Column("实际共享比例", "shared_rate", PCT)]
_USAGE_COLUMNS = [
    Column("大型仪器（台套）", "instruments", INT), Column("服务记录（条）", "records", INT),
    Column("有效工作机时（小时）", "hours", DEC, 16), Column("对外服务机时（小时）", "external_hours", DEC, 16),
    Column("共享率", "share_rate", PCT), Column("服务收入（元）", "amount", DEC, 16),
    Column("对外服务收入（元）", "external_amount", DEC, 16), Column("服务用户数", "users", INT),
    Column("服务外单位数", "external_institutions", INT), Column("满意度（均分，5 分制）", "rating_mean", RATE),
    Column("评价数", "rating_count", INT), Column("非常满意", "rating_5", INT), Column("基本满意", "rating_4", INT),
    Column("一般", "rating_3", INT), Column("不满意", "rating_2", INT), Column("极差", "rating_1", INT),
    Column("定额机时（小时）", "quota_hours", DEC), Column("定额利用率", "utilisation", PCT),
]
_INSTRUMENT_COLUMNS = [
    Column("仪器编号", "instrument_id", INT, 10), Column("仪器名称", "label", None, 28), Column("规格型号", "model"),
    Column("所属单位", "institution_name", None, 28), Column("市州", "city_name"),
    Column("仪器类别", "usage_kind_label"),
    Column("原值（元）", "original_value", DEC, 16), Column("共享模式", "sharing_mode_label"),
    Column("运行状态", "status_label"),
]


def _flat_usage(item: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(item)
    for k, v in item.get("ratings", {}).items():
        out[f"rating_{k}"] = v
    if "city_code" in item:
        out["city_name"] = city_name(item["city_code"])
    if "usage_kind" in item:
        out["usage_kind_label"] = USAGE_KIND_LABELS.get(item["usage_kind"], item["usage_kind"])
    if "sharing_mode" in item:
        out["sharing_mode_label"] = SHARING_MODE_LABELS.get(item["sharing_mode"], item["sharing_mode"])
    if "status" in item:
        out["status_label"] = STATUS_LABELS.get(item["status"], item["status"])
    return out


async def build_report(session: AsyncSession, principal: Principal, asof: AsOf, year: int | None,
                       city: str | None, only: str | None = None) -> list[Sheet]:
    """The report's sheets (or just `only`), each computed by the service functions the API uses."""
    want = (lambda key: only is None or only == key)  # noqa: E731
    sheets: list[Sheet] = []
    head: dict[str, Any] | None = None
    if want("summary") or want("trend") or want("definitions"):
        head = await service.headline(session, principal, asof, city=city)
    if want("definitions"):
        assert head is not None
        texts = head["definitions"]["texts"]
        rows: list[dict[str, Any]] = [
            {"item": "统计日（截至当日 24:00，北京时间）", "value": asof.day.isoformat()},
            {"item": "统计年度（机时、收入）", "value": str(service.resolve_year(year, asof))},
            {"item": "范围", "value": city_name(city) if city else _scope_text(head["scope"])},
            {"item": "导出时间", "value": to_local(utcnow()).strftime("%Y-%m-%d %H:%M")},
            *({"item": k, "value": v} for k, v in texts.items()),
            {"item": "趋势外推方法", "value": head["projection"]["method"]},
        ]
        sheets.append(Sheet("definitions", "口径说明", [Column("项目", "item", None, 30),
                                                      Column("说明", "value", None, 110)], rows))
    if want("summary"):
        assert head is not None
        sheets.append(Sheet("summary", "总体", [
            Column("统计日", "as_of", TEXT), Column("目标（台套）", "target", INT),
            Column("已登记大型仪器（台套）", "registered", INT), Column("开放共享（台套）", "open", INT),
            Column("实际共享（台套）", "shared", INT), Column("目标完成度", "progress", PCT),
            Column("目标日", "projection_date", TEXT), Column("趋势外推实际共享（台套）", "projection_shared", INT),
        ], [{**head, "projection_date": head["projection"]["date"],
             "projection_shared": head["projection"]["shared"]}]))
    if want("trend"):
        assert head is not None
        sheets.append(Sheet("trend", "月度趋势", [
            Column("月份", "month", TEXT), Column("统计日", "as_of", TEXT),
            Column("已登记大型仪器（台套）", "registered", INT), Column("开放共享（台套）", "open", INT),
            Column("实际共享（台套）", "shared", INT)], head["trend"]))
    for dim, title in (("city", "按市州"), ("kind", "按单位类型"), ("institution", "按单位"),
                       ("category", "按仪器大类"), ("chain", "按产业链"), ("band", "按原值区间")):
        if not want(f"by-{dim}"):
            continue
        result = await service.breakdown(session, principal, asof, dim, city=city)
        sheets.append(Sheet(f"by-{dim}", title, [Column(service.DIMENSION_LABELS[dim], "label", None, 30),
                                                 *_COUNT_COLUMNS], result["items"]))
    # Each usage grouping is computed once; the idle, saturated and evaluation sheets are the rows of the instrument
    # and institution groupings that meet those definitions (the same tests the API's `only=` filter makes in SQL).
    inst_rows: list[dict[str, Any]] | None = None
    if want("usage-city"):
        result = await service.usage_table(session, principal, asof, group="city", year=year, city=city,
                                           sort="name", descending=False, with_totals=False)
        sheets.append(Sheet("usage-city", "机时-市州", [Column("市州", "label", None, 28), *_USAGE_COLUMNS],
                            [_flat_usage(i) for i in result["items"]]))
    if want("usage-institution") or want("evaluation"):
        result = await service.usage_table(session, principal, asof, group="institution", year=year, city=city,
                                           sort="name", descending=False, with_totals=False)
        inst_rows = [_flat_usage(i) for i in result["items"]]
        if want("usage-institution"):
            sheets.append(Sheet("usage-institution", "机时-单位", [Column("单位", "label", None, 28),
                                                                *_USAGE_COLUMNS], inst_rows))
        if want("evaluation"):
            minimum = service.definitions().evaluation_min_large
            sheets.append(Sheet("evaluation", "评价范围单位", [Column("单位", "label", None, 28),
                                                            Column("单位类型", "institution_kind"),
                                                            Column("市州", "city_name"), *_USAGE_COLUMNS],
                                [r for r in inst_rows if r["instruments"] >= minimum]))
    if want("usage-instrument") or want("idle") or want("saturated"):
        result = await service.usage_table(session, principal, asof, group="instrument", year=year, city=city,
                                           with_totals=False)
        rows = [_flat_usage(i) for i in result["items"]]
        columns = [*_INSTRUMENT_COLUMNS, *_USAGE_COLUMNS[1:]]
        if want("usage-instrument"):
            sheets.append(Sheet("usage-instrument", "机时-仪器", columns, rows))
        if want("idle"):
            sheets.append(Sheet("idle", "闲置仪器", columns, [r for r in rows if r["idle"]]))
        if want("saturated"):
            sheets.append(Sheet("saturated", "饱和仪器", columns, [r for r in rows if r["saturated"]]))
    order = {k: i for i, k in enumerate(["definitions", *(k for k in SHEET_KEYS if k != "definitions")])}
    return sorted(sheets, key=lambda s: order[s.key])


def _scope_text(scope: Mapping[str, Any]) -> str:
    if scope["kind"] == "province":
        return "全省"
    return "、".join(city_name(c) for c in scope["cities"])


def _cell(value: Any) -> Any:
    if isinstance(value, str):
        return neutralise_cell(value)
    if isinstance(value, bool):
        return "是" if value else "否"
    return value


def report_xlsx(sheets: list[Sheet]) -> bytes:
    book = XlsxBook()
    header = book.format(bold=True, text_wrap=True)
    for sheet in sheets:
        ws = book.sheet(sheet.title, [col.width for col in sheet.columns])
        book.row(ws, 0, [col.header for col in sheet.columns], [header] * len(sheet.columns))
        formats = [book.format(num_format=col.fmt) if col.fmt else None for col in sheet.columns]
        for r, row in enumerate(sheet.rows, start=1):
            book.row(ws, r, [_cell(row.get(col.field)) for col in sheet.columns], formats)
    return book.close()


def _csv_value(value: Any, fmt: str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float | Decimal | int):
        if fmt == PCT:
            return format(Decimal(str(value)) * 100, "f").rstrip("0").rstrip(".") + "%" if value else "0%"
        if fmt in (DEC, RATE):
            return format(Decimal(str(value)).quantize(Decimal("0.01")), "f")
        return str(value)
    return neutralise_cell(str(value))


def sheet_csv(sheet: Sheet) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([c.header for c in sheet.columns])
    for row in sheet.rows:
        writer.writerow([_csv_value(row.get(c.field), c.fmt) for c in sheet.columns])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


# ---- service records in the national layout ------------------------------------------------------------------------

RECORD_COLUMNS: list[Column] = [
    Column("服务记录编号", "id", INT, 12), Column("仪器名称", "instrument_name", None, 28),
    Column("所在单位仪器内部编码", "asset_number", None, 18), Column("服务单位", "provider_institution_name", None, 28),
    Column("服务开始时间", "started", None, 18), Column("服务结束时间", "ended", None, 18),
    Column("机时（小时）", "hours", DEC), Column("样品数", "samples", INT), Column("服务方式", "service_mode_label"),
    Column("服务对象", "user_kind"), Column("服务类型", "service_type_label"),
    Column("项目名称", "project_name", None, 24),
    Column("经费来源", "funding_source", None, 18), Column("申请人", "applicant_name"),
    Column("申请人所在单位", "user_institution_name", None, 28), Column("收费金额（元）", "amount", DEC),
    Column("收费依据", "fee_basis", None, 24),
    # The payment as it stands when the file is made (not as of the statistics date: it is not effective-dated).
    Column("付款状态", "payment_label"), Column("实收金额（元）", "paid_amount", DEC), Column("付款时间", "paid", None, 18),
    Column("发票号", "invoice_number", None, 18), Column("用户评价", "rating_label"),
    Column("评价意见", "rating_comment", None, 30),
]


def record_row(r: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(r)
    row["started"] = _local(r["started_at"])
    row["ended"] = _local(r["ended_at"])
    row["service_mode_label"] = SERVICE_MODE_LABELS.get(r["service_mode"], r["service_mode"])
    row["service_type_label"] = SERVICE_TYPES.get(r["service_type"], r["service_type"])
    row["user_kind"] = "外部用户" if r["is_external"] else "内部用户"
    row["rating_label"] = RATINGS.get(r["rating"]) if r["rating"] else None
    row["payment_label"] = PAYMENT_STATE_LABELS[payment_state(r["amount"], r["payment_status"], r["fee_basis"])]
    row["paid"] = _local(r["paid_at"])
    return row


def _local(value: datetime | None) -> str:
    return to_local(value).strftime("%Y-%m-%d %H:%M") if value else ""


async def records_csv_chunks(rows: AsyncIterator[Mapping[str, Any]]) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([c.header for c in RECORD_COLUMNS])
    yield ("\ufeff" + buffer.getvalue()).encode("utf-8")
    batch = 0
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    async for r in rows:
        row = record_row(r)
        writer.writerow([_csv_value(row.get(c.field), c.fmt) for c in RECORD_COLUMNS])
        batch += 1
        if batch >= 1000:
            yield buffer.getvalue().encode("utf-8")
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\r\n")
            batch = 0
    if batch:
        yield buffer.getvalue().encode("utf-8")


def records_sheet(rows: list[Mapping[str, Any]]) -> Sheet:
    return Sheet("service-records", "服务记录", RECORD_COLUMNS, [record_row(r) for r in rows])


def filename(stem: str, asof: AsOf, ext: str, city: str | None = None) -> str:
    return f"{stem}-{city_name(city) + '-' if city else ''}{asof.day.isoformat()}.{ext}"

