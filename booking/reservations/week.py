"""The week calendar of one instrument: per day, which slots are free, busy, yours, or closed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.auth.principal import Principal
from booking.core.clock import LOCAL_TZ, utcnow
from booking.reservations import service
from booking.reservations.models import ACTIVE_STATUSES, Booking
from scheduling.intervals import Interval, local_at, local_midnight

WEEKDAYS = ["周一", "周二", "周三", "周四", "周五", "周六", "周日"]


@dataclass
class Cell:
    start: datetime
    end: datetime
    state: str  # free | busy | mine | closed | past
    label: str = ""


@dataclass
class Day:
    day: date
    label: str
    closed_reason: str | None
    cells: list[Cell] = field(default_factory=list)


@dataclass
class Week:
    instrument_id: int
    monday: date
    days: list[Day]
    rows: list[time]
    slot_minutes: int
    prev_monday: date
    next_monday: date
    bookable_count: int


def monday_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


async def week(session: AsyncSession, principal: Principal | None, instrument_id: int, monday: date) -> Week:
    start, end = local_midnight(monday), local_midnight(monday + timedelta(days=7))
    slots, closed, ctx = await service.bookable(session, principal, instrument_id, start, end)
    step = timedelta(minutes=ctx.rules.slot_minutes)
    opening = ctx.availability.opening_intervals(start, end)
    first_hour, last_hour = 8, 20
    for iv in opening:
        first_hour = min(first_hour, iv.start.astimezone(LOCAL_TZ).hour)
        local_end = iv.end.astimezone(LOCAL_TZ)
        last_hour = max(last_hour, 24 if local_end.time() == time(0) else local_end.hour + (1 if local_end.minute else 0))
    taken = list(await session.scalars(select(Booking).where(
        col(Booking.instrument_id) == instrument_id, col(Booking.status).in_([s.value for s in ACTIVE_STATUSES]),
        col(Booking.start_at) < end, col(Booking.end_at) > start)))
    now = utcnow()
    rows = []
    t = datetime.combine(monday, time(first_hour))
    while t.hour < last_hour and t.date() == monday:
        rows.append(t.time())
        t += step
    days: list[Day] = []
    count = 0
    for offset in range(7):
        d = monday + timedelta(days=offset)
        day = Day(d, f"{WEEKDAYS[offset]} {d.month}/{d.day}", closed.get(d))
        for row in rows:
            a = local_at(d, row)
            b = a + step
            cell = Interval(a, b)
            mine = next((bk for bk in taken if bk.start_at < b and bk.end_at > a
                         and principal is not None and bk.user_id == principal.id), None)
            if mine is not None:
                day.cells.append(Cell(a, b, "mine", "我的预约"))
            elif any(bk.start_at < b and bk.end_at > a for bk in taken):
                day.cells.append(Cell(a, b, "busy", "已占用"))
            elif any(s.contains(cell) for s in slots):
                day.cells.append(Cell(a, b, "free", "可预约"))
                count += 1
            elif b <= now:
                day.cells.append(Cell(a, b, "past", ""))
            else:
                day.cells.append(Cell(a, b, "closed", "不开放"))
        days.append(day)
    return Week(instrument_id, monday, days, rows, ctx.rules.slot_minutes, monday - timedelta(days=7),
                monday + timedelta(days=7), count)
