"""Numbers beyond what the database's integer columns hold: a clear 4xx, never a 500."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import bearer_headers, make_institution, make_user

BIG = "2147483648"  # one past PostgreSQL's integer


async def test_ids_beyond_the_integer_range_are_not_found(client: httpx.AsyncClient, session: AsyncSession) -> None:
    owner = await make_institution(session)
    headers = await bearer_headers(session, await make_user(session, role="facility_manager", grant_institution=owner))
    for method, path, body in (("GET", f"/api/v1/instruments/{BIG}", None),
                               ("PATCH", f"/api/v1/instruments/{BIG}", {"name": "超范围测试"}),
                               ("POST", f"/api/v1/instruments/{BIG}/retire", {"reason": "报废"})):
        r = await client.request(method, path, headers=headers, json=body)
        assert r.status_code == 404, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    page = await client.get(f"/instruments/{BIG}")
    assert page.status_code == 404 and "未找到" in page.text


async def test_a_body_or_query_number_beyond_the_range_is_named(client: httpx.AsyncClient, session: AsyncSession) -> None:
    admin = await bearer_headers(session, await make_user(session, role="platform_admin"))
    r = await client.post("/api/v1/instruments", headers=admin,
                          json={"name": "超范围测试仪", "institution_id": 1099511627776})
    assert r.status_code == 422, r.text
    assert "institution_id" in {e["field"] for e in r.json()["errors"]}
    r = await client.post("/api/v1/instruments/import", headers=admin, params={"institution_id": "1099511627776"},
                          files={"file": ("a.csv", b"x", "text/csv")})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["institution_id"]
    # By value, not by text: a path id written with a leading zero is still that id.
    r = await client.get(f"/api/v1/instruments/0{BIG}")
    assert r.status_code == 404, r.text
