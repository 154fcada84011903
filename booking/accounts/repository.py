"""Queries for institutions, facilities, users, grants and role requests."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.accounts.models import Facility, Institution, RoleGrant, RoleRequest, User


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.scalars(select(User).where(User.email == email.lower()))).first()


async def list_institutions(session: AsyncSession, *, q: str | None, city_code: str | None, kind: str | None,
                            limit: int, offset: int) -> tuple[Sequence[Institution], int]:
    stmt = select(Institution)
    if q:
        stmt = stmt.where(Institution.name.contains(q, autoescape=True))
    if city_code:
        stmt = stmt.where(Institution.city_code == city_code)
    if kind:
        stmt = stmt.where(Institution.kind == kind)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    stmt = stmt.order_by(col(Institution.city_code), col(Institution.name))
    rows = await session.scalars(stmt.limit(limit).offset(offset))
    return list(rows), int(total or 0)


async def facilities_of(session: AsyncSession, institution_id: int) -> list[Facility]:
    rows = await session.scalars(
        select(Facility).where(Facility.institution_id == institution_id).order_by(Facility.name)
    )
    return list(rows)


async def list_users(session: AsyncSession, *, q: str | None, institution_id: int | None, limit: int,
                     offset: int) -> tuple[Sequence[User], int]:
    stmt = select(User)
    if q:
        stmt = stmt.where(
            col(User.email).contains(q, autoescape=True) | col(User.name).contains(q, autoescape=True)
        )
    if institution_id:
        stmt = stmt.where(User.institution_id == institution_id)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = await session.scalars(stmt.order_by(User.id).limit(limit).offset(offset))
    return list(rows), int(total or 0)


async def users_by_id(session: AsyncSession, user_ids: Sequence[int]) -> dict[int, User]:
    if not user_ids:
        return {}
    return {u.id: u for u in await session.scalars(select(User).where(col(User.id).in_(set(user_ids))))}  # type: ignore[misc]


async def names_of(session: AsyncSession, user_ids: Sequence[int]) -> dict[int, str]:
    """Display names by user id (for lists that store only ids, like the activity log)."""
    if not user_ids:
        return {}
    rows = await session.execute(select(col(User.id), col(User.name)).where(col(User.id).in_(set(user_ids))))
    return {int(i): str(n) for i, n in rows.all()}


async def institution_names_of(session: AsyncSession, institution_ids: Sequence[int]) -> dict[int, str]:
    if not institution_ids:
        return {}
    rows = await session.execute(select(col(Institution.id), col(Institution.name))
                                 .where(col(Institution.id).in_(set(institution_ids))))
    return {int(i): str(n) for i, n in rows.all()}


async def grants_of(session: AsyncSession, user_ids: Sequence[int]) -> dict[int, list[RoleGrant]]:
    out: dict[int, list[RoleGrant]] = {uid: [] for uid in user_ids}
    if not user_ids:
        return out
    rows = await session.scalars(select(RoleGrant).where(RoleGrant.user_id.in_(user_ids)))
    for g in rows:
        out[g.user_id].append(g)
    return out


async def list_role_requests(session: AsyncSession, *, status: str | None, user_id: int | None, limit: int,
                             offset: int) -> tuple[Sequence[RoleRequest], int]:
    stmt = select(RoleRequest)
    if status:
        stmt = stmt.where(RoleRequest.status == status)
    if user_id:
        stmt = stmt.where(RoleRequest.user_id == user_id)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = await session.scalars(stmt.order_by(RoleRequest.id.desc()).limit(limit).offset(offset))
    return list(rows), int(total or 0)


async def existing_grant(session: AsyncSession, grant: RoleGrant) -> RoleGrant | None:
    stmt = select(RoleGrant).where(
        col(RoleGrant.user_id) == grant.user_id,
        col(RoleGrant.role) == grant.role,
        col(RoleGrant.institution_id).is_not_distinct_from(grant.institution_id),
        col(RoleGrant.facility_id).is_not_distinct_from(grant.facility_id),
        col(RoleGrant.city_code).is_not_distinct_from(grant.city_code),
    )
    return (await session.scalars(stmt)).first()


async def counts(session: AsyncSession) -> dict[str, int]:
    users = await session.scalar(select(func.count()).select_from(User))
    institutions = await session.scalar(select(func.count()).select_from(Institution))
    return {"users": int(users or 0), "institutions": int(institutions or 0)}
