"""Who sees which figures: a role × endpoint matrix for the stats API and pages, and scope narrowing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role
from booking.audit import service
from tests.audit import world as w
from tests.factories import bearer_headers, login_web, make_user

ROLES = ["anonymous", "researcher", "manager_a", "inst_admin_a", "inst_admin_b", "provincial_auditor",
         "city_auditor_mianyang", "city_auditor_chengdu", "admin"]
AUDITORS = {"provincial_auditor", "city_auditor_mianyang", "city_auditor_chengdu", "admin"}
PROVINCE = {"provincial_auditor", "admin"}


@dataclass(frozen=True)
class Case:
    path: str
    allowed: frozenset[str]
    web: bool = False


CASES = [
    Case("/api/v1/stats/sharing", frozenset(AUDITORS)),
    Case("/api/v1/stats/sharing?city=510700", frozenset(PROVINCE | {"city_auditor_mianyang"})),
    Case("/api/v1/stats/sharing/by-city", frozenset(AUDITORS)),
    Case("/api/v1/stats/sharing/by-institution?city=510100", frozenset(PROVINCE | {"city_auditor_chengdu"})),
    Case("/api/v1/stats/usage", frozenset(AUDITORS)),
    Case("/api/v1/stats/usage?group=instrument&institution={a}",
         frozenset(PROVINCE | {"city_auditor_mianyang", "inst_admin_a"})),
    Case("/api/v1/stats/instruments?measure=open", frozenset(AUDITORS)),
    Case("/api/v1/stats/instruments?institution={a}", frozenset(PROVINCE | {"city_auditor_mianyang", "inst_admin_a"})),
    Case("/api/v1/stats/institutions/{a}", frozenset(PROVINCE | {"city_auditor_mianyang", "inst_admin_a"})),
    Case("/api/v1/stats/institutions/{b}", frozenset(PROVINCE | {"city_auditor_chengdu", "inst_admin_b"})),
    Case("/api/v1/stats/instruments/{a1}", frozenset(PROVINCE | {"city_auditor_mianyang", "inst_admin_a"})),
    Case("/api/v1/stats/instruments/{a1}/service-records",
         frozenset(PROVINCE | {"city_auditor_mianyang", "inst_admin_a"})),
    Case("/api/v1/stats/export.xlsx", frozenset(AUDITORS)),
    Case("/api/v1/stats/export.csv?sheet=by-city&city=510100", frozenset(PROVINCE | {"city_auditor_chengdu"})),
    Case("/api/v1/stats/service-records.csv", frozenset(AUDITORS)),
    Case("/api/v1/stats/service-records.csv?institution={a}",
         frozenset(PROVINCE | {"city_auditor_mianyang", "inst_admin_a"})),
    Case("/audit/cities/510700", frozenset(PROVINCE | {"city_auditor_mianyang"}), web=True),
    Case("/audit/breakdown/kind", frozenset(AUDITORS), web=True),
    Case("/audit/usage?view=idle", frozenset(AUDITORS), web=True),
    Case("/audit/institutions/{a}", frozenset(PROVINCE | {"city_auditor_mianyang", "inst_admin_a"}), web=True),
    Case("/audit/instruments/{a1}", frozenset(PROVINCE | {"city_auditor_mianyang", "inst_admin_a"}), web=True),
    Case("/audit/instruments/{a1}/records", frozenset(PROVINCE | {"city_auditor_mianyang", "inst_admin_a"}),
         web=True),
    Case("/audit/list?measure=shared", frozenset(AUDITORS), web=True),
    Case("/audit/export.xlsx", frozenset(AUDITORS), web=True),
]


async def _users(session: AsyncSession, world: w.World) -> dict[str, Any]:
    return {
        "researcher": await make_user(session, institution=world.a),
        "manager_a": await make_user(session, role=Role.facility_manager, grant_institution=world.a),
        "inst_admin_a": await make_user(session, role=Role.institution_admin, grant_institution=world.a),
        "inst_admin_b": await make_user(session, role=Role.institution_admin, grant_institution=world.b),
        "provincial_auditor": await w.auditor(session),
        "city_auditor_mianyang": await w.auditor(session, "510700"),
        "city_auditor_chengdu": await w.auditor(session, "510100"),
        "admin": await make_user(session, role=Role.platform_admin, institution_id=None),
    }


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.path)
async def test_matrix(client: httpx.AsyncClient, session: AsyncSession, case: Case, role: str) -> None:
    world = await w.build(session)
    users = await _users(session, world)
    path = case.path.format(a=world.a.id, b=world.b.id, a1=world.ids["A1"])
    sep = "&" if "?" in path else "?"
    path += f"{sep}as_of=2026-06-14"
    headers: dict[str, str] = {}
    if role != "anonymous":
        if case.web:
            await login_web(session, client, users[role])
        else:
            headers = await bearer_headers(session, users[role])
    r = await client.get(path, headers=headers)
    if role in case.allowed:
        assert r.status_code == 200, f"{role} should be allowed: {r.status_code} {r.text[:300]}"
    elif role == "anonymous":
        if case.web:
            assert r.status_code == 303 and r.headers["location"].startswith("/login")
        else:
            assert r.status_code == 401
    else:
        assert r.status_code == 403, f"{role} should be denied: {r.status_code} {r.text[:300]}"
        if case.web:
            assert "没有权限" in r.text


class TestCityAuditorScope:
    async def test_sees_only_its_city(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        world = await w.build(session)
        await service.snapshot(session, date(2026, 6, 14))
        headers = await bearer_headers(session, await w.auditor(session, "510700"))
        body = (await client.get("/api/v1/stats/sharing/by-city", params={"as_of": "2026-06-14"},
                                 headers=headers)).json()
        assert [i["key"] for i in body["items"]] == ["510700"]
        head = (await client.get("/api/v1/stats/sharing", params={"as_of": "2026-06-14"}, headers=headers)).json()
        assert (head["registered"], head["open"], head["shared"]) == (2, 1, 1)
        assert head["scope"] == {"kind": "city", "cities": ["510700"], "institutions": []}
        listed = (await client.get("/api/v1/stats/instruments", params={"as_of": "2026-06-14"},
                                   headers=headers)).json()
        assert {i["id"] for i in listed["items"]} == {world.ids["A1"], world.ids["A2"]}
        r = await client.get("/api/v1/stats/sharing", params={"city": "510100"}, headers=headers)
        assert r.status_code == 403

    async def test_institution_admin_redirected_to_own_page(self, client: httpx.AsyncClient,
                                                            session: AsyncSession) -> None:
        world = await w.build(session)
        user = await make_user(session, role=Role.institution_admin, grant_institution=world.a)
        await login_web(session, client, user)
        r = await client.get("/audit")
        assert r.status_code == 303 and r.headers["location"] == f"/audit/institutions/{world.a.id}"
        page = await client.get(f"/audit/institutions/{world.a.id}?as_of=2026-06-14")
        assert "开放共享自评" in page.text and 'data-testid="hours">45.50' in page.text
