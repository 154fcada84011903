"""Loading an instrument's published time data into the pure structures of this package."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache

from sqlalchemy import select, text
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


_SCHEDULE_SQL = text("""
SELECT
  (SELECT row_to_json(r) FROM booking_rules r WHERE r.instrument_id = :i) AS rules,
  (SELECT coalesce(json_agg(json_build_array(w.weekday, w.start_time, w.end_time, w.valid_from, w.valid_to)), '[]')
   FROM opening_windows w WHERE w.instrument_id = :i) AS windows,
  (SELECT coalesce(json_agg(json_build_array(o.day, o.windows, o.reason)), '[]')
   FROM schedule_overrides o WHERE o.instrument_id = :i AND o.day BETWEEN :first AND :last) AS overrides,
  (SELECT coalesce(json_agg(json_build_array(b.starts_at, b.ends_at, b.weekday, b.start_time, b.end_time,
                                             b.valid_from, b.valid_to, b.reason)), '[]')
   FROM blackouts b WHERE b.instrument_id = :i
     AND (b.starts_at IS NULL OR (b.starts_at < :end AND b.ends_at > :start))) AS blackouts,
  (SELECT coalesce(json_agg(json_build_array(h.day, h.kind, h.name)), '[]')
   FROM holiday_overrides h WHERE h.day BETWEEN :year_first AND :year_last) AS holidays,
  (SELECT g.name FROM equivalence_members m JOIN equivalence_groups g ON g.id = m.group_id
   WHERE m.instrument_id = :i AND g.allocation_mode = 'rounds' ORDER BY g.id LIMIT 1) AS rounds_group
""")


@dataclass(frozen=True)
class Schedule:
    rules: InstrumentRules | None
    availability: av.Availability
    # The equivalence group that allocates this instrument's time by rounds, if any (direct booking is closed).
    rounds_group: str | None


def _d(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _t(value: str | None) -> time | None:
    return time.fromisoformat(value) if value else None


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def load_schedule(session: AsyncSession, instrument_id: int, start: datetime, end: datetime) -> Schedule:
    """The instrument's rules row, everything deciding its opening time over [start, end) and its rounds group,
    in ONE round trip:
    the booking path runs this on every request, and five separate queries cost more than the work itself."""
    first, last = local_date(start) - timedelta(days=1), local_date(end) + timedelta(days=1)
    years = tuple(range(local_date(start).year, local_date(end).year + 1))
    row = (await session.execute(_SCHEDULE_SQL, {
        "i": instrument_id, "first": first, "last": last, "start": start, "end": end,
        "year_first": date(years[0], 1, 1), "year_last": date(years[-1], 12, 31)})).one()
    rules = None
    if row.rules is not None:
        data = dict(row.rules)
        data["updated_at"] = _ts(data.get("updated_at"))
        rules = InstrumentRules.model_validate(data)
    overrides = [DayOverride(_d(day), kind, name) for day, kind, name in row.holidays]  # type: ignore[arg-type]
    base = _package_calendar(years)
    blackouts = row.blackouts
    availability = av.Availability(
        weekly=tuple(av.WeeklyWindow(wd, _t(a), _t(b), _d(vf), _d(vt)) for wd, a, b, vf, vt in row.windows),  # type: ignore[arg-type]
        date_overrides=tuple(av.DateOverride(_d(day), _windows(wins), reason or "")  # type: ignore[arg-type]
                             for day, wins, reason in row.overrides),
        blackouts=tuple(av.Blackout(_ts(s), _ts(e), reason) for s, e, _w, _a, _b, _f, _v, reason in blackouts  # type: ignore[arg-type]
                        if s is not None),
        recurring_blackouts=tuple(av.RecurringBlackout(w, _t(a), _t(b), reason, _d(f), _d(v))  # type: ignore[arg-type]
                                  for s, _e, w, a, b, f, v, reason in blackouts if w is not None),
        follow_holidays=rules.follow_holidays if rules else True,
        calendar=base.with_overrides(overrides) if overrides else base,
        buffer_before_minutes=rules.buffer_before_min if rules else 0,
        buffer_after_minutes=rules.buffer_after_min if rules else 0,
    )
    return Schedule(rules, availability, row.rounds_group)
