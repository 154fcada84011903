"""Login over the API and the web, throttling, sessions, logout, CSRF."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.auth.models import ApiToken, LoginFailure, WebSession
from booking.core.settings import get_settings
from tests.factories import CSRF_VALUE, PASSWORD, login_web, make_user


class TestTokenEndpoint:
    async def test_password_grant_returns_bearer(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        r = await client.post("/api/v1/auth/token", data={"username": user.email, "password": PASSWORD})
        assert r.status_code == 200
        body = r.json()
        assert body["token_type"] == "bearer"
        me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
        assert me.status_code == 200
        assert me.json()["email"] == user.email

    async def test_token_is_stored_hashed(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        r = await client.post("/api/v1/auth/token", data={"username": user.email, "password": PASSWORD})
        token = r.json()["access_token"]
        digests = list(await session.scalars(select(ApiToken.digest).where(ApiToken.user_id == user.id)))
        assert digests and token not in digests and all(len(d) == 64 for d in digests)

    async def test_email_is_case_insensitive(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        r = await client.post("/api/v1/auth/token", data={"username": user.email.upper(), "password": PASSWORD})
        assert r.status_code == 200

    async def test_wrong_password_is_401_problem(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        r = await client.post("/api/v1/auth/token", data={"username": user.email, "password": "wrong-password!"})
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["www-authenticate"] == "Bearer"

    async def test_unknown_email_is_same_401(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/api/v1/auth/token", data={"username": "nobody@example.cn", "password": "x" * 12})
        assert r.status_code == 401
        assert r.json()["detail"] == "邮箱或密码不正确"

    async def test_missing_fields_is_422_naming_them(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/api/v1/auth/token", data={})
        assert r.status_code == 422
        fields = {e["field"] for e in r.json()["errors"]}
        assert {"username", "password"} <= fields

    async def test_logout_revokes_token(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        token = (await client.post("/api/v1/auth/token",
                                   data={"username": user.email, "password": PASSWORD})).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        assert (await client.post("/api/v1/auth/logout", headers=headers)).status_code == 204
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 401

    async def test_garbage_bearer_is_401(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/v1/me", headers={"Authorization": "Bearer nonsense"})
        assert r.status_code == 401


class TestThrottling:
    async def test_account_locked_after_max_failures(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        limit = get_settings().login_max_failures_per_account
        for _ in range(limit):
            r = await client.post("/api/v1/auth/token", data={"username": user.email, "password": "bad-password-1"})
            assert r.status_code == 401
        # Even the right password is refused while throttled: the attacker cannot confirm a guess.
        r = await client.post("/api/v1/auth/token", data={"username": user.email, "password": PASSWORD})
        assert r.status_code == 429
        assert 0 < int(r.headers["retry-after"]) <= get_settings().login_window_s + 1
        assert r.json()["errors"][0]["code"] == "throttled_account"

    async def test_failures_are_kept_although_the_request_failed(self, client: httpx.AsyncClient,
                                                                 session: AsyncSession) -> None:
        user = await make_user(session)
        await client.post("/api/v1/auth/token", data={"username": user.email, "password": "bad-password-1"})
        count = await session.scalar(select(func.count()).select_from(LoginFailure)
                                     .where(LoginFailure.email == user.email))
        assert count == 1

    async def test_address_locked_across_accounts(self, client: httpx.AsyncClient, session: AsyncSession,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
        settings = get_settings()
        monkeypatch.setattr(settings, "login_max_failures_per_address", 4)
        for i in range(4):
            await client.post("/api/v1/auth/token", data={"username": f"x{i}@example.cn", "password": "bad-pass-123"})
        user = await make_user(session)
        r = await client.post("/api/v1/auth/token", data={"username": user.email, "password": PASSWORD})
        assert r.status_code == 429
        assert r.json()["errors"][0]["code"] == "throttled_address"

    async def test_success_clears_account_failures(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        for _ in range(2):
            await client.post("/api/v1/auth/token", data={"username": user.email, "password": "bad-password-1"})
        assert (await client.post("/api/v1/auth/token",
                                  data={"username": user.email, "password": PASSWORD})).status_code == 200
        count = await session.scalar(select(func.count()).select_from(LoginFailure)
                                     .where(LoginFailure.email == user.email))
        assert count == 0

    async def test_web_login_throttled_page(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        page = await client.get("/login")
        csrf = page.cookies.get("bk_csrf") or client.cookies.get("bk_csrf")
        for _ in range(get_settings().login_max_failures_per_account):
            await client.post("/login", data={"username": user.email, "password": "bad-password-1",
                                              "csrf_token": csrf})
        r = await client.post("/login", data={"username": user.email, "password": PASSWORD, "csrf_token": csrf})
        assert r.status_code == 429
        assert "登录失败次数过多" in r.text
        assert r.headers["retry-after"]


class TestWebLogin:
    async def _csrf(self, client: httpx.AsyncClient) -> str:
        await client.get("/login")
        token = client.cookies.get("bk_csrf")
        assert token
        return token

    async def test_login_sets_secure_session_cookie(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        csrf = await self._csrf(client)
        r = await client.post("/login", data={"username": user.email, "password": PASSWORD, "csrf_token": csrf,
                                              "next": "/profile"})
        assert r.status_code == 303
        assert r.headers["location"] == "/profile"
        cookie = r.headers["set-cookie"]
        assert "bk_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
        profile = await client.get("/profile")
        assert profile.status_code == 200 and user.email in profile.text

    async def test_cookie_secure_when_https(self, client: httpx.AsyncClient, session: AsyncSession,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(get_settings(), "https", True)
        user = await make_user(session)
        csrf = await self._csrf(client)
        r = await client.post("/login", data={"username": user.email, "password": PASSWORD, "csrf_token": csrf})
        assert "Secure" in r.headers["set-cookie"]

    async def test_open_redirect_refused(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        csrf = await self._csrf(client)
        r = await client.post("/login", data={"username": user.email, "password": PASSWORD, "csrf_token": csrf,
                                              "next": "//evil.example/"})
        assert r.headers["location"] == "/"

    async def test_bad_password_rerenders_form(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        csrf = await self._csrf(client)
        r = await client.post("/login", data={"username": user.email, "password": "nope-nope-nope",
                                              "csrf_token": csrf})
        assert r.status_code == 401
        assert "邮箱或密码不正确" in r.text and "<h1" in r.text

    async def test_login_without_csrf_refused(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        await self._csrf(client)
        r = await client.post("/login", data={"username": user.email, "password": PASSWORD})
        assert r.status_code == 403
        assert "CSRF" in r.text

    async def test_logout_deletes_server_session(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        await login_web(session, client, user)
        assert (await client.get("/profile")).status_code == 200
        r = await client.post("/logout", data={"csrf_token": CSRF_VALUE})
        assert r.status_code == 303
        remaining = await session.scalar(select(func.count()).select_from(WebSession)
                                         .where(WebSession.user_id == user.id))
        assert remaining == 0

    async def test_stolen_cookie_useless_after_logout(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        await login_web(session, client, user)
        stolen = client.cookies.get("bk_session")
        await client.post("/logout")
        client.cookies.set("bk_session", stolen or "")
        r = await client.get("/profile")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")

    async def test_forged_cookie_ignored(self, client: httpx.AsyncClient) -> None:
        client.cookies.set("bk_session", "forged.value.here")
        r = await client.get("/profile")
        assert r.status_code == 303


class TestCsrf:
    @pytest.mark.parametrize("path", ["/profile", "/profile/password", "/profile/role-requests", "/profile/tokens",
                                      "/logout"])
    async def test_state_change_without_token_is_403(self, client: httpx.AsyncClient, session: AsyncSession,
                                                     path: str) -> None:
        user = await make_user(session)
        await login_web(session, client, user)
        del client.headers["X-CSRF-Token"]
        r = await client.post(path, data={"name": "新名字"})
        assert r.status_code == 403

    async def test_wrong_token_is_403(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        await login_web(session, client, user)
        client.headers["X-CSRF-Token"] = "another-token-value-of-some-length"
        r = await client.post("/profile", data={"name": "新名字"})
        assert r.status_code == 403

    async def test_form_field_token_accepted(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        await login_web(session, client, user)
        del client.headers["X-CSRF-Token"]
        r = await client.post("/profile", data={"name": "新名字", "csrf_token": CSRF_VALUE, "locale": "zh-CN"})
        assert r.status_code == 200
        assert "资料已保存" in r.text

    async def test_htmx_header_token_accepted(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        await login_web(session, client, user)
        r = await client.post("/profile", data={"name": "新名字", "locale": "zh-CN"}, headers={"HX-Request": "true"})
        assert r.status_code == 200

    async def test_api_needs_no_csrf_but_ignores_cookies(self, client: httpx.AsyncClient,
        session: AsyncSession) -> None:
        user = await make_user(session)
        await login_web(session, client, user)
        # The session cookie never authenticates the API, so a cross-site form cannot drive it.
        r = await client.patch("/api/v1/me", json={"name": "跨站"})
        assert r.status_code == 401
