"""The audit pages: charts without JavaScript, definitions beside the figures, sorting, drill-down, bad input."""

from __future__ import annotations

import re
from datetime import date

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from booking.audit import service
from tests.audit import world as w
from tests.factories import login_web


@pytest.fixture
async def web(client: httpx.AsyncClient, session: AsyncSession) -> tuple[httpx.AsyncClient, w.World]:
    world = await w.build(session)
    await service.snapshot(session, date(2026, 6, 14))
    await login_web(session, client, await w.auditor(session))
    return client, world


async def test_dashboard_has_svg_charts_and_definitions(web: tuple[httpx.AsyncClient, w.World]) -> None:
    client, _ = web
    r = await client.get("/audit", params={"as_of": "2026-06-14"})
    assert r.status_code == 200
    html = r.text
    assert html.count("<svg") == 3  # gauge, trend, 市州 bars
    assert 'data-testid="gauge-percent">0.02%' in html
    assert re.search(r'data-testid="shared"><a href="/audit/list\?as_of=2026-06-14&amp;measure=shared">2</a>', html)
    assert "外部共享" in html and "已发布统计日之后 30 天内的开放时段" in html
    assert "绵阳市" in html and "<polyline" in html
    assert "<script" not in html.split("</head>")[1]  # the page needs no script of its own


async def test_sorting_is_a_link(web: tuple[httpx.AsyncClient, w.World]) -> None:
    client, _ = web
    r = await client.get("/audit", params={"as_of": "2026-06-14", "sort": "registered", "order": "desc"})
    keys = re.findall(r'<tr data-key="(\d{6})">', r.text)
    assert keys[:2] == ["510100", "510700"] or keys[:2] == ["510700", "510100"]
    assert set(keys[2:]) and all(k not in ("510100", "510700") for k in keys[2:])
    assert 'aria-sort="descending"' in r.text


async def test_drill_down_chain(web: tuple[httpx.AsyncClient, w.World]) -> None:
    client, world = web
    city = await client.get("/audit/cities/510700", params={"as_of": "2026-06-14"})
    assert city.status_code == 200 and "绵阳测试大学" in city.text
    assert f'/audit/institutions/{world.a.id}?as_of=2026-06-14' in city.text
    inst = await client.get(f"/audit/institutions/{world.a.id}", params={"as_of": "2026-06-14"})
    assert inst.status_code == 200 and "扫描电子显微镜A1" in inst.text
    assert f"/audit/instruments/{world.ids['A1']}?as_of=2026-06-14" in inst.text
    one = await client.get(f"/audit/instruments/{world.ids['A1']}", params={"as_of": "2026-06-14"})
    assert one.status_code == 200 and "开放共享" in one.text and "15.50" in one.text
    records = await client.get(f"/audit/instruments/{world.ids['A1']}/records", params={"as_of": "2026-06-14"})
    assert records.status_code == 200
    assert "共 2 条服务记录" in records.text and "外部用户" in records.text


@pytest.mark.parametrize(("path", "field_text"), [
    ("/audit?as_of=2026-02-30", "统计日"),
    ("/audit?as_of=2099-01-01", "统计日"),
    ("/audit?as_of=2020-01-01", "统计日"),
    ("/audit?city=999999", "市州"),
    ("/audit?sort=bogus", "排序"),
    ("/audit/cities/123456", "代码"),
    ("/audit/usage?year=abc", "年度"),
    ("/audit/usage?view=planet", "视图"),
    ("/audit/list?measure=everything", "指标"),
    ("/audit/list?band=zz", "原值区间"),
    ("/audit/breakdown/planet", "分组维度"),
])
async def test_bad_input_is_a_chinese_422_page(web: tuple[httpx.AsyncClient, w.World], path: str,
                                               field_text: str) -> None:
    client, _ = web
    r = await client.get(path)
    assert r.status_code == 422, r.text[:300]
    assert "text/html" in r.headers["content-type"]
    assert field_text in r.text and "输入有误" in r.text


async def test_unknown_instrument_page_is_404(web: tuple[httpx.AsyncClient, w.World]) -> None:
    client, _ = web
    assert (await client.get("/audit/instruments/999999")).status_code == 404


async def test_all_breakdown_and_usage_pages_render(web: tuple[httpx.AsyncClient, w.World]) -> None:
    client, _ = web
    for dim in ("kind", "institution", "category", "chain", "band", "city"):
        r = await client.get(f"/audit/breakdown/{dim}", params={"as_of": "2026-06-14", "sort": "shared"})
        assert r.status_code == 200, dim
    for view in ("city", "institution", "instrument", "idle", "saturated", "evaluation"):
        r = await client.get("/audit/usage", params={"view": view, "as_of": "2026-06-14", "sort": "share_rate"})
        assert r.status_code == 200, view
    r = await client.get("/audit/list", params={"as_of": "2026-06-14", "measure": "not_open", "band": "b0"})
    assert r.status_code == 200 and "质谱仪B2" in r.text


async def test_web_exports_are_logged(web: tuple[httpx.AsyncClient, w.World], session: AsyncSession) -> None:
    from sqlalchemy import select

    from booking.activity.models import ActivityEntry

    client, _ = web
    r = await client.get("/audit/export.xlsx", params={"as_of": "2026-06-14", "city": "510700"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert "filename*=UTF-8''" in r.headers["content-disposition"]
    r = await client.get("/audit/export.csv", params={"as_of": "2026-06-14", "sheet": "by-kind"})
    assert r.status_code == 200 and r.content.decode("utf-8-sig").startswith("单位类型,")
    entries = (await session.scalars(select(ActivityEntry).where(ActivityEntry.action == "stats.exported"))).all()
    assert {e.target_id for e in entries} == {"report.xlsx", "by-kind.csv"}
    assert any(e.after and e.after.get("city") == "510700" for e in entries)
