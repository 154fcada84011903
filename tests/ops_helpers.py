"""Helpers for the ops tests (jobs, notifications, calendars, schedule editor): a frozen clock and bookings
written straight to the table in any state, so each test sets up exactly the rows it is about."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import User
from booking.core.clock import set_clock
from booking.notify.models import Notification
from booking.reservations.models import Booking
from booking.usage.models import ServiceRecord
from instruments.models import Instrument

# Tuesday 2026-12-01 00:00 in Asia/Shanghai.
NOW = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)


class Clock:
    """A frozen clock the test can move."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def advance(self, **delta: float) -> datetime:
        self.now = self.now + timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    c = Clock(NOW)
    set_clock(lambda: c.now)
    yield c
    set_clock(None)


async def make_booking(session: AsyncSession, instrument: Instrument, user: User, start: datetime,
                       hours: float = 1, *, status: str = "confirmed", **overrides: Any) -> Booking:
    end = start + timedelta(hours=hours)
    values: dict[str, Any] = {
        "instrument_id": instrument.id, "user_id": user.id, "created_by": user.id, "status": status,
        "start_at": start, "end_at": end, "blocked": Range(start, end, bounds="[)"), "purpose": "测试样品",
        "created_at": NOW - timedelta(days=7), "updated_at": NOW - timedelta(days=7),
    }
    values.update(overrides)
    booking = Booking(**values)
    session.add(booking)
    await session.flush()
    return booking


async def fresh(session: AsyncSession, model: type[Any], key: Any) -> Any:
    """The row as stored now (another session, e.g. a job's, may have changed it)."""
    return (await session.execute(select(model).where(model.id == key).execution_options(
        populate_existing=True))).scalar_one()


async def notifications_of(session: AsyncSession, user_id: int, kind: str | None = None) -> list[Notification]:
    stmt = select(Notification).where(Notification.user_id == user_id)
    if kind:
        stmt = stmt.where(Notification.kind == kind)
    return list(await session.scalars(stmt.order_by(Notification.id)))


async def count(session: AsyncSession, model: type[Any], *where: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def make_service_record(session: AsyncSession, booking: Booking, provider_institution_id: int, *,
                              amount: str, fee_basis: str, **overrides: Any) -> ServiceRecord:
    """The service record of a completed booking (external, occupancy), for its whole time."""
    from decimal import Decimal

    values: dict[str, Any] = {
        "instrument_id": booking.instrument_id, "booking_id": booking.id, "user_id": booking.user_id,
        "provider_institution_id": provider_institution_id, "is_external": True, "started_at": booking.start_at,
        "ended_at": booking.end_at, "hours": Decimal((booking.end_at - booking.start_at).total_seconds() / 3600),
        "service_mode": "occupancy", "amount": Decimal(amount), "fee_basis": fee_basis,
    }
    rec = ServiceRecord(**(values | overrides))
    session.add(rec)
    await session.flush()
    return rec
