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
