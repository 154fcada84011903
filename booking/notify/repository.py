"""Queries for in-app notifications and the email outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.notify.models import Notification, OutboxEmail


async def list_for_user(session: AsyncSession, user_id: int, *, limit: int, offset: int
                        ) -> tuple[Sequence[Notification], int]:
    """Unread first, newest first within each group."""
    base = select(Notification).where(col(Notification.user_id) == user_id)
    total = await session.scalar(select(func.count()).select_from(base.subquery()))
    rows = await session.scalars(base.order_by(col(Notification.read_at).is_(None).desc(),
                                               col(Notification.created_at).desc(), col(Notification.id).desc())
                                 .limit(limit).offset(offset))
    return list(rows), int(total or 0)


async def unread_count(session: AsyncSession, user_id: int) -> int:
    count = await session.scalar(select(func.count()).select_from(Notification).where(
        col(Notification.user_id) == user_id, col(Notification.read_at).is_(None)))
    return int(count or 0)


async def get_for_user(session: AsyncSession, user_id: int, notification_id: int) -> Notification | None:
    stmt = select(Notification).where(col(Notification.id) == notification_id, col(Notification.user_id) == user_id)
    return (await session.scalars(stmt)).first()


async def mark_all_read(session: AsyncSession, user_id: int, now: datetime) -> int:
    result = await session.execute(
        update(Notification).where(col(Notification.user_id) == user_id, col(Notification.read_at).is_(None))
        .values(read_at=now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def retry_delay(attempts: int, base_s: int) -> timedelta:
    """Total wait after creation before attempt number `attempts + 1`: base, then doubling (0, b, 3b, 7b, ...)."""
    return timedelta(seconds=base_s * (2 ** attempts - 1))


async def due_emails(session: AsyncSession, now: datetime, *, max_attempts: int, base_s: int, limit: int
                     ) -> Sequence[OutboxEmail]:
    """Unsent rows whose next attempt is due, locked so that a second sender skips them.

    The schedule is counted from `created_at` (the table keeps no time of the last attempt), which spaces the
    attempts out exponentially while the sender runs, and lets it catch up after downtime."""
    due_at = col(OutboxEmail.created_at) + func.make_interval(
        0, 0, 0, 0, 0, 0, base_s * (func.power(2, col(OutboxEmail.attempts)) - 1))
    stmt = (select(OutboxEmail)
            .where(col(OutboxEmail.sent_at).is_(None), col(OutboxEmail.attempts) < max_attempts, due_at <= now)
            .order_by(col(OutboxEmail.id)).limit(limit).with_for_update(skip_locked=True))
    return list(await session.scalars(stmt))
