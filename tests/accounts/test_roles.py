"""Elevation to manager/auditor: requested by the user, approved by an admin, recorded in the activity log."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role, RoleGrant
from booking.activity.models import ActivityEntry
from tests.factories import CSRF_VALUE, bearer_headers, login_web, make_facility, make_institution, make_user


class TestRoleRequests:
    async def test_request_approve_grants_role(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        inst = await make_institution(session)
        user = await make_user(session, institution=inst)
        admin = await make_user(session, role=Role.platform_admin, institution_id=None)
        r = await client.post("/api/v1/me/role-requests", headers=await bearer_headers(session, user),
                              json={"role": "facility_manager", "institution_id": inst.id, "reason": "负责质谱仪"})
        assert r.status_code == 201
        req_id = r.json()["id"]
        a = await client.post(f"/api/v1/admin/role-requests/{req_id}/approve",
            headers=await bearer_headers(session, admin),
                              json={"note": "同意"})
        assert a.status_code == 200 and a.json()["status"] == "approved"
        me = await client.get("/api/v1/me", headers=await bearer_headers(session, user))
        assert "facility_manager" in me.json()["roles"]
        actions = list(await session.scalars(select(ActivityEntry.action).where(
            ActivityEntry.target_type.in_(["role_request", "user"]))))  # type: ignore[attr-defined]
        assert {"role_request.created", "role_request.approved", "role.granted"} <= set(actions)

    async def test_second_decision_is_409(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        admin = await make_user(session, role=Role.platform_admin, institution_id=None)
        r = await client.post("/api/v1/me/role-requests", headers=await bearer_headers(session, user),
                              json={"role": "auditor", "reason": "科技厅"})
        headers = await bearer_headers(session, admin)
        await client.post(f"/api/v1/admin/role-requests/{r.json()['id']}/reject", headers=headers)
        again = await client.post(f"/api/v1/admin/role-requests/{r.json()['id']}/approve", headers=headers)
        assert again.status_code == 409

    async def test_scope_problems_named(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        other = await make_institution(session)
        facility = await make_facility(session, other)
        r = await client.post("/api/v1/me/role-requests", headers=await bearer_headers(session, user),
                              json={"role": "facility_manager", "reason": "x1"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "institution_id"
        r = await client.post("/api/v1/me/role-requests", headers=await bearer_headers(session, user),
                              json={"role": "auditor", "city_code": "999999", "reason": "x1"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "city_code"
        mine = await make_institution(session)
        r = await client.post("/api/v1/me/role-requests", headers=await bearer_headers(session, user),
                              json={"role": "facility_manager", "institution_id": mine.id,
                                    "facility_id": facility.id, "reason": "x1"})
        assert r.status_code == 422 and r.json()["errors"][0]["code"] == "wrong_institution"

    async def test_duplicate_pending_request_is_409(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        headers = await bearer_headers(session, user)
        body = {"role": "auditor", "city_code": "510700", "reason": "绵阳市科技局"}
        assert (await client.post("/api/v1/me/role-requests", headers=headers, json=body)).status_code == 201
        assert (await client.post("/api/v1/me/role-requests", headers=headers, json=body)).status_code == 409

    async def test_web_approval_flow(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        inst = await make_institution(session)
        user = await make_user(session, institution=inst)
        admin = await make_user(session, role=Role.platform_admin, institution_id=None)
        await login_web(session, client, user)
        r = await client.post("/profile/role-requests", data={"role": "institution_admin", "institution_id": inst.id,
                                                              "reason": "单位管理员", "csrf_token": CSRF_VALUE})
        assert r.status_code == 200 and "申请已提交" in r.text
        client.cookies.clear()
        await login_web(session, client, admin)
        page = await client.get("/admin/role-requests")
        assert "单位管理员" in page.text and user.email in page.text and inst.name in page.text
        grant_before = (await session.scalars(select(RoleGrant).where(RoleGrant.user_id == user.id))).first()
        assert grant_before is None
        from booking.accounts.models import RoleRequest
        req = (await session.scalars(select(RoleRequest).where(RoleRequest.user_id == user.id))).one()
        r = await client.post(f"/admin/role-requests/{req.id}/approve")
        assert r.status_code == 303
        grant = (await session.scalars(select(RoleGrant).where(RoleGrant.user_id == user.id))).one()
        assert grant.role == "institution_admin" and grant.institution_id == inst.id
        assert r.headers["location"] == "/admin/role-requests?did=approve"
        assert "已批准该申请" in (await client.get(r.headers["location"])).text

    async def test_the_applicant_is_told_the_decision(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        from booking.notify.models import Notification

        user = await make_user(session)
        admin = await bearer_headers(session, await make_user(session, role=Role.platform_admin, institution_id=None))
        mine = await bearer_headers(session, user)
        for decision, body in (("approve", {}), ("reject", {"note": "请由单位出具证明"})):
            r = await client.post("/api/v1/me/role-requests", headers=mine,
                                  json={"role": "auditor", "city_code": "510700", "reason": "绵阳市科技局"})
            assert (await client.post(f"/api/v1/admin/role-requests/{r.json()['id']}/{decision}", headers=admin,
                                      json=body)).status_code == 200
        titles = {n.title: n.body for n in await session.scalars(
            select(Notification).where(Notification.user_id == user.id))}
        assert "角色申请已批准：审计（科技厅/市州科技局）" in titles
        assert titles["角色申请未获批准：审计（科技厅/市州科技局）"].endswith("理由：请由单位出具证明")

    async def test_an_auditor_request_ignores_the_prefilled_institution(
            self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        """The page offers the user's own institution by default; an auditor is not granted per institution."""
        from booking.accounts.models import RoleRequest

        inst = await make_institution(session)
        user = await make_user(session, institution=inst)
        await login_web(session, client, user)
        page = await client.get("/profile")
        assert f'<option value="{inst.id}" selected>' in page.text
        r = await client.post("/profile/role-requests", data={"role": "auditor", "institution_id": inst.id,
                                                              "city_code": "510700", "reason": "绵阳市科技局",
                                                              "csrf_token": CSRF_VALUE})
        assert r.status_code == 200 and "申请已提交" in r.text
        req = (await session.scalars(select(RoleRequest).where(RoleRequest.user_id == user.id))).one()
        assert req.role == "auditor" and req.institution_id is None and req.city_code == "510700"
        # The API takes what it is sent: an institution for an auditor is still refused there, by name.
        r = await client.post("/api/v1/me/role-requests", headers=await bearer_headers(session, user),
                              json={"role": "auditor", "institution_id": inst.id, "reason": "x1"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "institution_id"


    async def test_web_list_is_paged(self, client: httpx.AsyncClient, session: AsyncSession,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
        from booking.admin import routes

        monkeypatch.setattr(routes, "REQUESTS_PAGE", 1)
        first, second = await make_user(session, name="申请人甲"), await make_user(session, name="申请人乙")
        for user in (first, second):
            r = await client.post("/api/v1/me/role-requests", headers=await bearer_headers(session, user),
                                  json={"role": "auditor", "city_code": "510700", "reason": "绵阳市科技局"})
            assert r.status_code == 201
        await login_web(session, client, await make_user(session, role=Role.platform_admin, institution_id=None))
        page = await client.get("/admin/role-requests")  # newest first
        assert second.email in page.text and first.email not in page.text and "第 1–1 条" in page.text
        assert "/admin/role-requests?status=pending&amp;offset=1" in page.text
        page = await client.get("/admin/role-requests", params={"offset": 1})
        assert first.email in page.text and second.email not in page.text


class TestInstitutions:
    async def test_public_list_and_filters(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        await make_institution(session, name="绵阳某研究院", kind="科研院所", city_code="510700")
        r = await client.get("/api/v1/institutions", params={"city": "510700", "kind": "科研院所"})
        assert r.status_code == 200
        body = r.json()
        assert body["total"] >= 1 and all(i["city_code"] == "510700" for i in body["items"])
        assert set(body) >= {"items", "total", "limit", "offset"}

    async def test_admin_creates_with_validation(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        admin = await make_user(session, role=Role.platform_admin, institution_id=None)
        headers = await bearer_headers(session, admin)
        bad = await client.post("/api/v1/institutions", headers=headers,
                                json={"name": "某公司", "kind": "企业", "city_code": "510200",
                                      "credit_code": "123"})
        assert bad.status_code == 422
        assert {"city_code", "credit_code"} <= {e["field"] for e in bad.json()["errors"]}
        bad_kind = await client.post("/api/v1/institutions", headers=headers,
                                     json={"name": "某公司", "kind": "公司", "city_code": "510100"})
        assert bad_kind.status_code == 422 and bad_kind.json()["errors"][0]["field"] == "kind"
        ok = await client.post("/api/v1/institutions", headers=headers,
                               json={"name": "某公司", "kind": "企业", "city_code": "510100"})
        assert ok.status_code == 201 and ok.json()["city_name"] == "成都市"
        dup = await client.post("/api/v1/institutions", headers=headers,
                                json={"name": "某公司", "kind": "企业", "city_code": "510100"})
        assert dup.status_code == 422 and dup.json()["errors"][0]["field"] == "name"

    async def test_institution_admin_cannot_move_city(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        inst = await make_institution(session)
        ia = await make_user(session, role=Role.institution_admin, grant_institution=inst)
        r = await client.patch(f"/api/v1/institutions/{inst.id}", headers=await bearer_headers(session, ia),
                               json={"city_code": "510700"})
        assert r.status_code == 403

    async def test_institution_pages(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        inst = await make_institution(session, name="攀枝花钒钛研究院", kind="科研院所", city_code="510400")
        r = await client.get("/institutions", params={"city": "510400"})
        assert inst.name in r.text
        frag = await client.get("/institutions", params={"q": "钒钛"}, headers={"HX-Request": "true"})
        assert inst.name in frag.text and "<html" not in frag.text
        detail = await client.get(f"/institutions/{inst.id}")
        assert "攀枝花市" in detail.text
