"""create_app(): middleware, routers, error handlers, static files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig

from booking import nav
from booking.accounts import api as accounts_api
from booking.accounts import routes as accounts_routes
from booking.admin import api as admin_api
from booking.admin import routes as admin_routes
from booking.auth import api as auth_api
from booking.auth import routes as auth_routes
from booking.core import health
from booking.core.db import dispose_engine, init_engine
from booking.core.direct_routes import DirectRoutes
from booking.core.handlers import install_error_handlers
from booking.core.logging import configure_logging
from booking.core.middleware import RequestContextMiddleware
from booking.core.paths import STATIC_DIR
from booking.core.settings import get_settings
from booking.core.web import add_context_processor

API_DESCRIPTION = """
四川省大型科研仪器共享预约平台 API。

* Authentication: `POST /api/v1/auth/token` (OAuth2 password form, `username` = email) returns a bearer token;
  personal access tokens are created under `/api/v1/me/tokens`.
* Errors are RFC 9457 `application/problem+json` with an `errors` list of `{field, code, message}`.
* Lists return `{"items": [...], "total": N, "limit": L, "offset": O}`.
"""


def _register_nav() -> None:
    nav.register_nav("home", "首页", "/", nav.everyone, order=0)
    nav.register_nav("instruments", "仪器目录", "/instruments", nav.everyone, order=10)
    nav.register_nav("instrument-import", "导入仪器", "/instruments/import", nav.managers, order=88, group=nav.TOOLS)
    nav.register_nav("instrument-codes", "分类与产业链", "/instruments/codes", nav.admins, order=93, group=nav.SYSTEM)
    nav.register_nav("institutions", "单位名录", "/institutions", nav.everyone, order=80)
    nav.register_nav(
        "my-institution", "本单位",
        lambda p: f"/institutions/{min(p.managed_institution_ids)}" if p and p.managed_institution_ids else "/",
        lambda p: p is not None and bool(p.managed_institution_ids), order=85,
    )
    nav.register_nav("city-institutions", "本市州单位",
                     lambda p: f"/institutions?city={min(p.auditor_city_codes)}" if p and p.auditor_city_codes else "/",
                     lambda p: p is not None and not p.is_provincial_auditor and bool(p.auditor_city_codes), order=86)
    nav.register_nav(
        "stats", "共享统计",
        lambda p: (f"/audit/institutions/{min(p.admin_institution_ids)}"
                   if p and not (p.is_admin or p.is_auditor) and p.admin_institution_ids else "/audit"),
        lambda p: p is not None and (p.is_admin or p.is_auditor or bool(p.admin_institution_ids)), order=70,
    )
    nav.register_nav("role-requests", "权限审批", "/admin/role-requests", nav.admins, order=90, group=nav.SYSTEM)
    nav.register_nav("users", "用户", "/admin/users", nav.admins, order=91, group=nav.SYSTEM)
    nav.register_nav("activity", "操作日志", "/admin/activity",
                     lambda p: p is not None and (p.is_admin or p.is_provincial_auditor), order=92, group=nav.SYSTEM)
    nav.register_nav("my-bookings", "我的预约", "/bookings", nav.signed_in, order=20)
    nav.register_nav("booking-queue", "预约管理", "/manage/bookings", nav.managers, order=30)
    nav.register_nav("schedule", "排期管理", "/schedule", nav.managers, order=31,
                     also=(r"^/instruments/\d+/(schedule|simulate)",))
    nav.register_nav("waitlist", "候补", "/waitlist", nav.signed_in, order=21)
    nav.register_nav("flexible", "灵活预约", "/requests/flexible", nav.signed_in, order=22)
    nav.register_nav("equivalence", "等效仪器组", "/equivalence", nav.managers, order=88, group=nav.TOOLS)
    nav.register_nav("rounds", "分配轮次", "/rounds", nav.managers, order=89, group=nav.TOOLS)
    nav.register_nav("holidays", "节假日", "/admin/holidays", nav.admins, order=93, group=nav.SYSTEM)
    nav.register_nav("notifications", "通知", "/notifications", nav.signed_in, order=97, badge="/notifications/badge")
    nav.register_nav("calendar", "日历订阅", "/calendar", nav.signed_in, order=98, group=nav.ACCOUNT)
    nav.register_nav("profile", "个人资料", "/profile", nav.signed_in, order=99, group=nav.ACCOUNT)


def _telemetry(enabled: bool) -> TelemetryConfig:
    """FastAPI's native OpenTelemetry: its defaults when enabled, otherwise nothing recorded and nothing looked up
    per request."""
    if enabled:
        return {}
    return {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        init_engine()
        yield
        await dispose_engine()

    app = FastAPI(
        title="四川省大型科研仪器共享预约平台",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        telemetry=_telemetry(settings.otel_telemetry),
    )
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    add_context_processor(nav.nav_context)
    _register_nav()

    app.include_router(health.router)
    from booking.audit import api as audit_api
    from booking.audit import routes as audit_routes
    from booking.calendars import api as calendars_api
    from booking.calendars import routes as calendars_routes
    from booking.notify import api as notify_api
    from booking.notify import routes as notify_routes
    from booking.reservations import api as reservations_api
    from instruments import api as instruments_api
    from scheduling import api as scheduling_api
    from scheduling import conflict_api, conflict_routes, wiring
    from scheduling import routes as scheduling_routes

    # The scheduler's alternatives provider and freed-time listeners (see booking.reservations.hooks).
    wiring.install()
    # The routers are matched route by route in this order.
    for router in (instruments_api.router, auth_api.router, accounts_api.router, admin_api.router,
                   reservations_api.router, notify_api.router, calendars_api.router, scheduling_api.router,
                   calendars_routes.feeds, audit_api.router, conflict_api.router):
        app.include_router(router)
    from booking import home
    from booking.reservations import routes as reservations_routes
    from instruments import routes as instruments_routes

    for router in (home.router, auth_routes.router, accounts_routes.router, admin_routes.router,
                   instruments_routes.router, reservations_routes.router, notify_routes.router,
                   calendars_routes.router, scheduling_routes.router, audit_routes.router,
                   conflict_routes.router):
        app.include_router(router)
    # Middleware, innermost first. The catalogue search, the busiest anonymous route, is served directly, ahead of
    # the framework's routing (DirectRoutes); the request context wraps everything.
    search = instruments_api.search_route
    if app.url_path_for(search.name) != search.path:  # an include's prefix would move it; DirectRoutes would not
        raise RuntimeError(f"the search is routed at {app.url_path_for(search.name)}, not {search.path}")
    app.add_middleware(DirectRoutes, routes=[search])
    app.add_middleware(RequestContextMiddleware, secure_cookies=settings.https)
    return app
