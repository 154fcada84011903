"""How pages name a problem's field (table-driven), and that an error page names query parameters in Chinese."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from booking.core.web import field_label, timespan

PAGE = {"windows": "开放时段", "end": "结束", "name": "中文名称"}


@pytest.mark.parametrize(("field", "labels", "expected"), [
    (None, None, ""),
    ("offset", None, "分页位置"),
    ("min_value", None, "原值下限"),
    ("name", PAGE, "中文名称"),
    ("name", None, "name"),  # no common guess for a name: it means different things on different pages
    ("windows[0].end", PAGE, "开放时段第 1 项的结束"),
    ("windows[2]", PAGE, "开放时段第 3 项"),
    ("windows.1.end", PAGE, "开放时段第 2 项的结束"),
    ("instrument_ids.0", None, "仪器第 1 项"),
    ("windows[0].start", PAGE, "开放时段第 1 项的开始时间"),  # the sub-field from the common labels
    ("windows[0].weird", PAGE, "开放时段第 1 项的weird"),
    ("unknown[0].end", PAGE, "unknown[0].end"),
    ("a.b.c", PAGE, "a.b.c"),
])
def test_field_label(field: str | None, labels: dict[str, str] | None, expected: str) -> None:
    assert field_label(field, labels) == expected


async def test_query_errors_name_the_parameter_in_chinese(client: httpx.AsyncClient) -> None:
    r = await client.get("/institutions", params={"offset": "-20"})
    assert r.status_code == 422 and "分页位置" in r.text and "offset" not in r.text.split("<main", 1)[-1]
    # The catalogue forgives it instead, with a note (a shared link should still show the catalogue).
    r = await client.get("/instruments", params={"offset": "-20"})
    assert r.status_code == 200 and "分页位置无效，已回到第 1 页" in r.text
    api = await client.get("/api/v1/instruments", params={"offset": "-20"})
    assert api.status_code == 422 and api.json()["detail"].startswith("offset: ")


@pytest.mark.parametrize("path", ["/api/v1/instruments", "/instruments", "/institutions", "/api/v1/institutions"])
@pytest.mark.parametrize("value", ["\x00", "质谱\x00", "a\x00b"])
async def test_a_nul_in_a_query_parameter_is_refused_by_name(client: httpx.AsyncClient, path: str,
                                                             value: str) -> None:
    """PostgreSQL text cannot hold a NUL character: such a value used to fail inside the statement (a 500)."""
    r = await client.get(path, params={"q": value, "city": "510100"})
    assert r.status_code == 422, r.text
    if path.startswith("/api/"):
        assert r.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in r.json()["errors"]] == ["q"]
    else:
        assert "空字符" in r.text and r.headers["x-request-id"]


async def test_a_nul_in_a_body_is_refused_and_nothing_is_written(client: httpx.AsyncClient, session) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from booking.accounts.models import Role
    from instruments.models import Chain
    from tests.factories import bearer_headers, make_user

    admin = await bearer_headers(session, await make_user(session, role=Role.platform_admin))
    before = await session.scalar(select(func.count()).select_from(Chain))
    r = await client.post("/api/v1/instrument-chains", headers=admin, json={"name": "空字符\u0000链"})
    assert r.status_code == 422, r.text
    assert "空字符" in r.json()["detail"]
    assert await session.scalar(select(func.count()).select_from(Chain)) == before


@pytest.mark.parametrize(("start", "end", "expected"), [
    (datetime(2026, 11, 30, 1, tzinfo=UTC), datetime(2026, 11, 30, 3, tzinfo=UTC), "2026-11-30 09:00 – 11:00"),
    # 15:00 UTC is midnight in Beijing: another day there
    (datetime(2026, 11, 30, 14, tzinfo=UTC), datetime(2026, 11, 30, 17, tzinfo=UTC),
     "2026-11-30 22:00 – 2026-12-01 01:00"),
    (None, datetime(2026, 11, 30, 3, tzinfo=UTC), ""),
])
def test_timespan(start: datetime | None, end: datetime | None, expected: str) -> None:
    assert timespan(start, end) == expected


async def test_the_500_page_says_it_once_and_gives_the_error_number(client, session, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from booking.reservations import service
    from tests.factories import login_web, make_user

    async def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    await login_web(session, client, await make_user(session))
    monkeypatch.setattr(service, "booking_rows", broken)
    page = await client.get("/bookings", headers={"X-Request-ID": "req-500-page-test"})
    assert page.status_code == 500
    assert page.text.count("服务器出现意外错误") == 1
    assert "错误编号 <code>req-500-page-test</code>" in page.text and "boom" not in page.text
