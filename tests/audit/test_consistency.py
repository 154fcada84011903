"""The page, the API and the XLSX give identical numbers for the fixed data set, equal to the hand-computed table;
and figures read through the summary equal figures computed from the raw rows."""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.activity.models import ActivityEntry
from booking.audit import repository as repo
from booking.audit import service
from booking.audit.rules import AsOf, shared_window, year_window
from tests.audit import world as w
from tests.factories import bearer_headers, login_web


class _Cells(HTMLParser):
    """Collects {row data-key: {data-col: text}} from a page's tables."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self._row: str | None = None
        self._col: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-key"):
            self._row = a["data-key"]
            self.rows.setdefault(self._row, {})
        if tag == "td" and self._row and a.get("data-col"):
            self._col = a["data-col"]
            self.rows[self._row][self._col] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._col = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row and self._col:
            self.rows[self._row][self._col] += data.strip()


def _cells(html: str) -> dict[str, dict[str, str]]:
    parser = _Cells()
    parser.feed(html)
    return parser.rows


def _num(text_value: str) -> float | None:
    t = text_value.replace(",", "").strip()
    if t in ("—", ""):
        return None
    if t.endswith("%"):
        return round(float(t[:-1]) / 100, 4)
    return float(t)


COLUMNS = ("hours", "external_hours", "share_rate", "amount", "external_amount", "users", "external_institutions",
           "rating_mean")


@pytest.fixture
async def data(session: AsyncSession) -> w.World:
    world = await w.build(session)
    await service.snapshot(session, date(2026, 6, 14))
    return world


async def test_page_api_xlsx_agree_with_hand_computed(client: httpx.AsyncClient, session: AsyncSession,
                                                      data: w.World) -> None:
    user = await w.auditor(session)
    headers = await bearer_headers(session, user)
    params = {"as_of": "2026-06-14"}
    # API
    by_city = (await client.get("/api/v1/stats/sharing/by-city", params=params, headers=headers)).json()
    api_counts = {i["key"]: {k: i[k] for k in ("registered", "open", "shared")} for i in by_city["items"]}
    usage = (await client.get("/api/v1/stats/usage", params=params, headers=headers)).json()
    api_usage = {i["city_code"]: {k: i[k] for k in COLUMNS} for i in usage["items"]}
    # XLSX
    xlsx = await client.get("/api/v1/stats/export.xlsx", params=params, headers=headers)
    assert xlsx.status_code == 200, xlsx.text
    wb = load_workbook(io.BytesIO(xlsx.content))
    assert wb.sheetnames[0] == "口径说明"
    for name in ("总体", "月度趋势", "按市州", "按单位类型", "按单位", "按仪器大类", "按产业链", "按原值区间",
                 "机时-市州", "机时-单位", "机时-仪器", "闲置仪器", "饱和仪器", "评价范围单位"):
        assert name in wb.sheetnames, name
    defs = {r[0]: r[1] for r in wb["口径说明"].iter_rows(min_row=2, values_only=True)}
    assert defs["统计日（截至当日 24:00，北京时间）"] == "2026-06-14"
    assert "外部共享" in defs["open"]
    sheet = wb["按市州"]
    header = [c.value for c in sheet[1]]
    assert header[:4] == ["市州", "已登记大型仪器（台套）", "开放共享（台套）", "实际共享（台套）"]
    xlsx_counts = {row[0]: {"registered": row[1], "open": row[2], "shared": row[3]}
                   for row in sheet.iter_rows(min_row=2, values_only=True)}
    usage_sheet = wb["机时-市州"]
    uh = [c.value for c in usage_sheet[1]]
    col = {"hours": uh.index("有效工作机时（小时）"), "external_hours": uh.index("对外服务机时（小时）"),
           "share_rate": uh.index("共享率"), "amount": uh.index("服务收入（元）"),
           "external_amount": uh.index("对外服务收入（元）"), "users": uh.index("服务用户数"),
           "external_institutions": uh.index("服务外单位数"), "rating_mean": uh.index("满意度（均分，5 分制）")}
    xlsx_usage = {row[0]: {k: row[i] for k, i in col.items()}
                  for row in usage_sheet.iter_rows(min_row=2, values_only=True)}
    assert usage_sheet.cell(row=2, column=col["hours"] + 1).number_format == "#,##0.00"
    assert usage_sheet.cell(row=2, column=col["share_rate"] + 1).number_format == "0.00%"
    # Page
    await login_web(session, client, user)
    page = await client.get("/audit", params=params)
    assert page.status_code == 200, page.text
    page_counts = {k: {c: int(v) for c, v in cols.items()} for k, cols in _cells(page.text).items()}
    page2 = await client.get("/audit/usage", params=params)
    assert page2.status_code == 200
    page_usage = {k: {c: _num(v) for c, v in cols.items() if c in COLUMNS} for k, cols in _cells(page2.text).items()}

    for code in ("510700", "510100", "510300"):
        expected = w.EXPECTED_BY_CITY.get(code, {"registered": 0, "open": 0, "shared": 0})
        name = {"510700": "绵阳市", "510100": "成都市", "510300": "自贡市"}[code]
        assert api_counts[code] == expected
        assert xlsx_counts[name] == expected
        assert {k: page_counts[code][k] for k in expected} == expected
    for code, expected in w.EXPECTED_USAGE_CITY.items():
        name = {"510700": "绵阳市", "510100": "成都市"}[code]
        want = {k: expected[k] for k in COLUMNS}
        assert api_usage[code] == want
        assert {k: (round(float(v), 4) if v is not None else None) for k, v in xlsx_usage[name].items()} == want
        assert page_usage[code] == want
    # The idle sheet lists exactly what the API's idle filter (in SQL) returns.
    idle_api = (await client.get("/api/v1/stats/usage", params={**params, "group": "instrument", "only": "idle"},
                                 headers=headers)).json()["items"]
    idle_xlsx = [row[0] for row in wb["闲置仪器"].iter_rows(min_row=2, values_only=True)]
    assert sorted(idle_xlsx) == sorted(i["instrument_id"] for i in idle_api) and idle_xlsx
    assert [row[0] for row in wb["饱和仪器"].iter_rows(min_row=2, values_only=True)] == []
    # Every export is in the activity log.
    actions = (await session.scalars(select(ActivityEntry.action).where(ActivityEntry.actor_id == user.id))).all()
    assert "stats.exported" in actions


async def test_csv_sheet_and_records_export(client: httpx.AsyncClient, session: AsyncSession, data: w.World) -> None:
    user = await w.auditor(session)
    headers = await bearer_headers(session, user)
    r = await client.get("/api/v1/stats/export.csv", params={"as_of": "2026-06-14", "sheet": "usage-city"},
                         headers=headers)
    assert r.status_code == 200, r.text
    lines = r.content.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("市州,大型仪器（台套）,服务记录（条）,有效工作机时（小时）")
    mianyang = next(line for line in lines if line.startswith("绵阳市"))
    assert ",45.50,10.00,21.98%," in mianyang
    r = await client.get("/api/v1/stats/service-records.csv", params={"as_of": "2026-06-14", "city": "510700"},
                         headers=headers)
    assert r.status_code == 200, r.text
    rows = r.content.decode("utf-8-sig").splitlines()
    assert rows[0].split(",")[:4] == ["服务记录编号", "仪器名称", "所在单位仪器内部编码", "服务单位"]
    assert len(rows) == 1 + 3  # r1, r2, r5: A1 and A2's 2026 records known by T (not r3, not the small A3's)
    r = await client.get("/api/v1/stats/service-records.xlsx", params={"as_of": "2026-06-14"}, headers=headers)
    ws = load_workbook(io.BytesIO(r.content))["服务记录"]
    assert ws.max_row == 1 + 4
    kinds = {row[9] for row in ws.iter_rows(min_row=2, values_only=True)}
    assert kinds == {"外部用户", "内部用户"}
    header = [c.value for c in ws[1]]
    payment = header.index("付款状态")
    assert header[payment:payment + 4] == ["付款状态", "实收金额（元）", "付款时间", "发票号"]
    states = {row[payment] for row in ws.iter_rows(min_row=2, values_only=True)}
    assert states and states <= {"待付款", "无需付费"}
    logged = (await session.scalars(select(ActivityEntry.target_id).where(
        ActivityEntry.actor_id == user.id, ActivityEntry.action == "stats.exported"))).all()
    assert set(logged) == {"usage-city.csv", "service-records.csv", "service-records.xlsx"}


async def test_formula_injection_is_neutralised(client: httpx.AsyncClient, session: AsyncSession,
                                                data: w.World) -> None:
    await session.execute(text("UPDATE institutions SET name = '=HYPERLINK(\"http://x\")' WHERE id = :i"),
                          {"i": data.b.id})
    headers = await bearer_headers(session, await w.auditor(session))
    r = await client.get("/api/v1/stats/export.xlsx", params={"as_of": "2026-06-14"}, headers=headers)
    names = [row[0] for row in load_workbook(io.BytesIO(r.content))["按单位"].iter_rows(min_row=2, values_only=True)]
    assert "'=HYPERLINK(\"http://x\")" in names
    r = await client.get("/api/v1/stats/export.csv", params={"as_of": "2026-06-14", "sheet": "by-institution"},
                         headers=headers)
    assert "'=HYPERLINK" in r.content.decode("utf-8-sig")


class TestSummaryEqualsRaw:
    """The summary path (whole months from audit_usage_monthly, the rest from raw rows) against raw rows only."""

    @pytest.mark.parametrize("day", [date(2026, 6, 14), date(2026, 5, 31), date(2026, 3, 1), date(2025, 12, 31),
                                     date(2026, 2, 10), date(2025, 6, 30)])
    async def test_as_of_days(self, session: AsyncSession, data: w.World, day: date) -> None:
        d = service.definitions()
        asof = AsOf(day)
        f = repo.Filters()
        now = date(2026, 6, 15)
        via_summary = (await repo.sharing_counts(session, asof, now, d, f, None))[0]
        raw = await repo.raw_sharing_counts(session, asof, now, d, f)
        assert dict(via_summary) == {"key": None, "is_total": True, **dict(raw)}
        for year in {day.year, day.year - 1} - {2024}:
            wdw = year_window(asof, year)
            summary = await repo.usage_totals(session, asof, d, f, wdw, Decimal(1))
            raw_u = await repo.raw_usage_totals(session, asof, d, f, wdw)
            for key in ("records", "hours", "external_hours", "amount", "external_amount", "rating_count",
                        "rating_sum"):
                assert Decimal(summary[key]) == Decimal(raw_u[key]), (day, year, key)

    async def test_frozen_months_equal_live(self, session: AsyncSession, data: w.World) -> None:
        d = service.definitions()
        months = service.trend_months(AsOf(date(2026, 6, 14)), d)
        frozen = {r["month"]: r for r in await repo.frozen_months(session, months, None)}
        assert set(frozen) == set(months)
        for m in months:
            live = (await repo.sharing_counts(session, AsOf(service.month_end(m)), date(2026, 6, 15), d,
                                              repo.Filters(), None))[0]
            assert (frozen[m]["registered"], frozen[m]["open"], frozen[m]["shared"]) == \
                (live["registered"], live["open"], live["shared"]), m

    async def test_later_changes_do_not_move_past_figures(self, client: httpx.AsyncClient, session: AsyncSession,
                                                          data: w.World) -> None:
        """After D, A1 goes internal and moves to 成都, B2 is revalued below the threshold, a late record and a
        rating arrive, and the opening windows are deleted: the figures as of D stay the same."""
        from booking.core.clock import set_clock

        headers = await bearer_headers(session, await w.auditor(session))
        before = {dim: (await client.get(f"/api/v1/stats/sharing/by-{dim}", params={"as_of": "2026-06-14"},
                                         headers=headers)).json()["items"] for dim in ("city", "band")}
        before_usage = (await client.get("/api/v1/stats/usage", params={"as_of": "2026-06-14"},
                                         headers=headers)).json()["items"]
        later = w.local(2026, 6, 18)
        set_clock(lambda: later)
        headers = await bearer_headers(session, await w.auditor(session))
        changes = [("A1", "external", "normal", "600000", data.b.id, "510100"),
                   ("B2", "external", "awaiting_repair", "300000", data.b.id, "510100")]
        for key, mode, status, value, inst, city in changes:
            await session.execute(text("UPDATE instrument_history SET valid_to = :t WHERE instrument_id = :i"
                                       " AND valid_to IS NULL"), {"t": later, "i": data.ids[key]})
            await session.execute(text(
                "INSERT INTO instrument_history (instrument_id, valid_from, sharing_mode, status, original_value,"
                " institution_id, city_code) VALUES (:i, :t, :m, :s, :v, :inst, :c)"),
                {"i": data.ids[key], "t": later, "m": mode if key != "A1" else "internal", "s": status,
                 "v": Decimal(value), "inst": inst, "c": city})
        await w.record(session, data.ids, "A2", data.a, ended=w.local(2026, 6, 1), hours="7", amount="70",
                       external=True, user=data.users["u1"], created=later)
        await session.execute(text("UPDATE service_records SET rating = 1, rated_at = :t WHERE instrument_id = :i"
                                   " AND rating IS NULL"), {"t": later, "i": data.ids["A2"]})
        await session.execute(text("DELETE FROM opening_windows"))
        await service.snapshot(session, date(2026, 6, 18))
        after = {dim: (await client.get(f"/api/v1/stats/sharing/by-{dim}", params={"as_of": "2026-06-14"},
                                        headers=headers)).json()["items"] for dim in ("city", "band")}
        after_usage = (await client.get("/api/v1/stats/usage", params={"as_of": "2026-06-14"},
                                        headers=headers)).json()["items"]
        assert after == before
        assert after_usage == before_usage
        # ...while as of the later day they do move.
        now = (await client.get("/api/v1/stats/sharing", params={"as_of": "2026-06-18"}, headers=headers)).json()
        assert (now["registered"], now["open"]) == (3, 0)

    async def test_triggers_follow_updates_and_deletes(self, session: AsyncSession, data: w.World) -> None:
        async def snapshot_rows() -> list[Any]:
            rows = await session.execute(text(
                "SELECT instrument_id, month, known_month, records, external_records, hours, external_hours, amount,"
                " external_amount, rating_count, rating_sum, rating_1, rating_2, rating_3, rating_4, rating_5"
                " FROM audit_usage_monthly WHERE records <> 0 OR rating_count <> 0 ORDER BY 1, 2, 3"))
            return [tuple(r) for r in rows]

        await session.execute(text("UPDATE service_records SET hours = hours + 1, rating = 2, rated_at = ended_at"
                                   " WHERE instrument_id = :i"), {"i": data.ids["A1"]})
        await session.execute(text("DELETE FROM service_records WHERE instrument_id = :i"), {"i": data.ids["B2"]})
        kept = await snapshot_rows()
        await repo.rebuild_usage_summary(session)
        assert await snapshot_rows() == kept

    async def test_shared_window_boundaries(self) -> None:
        wdw = shared_window(AsOf(date(2026, 6, 14)), 12)
        assert (wdw.full_lo, wdw.full_hi) == (date(2025, 7, 1), date(2026, 6, 1))
        wdw = shared_window(AsOf(date(2026, 5, 31)), 12)
        assert (wdw.full_lo, wdw.full_hi) == (date(2025, 6, 1), date(2026, 6, 1))


async def test_records_xlsx_too_large_is_422(client: httpx.AsyncClient, session: AsyncSession, data: w.World,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from booking.audit import api

    monkeypatch.setattr(api, "RECORDS_XLSX_MAX", 2)
    headers = await bearer_headers(session, await w.auditor(session))
    r = await client.get("/api/v1/stats/service-records.xlsx", params={"as_of": "2026-06-14"}, headers=headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "fmt"
    r = await client.get("/api/v1/stats/service-records.xlsx", params={"as_of": "2026-06-14", "city": "510100"},
                         headers=headers)
    assert r.status_code == 200  # one record in 成都 (B2's)
