"""Queries for the schedule editor, qualifications, blocks and the housekeeping jobs.

(`scheduling.repository` loads an instrument's time data for the pure logic; this module serves the use cases
that change it.)"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.accounts.models import User
from booking.reservations.models import ACTIVE_STATUSES, Booking, BookingBlock, BookingStatus
from instruments.models import Instrument
from scheduling.models import Blackout, HolidayOverride, OpeningWindow, Qualification, ScheduleOverride

_ACTIVE = [s.value for s in ACTIVE_STATUSES]


# ---- housekeeping ---------------------------------------------------------------------------------------------

async def due_holds(session: AsyncSession, now: datetime, limit: int) -> Sequence[Booking]:
    stmt = (select(Booking).where(col(Booking.status) == BookingStatus.held, col(Booking.hold_expires_at) <= now)
            .order_by(col(Booking.id)).limit(limit).with_for_update(skip_locked=True))
    return list(await session.scalars(stmt))


async def due_expired_qualifications(session: AsyncSession, today: date, limit: int) -> Sequence[Qualification]:
    """`valid_until` is the last valid local date, so a qualification has expired once that day has passed."""
    stmt = (select(Qualification).where(col(Qualification.valid_until) < today,
                                        col(Qualification.expired_notified_at).is_(None))
            .order_by(col(Qualification.id)).limit(limit).with_for_update(skip_locked=True))
    return list(await session.scalars(stmt))


# ---- schedule ---------------------------------------------------------------------------------------------------

async def windows(session: AsyncSession, instrument_id: int) -> list[OpeningWindow]:
    stmt = select(OpeningWindow).where(col(OpeningWindow.instrument_id) == instrument_id).order_by(
        col(OpeningWindow.weekday), col(OpeningWindow.start_time), col(OpeningWindow.id))
    return list(await session.scalars(stmt))


async def delete_windows(session: AsyncSession, instrument_id: int) -> None:
    await session.execute(delete(OpeningWindow).where(col(OpeningWindow.instrument_id) == instrument_id))


async def overrides(session: AsyncSession, instrument_id: int, since: date | None = None) -> list[ScheduleOverride]:
    stmt = select(ScheduleOverride).where(col(ScheduleOverride.instrument_id) == instrument_id)
    if since is not None:
        stmt = stmt.where(col(ScheduleOverride.day) >= since)
    return list(await session.scalars(stmt.order_by(col(ScheduleOverride.day))))


async def override_on(session: AsyncSession, instrument_id: int, day: date) -> ScheduleOverride | None:
    stmt = select(ScheduleOverride).where(col(ScheduleOverride.instrument_id) == instrument_id,
                                          col(ScheduleOverride.day) == day)
    return (await session.scalars(stmt)).first()


async def blackouts(session: AsyncSession, instrument_id: int, since: datetime | None = None) -> list[Blackout]:
    """One-off blackouts not yet over (all when `since` is None) and every recurring one."""
    stmt = select(Blackout).where(col(Blackout.instrument_id) == instrument_id)
    if since is not None:
        stmt = stmt.where(col(Blackout.ends_at).is_(None) | (col(Blackout.ends_at) > since))
    return list(await session.scalars(stmt.order_by(col(Blackout.starts_at).nulls_last(), col(Blackout.weekday),
                                                    col(Blackout.id))))


async def active_bookings(session: AsyncSession, instrument_id: int, start: datetime, end: datetime | None
                          ) -> list[Booking]:
    """Active bookings of the instrument ending after `start` (and starting before `end` when given)."""
    stmt = select(Booking).where(col(Booking.instrument_id) == instrument_id, col(Booking.status).in_(_ACTIVE),
                                 col(Booking.end_at) > start)
    if end is not None:
        stmt = stmt.where(col(Booking.start_at) < end)
    return list(await session.scalars(stmt.order_by(col(Booking.start_at))))


async def users_by_id(session: AsyncSession, ids: Sequence[int]) -> dict[int, User]:
    if not ids:
        return {}
    rows = await session.scalars(select(User).where(col(User.id).in_(list(set(ids)))))
    return {u.id: u for u in rows}  # type: ignore[misc]


# ---- holidays ---------------------------------------------------------------------------------------------------

async def holiday_overrides(session: AsyncSession, year: int) -> list[HolidayOverride]:
    stmt = select(HolidayOverride).where(col(HolidayOverride.day) >= date(year, 1, 1),
                                         col(HolidayOverride.day) <= date(year, 12, 31))
    return list(await session.scalars(stmt.order_by(col(HolidayOverride.day))))


# ---- qualifications and blocks ----------------------------------------------------------------------------------

async def qualifications(session: AsyncSession, instrument_id: int) -> list[tuple[Qualification, User]]:
    stmt = (select(Qualification, User).join(User, col(User.id) == col(Qualification.user_id))
            .where(col(Qualification.instrument_id) == instrument_id)
            .order_by(col(Qualification.valid_until).nulls_last(), col(User.name)))
    return [(q, u) for q, u in (await session.execute(stmt)).all()]


async def qualification_of(session: AsyncSession, instrument_id: int, user_id: int) -> Qualification | None:
    stmt = select(Qualification).where(col(Qualification.instrument_id) == instrument_id,
                                       col(Qualification.user_id) == user_id)
    return (await session.scalars(stmt)).first()


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.scalars(select(User).where(col(User.email) == email.lower()))).first()


async def active_blocks_of_instrument_users(session: AsyncSession, instrument_id: int
                                            ) -> list[tuple[BookingBlock, User]]:
    """Active no-show blocks of users who have booked this instrument: the ones its managers deal with."""
    bookers = select(col(Booking.user_id)).where(col(Booking.instrument_id) == instrument_id).distinct()
    stmt = (select(BookingBlock, User).join(User, col(User.id) == col(BookingBlock.user_id))
            .where(col(BookingBlock.lifted_at).is_(None), col(BookingBlock.user_id).in_(bookers))
            .order_by(col(BookingBlock.created_at).desc()))
    return [(b, u) for b, u in (await session.execute(stmt)).all()]


async def no_show_count(session: AsyncSession, user_id: int, instrument_id: int) -> int:
    count = await session.scalar(select(func.count()).select_from(Booking).where(
        col(Booking.user_id) == user_id, col(Booking.instrument_id) == instrument_id,
        col(Booking.status) == BookingStatus.no_show))
    return int(count or 0)


async def schedule_index(session: AsyncSession, ids: Sequence[int] | None, *, q: str | None = None,
                         category: str | None = None, exclude: Sequence[int] = (), by_category: bool = False,
                         limit: int = 50, offset: int = 0, count: bool = True) -> tuple[list[Instrument], int]:
    """A page of the live instruments a manager may edit (None = every instrument, for platform admins), by name
    (or by classification code, then name), optionally those whose name, model or internal number contains `q`,
    whose classification code starts with `category`, leaving out `exclude`; and how many there are (-1 unless
    `count`)."""
    cond = col(Instrument.retired_at).is_(None)
    if ids is not None:
        cond = cond & col(Instrument.id).in_(list(ids))
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        cond = cond & (col(Instrument.name).ilike(pattern) | col(Instrument.model).ilike(pattern)
                       | col(Instrument.asset_number).ilike(pattern))
    if category:
        cond = cond & col(Instrument.category_code).startswith(category)
    if exclude:
        cond = cond & col(Instrument.id).not_in(list(exclude))
    total = int(await session.scalar(select(func.count()).select_from(Instrument).where(cond)) or 0) if count else -1
    order = [col(Instrument.name), col(Instrument.id)]
    if by_category:
        order.insert(0, col(Instrument.category_code))
    stmt = select(Instrument).where(cond).order_by(*order).limit(limit).offset(offset)
    return list(await session.scalars(stmt)), total
