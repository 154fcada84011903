"""HTML pages for profiles and institutions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from booking.accounts import repository as repo
from booking.accounts import service
from booking.accounts.deps import WebAdministeredInstitution
from booking.accounts.models import INSTITUTION_ROLES, InstitutionKind
from booking.accounts.schemas import (
    FacilityCreate,
    InstitutionUpdate,
    PasswordChange,
    ProfileUpdate,
    RoleRequestCreate,
    TokenCreate,
)
from booking.auth import repository as auth_repo
from booking.auth import service as auth_service
from booking.auth.deps import CsrfDep, WebPrincipal, WebUser, load_web_principal, session_token_from
from booking.core.db import SessionDep, refusable
from booking.core.errors import DomainError
from booking.core.forms import errors_by_field, form_values, parse_form
from booking.core.regions import CITIES
from booking.core.web import redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(load_web_principal), CsrfDep])


async def _profile_context(session: SessionDep, principal: WebUser) -> dict[str, object]:
    user, grants = await service.user_with_grants(session, principal.id)
    institution = await session.get(service.Institution, user.institution_id) if user.institution_id else None
    requests, _ = await repo.list_role_requests(session, status=None, user_id=principal.id, limit=50, offset=0)
    institutions, _ = await repo.list_institutions(session, q=None, city_code=None, kind=None, limit=2000, offset=0)
    tokens = await auth_repo.list_tokens(session, principal.id)
    return {"user": user, "grants": grants, "institution": institution, "role_requests": requests,
            "institutions": institutions, "tokens": tokens, "errors": {}, "values": {}}


@router.get("/profile")
async def profile(request: Request, session: SessionDep, principal: WebUser, welcome: int = 0) -> Response:
    ctx = await _profile_context(session, principal)
    if welcome:
        ctx["flash"] = "注册成功，欢迎使用！"
    return render(request, "accounts/profile.html", ctx)


async def _profile_action(request: Request, session: SessionDep, principal: WebUser, section: str,
                          action: object) -> Response:
    form = await request.form()
    try:
        async with refusable(session):  # a refused change leaves nothing behind the re-rendered page's commit
            flash = await action(dict(form))  # type: ignore[operator]
    except DomainError as exc:
        ctx = await _profile_context(session, principal)
        ctx.update({"errors": {section: errors_by_field(exc.problems) or {"_form": exc.detail}},
                    "values": {section: form_values(form)}, "flash": exc.detail, "flash_kind": "error"})
        return render(request, "accounts/profile.html", ctx, status_code=exc.status)
    ctx = await _profile_context(session, principal)
    ctx.update(flash if isinstance(flash, dict) else {"flash": flash})
    return render(request, "accounts/profile.html", ctx)


@router.post("/profile")
async def update_profile(request: Request, session: SessionDep, principal: WebUser) -> Response:
    async def action(form: dict[str, str]) -> str:
        data = parse_form(ProfileUpdate, form, blank_is_none=False)
        await service.update_profile(session, principal, data)
        return "资料已保存"
    return await _profile_action(request, session, principal, "profile", action)


@router.post("/profile/password")
async def change_password(request: Request, session: SessionDep, principal: WebUser) -> Response:
    async def action(form: dict[str, str]) -> str:
        data = parse_form(PasswordChange, form)
        await auth_service.change_password(session, principal, data.current_password, data.new_password,
                                           keep_session_token=session_token_from(request))
        return "密码已修改，其他设备上的登录已退出"
    return await _profile_action(request, session, principal, "password", action)


@router.post("/profile/role-requests")
async def request_role(request: Request, session: SessionDep, principal: WebUser) -> Response:
    async def action(form: dict[str, str]) -> str:
        if form.get("role") not in INSTITUTION_ROLES:
            # The form offers the user's own institution by default; only the institution-scoped roles use it.
            form = {**form, "institution_id": ""}
        data = parse_form(RoleRequestCreate, form)
        await service.request_role(session, principal, data)
        return "申请已提交，等待平台管理员审批"
    return await _profile_action(request, session, principal, "role", action)


@router.post("/profile/tokens")
async def create_token(request: Request, session: SessionDep, principal: WebUser) -> Response:
    async def action(form: dict[str, str]) -> dict[str, str]:
        data = parse_form(TokenCreate, form)
        _, secret = await auth_service.create_personal_token(session, principal, data.name, data.expires_in_days)
        return {"flash": "访问令牌已创建。请立即复制，它只显示这一次。", "new_token": secret}
    return await _profile_action(request, session, principal, "token", action)


@router.post("/profile/tokens/{token_id}/revoke")
async def revoke_token(request: Request, session: SessionDep, principal: WebUser, token_id: int) -> Response:
    await auth_service.revoke_personal_token(session, principal, token_id)
    return redirect(request, "/profile#tokens")


@router.get("/institutions")
async def institutions(
    request: Request, session: SessionDep, principal: WebPrincipal,
    q: Annotated[str | None, Query(max_length=100)] = None,
    city: Annotated[str | None, Query(max_length=6)] = None,
    kind: Annotated[str | None, Query(max_length=10)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    city = city if city in CITIES else None
    kind = kind if kind in {k.value for k in InstitutionKind} else None
    rows, total = await repo.list_institutions(session, q=q, city_code=city, kind=kind, limit=50, offset=offset)
    ctx = {"rows": rows, "total": total, "q": q or "", "city": city or "", "kind": kind or "", "offset": offset,
           "kinds": [k.value for k in InstitutionKind], "params": {"q": q, "city": city, "kind": kind}}
    return render(request, "accounts/institutions.html", ctx, block="results")


async def _institution_page(request: Request, session: SessionDep, principal: WebPrincipal, institution_id: int,
                            *, error: DomainError | None = None, form: dict[str, Any] | None = None) -> Response:
    """The institution page, or the same page re-rendered with a failed form's errors (status of the error)."""
    inst = await service.get_institution(session, institution_id)
    ctx: dict[str, Any] = {
        "inst": inst, "facilities": await repo.facilities_of(session, institution_id),
        "can_admin": principal is not None and principal.administers_institution(institution_id),
        "errors": {}, "values": {}, "kinds": [k.value for k in InstitutionKind],
    }
    if error is not None:
        ctx.update(errors=errors_by_field(error.problems), values=form_values(form or {}), flash=error.detail,
                   flash_kind="error")
    return render(request, "accounts/institution.html", ctx, status_code=error.status if error else 200)


