"""Account use cases. Each function validates everything first, then writes, then records the activity."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts import repository as repo
from booking.accounts.models import (
    INSTITUTION_ROLES,
    ROLE_LABELS,
    Facility,
    Institution,
    Role,
    RoleGrant,
    RoleRequest,
    User,
)
from booking.accounts.rules import city_problems, credit_code_problems, normalise_phone, phone_problems
from booking.accounts.schemas import (
    FacilityCreate,
    InstitutionCreate,
    InstitutionUpdate,
    ProfileUpdate,
    RegisterRequest,
    RoleRequestCreate,
    UserCreate,
)
from booking.activity.service import changed, record, snapshot
from booking.auth.principal import Principal
from booking.core.clock import utcnow
from booking.core.errors import Conflict, Forbidden, NotFound, Problem, RuleViolation
from booking.core.passwords import password_problems
from booking.core.security import hash_password
from booking.notify.service import notify


async def get_institution(session: AsyncSession, institution_id: int) -> Institution:
    inst = await session.get(Institution, institution_id)
    if inst is None:
        raise NotFound(f"单位 {institution_id} 不存在")
    return inst


async def _institution_problems(session: AsyncSession, data: dict[str, Any], current_id: int | None = None
                                ) -> list[Problem]:
    from sqlalchemy import select

    problems = city_problems(data.get("city_code")) + credit_code_problems(data.get("credit_code"))
    name = data.get("name")
    if name:
        clash = (await session.scalars(select(Institution).where(Institution.name == name.strip()))).first()
        if clash and clash.id != current_id:
            problems.append(Problem("name", "duplicate", "已有同名单位"))
    code = data.get("credit_code")
    if code and not problems:
        clash = (await session.scalars(select(Institution).where(Institution.credit_code == code.upper()))).first()
        if clash and clash.id != current_id:
            problems.append(Problem("credit_code", "duplicate", "该统一社会信用代码已被其他单位使用"))
    return problems


async def create_institution(session: AsyncSession, actor: Principal | None, data: InstitutionCreate) -> Institution:
    problems = await _institution_problems(session, data.model_dump())
    if problems:
        raise RuleViolation("单位信息有误", problems=problems)
    inst = Institution(
        name=data.name.strip(), kind=data.kind.value,
            credit_code=data.credit_code.upper() if data.credit_code else None,
        city_code=data.city_code, address=data.address,
    )
    session.add(inst)
    await session.flush()
    record(session, actor_id=actor.id if actor else None, action="institution.created",
           target_type="institution", target_id=inst.id, after=snapshot(inst))
    return inst


async def update_institution(session: AsyncSession, actor: Principal, institution_id: int,
                             data: InstitutionUpdate) -> Institution:
    inst = await get_institution(session, institution_id)
    if not actor.administers_institution(institution_id):
        raise Forbidden("只有本单位管理员或平台管理员可以修改单位信息")
    changes = data.model_dump(exclude_unset=True)
    if "city_code" in changes and not actor.is_admin:
        raise Forbidden("单位所在市州只能由平台管理员修改")
    problems = await _institution_problems(session, changes, current_id=inst.id)
    if problems:
        raise RuleViolation("单位信息有误", problems=problems)
    before = snapshot(inst)
    for key, value in changes.items():
        if key == "kind" and value is not None:
            value = value.value if hasattr(value, "value") else value
        if key == "credit_code" and value:
            value = value.upper()
        setattr(inst, key, value)
    b, a = changed(before, snapshot(inst))
    if a:
        record(session, actor_id=actor.id, action="institution.updated", target_type="institution",
               target_id=inst.id, before=b, after=a)
    return inst


async def create_facility(session: AsyncSession, actor: Principal, institution_id: int,
                          data: FacilityCreate) -> Facility:
    await get_institution(session, institution_id)
    if not actor.administers_institution(institution_id):
        raise Forbidden("只有本单位管理员可以添加实验室/平台")
    existing = await repo.facilities_of(session, institution_id)
    if any(f.name == data.name.strip() for f in existing):
        raise RuleViolation("名称重复", problems=[Problem("name", "duplicate", "本单位已有同名实验室/平台")])
    facility = Facility(institution_id=institution_id, name=data.name.strip(), description=data.description)
    session.add(facility)
    await session.flush()
    record(session, actor_id=actor.id, action="facility.created", target_type="facility", target_id=facility.id,
           after=snapshot(facility))
    return facility


async def _user_problems(session: AsyncSession, *, email: str, password: str, phone: str | None,
                         institution_id: int | None) -> list[Problem]:
    problems = password_problems(password, email=email) + phone_problems(phone)
    if institution_id is not None and await session.get(Institution, institution_id) is None:
        problems.append(Problem("institution_id", "unknown_institution", f"单位 {institution_id} 不存在"))
    if await repo.user_by_email(session, email) is not None:
        problems.append(Problem("email", "duplicate", "该邮箱已注册"))
    return problems


async def register(session: AsyncSession, data: RegisterRequest) -> User:
    email = str(data.email).lower()
    problems = await _user_problems(session, email=email, password=data.password, phone=data.phone,
                                    institution_id=data.institution_id)
    if problems:
        status_conflict = [p for p in problems if p.code == "duplicate"]
        if status_conflict and len(status_conflict) == len(problems):
            raise Conflict("该邮箱已注册", problems=problems)
        raise RuleViolation("注册信息有误", problems=problems)
    user = User(email=email, name=data.name.strip(), phone=normalise_phone(data.phone) if data.phone else None,
                institution_id=data.institution_id, locale=data.locale, password_hash=hash_password(data.password))
    session.add(user)
    await session.flush()
    record(session, actor_id=user.id, action="user.registered", target_type="user", target_id=user.id,
           after=snapshot(user))
    return user


async def create_user(session: AsyncSession, actor: Principal | None, data: UserCreate, *,
                      grants: list[RoleGrant] | None = None) -> User:
    email = str(data.email).lower()
    problems = await _user_problems(session, email=email, password=data.password, phone=data.phone,
                                    institution_id=data.institution_id)
    if problems:
        raise RuleViolation("用户信息有误", problems=problems)
    user = User(email=email, name=data.name.strip(), phone=normalise_phone(data.phone) if data.phone else None,
                institution_id=data.institution_id, password_hash=hash_password(data.password))
    session.add(user)
    await session.flush()
    record(session, actor_id=actor.id if actor else None, action="user.created", target_type="user",
           target_id=user.id, after=snapshot(user))
    for grant in grants or []:
        grant.user_id = user.id  # type: ignore[assignment]
        await grant_role(session, actor, grant)
    return user


async def update_profile(session: AsyncSession, actor: Principal, data: ProfileUpdate) -> User:
    changes = data.model_dump(exclude_unset=True)
    problems = phone_problems(changes.get("phone"))
    if problems:
        raise RuleViolation("资料有误", problems=problems)
    user = await session.get(User, actor.id)
    assert user is not None
    before = snapshot(user)
    for key, value in changes.items():
        if key == "phone" and value:
            value = normalise_phone(value)
        if key == "name" and value:
            value = value.strip()
        setattr(user, key, value or None if key == "phone" else value)
    b, a = changed(before, snapshot(user))
    if a:
        record(session, actor_id=actor.id, action="user.updated", target_type="user", target_id=user.id,
               before=b, after=a)
    return user


async def _scope_problems(session: AsyncSession, role: str, institution_id: int | None, facility_id: int | None,
                          city_code: str | None) -> list[Problem]:
    problems: list[Problem] = []
    if role in INSTITUTION_ROLES:
        if institution_id is None:
            problems.append(Problem("institution_id", "required", "仪器管理员和单位管理员必须指定单位"))
        elif await session.get(Institution, institution_id) is None:
            problems.append(Problem("institution_id", "unknown_institution", f"单位 {institution_id} 不存在"))
    elif institution_id is not None:
        problems.append(Problem("institution_id", "not_applicable", "该角色不按单位授权"))
    if facility_id is not None:
        if role != Role.facility_manager:
            problems.append(Problem("facility_id", "not_applicable", "只有仪器管理员按实验室/平台授权"))
        else:
            facility = await session.get(Facility, facility_id)
            if facility is None:
                problems.append(Problem("facility_id", "unknown_facility", f"实验室/平台 {facility_id} 不存在"))
            elif facility.institution_id != institution_id:
                problems.append(Problem("facility_id", "wrong_institution", "该实验室/平台不属于所选单位"))
    if city_code is not None:
        if role != Role.auditor:
            problems.append(Problem("city_code", "not_applicable", "只有审计角色按市州授权"))
        else:
            problems += city_problems(city_code)
    return problems


async def grant_role(session: AsyncSession, actor: Principal | None, grant: RoleGrant) -> RoleGrant:
    if grant.role not in {r.value for r in Role if r != Role.researcher}:
        raise RuleViolation("角色无效", problems=[Problem("role", "invalid_role", f"未知角色 {grant.role}")])
    problems = await _scope_problems(session, grant.role, grant.institution_id, grant.facility_id, grant.city_code)
    if problems:
        raise RuleViolation("授权范围有误", problems=problems)
    existing = await repo.existing_grant(session, grant)
    if existing:
        return existing
    grant.granted_by = actor.id if actor else None
    session.add(grant)
    await session.flush()
    record(session, actor_id=actor.id if actor else None, action="role.granted", target_type="user",
           target_id=grant.user_id, after=snapshot(grant, ["role", "institution_id", "facility_id", "city_code"]))
    return grant


async def request_role(session: AsyncSession, actor: Principal, data: RoleRequestCreate) -> RoleRequest:
    problems = await _scope_problems(session, data.role, data.institution_id, data.facility_id, data.city_code)
    if problems:
        raise RuleViolation("申请信息有误", problems=problems)
    pending, _ = await repo.list_role_requests(session, status="pending", user_id=actor.id, limit=100, offset=0)
    if any(r.role == data.role and r.institution_id == data.institution_id and r.city_code == data.city_code
           for r in pending):
        raise Conflict("已有相同的待审批申请", problems=[Problem("role", "duplicate", "已有相同的待审批申请")])
    req = RoleRequest(user_id=actor.id, role=data.role, institution_id=data.institution_id,
                      facility_id=data.facility_id, city_code=data.city_code, reason=data.reason.strip())
    session.add(req)
    await session.flush()
    record(session, actor_id=actor.id, action="role_request.created", target_type="role_request",
           target_id=req.id, after=snapshot(req))
    return req


async def decide_role_request(session: AsyncSession, actor: Principal, request_id: int, *, approve: bool,
                              note: str | None) -> RoleRequest:
    req = await session.get(RoleRequest, request_id, with_for_update=True)
    if req is None:
        raise NotFound(f"申请 {request_id} 不存在")
    if req.status != "pending":
        raise Conflict("该申请已处理", problems=[Problem(None, "already_decided", f"该申请已{req.status}")])
    req.status = "approved" if approve else "rejected"
    req.decided_by = actor.id
    req.decided_at = utcnow()
    req.decision_note = note
    record(session, actor_id=actor.id, action=f"role_request.{req.status}", target_type="role_request",
           target_id=req.id, after={"status": req.status, "note": note})
    if approve:
        await grant_role(session, actor, RoleGrant(user_id=req.user_id, role=req.role,
                                                   institution_id=req.institution_id,
                                                   facility_id=req.facility_id, city_code=req.city_code))
    role = ROLE_LABELS.get(req.role, req.role)
    if approve:
        title, body = f"角色申请已批准：{role}", f"您申请的“{role}”角色已开通，重新打开页面即可使用相应功能。"
    else:
        title = f"角色申请未获批准：{role}"
        body = f"您申请的“{role}”角色未获批准。" + (f"理由：{note}" if note else "如有疑问请联系平台管理员。")
    await notify(session, req.user_id, kind=f"role_request.{req.status}", title=title, body=body,
                 link="/profile#role-title")
    return req


async def user_with_grants(session: AsyncSession, user_id: int) -> tuple[User, list[RoleGrant]]:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"用户 {user_id} 不存在")
    grants = (await repo.grants_of(session, [user_id]))[user_id]
    return user, grants
