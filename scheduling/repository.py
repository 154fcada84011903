"""Loading an instrument's published time data into the pure structures of this package."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from scheduling import availability as av
from scheduling.calendar import DayOverride, HolidayCalendar
from scheduling.intervals import local_date
from scheduling.models import Blackout, HolidayOverride, InstrumentRules, OpeningWindow, ScheduleOverride
from scheduling.rules import BookingRules


@lru_cache(maxsize=32)
def _package_calendar(years: tuple[int, ...]) -> HolidayCalendar:
    # The package's data for a year never changes within a process; building it costs milliseconds.
    return HolidayCalendar.from_package(years)


async def holiday_calendar(session: AsyncSession, start: datetime, end: datetime) -> HolidayCalendar:
    years = tuple(range(local_date(start).year, local_date(end).year + 1))
    rows = await session.scalars(select(HolidayOverride).where(
        col(HolidayOverride.day) >= date(years[0], 1, 1), col(HolidayOverride.day) <= date(years[-1], 12, 31)))
    overrides = [DayOverride(r.day, r.kind, r.name) for r in rows]  # type: ignore[arg-type]
    base = _package_calendar(years)
    return base.with_overrides(overrides) if overrides else base


def rules_from_row(row: InstrumentRules | None, *, qualification_required: bool, external_allowed: bool
                   ) -> BookingRules:
    if row is None:
        row = InstrumentRules(instrument_id=0)
    return BookingRules(
        slot_minutes=row.granularity_min,
        min_duration_minutes=row.min_duration_min,
        max_duration_minutes=row.max_duration_min,
        min_lead_minutes=row.min_lead_min,
        max_horizon_days=row.max_horizon_days,
        max_user_hours_per_week=Decimal(row.max_user_hours_week) if row.max_user_hours_week else None,
        max_institution_hours_per_month=(Decimal(row.max_institution_hours_month)
                                         if row.max_institution_hours_month else None),
        approval_required=row.approval_required,
        qualification_required=qualification_required,
        external_users_allowed=external_allowed,
        cancellation_deadline_hours=row.cancellation_deadline_h,
        buffer_before_minutes=row.buffer_before_min,
        buffer_after_minutes=row.buffer_after_min,
    )


async def rules_row(session: AsyncSession, instrument_id: int) -> InstrumentRules | None:
    return await session.get(InstrumentRules, instrument_id)


def _windows(raw: Iterable[Iterable[str]]) -> tuple[tuple[time, time], ...]:
    return tuple((time.fromisoformat(a), time.fromisoformat(b)) for a, b in raw)


async def load_availability(session: AsyncSession, instrument_id: int, start: datetime, end: datetime,
                            rules: InstrumentRules | None) -> av.Availability:
    """Everything that decides the instrument's opening time over [start, end)."""
    first, last = local_date(start) - timedelta(days=1), local_date(end) + timedelta(days=1)
    windows = await session.scalars(select(OpeningWindow).where(col(OpeningWindow.instrument_id) == instrument_id))
    overrides = await session.scalars(select(ScheduleOverride).where(
        col(ScheduleOverride.instrument_id) == instrument_id,
        col(ScheduleOverride.day) >= first, col(ScheduleOverride.day) <= last))
    blackouts = list(await session.scalars(select(Blackout).where(
        col(Blackout.instrument_id) == instrument_id,
        (col(Blackout.starts_at).is_(None)) | ((col(Blackout.starts_at) < end) & (col(Blackout.ends_at) > start)))))
    return av.Availability(
        weekly=tuple(av.WeeklyWindow(w.weekday, w.start_time, w.end_time, w.valid_from, w.valid_to)
                     for w in windows),
        date_overrides=tuple(av.DateOverride(o.day, _windows(o.windows), o.reason or "") for o in overrides),
        blackouts=tuple(av.Blackout(b.starts_at, b.ends_at, b.reason) for b in blackouts
                        if b.starts_at is not None and b.ends_at is not None),
        recurring_blackouts=tuple(av.RecurringBlackout(b.weekday, b.start_time, b.end_time, b.reason,  # type: ignore[arg-type]
                                                       b.valid_from, b.valid_to)
                                  for b in blackouts if b.weekday is not None),
        follow_holidays=rules.follow_holidays if rules else True,
        calendar=await holiday_calendar(session, start, end),
        buffer_before_minutes=rules.buffer_before_min if rules else 0,
        buffer_after_minutes=rules.buffer_after_min if rules else 0,
    )
