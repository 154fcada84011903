"""HTML pages for signing in and out and registering."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from booking.accounts import repository as accounts_repo
from booking.accounts import service as accounts
from booking.accounts.models import Institution
from booking.accounts.schemas import RegisterRequest
from booking.auth import service
from booking.auth.deps import (
    SESSION_COOKIE,
    SESSION_SALT,
    CsrfDep,
    WebPrincipal,
    load_web_principal,
    session_token_from,
)
from booking.core.db import SessionDep
from booking.core.errors import Conflict, DomainError, Problem, RuleViolation, TooManyRequests
from booking.core.forms import errors_by_field, form_values, parse_form
from booking.core.security import sign
from booking.core.settings import get_settings
from booking.core.web import redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(load_web_principal), CsrfDep])


def _safe_next(target: str | None) -> str:
    # Only local absolute paths: never redirect to another site after login.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _set_session_cookie(response: Response, token: str) -> None:
    settings = get_settings()
    response.set_cookie(
        SESSION_COOKIE, sign(token, SESSION_SALT), max_age=settings.session_max_age_s, httponly=True,
        samesite="lax", secure=settings.https, path="/",
    )


@router.get("/login")
async def login_page(request: Request, principal: WebPrincipal, next: str | None = None) -> Response:
    if principal is not None:
        return redirect(request, _safe_next(next))
    return render(request, "auth/login.html", {"next": _safe_next(next), "values": {}, "errors": {}})


@router.post("/login")
async def login(request: Request, session: SessionDep) -> Response:
    form = await request.form()
    email = str(form.get("username") or form.get("email") or "").strip()
    password = str(form.get("password") or "")
    next_url = _safe_next(str(form.get("next") or "/"))
    problems: list[Problem] = []
    if not email:
        problems.append(Problem("username", "missing", "请输入邮箱"))
    if not password:
        problems.append(Problem("password", "missing", "请输入密码"))
    status = 422
    if not problems:
        address = request.client.host if request.client else "unknown"
        try:
            user = await service.authenticate(session, email, password, address)
        except TooManyRequests as exc:
            problems, status = exc.problems or [Problem(None, "throttled", exc.detail)], 429
            return render(request, "auth/login.html",
                          {"next": next_url, "values": {"username": email}, "errors": errors_by_field(problems),
                           "form_error": exc.detail},
                          status_code=status, headers={"Retry-After": str(exc.retry_after_s)})
        except DomainError as exc:
            return render(request, "auth/login.html",
                          {"next": next_url, "values": {"username": email}, "errors": {},
                           "form_error": exc.detail}, status_code=401)
        token = await service.start_web_session(session, user, user_agent=request.headers.get("user-agent"),
                                                address=address)
        response = redirect(request, next_url)
        _set_session_cookie(response, token)
        return response
    return render(request, "auth/login.html",
                  {"next": next_url, "values": {"username": email}, "errors": errors_by_field(problems)},
                  status_code=status)


@router.post("/logout")
async def logout(request: Request, session: SessionDep, principal: WebPrincipal) -> Response:
    token = session_token_from(request)
    if token:
        await service.end_web_session(session, token, principal.id if principal else None)
    response = redirect(request, "/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def _institution_options(session: SessionDep) -> list[Institution]:
    rows, _ = await accounts_repo.list_institutions(session, q=None, city_code=None, kind=None, limit=2000, offset=0)
    return list(rows)


@router.get("/register")
async def register_page(request: Request, session: SessionDep, principal: WebPrincipal) -> Response:
    if principal is not None:
        return redirect(request, "/profile")
    return render(request, "auth/register.html",
                  {"values": {}, "errors": {}, "institutions": await _institution_options(session)})


@router.post("/register")
async def register(request: Request, session: SessionDep) -> Response:
    form = await request.form()
    values = form_values(form)
    try:
        if form.get("password") != form.get("password_confirm"):
            raise RuleViolation("两次输入的密码不一致",
                                problems=[Problem("password_confirm", "mismatch", "两次输入的密码不一致")])
        data = parse_form(RegisterRequest, dict(form))
        user = await accounts.register(session, data)
    except (RuleViolation, Conflict) as exc:
        return render(request, "auth/register.html",
                      {"values": values, "errors": errors_by_field(exc.problems), "problems": exc.problems,
                       "institutions": await _institution_options(session)},
                      status_code=exc.status)
    address = request.client.host if request.client else None
    token = await service.start_web_session(session, user, user_agent=request.headers.get("user-agent"),
                                            address=address)
    response = redirect(request, "/profile?welcome=1")
    _set_session_cookie(response, token)
    return response
