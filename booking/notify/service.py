"""Notifying people: an in-app notification and, when the user has an email, an outbox row — both in the
caller's transaction, so a rolled-back change notifies nobody. The outbox is sent after commit."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import User
from booking.notify.models import Notification, OutboxEmail


async def notify(session: AsyncSession, user_id: int, *, kind: str, title: str, body: str,
                 link: str | None = None, email: bool = True) -> Notification:
    note = Notification(user_id=user_id, kind=kind, title=title[:200], body=body, link=link)
    session.add(note)
    if email:
        user = await session.get(User, user_id)
        if user is not None and user.is_active:
            text = body if not link else f"{body}\n\n{link}"
            session.add(OutboxEmail(to_address=user.email, subject=title[:200], body=text))
    return note


async def list_mine(session: AsyncSession, user_id: int, *, limit: int, offset: int
                    ) -> tuple[list[Notification], int, int]:
    """A page of the user's notifications (unread first), the total and the unread count."""
    from booking.notify import repository as repo

    rows, total = await repo.list_for_user(session, user_id, limit=limit, offset=offset)
    return list(rows), total, await repo.unread_count(session, user_id)


async def mark_read(session: AsyncSession, user_id: int, notification_id: int) -> Notification:
    from booking.core.clock import utcnow
    from booking.core.errors import NotFound
    from booking.notify import repository as repo

    note = await repo.get_for_user(session, user_id, notification_id)
    if note is None:
        # Someone else's notification does not exist for this user.
        raise NotFound(f"通知 {notification_id} 不存在")
    if note.read_at is None:
        note.read_at = utcnow()
        await session.flush()
    return note


async def mark_all_read(session: AsyncSession, user_id: int) -> int:
    from booking.core.clock import utcnow
    from booking.notify import repository as repo

    return await repo.mark_all_read(session, user_id, utcnow())
