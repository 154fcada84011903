from __future__ import annotations

import httpx


async def test_login_page_heading(client: httpx.AsyncClient) -> None:
    r = await client.get("/login")
    assert r.status_code == 200
    assert "<h1 id=\"login-title\">登录</h1>" in r.text
    assert r.headers["x-request-id"]
    assert "bk_csrf" in r.headers.get("set-cookie", "")


async def test_healthz_ok(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


async def test_unknown_api_path_is_problem_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/does-not-exist")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 404


async def test_unknown_page_is_chinese_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/no-such-page")
    assert r.status_code == 404
    assert "页面不存在" in r.text


async def test_openapi_lists_token_route(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    assert "/api/v1/auth/token" in r.json()["paths"]


async def test_metrics(client: httpx.AsyncClient) -> None:
    await client.get("/login")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert "booking_http_requests_total" in r.text


async def test_forms_carry_the_csrf_cookie_value(client: httpx.AsyncClient) -> None:
    """The hidden csrf_token in rendered forms must equal the cookie (macros need the template context)."""
    r = await client.get("/login")
    cookie = client.cookies.get("bk_csrf")
    assert cookie and f'name="csrf_token" value="{cookie}"' in r.text


def test_every_macro_import_has_the_template_context() -> None:
    """The csrf() macro reads csrf_token from the page context; an import without context renders an empty token."""
    from booking.core.paths import TEMPLATES_DIR

    for path in TEMPLATES_DIR.rglob("*.html"):
        for line in path.read_text().splitlines():
            if 'from "macros/forms.html" import' in line:
                assert "with context" in line, f"{path}: {line.strip()}"


async def test_domain_error_page_keeps_the_signed_in_user(client: httpx.AsyncClient, session) -> None:  # type: ignore[no-untyped-def]
    """After the request's transaction rolls back, the error page still renders the full layout with the user."""
    from tests.factories import login_web, make_user

    user = await make_user(session, name="页面测试用户")
    await login_web(session, client, user)
    r = await client.get("/manage/bookings")
    assert r.status_code == 403
    assert "<html" in r.text and "页面测试用户" in r.text and "没有权限" in r.text


def test_fastapi_telemetry_follows_the_setting(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """BOOKING_OTEL_TELEMETRY: FastAPI's native OpenTelemetry with its defaults, or off (the default) so that no
    request looks for a provider."""
    from booking.app import create_app
    from booking.core.settings import get_settings

    for value, tracing in (("true", True), ("false", False)):
        monkeypatch.setenv("BOOKING_OTEL_TELEMETRY", value)
        get_settings.cache_clear()
        try:
            config = create_app()._telemetry  # FastAPI keeps the merged config here
        finally:
            monkeypatch.undo()
            get_settings.cache_clear()
        assert (config["tracing"], config["metrics"], config["logs"]) == (tracing, tracing, tracing)
