"""Bulk import (all or nothing, row/column report, re-import updates) and exports (layout, filters, neutralised
formulas)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from typing import Any

import httpx
import pytest
from openpyxl import Workbook, load_workbook
from openpyxl.utils import get_column_letter
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.activity.models import ActivityEntry
from instruments.columns import COLUMNS
from instruments.models import Instrument, InstrumentHistory
from tests.factories import bearer_headers, make_facility, make_institution, make_instrument, make_user

pytestmark = pytest.mark.asyncio

HEADERS = [
    "所在单位仪器内部编码",
    "中文名称",
    "设备分类编码",
    "原值（万元）",
    "共享模式",
    "运行状态",
    "规格型号",
    "生产制造商",
    "启用日期",
    "所在市州",
    "产业链",
    "联系电话",
]


def rows(n: int, *, bad_row: int | None = None) -> list[list[Any]]:
    out: list[list[Any]] = []
    for i in range(n):
        out.append(
            [
                f"IMP-{i:05d}",
                f"导入测试质谱仪{i}",
                "010200",
                52.5 + i,
                "外部共享",
                "正常",
                f"Q-{i}",
                "安捷伦",
                "2020-05-01",
                "绵阳市",
                "医药健康；先进材料",
                "0816-2345678",
            ]
        )
    if bad_row is not None:
        # spreadsheet row = index + 2 (header is row 1)
        out[bad_row - 2][2] = "999999"
    return out


def xlsx(data: list[list[Any]], headers: list[str] = HEADERS) -> bytes:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "仪器"
    ws.append(headers)
    for r in data:
        ws.append(r)
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


def csv_bytes(data: list[list[Any]], encoding: str = "utf-8-sig", headers: list[str] = HEADERS) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(headers)
    writer.writerows(data)
    return buffer.getvalue().encode(encoding)


@pytest.fixture
async def mianyang(session: AsyncSession) -> Any:
    return await make_institution(session, name="导入测试研究院", kind="科研院所", city_code="510700")


@pytest.fixture
async def manager(session: AsyncSession, mianyang: Any) -> dict[str, str]:
    user = await make_user(session, role="facility_manager", grant_institution=mianyang)
    return await bearer_headers(session, user)


async def count(session: AsyncSession, institution_id: int) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(Instrument).where(Instrument.institution_id == institution_id)
        )
        or 0
    )


async def upload(
    client: httpx.AsyncClient, headers: dict[str, str], content: bytes, name: str = "仪器.xlsx", **params: Any
) -> httpx.Response:
    return await client.post(
        "/api/v1/instruments/import",
        headers=headers,
        params=params,
        files={"file": (name, content, "application/octet-stream")},
    )


class TestImport:
    async def test_one_problem_per_cell(
        self, client: httpx.AsyncClient, session: AsyncSession, mianyang: Any, manager: dict[str, str]
    ) -> None:
        data = rows(3)
        data[0][4] = "对外开放"  # not a sharing mode: reported as that, not also as empty
        data[1][3] = "很贵"  # not a number: likewise
        data[2][3] = -5  # negative: once, though both the schema and the national rules refuse it
        r = await upload(client, manager, csv_bytes(data), name="x.csv")
        assert r.status_code == 422
        errors = [(e["row"], e["column"]) for e in r.json()["errors"]]
        assert errors == [(2, "共享模式"), (3, "原值（万元）"), (4, "原值（万元）")], r.json()["errors"]
        assert "取值无效" in r.json()["errors"][0]["message"]
        assert await count(session, mianyang.id) == 0

    async def test_thousand_rows_one_bad_then_fixed_then_again(
        self, client: httpx.AsyncClient, session: AsyncSession, mianyang: Any, manager: dict[str, str]
    ) -> None:
        r = await upload(client, manager, xlsx(rows(1000, bad_row=731)))
        assert r.status_code == 422, r.text
        body = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert body["errors"] == [
            {"row": 731, "column": "设备分类编码", "message": "未知的设备分类编码 999999"}
        ]
        assert await count(session, mianyang.id) == 0
        assert (
            await session.scalar(
                select(func.count())
                .select_from(ActivityEntry)
                .where(ActivityEntry.action.startswith("instrument."))
            )
            == 0
        )  # type: ignore[attr-defined]

        fixed = xlsx(rows(1000))
        first = await upload(client, manager, fixed)
        assert first.status_code == 200, first.text
        assert first.json() == {"rows": 1000, "created": 1000, "updated": 0, "unchanged": 0}
        assert await count(session, mianyang.id) == 1000

        second = await upload(client, manager, fixed)
        assert second.json() == {"rows": 1000, "created": 0, "updated": 0, "unchanged": 1000}
        assert await count(session, mianyang.id) == 1000

        changed = rows(1000)
        changed[10][5] = "待修"
        changed[11][1] = "改名的质谱仪"
        third = await upload(client, manager, xlsx(changed))
        assert third.json() == {"rows": 1000, "created": 0, "updated": 2, "unchanged": 998}
        assert await count(session, mianyang.id) == 1000
        inst = (await session.scalars(select(Instrument).where(Instrument.asset_number == "IMP-00010"))).one()
        await session.refresh(inst)
        assert inst.status == "awaiting_repair" and inst.original_value == 625000
        assert inst.city_code == "510700"
        renamed = (await session.scalars(select(Instrument).where(Instrument.asset_number == "IMP-00011"))).one()
        await session.refresh(renamed)
        assert renamed.name == "改名的质谱仪"
        history = await session.scalar(
            select(func.count())
            .select_from(InstrumentHistory)
            .where(InstrumentHistory.instrument_id == inst.id)
        )
        assert history == 2
        updated = await session.scalar(
            select(func.count())
            .select_from(ActivityEntry)
            .where(ActivityEntry.action == "instrument.updated")
        )
        assert updated == 2

    async def test_changed_rows_are_written_in_one_statement(
        self, client: httpx.AsyncClient, manager: dict[str, str], session: AsyncSession, mianyang: Any
    ) -> None:
        # Every statement on instruments runs the search triggers once: 300 changed rows are one UPDATE, not 300.
        assert (await upload(client, manager, xlsx(rows(300)))).json()["created"] == 300
        changed = rows(300)
        for row in changed:
            row[5] = "待修"
        updates: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
            if statement.lstrip().upper().startswith("UPDATE INSTRUMENTS"):
                updates.extend([statement] * (len(parameters) if executemany else 1))  # executions, not calls

        sync_connection = (await session.connection()).sync_connection
        assert sync_connection is not None
        event.listen(sync_connection, "before_cursor_execute", count)
        try:
            result = await upload(client, manager, xlsx(changed))
        finally:
            event.remove(sync_connection, "before_cursor_execute", count)
        assert result.json() == {"rows": 300, "created": 0, "updated": 300, "unchanged": 0}
        assert len(updates) == 1, updates
        statuses = await session.scalars(
            select(Instrument.status).where(Instrument.institution_id == mianyang.id).execution_options(
                populate_existing=True
            )
        )
        assert set(statuses) == {"awaiting_repair"}

    async def test_every_problem_reported_with_row_and_column(
        self, client: httpx.AsyncClient, session: AsyncSession, mianyang: Any, manager: dict[str, str]
    ) -> None:
        data = rows(6)
        data[0][3] = -3  # negative value
        data[1][8] = "2999-01-01"  # future date
        data[2][9] = "北京市"  # not a Sichuan city
        data[3][0] = "IMP-00000"  # duplicate of row 2
        data[4][4] = "公开共享"  # unknown sharing mode
        data[5][10] = "不存在的链"
        r = await upload(client, manager, xlsx(data))
        assert r.status_code == 422
        got = {(e["row"], e["column"]) for e in r.json()["errors"]}
        assert got == {
            (2, "原值（万元）"),
            (3, "启用日期"),
            (4, "所在市州"),
            (5, "所在单位仪器内部编码"),
            (6, "共享模式"),
            (7, "产业链"),
        }
        assert await count(session, mianyang.id) == 0

    async def test_a_tag_deleted_while_the_file_is_checked(
        self, client: httpx.AsyncClient, session: AsyncSession, mianyang: Any, manager: dict[str, str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An admin deletes a tag the file uses after its rows were checked (a large file takes seconds): the
        whole file is refused with the rows and column that name it, nothing written, no 500."""
        from instruments import importer
        from instruments.models import Chain

        doomed = Chain(name="导入中删除的链")
        session.add(doomed)
        await session.flush()
        real_validate = importer.validate

        async def validate_then_delete(*args: Any, **kwargs: Any) -> Any:
            plan = await real_validate(*args, **kwargs)
            await session.delete(doomed)
            await session.flush()
            return plan

        monkeypatch.setattr(importer, "validate", validate_then_delete)
        data = rows(3)
        data[1][10] = "医药健康；导入中删除的链"
        r = await upload(client, manager, xlsx(data))
        assert r.status_code == 422, r.text
        assert r.json()["errors"] == [
            {"row": 3, "column": "产业链", "message": "产业链标签「导入中删除的链」刚被管理员删除或改名，请核对后重新导入"}
        ]
        assert await count(session, mianyang.id) == 0

    async def test_text_over_national_limits(
        self, client: httpx.AsyncClient, manager: dict[str, str]
    ) -> None:
        headers = [*HEADERS, "主要技术指标", "主要功能", "服务内容", "对外开放共享规定"]
        data = [[*rows(1)[0], "指" * 501, "功" * 301, "服" * 201, "规" * 501]]
        r = await upload(client, manager, xlsx(data, headers))
        assert r.status_code == 422
        assert {e["column"] for e in r.json()["errors"]} == {
            "主要技术指标",
            "主要功能",
            "服务内容",
            "对外开放共享规定",
        }

    async def test_header_problems(self, client: httpx.AsyncClient, manager: dict[str, str]) -> None:
        headers = [h for h in HEADERS if h != "中文名称"] + ["不认识的列"]
        data = [r[:1] + r[2:] + ["x"] for r in rows(1)]
        r = await upload(client, manager, xlsx(data, headers))
        assert r.status_code == 422
        assert {(e["row"], e["column"]) for e in r.json()["errors"]} == {(1, "中文名称"), (1, "不认识的列")}

    @pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "gb18030"])
    async def test_csv_encodings(
        self,
        client: httpx.AsyncClient,
        session: AsyncSession,
        mianyang: Any,
        manager: dict[str, str],
        encoding: str,
    ) -> None:
        r = await upload(client, manager, csv_bytes(rows(3), encoding), name="仪器.csv")
        assert r.status_code == 200, r.text
        assert r.json()["created"] == 3
        names = set(
            await session.scalars(select(Instrument.name).where(Instrument.institution_id == mianyang.id))
        )
        assert "导入测试质谱仪0" in names

    async def test_leading_zero_codes_survive_numeric_cells(
        self, client: httpx.AsyncClient, session: AsyncSession, mianyang: Any, manager: dict[str, str]
    ) -> None:
        data = rows(1)
        data[0][2] = 10200  # Excel turned 010200 into a number
        r = await upload(client, manager, xlsx(data))
        assert r.status_code == 200, r.text
        inst = (
            await session.scalars(select(Instrument).where(Instrument.institution_id == mianyang.id))
        ).one()
        assert inst.category_code == "010200"

    async def test_manager_cannot_import_for_another_institution(
        self, client: httpx.AsyncClient, session: AsyncSession, mianyang: Any, manager: dict[str, str]
    ) -> None:
        other = await make_institution(session, name="别人的大学")
        r = await upload(client, manager, xlsx([[*rows(1)[0], "别人的大学"]], [*HEADERS, "所属单位"]))
        assert r.status_code == 422
        assert r.json()["errors"][0]["column"] == "所属单位"
        assert await count(session, other.id) == 0

    async def test_a_facility_manager_cannot_take_over_another_facility_s_instrument(
        self, client: httpx.AsyncClient, session: AsyncSession, mianyang: Any
    ) -> None:
        """A row naming the manager's own facility must not move (and rename) an instrument of another facility
        of the same institution: the import checks the instrument as it is, as an edit does."""
        mine = await make_facility(session, mianyang, name="我的分析中心")
        theirs = await make_facility(session, mianyang, name="别人的药物平台")
        other = await make_instrument(session, mianyang, asset_number="IMP-00000", name="别人的质谱仪",
                                      facility_id=theirs.id)
        own = await make_instrument(session, mianyang, asset_number="IMP-00001", name="我的质谱仪",
                                    facility_id=mine.id)
        headers = await bearer_headers(
            session, await make_user(session, role="facility_manager", grant_institution=mianyang, facility=mine)
        )
        data = [[*rows(2)[i], "我的分析中心"] for i in range(2)]
        r = await upload(client, headers, xlsx(data, [*HEADERS, "所属实验室/平台"]))
        assert r.status_code == 422, r.text
        assert r.json()["errors"] == [
            {"row": 2, "column": "所在单位仪器内部编码", "message": "内部编码 IMP-00000 的仪器属于您无权管理的实验室/平台，不能通过导入修改"}
        ]
        await session.refresh(other)
        await session.refresh(own)
        assert (other.name, other.facility_id, own.name) == ("别人的质谱仪", theirs.id, "我的质谱仪")
        r = await upload(client, headers, xlsx(data[1:], [*HEADERS, "所属实验室/平台"]))
        assert r.status_code == 200, r.text  # its own instrument it may update
        await session.refresh(own)
        assert own.name == "导入测试质谱仪1"

    async def test_value_limits_are_said_in_the_column_s_unit(
        self, client: httpx.AsyncClient, session: AsyncSession, mianyang: Any, manager: dict[str, str]
    ) -> None:
        data = rows(1)
        data[0][3] = 1234567.89  # 万元: 123 亿元, over the limit
        r = await upload(client, manager, xlsx(data))
        assert r.status_code == 422
        assert r.json()["errors"] == [{"row": 2, "column": "原值（万元）", "message": "原值应在 0 到 1000000 万元（100 亿元）之间"}]

    async def test_admin_names_institutions_and_facilities(
        self, client: httpx.AsyncClient, session: AsyncSession, mianyang: Any
    ) -> None:
        other = await make_institution(session, name="第二导入大学", city_code="510100")
        lab = await make_facility(session, other, name="材料分析中心")
        admin = await bearer_headers(session, await make_user(session, role="platform_admin"))
        data = [[*rows(1)[0], "导入测试研究院", None], [*rows(2)[1], "第二导入大学", "材料分析中心"]]
        data[1][9] = None  # city defaults to the institution's
        r = await upload(client, admin, xlsx(data, [*HEADERS, "所属单位", "所属实验室/平台"]))
        assert r.status_code == 200, r.text
        assert await count(session, mianyang.id) == 1
        inst = (await session.scalars(select(Instrument).where(Instrument.institution_id == other.id))).one()
        assert inst.facility_id == lab.id and inst.city_code == "510100"

    async def test_researcher_403_anonymous_401(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        researcher = await bearer_headers(session, await make_user(session))
        assert (await upload(client, researcher, xlsx(rows(1)))).status_code == 403
        assert (await upload(client, {}, xlsx(rows(1)))).status_code == 401

    async def test_garbage_file(self, client: httpx.AsyncClient, manager: dict[str, str]) -> None:
        r = await upload(client, manager, b"PK\x03\x04 not really a zip", name="x.xlsx")
        assert r.status_code == 422
        assert r.json()["errors"][0]["row"] == 0


class TestTemplates:
    async def test_xlsx_template_headers(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/v1/instruments/import/template.xlsx")
        assert r.status_code == 200
        book = load_workbook(io.BytesIO(r.content))
        ws = book["仪器"]
        assert [c.value for c in ws[1]] == [c.header for c in COLUMNS]
        for i, (col, cell) in enumerate(zip(COLUMNS, ws[1], strict=True), start=1):
            assert cell.font.b
            assert cell.font.color.rgb.endswith("B3261E" if col.required else "000000"), col.header
            # Codes with leading zeros stay text when typed into the sheet.
            assert (ws.column_dimensions[get_column_letter(i)].number_format == "@") == (col.kind == "code6")
        assert book["填写说明"]["A2"].value == COLUMNS[0].header

    async def test_csv_template_headers(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/v1/instruments/import/template.csv")
        assert r.content.startswith("\ufeff".encode())
        assert next(csv.reader(io.StringIO(r.content.decode("utf-8-sig")))) == [c.header for c in COLUMNS]


class TestExport:
    @pytest.fixture
    async def hostile(self, session: AsyncSession, mianyang: Any) -> Any:
        return await make_instrument(
            session,
            mianyang,
            name='=HYPERLINK("http://evil","点我")',
            manufacturer="+cmd|' /C calc'!A0",
            model="@SUM(1+1)",
            specs="-2+3",
            contact_phone="0816-2345678",
            city_code="510700",
            original_value=1234567.89,
        )

    async def test_csv_neutralises_formulas(
        self, client: httpx.AsyncClient, hostile: Any, mianyang: Any
    ) -> None:
        r = await client.get("/api/v1/instruments/export.csv", params={"institution": mianyang.id})
        assert r.status_code == 200
        table = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert table[0] == [c.header for c in COLUMNS]
        row = dict(zip(table[0], table[1], strict=True))
        assert row["中文名称"] == '\'=HYPERLINK("http://evil","点我")'
        assert row["生产制造商"].startswith("'+")
        assert row["规格型号"] == "'@SUM(1+1)"
        assert row["主要技术指标"] == "'-2+3"
        assert row["原值（万元）"] == "123.456789"
        assert row["所在市州"] == "绵阳市"
        assert row["联系电话"] == ""  # anonymous export carries no contact details
        assert row["预约服务网址"].endswith(f"/instruments/{hostile.id}")

    async def test_xlsx_neutralises_formulas(
        self, client: httpx.AsyncClient, session: AsyncSession, hostile: Any, mianyang: Any
    ) -> None:
        headers = await bearer_headers(session, await make_user(session))
        r = await client.get(
            "/api/v1/instruments/export.xlsx", params={"institution": mianyang.id}, headers=headers
        )
        ws = load_workbook(io.BytesIO(r.content)).active
        assert ws is not None
        header = [c.value for c in ws[1]]
        cells = {h: c for h, c in zip(header, ws[2], strict=True)}
        for name in ("中文名称", "生产制造商", "规格型号", "主要技术指标"):
            assert cells[name].data_type == "s"
            assert str(cells[name].value).startswith("'")
        assert cells["联系电话"].value == "0816-2345678"  # signed in: contact included

    async def test_json_same_layout_and_filters(
        self, client: httpx.AsyncClient, session: AsyncSession, hostile: Any, mianyang: Any
    ) -> None:
        await make_instrument(session, mianyang, name="成都的另一台", city_code="510100")
        r = await client.get(
            "/api/v1/instruments/export.json", params={"institution": mianyang.id, "city": "510700"}
        )
        data = json.loads(r.content)
        assert len(data) == 1
        assert list(data[0]) == [c.header for c in COLUMNS]
        assert data[0]["中文名称"].startswith("=HYPERLINK")  # JSON is data, not a spreadsheet

    async def test_export_imports_back_unchanged(
        self, client: httpx.AsyncClient, session: AsyncSession, mianyang: Any, manager: dict[str, str]
    ) -> None:
        await make_instrument(
            session,
            mianyang,
            name="往返测试仪",
            subjects=["150", "14010"],
            chains=["电子信息"],
            fee_unit="sample",
            fee_internal=120,
            fee_external=300,
            accepts_vouchers=True,
            city_code="510700",
            original_value="523456.78",
            contact_email="rt@example.cn",
            model="=danger",
            start_date=date(2019, 5, 6),  # written as a date cell
        )
        exported = await client.get(
            "/api/v1/instruments/export.xlsx", params={"institution": mianyang.id}, headers=manager
        )
        r = await upload(client, manager, exported.content)
        assert r.status_code == 200, r.text
        assert r.json() == {"rows": 1, "created": 0, "updated": 0, "unchanged": 1}
