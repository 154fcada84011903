"""Local (Asia/Shanghai) wall-clock helpers for the scheduling tests."""

from __future__ import annotations

from datetime import date, datetime, time

from booking.core.clock import LOCAL_TZ
from scheduling.intervals import Interval

# A Monday with no holiday near it: 2026-12-07.
MONDAY = date(2026, 12, 7)


def local(day: date, clock: str) -> datetime:
    """`clock` ("09:30") on local `day`, as an aware datetime in Asia/Shanghai."""
    hours, minutes = (int(part) for part in clock.split(":"))
    return datetime.combine(day, time(hours, minutes), tzinfo=LOCAL_TZ)


def span(day: date, start: str, end: str, end_day: date | None = None) -> Interval:
    """Local `start`-`end` on `day` (or until `end` on `end_day`) as a UTC interval."""
    return Interval(local(day, start), local(end_day or day, end))


def hm(clock: str) -> time:
    hours, minutes = (int(part) for part in clock.split(":"))
    return time(hours, minutes)
