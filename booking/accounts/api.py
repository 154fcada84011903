"""JSON API for people and organisations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from booking.accounts import repository as repo
from booking.accounts import service
from booking.accounts.deps import ApiAdministeredInstitution
from booking.accounts.models import Institution, InstitutionKind, RoleGrant, User
from booking.accounts.schemas import (
    Decision,
    FacilityCreate,
    FacilityPublic,
    GrantPublic,
    InstitutionCreate,
    InstitutionPublic,
    InstitutionUpdate,
    PasswordChange,
    ProfileUpdate,
    RoleRequestCreate,
    RoleRequestPublic,
    UserPublic,
)
from booking.auth import service as auth_service
from booking.auth.deps import ApiAdmin, ApiUser
from booking.core.db import SessionDep
from booking.core.pagination import Page, PageDep
from booking.core.regions import city_name

router = APIRouter(prefix="/api/v1", tags=["accounts"])


def institution_public(inst: Institution) -> InstitutionPublic:
    return InstitutionPublic(id=inst.id, name=inst.name, kind=inst.kind, credit_code=inst.credit_code,  # type: ignore[arg-type]
                             city_code=inst.city_code, city_name=city_name(inst.city_code), address=inst.address)


def user_public(user: User, grants: list[RoleGrant]) -> UserPublic:
    roles = sorted({"researcher"} | {g.role for g in grants})
    return UserPublic(id=user.id, email=user.email, name=user.name, phone=user.phone,  # type: ignore[arg-type]
                      institution_id=user.institution_id, locale=user.locale, roles=roles,
                      grants=[GrantPublic.model_validate(g) for g in grants])


@router.get("/institutions", response_model=Page[InstitutionPublic], summary="List institutions (public)")
async def list_institutions(
    session: SessionDep,
    page: PageDep,
    q: Annotated[str | None, Query(max_length=100)] = None,
    city: Annotated[str | None, Query(pattern=r"^\d{6}$")] = None,
    kind: InstitutionKind | None = None,
) -> Page[InstitutionPublic]:
    rows, total = await repo.list_institutions(session, q=q, city_code=city, kind=kind.value if kind else None,
                                               limit=page.limit, offset=page.offset)
    return Page(items=[institution_public(i) for i in rows], total=total, limit=page.limit, offset=page.offset)


@router.post("/institutions", response_model=InstitutionPublic, status_code=status.HTTP_201_CREATED)
async def create_institution(principal: ApiAdmin, session: SessionDep, data: InstitutionCreate) -> InstitutionPublic:
    return institution_public(await service.create_institution(session, principal, data))


@router.get("/institutions/{institution_id}", response_model=InstitutionPublic)
async def get_institution(session: SessionDep, institution_id: int) -> InstitutionPublic:
    return institution_public(await service.get_institution(session, institution_id))


@router.patch("/institutions/{institution_id}", response_model=InstitutionPublic)
async def update_institution(principal: ApiUser, session: SessionDep, institution_id: int,
                             inst: ApiAdministeredInstitution, data: InstitutionUpdate) -> InstitutionPublic:
    return institution_public(await service.update_institution(session, principal, institution_id, data))


@router.get("/institutions/{institution_id}/facilities", response_model=Page[FacilityPublic])
async def list_facilities(session: SessionDep, institution_id: int) -> Page[FacilityPublic]:
    await service.get_institution(session, institution_id)
    rows = await repo.facilities_of(session, institution_id)
    return Page(items=[FacilityPublic.model_validate(f) for f in rows], total=len(rows), limit=len(rows), offset=0)


@router.post("/institutions/{institution_id}/facilities", response_model=FacilityPublic,
             status_code=status.HTTP_201_CREATED)
async def create_facility(principal: ApiUser, session: SessionDep, institution_id: int,
                          inst: ApiAdministeredInstitution, data: FacilityCreate) -> FacilityPublic:
    return FacilityPublic.model_validate(await service.create_facility(session, principal, institution_id, data))


@router.get("/me", response_model=UserPublic)
async def me(principal: ApiUser) -> UserPublic:
    return user_public(principal.user, list(principal.grants))


@router.patch("/me", response_model=UserPublic)
async def update_me(principal: ApiUser, session: SessionDep, data: ProfileUpdate) -> UserPublic:
    user = await service.update_profile(session, principal, data)
    return user_public(user, list(principal.grants))


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(principal: ApiUser, session: SessionDep, data: PasswordChange) -> None:
    await auth_service.change_password(session, principal, data.current_password, data.new_password)


@router.get("/me/role-requests", response_model=Page[RoleRequestPublic])
async def my_role_requests(principal: ApiUser, session: SessionDep, page: PageDep) -> Page[RoleRequestPublic]:
    rows, total = await repo.list_role_requests(session, status=None, user_id=principal.id, limit=page.limit,
                                                offset=page.offset)
    return Page(items=[RoleRequestPublic.model_validate(r) for r in rows], total=total, limit=page.limit,
                offset=page.offset)


@router.post("/me/role-requests", response_model=RoleRequestPublic, status_code=status.HTTP_201_CREATED)
async def request_role(principal: ApiUser, session: SessionDep, data: RoleRequestCreate) -> RoleRequestPublic:
    return RoleRequestPublic.model_validate(await service.request_role(session, principal, data))


@router.get("/admin/role-requests", response_model=Page[RoleRequestPublic])
async def list_role_requests(
    principal: ApiAdmin, session: SessionDep, page: PageDep,
    status_filter: Annotated[str | None, Query(alias="status", pattern="^(pending|approved|rejected)$")] = None,
) -> Page[RoleRequestPublic]:
    rows, total = await repo.list_role_requests(session, status=status_filter, user_id=None, limit=page.limit,
                                                offset=page.offset)
    return Page(items=[RoleRequestPublic.model_validate(r) for r in rows], total=total, limit=page.limit,
                offset=page.offset)


@router.post("/admin/role-requests/{request_id}/approve", response_model=RoleRequestPublic)
async def approve_role_request(principal: ApiAdmin, session: SessionDep, request_id: int,
                               data: Decision | None = None) -> RoleRequestPublic:
    req = await service.decide_role_request(session, principal, request_id, approve=True,
                                            note=data.note if data else None)
    return RoleRequestPublic.model_validate(req)


@router.post("/admin/role-requests/{request_id}/reject", response_model=RoleRequestPublic)
async def reject_role_request(principal: ApiAdmin, session: SessionDep, request_id: int,
                              data: Decision | None = None) -> RoleRequestPublic:
    req = await service.decide_role_request(session, principal, request_id, approve=False,
                                            note=data.note if data else None)
    return RoleRequestPublic.model_validate(req)


@router.get("/admin/users", response_model=Page[UserPublic])
async def list_users(
    principal: ApiAdmin, session: SessionDep, page: PageDep,
    q: Annotated[str | None, Query(max_length=100)] = None,
    institution: Annotated[int | None, Query()] = None,
) -> Page[UserPublic]:
    rows, total = await repo.list_users(session, q=q, institution_id=institution, limit=page.limit,
                                        offset=page.offset)
    grants = await repo.grants_of(session, [u.id for u in rows])  # type: ignore[misc]
    return Page(items=[user_public(u, grants[u.id]) for u in rows], total=total,  # type: ignore[index]
                limit=page.limit, offset=page.offset)
