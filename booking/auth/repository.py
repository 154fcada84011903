"""Queries for sessions, tokens and failed logins."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.accounts.models import RoleGrant, User
from booking.auth.models import ApiToken, LoginFailure, WebSession


async def grants_for(session: AsyncSession, user_id: int) -> list[RoleGrant]:
    rows = await session.scalars(select(RoleGrant).where(RoleGrant.user_id == user_id).order_by(RoleGrant.id))
    return list(rows)


# The user's grants as JSON, rebuilt into detached RoleGrant objects carrying what authorisation reads (id, user,
# role and scope); their other columns (granted_by, created_at) are not loaded. Pages that show those load rows.
_GRANTS_JSON = (
    select(func.coalesce(func.json_agg(aggregate_order_by(func.json_build_object(
        "id", col(RoleGrant.id), "user_id", col(RoleGrant.user_id), "role", col(RoleGrant.role),
        "institution_id", col(RoleGrant.institution_id), "facility_id", col(RoleGrant.facility_id),
        "city_code", col(RoleGrant.city_code)), col(RoleGrant.id))), text("'[]'::json")))
    .where(col(RoleGrant.user_id) == col(User.id))
    .scalar_subquery()
)


async def token_user_grants(session: AsyncSession, digest: str, now: datetime
                            ) -> tuple[ApiToken, User, list[RoleGrant]] | None:
    """A valid bearer token with its user and the user's grants, in one round trip (every API request needs it)."""
    stmt = (
        select(ApiToken, User, _GRANTS_JSON)
        .join(User, col(User.id) == col(ApiToken.user_id))
        .where(
            col(ApiToken.digest) == digest,
            col(ApiToken.revoked_at).is_(None),
            (col(ApiToken.expires_at).is_(None)) | (col(ApiToken.expires_at) > now),
            col(User.is_active).is_(True),
        )
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        return None
    grants = [RoleGrant(**g) for g in row[2]]
    return row[0], row[1], grants


async def session_user_grants(session: AsyncSession, digest: str, now: datetime
                              ) -> tuple[User, list[RoleGrant]] | None:
    """The user of a live web session with their grants, in one round trip (every page needs it)."""
    stmt = (
        select(User, _GRANTS_JSON)
        .join(WebSession, col(WebSession.user_id) == col(User.id))
        .where(col(WebSession.digest) == digest, col(WebSession.expires_at) > now, col(User.is_active).is_(True))
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        return None
    return row[0], [RoleGrant(**g) for g in row[1]]


async def token_with_user(session: AsyncSession, digest: str, now: datetime) -> tuple[ApiToken, User] | None:
    stmt = (
        select(ApiToken, User)
        .join(User, col(User.id) == col(ApiToken.user_id))
        .where(
            col(ApiToken.digest) == digest,
            col(ApiToken.revoked_at).is_(None),
            (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now),
            col(User.is_active).is_(True),
        )
    )
    row = (await session.execute(stmt)).first()
    return (row[0], row[1]) if row else None


async def delete_session(session: AsyncSession, digest: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.digest == digest))


async def delete_sessions_of(session: AsyncSession, user_id: int, keep_digest: str | None = None) -> None:
    stmt = delete(WebSession).where(WebSession.user_id == user_id)
    if keep_digest:
        stmt = stmt.where(WebSession.digest != keep_digest)
    await session.execute(stmt)


async def revoke_access_tokens_of(session: AsyncSession, user_id: int, now: datetime) -> None:
    await session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, col(ApiToken.kind) == "access",
               col(ApiToken.revoked_at).is_(None))
        .values(revoked_at=now)
    )


async def recent_failures(session: AsyncSession, *, email: str | None = None, address: str | None = None,
                          since: datetime) -> tuple[int, datetime | None]:
    stmt = select(func.count(), func.min(LoginFailure.at)).where(LoginFailure.at > since)
    if email is not None:
        stmt = stmt.where(LoginFailure.email == email)
    if address is not None:
        stmt = stmt.where(LoginFailure.address == address)
    count, oldest = (await session.execute(stmt)).one()
    return int(count), oldest


async def clear_failures(session: AsyncSession, email: str) -> None:
    await session.execute(delete(LoginFailure).where(LoginFailure.email == email))


async def list_tokens(session: AsyncSession, user_id: int) -> list[ApiToken]:
    stmt = (
        select(ApiToken)
        .where(ApiToken.user_id == user_id, col(ApiToken.kind) == "personal")
        .order_by(ApiToken.id.desc())
    )
    return list(await session.scalars(stmt))
