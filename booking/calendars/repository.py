"""Queries for calendar feeds and their tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.accounts.models import User
from booking.reservations.models import ACTIVE_STATUSES, Booking, CalendarToken
from instruments.models import Instrument

FEED_LIMIT = 2000


async def token_by_digest(session: AsyncSession, digest: str) -> CalendarToken | None:
    stmt = select(CalendarToken).where(col(CalendarToken.digest) == digest, col(CalendarToken.revoked_at).is_(None))
    return (await session.scalars(stmt)).first()


async def active_token(session: AsyncSession, user_id: int) -> CalendarToken | None:
    stmt = (select(CalendarToken).where(col(CalendarToken.user_id) == user_id, col(CalendarToken.revoked_at).is_(None))
            .order_by(col(CalendarToken.created_at).desc()))
    return (await session.scalars(stmt)).first()


async def revoke_tokens(session: AsyncSession, user_id: int, now: datetime) -> int:
    result = await session.execute(update(CalendarToken).where(
        col(CalendarToken.user_id) == user_id, col(CalendarToken.revoked_at).is_(None)).values(revoked_at=now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def bookings_of_user(session: AsyncSession, user_id: int, since: datetime) -> list[tuple[Booking, Instrument]]:
    """Every booking of the user ending after `since`, cancelled ones included (clients remove them by STATUS)."""
    stmt = (select(Booking, Instrument).join(Instrument, col(Instrument.id) == col(Booking.instrument_id))
            .where(col(Booking.user_id) == user_id, col(Booking.end_at) > since)
            .order_by(col(Booking.start_at)).limit(FEED_LIMIT))
    return [(b, i) for b, i in (await session.execute(stmt)).all()]


async def busy_of_instrument(session: AsyncSession, instrument_id: int, start: datetime, end: datetime
                             ) -> list[Booking]:
    stmt = (select(Booking).where(col(Booking.instrument_id) == instrument_id,
                                  col(Booking.status).in_([s.value for s in ACTIVE_STATUSES]),
                                  col(Booking.end_at) > start, col(Booking.start_at) < end)
            .order_by(col(Booking.start_at)).limit(FEED_LIMIT * 5))
    return list(await session.scalars(stmt))


async def bookings_of_facility(session: AsyncSession, facility_id: int, since: datetime
                               ) -> list[tuple[Booking, Instrument, User]]:
    stmt = (select(Booking, Instrument, User)
            .join(Instrument, col(Instrument.id) == col(Booking.instrument_id))
            .join(User, col(User.id) == col(Booking.user_id))
            .where(col(Instrument.facility_id) == facility_id, col(Booking.end_at) > since)
            .order_by(col(Booking.start_at)).limit(FEED_LIMIT * 5))
    return [(b, i, u) for b, i, u in (await session.execute(stmt)).all()]


async def latest_change(rows: Sequence[Booking]) -> datetime | None:
    return max((b.updated_at for b in rows), default=None)
