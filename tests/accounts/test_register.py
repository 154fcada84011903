"""Registration and profile: bad input is a 4xx naming the field, and nothing is written."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import User
from tests.factories import PASSWORD, bearer_headers, make_institution, make_user


async def _user_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)


class TestApiRegister:
    async def _payload(self, session: AsyncSession, **overrides: Any) -> dict[str, Any]:
        inst = await make_institution(session)
        payload = {"email": "new.researcher@scu.edu.cn", "password": "a-Strong-passphrase", "name": "王研究",
                   "phone": "13800138000", "institution_id": inst.id}
        payload.update(overrides)
        return payload

    async def test_register_then_login(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        payload = await self._payload(session)
        r = await client.post("/api/v1/auth/register", json=payload)
        assert r.status_code == 201, r.text
        tok = await client.post("/api/v1/auth/token", data={"username": payload["email"],
                                                            "password": payload["password"]})
        assert tok.status_code == 200

    @pytest.mark.parametrize(
        ("overrides", "field", "status"),
        [
            ({"email": "not-an-email"}, "email", 422),
            ({"email": "a@b"}, "email", 422),
            ({"phone": "12345"}, "phone", 422),
            ({"password": "short"}, "password", 422),
            ({"password": "password123"}, "password", 422),
            ({"institution_id": 999999}, "institution_id", 422),
            ({"name": "名" * 101}, "name", 422),
            ({"email": ("x" * 250) + "@example.cn"}, "email", 422),
            ({"name": ""}, "name", 422),
            ({"locale": "fr"}, "locale", 422),
            ({"unexpected": 1}, "unexpected", 422),
        ],
    )
    async def test_bad_input_names_field_and_writes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, overrides: dict[str, Any], field: str, status: int
    ) -> None:
        payload = await self._payload(session, **overrides)
        before = await _user_count(session)
        r = await client.post("/api/v1/auth/register", json=payload)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert field in {e["field"] for e in r.json()["errors"]}
        assert await _user_count(session) == before

    async def test_duplicate_email_is_409(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        existing = await make_user(session)
        payload = await self._payload(session, email=existing.email.upper())
        r = await client.post("/api/v1/auth/register", json=payload)
        assert r.status_code == 409
        assert r.json()["errors"][0]["field"] == "email"

    async def test_all_format_problems_reported_together(self, client: httpx.AsyncClient,
                                                         session: AsyncSession) -> None:
        payload = await self._payload(session, phone="123", password="short", email="bad")
        r = await client.post("/api/v1/auth/register", json=payload)
        assert r.status_code == 422
        assert {"phone", "password", "email"} <= {e["field"] for e in r.json()["errors"]}

    async def test_all_database_problems_reported_together(self, client: httpx.AsyncClient,
                                                           session: AsyncSession) -> None:
        existing = await make_user(session)
        payload = await self._payload(session, email=existing.email, institution_id=424242)
        r = await client.post("/api/v1/auth/register", json=payload)
        assert r.status_code == 422
        assert {"email", "institution_id"} <= {e["field"] for e in r.json()["errors"]}

    async def test_wrong_content_type_is_4xx(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/api/v1/auth/register", content=b"email=x", headers={"content-type": "text/plain"})
        assert r.status_code in (415, 422)
        assert r.headers["content-type"].startswith("application/problem+json")

    async def test_malformed_json_is_422(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/api/v1/auth/register", content=b"{not json",
                              headers={"content-type": "application/json"})
        assert r.status_code == 422


class TestWebRegister:
    async def test_page_lists_institutions_by_city(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        inst = await make_institution(session, name="绵阳测试研究所", kind="科研院所", city_code="510700")
        r = await client.get("/register")
        assert r.status_code == 200
        assert "绵阳市" in r.text and inst.name in r.text

    async def test_errors_rerender_in_chinese(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        inst = await make_institution(session)
        await client.get("/register")
        csrf = client.cookies.get("bk_csrf")
        r = await client.post("/register", data={"csrf_token": csrf, "email": "bad", "name": "张三",
                                                 "institution_id": str(inst.id), "password": "short",
                                                 "password_confirm": "short", "phone": "1"})
        assert r.status_code == 422
        assert "邮箱格式不正确" in r.text
        assert "电话号码格式不正确" in r.text
        assert 'aria-invalid="true"' in r.text

    async def test_password_confirmation_mismatch(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        inst = await make_institution(session)
        await client.get("/register")
        csrf = client.cookies.get("bk_csrf")
        r = await client.post("/register", data={"csrf_token": csrf, "email": "li@scu.edu.cn", "name": "李四",
                                                 "institution_id": str(inst.id), "password": "a-Strong-passphrase",
                                                 "password_confirm": "different-passphrase"})
        assert r.status_code == 422 and "两次输入的密码不一致" in r.text

    async def test_success_signs_in(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        inst = await make_institution(session)
        await client.get("/register")
        csrf = client.cookies.get("bk_csrf")
        r = await client.post("/register", data={"csrf_token": csrf, "email": "li@scu.edu.cn", "name": "李四",
                                                 "institution_id": str(inst.id), "password": "a-Strong-passphrase",
                                                 "password_confirm": "a-Strong-passphrase"})
        assert r.status_code == 303
        profile = await client.get(r.headers["location"])
        assert "注册成功" in profile.text and "li@scu.edu.cn" in profile.text


class TestProfileAndPassword:
    async def test_update_profile_api(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        r = await client.patch("/api/v1/me", json={"phone": "028-85551234"},
            headers=await bearer_headers(session, user))
        assert r.status_code == 200 and r.json()["phone"] == "028-85551234"

    async def test_change_password_revokes_access_tokens(self, client: httpx.AsyncClient,
                                                         session: AsyncSession) -> None:
        user = await make_user(session)
        headers = await bearer_headers(session, user)
        r = await client.post("/api/v1/me/password", json={"current_password": PASSWORD,
                                                           "new_password": "another-long-passphrase"},
                              headers=headers)
        assert r.status_code == 204
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 401
        ok = await client.post("/api/v1/auth/token", data={"username": user.email,
                                                           "password": "another-long-passphrase"})
        assert ok.status_code == 200

    async def test_change_password_reports_all_problems(self, client: httpx.AsyncClient,
                                                        session: AsyncSession) -> None:
        user = await make_user(session)
        r = await client.post("/api/v1/me/password", json={"current_password": "wrong-one-entirely",
                                                           "new_password": "123"},
                              headers=await bearer_headers(session, user))
        assert r.status_code == 422
        assert {"current_password", "new_password"} <= {e["field"] for e in r.json()["errors"]}


class TestPersonalTokens:
    async def test_create_use_revoke(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        headers = await bearer_headers(session, user)
        created = await client.post("/api/v1/me/tokens", json={"name": "数据同步脚本"}, headers=headers)
        assert created.status_code == 201
        secret = created.json()["token"]
        pat = {"Authorization": f"Bearer {secret}"}
        assert (await client.get("/api/v1/me", headers=pat)).status_code == 200
        listed = await client.get("/api/v1/me/tokens", headers=headers)
        assert listed.json()["total"] == 1 and "token" not in listed.json()["items"][0]
        token_id = created.json()["id"]
        assert (await client.delete(f"/api/v1/me/tokens/{token_id}", headers=headers)).status_code == 204
        assert (await client.get("/api/v1/me", headers=pat)).status_code == 401

    async def test_cannot_revoke_someone_elses(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        owner, other = await make_user(session), await make_user(session)
        owner_headers, other_headers = await bearer_headers(session, owner), await bearer_headers(session, other)
        created = await client.post("/api/v1/me/tokens", json={"name": "a"}, headers=owner_headers)
        r = await client.delete(f"/api/v1/me/tokens/{created.json()['id']}", headers=other_headers)
        assert r.status_code == 404