@router.get("/institutions/{institution_id}")
async def institution_detail(request: Request, session: SessionDep, principal: WebPrincipal,
                             institution_id: int) -> Response:
    return await _institution_page(request, session, principal, institution_id)


@router.post("/institutions/{institution_id}/facilities")
async def add_facility(request: Request, session: SessionDep, principal: WebUser, institution_id: int,
                       inst: WebAdministeredInstitution) -> Response:
    form = dict(await request.form())
    try:
        async with refusable(session):  # a refused addition leaves nothing behind the re-rendered page's commit
            await service.create_facility(session, principal, institution_id, parse_form(FacilityCreate, form))
    except DomainError as exc:
        return await _institution_page(request, session, principal, institution_id, error=exc, form=form)
    return redirect(request, f"/institutions/{institution_id}")


@router.post("/institutions/{institution_id}")
async def edit_institution(request: Request, session: SessionDep, principal: WebUser,
                           institution_id: int, inst: WebAdministeredInstitution) -> Response:
    form = dict(await request.form())
    try:
        # The 市州 of an institution is changed by platform admins through the API only.
        data = parse_form(InstitutionUpdate, {k: v for k, v in form.items() if k != "city_code"})
        async with refusable(session):  # a refused change leaves nothing behind the re-rendered page's commit
            await service.update_institution(session, principal, institution_id, data)
    except DomainError as exc:
        return await _institution_page(request, session, principal, institution_id, error=exc, form=form)
    return redirect(request, f"/institutions/{institution_id}")


