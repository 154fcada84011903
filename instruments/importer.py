"""Bulk import of the national-platform layout from CSV or XLSX: read, validate every row, then write all or nothing.

Row numbers are spreadsheet row numbers (the header is row 1); row 0 means the file as a whole. Any problem in any
cell rejects the whole file with a 422 listing every problem, and nothing is written.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Institution
from booking.auth.principal import Principal
from booking.core.errors import Forbidden, RuleViolation
from booking.core.validation import problems_from_errors
from instruments import repository as repo
from instruments import service
from instruments.columns import ALIASES, BY_HEADER, COLUMNS, HEADER_OF, CellError, Col, read_cell
from instruments.rules import ReferenceData, instrument_problems
from instruments.schemas import ImportResult, InstrumentCreate

MAX_BYTES = 20 * 1024 * 1024
MAX_ROWS = 50_000
MAX_REPORTED = 1000
IGNORED_HEADERS = {"序号", "预约服务网址"}
REQUIRED_HEADERS = [c.header for c in COLUMNS if c.required]

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RowError:
    row: int
    column: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "message": self.message}


@dataclass
class ParsedRow:
    row: int
    values: dict[str, Any]  # field -> value, for the columns present in the file


@dataclass
class ValidRow:
    row: int
    institution_id: int
    values: dict[str, Any]  # Instrument fields to write (only those present in the file)
    chains: list[str] | None
    existing_id: int | None = None


@dataclass
class ImportPlan:
    rows: list[ValidRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


class ImportRejected(RuleViolation):
    """422 whose body lists {row, column, message} for every problem found."""

    def __init__(self, errors: list[RowError]) -> None:
        errors = sorted(errors, key=lambda e: (e.row, e.column or ""))
        shown = errors[:MAX_REPORTED]
        super().__init__(
            detail=f"导入文件有 {len(errors)} 处错误，未写入任何数据",
            extra={"errors": [e.as_dict() for e in shown], "error_count": len(errors)},
        )
        self.row_errors = shown
        self.error_count = len(errors)


# ---- reading ----------------------------------------------------------------------------------------------------


def _is_xlsx(filename: str, content: bytes) -> bool:
    return content[:4] == b"PK\x03\x04" or filename.lower().endswith((".xlsx", ".xlsm"))


def _decode(content: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return content.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ImportRejected([RowError(0, None, "无法识别文件编码（应为 UTF-8 或 GB18030）")])


def read_table(filename: str, content: bytes) -> list[tuple[int, list[Any]]]:
    """Every non-empty row with its spreadsheet row number; the first is the header."""
    if len(content) > MAX_BYTES:
        raise ImportRejected([RowError(0, None, f"文件过大（最多 {MAX_BYTES // 1024 // 1024} MB）")])
    if not content:
        raise ImportRejected([RowError(0, None, "文件为空")])
    rows: list[tuple[int, list[Any]]] = []
    if _is_xlsx(filename, content):
        from openpyxl import load_workbook

        try:
            wb = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError):
            raise ImportRejected([RowError(0, None, "无法读取 XLSX 文件")]) from None
        try:
            ws = wb["仪器"] if "仪器" in wb.sheetnames else wb.worksheets[0]
            for number, cells in enumerate(ws.iter_rows(values_only=True), start=1):
                values = list(cells)
                if any(v not in (None, "") for v in values):
                    rows.append((number, values))
                if len(rows) > MAX_ROWS + 1:
                    break
        finally:
            wb.close()
    else:
        text = _decode(content)
        try:
            for number, cells in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
                if any(c.strip() for c in cells):
                    rows.append((number, list(cells)))
                if len(rows) > MAX_ROWS + 1:
                    break
        except csv.Error as exc:
            raise ImportRejected([RowError(0, None, f"CSV 格式错误：{exc}")]) from None
    if not rows:
        raise ImportRejected([RowError(0, None, "文件中没有内容")])
    if len(rows) > MAX_ROWS + 1:
        raise ImportRejected([RowError(0, None, f"行数过多（一次最多 {MAX_ROWS} 行）")])
    return rows


def _normalise_header(raw: Any) -> str:
    text = str(raw or "").strip().replace("(", "（").replace(")", "）")
    return ALIASES.get(text, ALIASES.get(text.replace("（", "(").replace("）", ")"), text))


def map_headers(header_row: tuple[int, list[Any]]) -> tuple[list[Col | None], list[RowError]]:
    number, cells = header_row
    errors: list[RowError] = []
    mapping: list[Col | None] = []
    seen: set[str] = set()
    for raw in cells:
        header = _normalise_header(raw)
        if not header or header in IGNORED_HEADERS:
            mapping.append(None)
            continue
        col = BY_HEADER.get(header)
        if col is None or not col.importable:
            errors.append(RowError(number, header, "未知的列（列名应与模板一致）"))
            mapping.append(None)
            continue
        if header in seen:
            errors.append(RowError(number, header, "列重复"))
            mapping.append(None)
            continue
        seen.add(header)
        mapping.append(col)
    for header in REQUIRED_HEADERS:
        if header not in seen:
            errors.append(RowError(number, header, "缺少必填列"))
    return mapping, errors


def first_per_cell(errors: list[RowError]) -> list[RowError]:
    """One problem per cell, the first found, by row: a cell that could not be read is then not also reported
    as empty, nor a value out of range twice (by the schema and by the national rules)."""
    seen: set[tuple[int, str]] = set()
    out: list[RowError] = []
    for e in sorted(errors, key=lambda e: e.row):
        if e.column is not None:
            if (e.row, e.column) in seen:
                continue
            seen.add((e.row, e.column))
        out.append(e)
    return out


def parse_rows(table: list[tuple[int, list[Any]]]) -> tuple[list[ParsedRow], list[RowError]]:
    mapping, errors = map_headers(table[0])
    if errors:
        # With the columns wrong, every row would repeat the same problem: report the header alone.
        raise ImportRejected(errors)
    parsed: list[ParsedRow] = []
    for number, cells in table[1:]:
        values: dict[str, Any] = {}
        for col, raw in zip(mapping, cells, strict=False):
            if col is None:
                continue
            try:
                values[col.field] = read_cell(col, raw)
            except CellError as exc:
                errors.append(RowError(number, col.header, str(exc)))
                values[col.field] = None
        for col in mapping[len(cells) :]:
            if col is not None:
                values[col.field] = None
        parsed.append(ParsedRow(number, values))
    return parsed, errors


# ---- validating -------------------------------------------------------------------------------------------------

_NON_RECORD = {"institution", "facility", "chains", "url"}


async def validate(
    session: AsyncSession,
    actor: Principal | None,
    parsed: list[ParsedRow],
    default_institution: Institution | None,
    progress: Progress | None = None,
) -> ImportPlan:
    plan = ImportPlan()
    names = {p.values["institution"] for p in parsed if p.values.get("institution")}
    institutions = await repo.institutions_by_name(session, names)
    inst_ids = {i.id for i in institutions.values()} | (
        {default_institution.id} if default_institution else set()
    )
    facilities = await repo.facilities_of(session, [i for i in inst_ids if i is not None])
    facility_by_name = {(f.institution_id, f.name): f.id for f in facilities}
    ref, facility_ids = await service.reference_data(session, [i for i in inst_ids if i is not None])
    by_id = {i.id: i for i in institutions.values()}
    if default_institution is not None:
        by_id[default_institution.id] = default_institution
    existing = await repo.by_asset_numbers(
        session,
        [
            (inst.id, p.values["asset_number"])
            for p in parsed
            if p.values.get("asset_number")
            and (inst := _row_institution(p, institutions, default_institution))
            and inst.id is not None
        ],
    )
    today = service.today()
    first_row_of: dict[tuple[int, str], int] = {}
    for index, p in enumerate(parsed):
        if progress and index % 200 == 0:
            progress("校验", index, len(parsed))
        errors: list[RowError] = []
        v = p.values
        inst = _row_institution(p, institutions, default_institution)
        if inst is None or inst.id is None:
            if v.get("institution"):
                errors.append(RowError(p.row, "所属单位", f"单位“{v['institution']}”不存在（应为单位全称）"))
            else:
                errors.append(RowError(p.row, "所属单位", "请填写所属单位，或在导入时指定单位"))
            plan.errors += errors
            continue
        facility_id: int | None = None
        if v.get("facility"):
            facility_id = facility_by_name.get((inst.id, v["facility"]))
            if facility_id is None:
                errors.append(
                    RowError(p.row, "所属实验室/平台", f"{inst.name} 没有名为“{v['facility']}”的实验室/平台")
                )
        if not service.may_manage(actor, inst.id, facility_id):
            column = "所属实验室/平台" if facility_id is not None else "所属单位"
            errors.append(RowError(p.row, column, f"无权导入{inst.name}（该实验室/平台）的仪器"))
        number = v.get("asset_number")
        current = existing.get((inst.id, number)) if number else None
        if current is not None and not service.may_manage(actor, inst.id, current.facility_id):
            # The row updates an instrument as it is now: the actor must manage it there, as an edit requires,
            # not only where the row would put it.
            errors.append(RowError(p.row, HEADER_OF["asset_number"],
                                   f"内部编码 {number} 的仪器属于您无权管理的实验室/平台，不能通过导入修改"))
        if number:
            key = (inst.id, number)
            if key in first_row_of:
                errors.append(
                    RowError(p.row, HEADER_OF["asset_number"], f"与第 {first_row_of[key]} 行的内部编码重复")
                )
            else:
                first_row_of[key] = p.row
        if current is not None and current.retired_at is not None:
            errors.append(
                RowError(p.row, HEADER_OF["asset_number"], "该内部编码的仪器已退役，不能通过导入更新")
            )
        record = {k: val for k, val in v.items() if k not in _NON_RECORD}
        if "facility" in v:
            record["facility_id"] = facility_id
        if not record.get("city_code"):
            record["city_code"] = (
                current.city_code if current is not None and "city_code" not in v else inst.city_code
            )
        if record.get("status") is None and "status" in record:
            record.pop("status")
        for flag in ("qualification_required", "accepts_vouchers", "restricted"):
            if flag in record and record[flag] is None:
                record[flag] = False
        if "subjects" in record and record["subjects"] is None:
            record["subjects"] = []
        chains = v.get("chains") if "chains" in v else None
        # The full record after the import, for the pydantic model and the cross-field rules.
        full = {**(current.model_dump() if current is not None else {}), **record}
        candidate = {
            k: val for k, val in full.items() if k in InstrumentCreate.model_fields and val is not None
        }
        candidate["institution_id"] = inst.id
        if chains is not None:
            candidate["chains"] = chains
        try:
            model = InstrumentCreate.model_validate(candidate)
        except ValidationError as exc:
            for problem in problems_from_errors(exc.errors()):
                message = problem.message
                if problem.field == "original_value" and problem.code in ("less_than_equal", "greater_than_equal"):
                    message = _VALUE_RANGE  # the column is in 万元; the model's bound is in 元
                errors.append(RowError(p.row, _column_of(problem.field), message))
        else:
            # Write what the model made of the cells (trimmed, e-mail lowercased, enums as their values).
            for name in record:
                if name in InstrumentCreate.model_fields and record[name] is not None:
                    value = getattr(model, name)
                    record[name] = value.value if hasattr(value, "value") else value
        row_ref = ReferenceData(
            ref.category_codes, ref.chain_names, frozenset(facility_ids.get(inst.id, set()))
        )
        rule_values = {**full, "chains": chains or []}
        for problem in instrument_problems(rule_values, row_ref, today=today):
            if problem.field == "facility_id" and facility_id is None and v.get("facility"):
                continue  # already reported by name
            errors.append(RowError(p.row, _column_of(problem.field), problem.message))
        if errors:
            plan.errors += errors
            continue
        plan.rows.append(
            ValidRow(p.row, inst.id, record, chains, current.id if current is not None else None)
        )
    return plan


_VALUE_RANGE = "原值应在 0 到 1000000 万元（100 亿元）之间"


def _row_institution(
    p: ParsedRow, by_name: dict[str, Institution], default: Institution | None
) -> Institution | None:
    name = p.values.get("institution")
    if name:
        return by_name.get(name)
    return default


def _column_of(field_path: str | None) -> str | None:
    if field_path is None:
        return None
    name = field_path.split(".")[0]
    if name == "facility_id":
        return HEADER_OF["facility"]
    return HEADER_OF.get(name, name)


# ---- the use case -----------------------------------------------------------------------------------------------


async def import_file(
    session: AsyncSession,
    actor: Principal | None,
    *,
    filename: str,
    content: bytes,
    institution_id: int | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Read, validate every row, and write everything or nothing (the caller's transaction commits)."""
    if actor is not None and not (actor.is_admin or actor.managed_institution_ids):
        raise Forbidden("只有仪器管理员和平台管理员可以导入仪器")
    default: Institution | None = None
    if institution_id is None and actor is not None and len(actor.managed_institution_ids) == 1:
        institution_id = next(iter(actor.managed_institution_ids))
    if institution_id is not None:
        default = await session.get(Institution, institution_id)
        if default is None:
            raise ImportRejected([RowError(0, "所属单位", f"单位 {institution_id} 不存在")])
    table = read_table(filename, content)
    parsed, errors = parse_rows(table)
    plan = await validate(session, actor, parsed, default, progress)
    errors = first_per_cell(errors + plan.errors)
    if errors:
        raise ImportRejected(errors)
    # A large file takes seconds to check: a tag an admin deleted or renamed meanwhile is refused like a bad cell.
    known = await repo.chain_ids_by_name(session)
    gone = [RowError(r.row, HEADER_OF["chains"], f"产业链标签「{n}」刚被管理员删除或改名，请核对后重新导入")
            for r in plan.rows for n in sorted(set(r.chains or ())) if n not in known]
    if gone:
        raise ImportRejected(gone)
    return await service.import_rows(session, actor, plan.rows, progress=progress)
