"""Authorization is decided here, in dependencies: handlers receive a ready principal or never run.

API routes authenticate with bearer tokens only; HTML routes with the session cookie only (and CSRF on every
state-changing request), so a cookie can never drive the API from another site.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from booking.accounts.models import Role
from booking.auth import service
from booking.auth.principal import Principal
from booking.core.db import SessionDep
from booking.core.errors import Forbidden, Unauthorized
from booking.core.middleware import CSRF_COOKIE
from booking.core.security import constant_time_equals, unsign

SESSION_COOKIE = "bk_session"
SESSION_SALT = "web-session"

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def session_token_from(request: Request) -> str | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    from booking.core.settings import get_settings

    value = unsign(raw, SESSION_SALT, get_settings().session_max_age_s)
    return value if isinstance(value, str) else None


async def load_api_principal(session: SessionDep, request: Request,
                         token: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal | None:
    if not token:
        return None
    principal = await service.principal_from_bearer(session, token)
    if principal is None:
        raise Unauthorized("访问令牌无效、已过期或已撤销")
    request.state.principal = principal
    return principal


async def _api_user(principal: Annotated[Principal | None, Depends(load_api_principal)]) -> Principal:
    if principal is None:
        raise Unauthorized("需要访问令牌（Authorization: Bearer ...）")
    return principal


async def load_web_principal(session: SessionDep, request: Request) -> Principal | None:
    if hasattr(request.state, "principal"):
        return request.state.principal  # type: ignore[no-any-return]
    token = session_token_from(request)
    principal = await service.principal_from_session_token(session, token) if token else None
    request.state.principal = principal
    return principal


async def _web_user(principal: Annotated[Principal | None, Depends(load_web_principal)]) -> Principal:
    if principal is None:
        raise Unauthorized("请先登录")
    return principal


ApiPrincipal = Annotated[Principal | None, Depends(load_api_principal)]
ApiUser = Annotated[Principal, Depends(_api_user)]
WebPrincipal = Annotated[Principal | None, Depends(load_web_principal)]
WebUser = Annotated[Principal, Depends(_web_user)]


def _require(base: Callable[..., Awaitable[Principal]], roles: tuple[Role, ...]) -> Callable[..., Awaitable[Principal]]:
    # A default value rather than an Annotated hint: with postponed annotations FastAPI could not resolve
    # `base`, which is a closure variable.
    async def dependency(principal: Principal = Depends(base)) -> Principal:
        if principal.is_admin or any(principal.has(r) for r in roles):
            return principal
        raise Forbidden("当前角色无权执行此操作")

    return dependency


# Role gates (platform admins pass every gate). Resource-level checks (which institution, which 市州) are
# made by the load-or-404/403 dependencies and policies of each domain, using Principal's methods.
_MANAGER_ROLES = (Role.facility_manager, Role.institution_admin)
ApiAdmin = Annotated[Principal, Depends(_require(_api_user, ()))]
ApiAuditor = Annotated[Principal, Depends(_require(_api_user, (Role.auditor,)))]
ApiManager = Annotated[Principal, Depends(_require(_api_user, _MANAGER_ROLES))]
ApiInstitutionAdmin = Annotated[Principal, Depends(_require(_api_user, (Role.institution_admin,)))]
WebAdmin = Annotated[Principal, Depends(_require(_web_user, ()))]
WebAuditor = Annotated[Principal, Depends(_require(_web_user, (Role.auditor,)))]
WebManager = Annotated[Principal, Depends(_require(_web_user, _MANAGER_ROLES))]


async def verify_csrf(request: Request) -> None:
    """Double-submit check for HTML routes: the form field or X-CSRF-Token header must match the cookie."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    cookie = request.cookies.get(CSRF_COOKIE)
    sent = request.headers.get("X-CSRF-Token")
    if not sent:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get("csrf_token")
            sent = value if isinstance(value, str) else None
    if not cookie or not sent or not constant_time_equals(cookie, sent):
        raise Forbidden("页面已过期或请求来源无效（CSRF 校验失败），请刷新页面后重试")


CsrfDep = Depends(verify_csrf)
