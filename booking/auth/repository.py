"""Queries for sessions, tokens and failed logins."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import RoleGrant, User
from booking.auth.models import ApiToken, LoginFailure, WebSession


async def grants_for(session: AsyncSession, user_id: int) -> list[RoleGrant]:
    rows = await session.scalars(select(RoleGrant).where(RoleGrant.user_id == user_id).order_by(RoleGrant.id))
    return list(rows)


async def user_by_session_digest(session: AsyncSession, digest: str, now: datetime) -> User | None:
    stmt = (
        select(User)
        .join(WebSession, WebSession.user_id == User.id)
        .where(WebSession.digest == digest, WebSession.expires_at > now, User.is_active.is_(True))  # type: ignore[attr-defined]
    )
    return (await session.scalars(stmt)).first()


async def token_with_user(session: AsyncSession, digest: str, now: datetime) -> tuple[ApiToken, User] | None:
    stmt = (
        select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(
            ApiToken.digest == digest,
            ApiToken.revoked_at.is_(None),  # type: ignore[union-attr]
            (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now),  # type: ignore[union-attr,operator]
            User.is_active.is_(True),  # type: ignore[attr-defined]
        )
    )
    row = (await session.execute(stmt)).first()
    return (row[0], row[1]) if row else None


async def delete_session(session: AsyncSession, digest: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.digest == digest))  # type: ignore[arg-type]


async def delete_sessions_of(session: AsyncSession, user_id: int, keep_digest: str | None = None) -> None:
    stmt = delete(WebSession).where(WebSession.user_id == user_id)  # type: ignore[arg-type]
    if keep_digest:
        stmt = stmt.where(WebSession.digest != keep_digest)  # type: ignore[arg-type]
    await session.execute(stmt)


async def revoke_access_tokens_of(session: AsyncSession, user_id: int, now: datetime) -> None:
    await session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.kind == "access",  # type: ignore[arg-type]
               ApiToken.revoked_at.is_(None))  # type: ignore[union-attr]
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
    await session.execute(delete(LoginFailure).where(LoginFailure.email == email))  # type: ignore[arg-type]


async def list_tokens(session: AsyncSession, user_id: int) -> list[ApiToken]:
    stmt = (
        select(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.kind == "personal")
        .order_by(ApiToken.id.desc())  # type: ignore[union-attr]
    )
    return list(await session.scalars(stmt))
