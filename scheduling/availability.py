"""When an instrument is open and when it is free: opening windows − closures − blackouts − existing bookings.

Managers think in local wall-clock time (Asia/Shanghai); everything returned here is a list of UTC
`Interval`s.

How a local date's opening time is decided, first rule that applies wins:

1. an instrument `DateOverride` for that date: its windows, or closed when it has none;
2. when the instrument follows the holiday calendar and the calendar closes the date (statutory holiday, 调休
   day off, administrator's closure): closed;
3. when it follows the calendar and the date is an adjusted working day (调休上班): the weekly windows of the
   weekday the day stands in for (`HolidayCalendar.stands_in_for`, Monday when unknown), as valid on that
   date, because the day carries that weekday's work; the weekend day's own windows are not used;
4. otherwise the weekly windows of the date's own weekday that are valid on that date.

Blackouts (one-off and recurring) are then cut out of every day, date overrides included: maintenance beats
opening. Recurring blackouts follow the real weekday of the date, not the weekday an adjusted working day
stands in for.

Windows lie inside one local day: a window that crosses midnight is rejected (split it into two windows on
consecutive weekdays; they join into one interval when the first ends at 24:00). `time(0, 0)` as an end means
24:00.

Buffers: `Busy` intervals already include the buffers of the bookings they stand for. A new booking needs its
own set-up time before and cool-down time after it free as well, so `free_intervals` widens every busy
interval by the new booking's buffers (`buffer_after` before it, `buffer_before` after it). Buffers may run
outside opening hours: an instrument can cool down after the facility closes.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cached_property
from typing import TypeVar

from scheduling.calendar import HolidayCalendar
from scheduling.intervals import (
    Interval,
    clip,
    find_containing,
    local_at,
    local_dates,
    local_midnight,
    make_interval,
    merge,
    require_aware,
    subtract,
    widen,
)

MIDNIGHT = time(0, 0)

Key = TypeVar("Key", bound=Hashable)


def _check_wall_clock(start: time, end: time, what: str) -> None:
    if start.tzinfo is not None or end.tzinfo is not None:
        raise ValueError(f"{what}: times are local wall-clock times and must not carry a tzinfo")
    if end != MIDNIGHT and end <= start:
        raise ValueError(
            f"{what}: end {end.isoformat()} is not after start {start.isoformat()} "
            "(windows crossing midnight are not supported; split them at 24:00)"
        )


def _day_span(day: date, start: time, end: time) -> Interval:
    """UTC interval of local `start`-`end` on `day`, `end` 00:00 meaning the following midnight."""
    end_instant = local_midnight(day + timedelta(days=1)) if end == MIDNIGHT else local_at(day, end)
    return Interval(local_at(day, start), end_instant)


def _valid_on(day: date, valid_from: date | None, valid_to: date | None) -> bool:
    return (valid_from is None or valid_from <= day) and (valid_to is None or day <= valid_to)


@dataclass(frozen=True)
class WeeklyWindow:
    """A weekly opening window in local time: `weekday` 0 = Monday … 6 = Sunday, `[start, end)`.

    `valid_from` and `valid_to` are inclusive local dates (None = unbounded). Several windows per weekday are
    allowed.
    """

    weekday: int
    start: time
    end: time
    valid_from: date | None = None
    valid_to: date | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ValueError(f"weekday must be 0..6, got {self.weekday}")
        _check_wall_clock(self.start, self.end, "weekly window")
        if self.valid_from and self.valid_to and self.valid_to < self.valid_from:
            raise ValueError("weekly window: valid_to is before valid_from")

    def valid_on(self, day: date) -> bool:
        return _valid_on(day, self.valid_from, self.valid_to)


@dataclass(frozen=True)
class DateOverride:
    """The instrument's own hours for one local date, replacing every other rule; no windows = closed."""

    day: date
    windows: tuple[tuple[time, time], ...] = ()
    reason: str = ""

    def __post_init__(self) -> None:
        for start, end in self.windows:
            _check_wall_clock(start, end, f"override {self.day.isoformat()}")

    @property
    def closed(self) -> bool:
        return not self.windows


@dataclass(frozen=True)
class Blackout:
    """A one-off closure (maintenance, calibration) between two instants."""

    start: datetime
    end: datetime
    reason: str

    def __post_init__(self) -> None:
        Interval(self.start, self.end)  # validates awareness and order

    @property
    def interval(self) -> Interval:
        return Interval(self.start, self.end)


@dataclass(frozen=True)
class RecurringBlackout:
    """A weekly closure in local time (e.g. calibration every Monday 08:00-10:00); inclusive validity."""

    weekday: int
    start: time
    end: time
    reason: str
    valid_from: date | None = None
    valid_to: date | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ValueError(f"weekday must be 0..6, got {self.weekday}")
        _check_wall_clock(self.start, self.end, "recurring blackout")

    def valid_on(self, day: date) -> bool:
        return _valid_on(day, self.valid_from, self.valid_to)


@dataclass(frozen=True)
class Busy:
    """Time taken by an active booking (or a held offer), its buffers already included."""

    start: datetime
    end: datetime

    @property
    def interval(self) -> Interval:
        return Interval(self.start, self.end)


@dataclass(frozen=True)
class Closure:
    """One occurrence of a blackout inside a queried range, for listing the bookings it collides with."""

    interval: Interval
    reason: str


@dataclass(frozen=True)
class Availability:
    """Everything that decides one instrument's opening time; pure data, build one per request or cache it.

    `buffer_before_minutes` / `buffer_after_minutes` are the set-up and cool-down minutes a *new* booking
    needs; take them from the instrument's `BookingRules` so both agree.
    """

    weekly: tuple[WeeklyWindow, ...] = ()
    date_overrides: tuple[DateOverride, ...] = ()
    blackouts: tuple[Blackout, ...] = ()
    recurring_blackouts: tuple[RecurringBlackout, ...] = ()
    follow_holidays: bool = True
    calendar: HolidayCalendar = field(default_factory=HolidayCalendar)
    buffer_before_minutes: int = 0
    buffer_after_minutes: int = 0

    def __post_init__(self) -> None:
        if self.buffer_before_minutes < 0 or self.buffer_after_minutes < 0:
            raise ValueError("buffers must not be negative")
        days = [override.day for override in self.date_overrides]
        if len(days) != len(set(days)):
            raise ValueError("at most one date override per date")

    @cached_property
    def _override_by_day(self) -> dict[date, DateOverride]:
        return {override.day: override for override in self.date_overrides}

    def windows_on(self, day: date) -> list[tuple[time, time]]:
        """The local opening windows of `day` before blackouts, by the precedence in the module docstring."""
        override = self._override_by_day.get(day)
        if override is not None:
            return sorted(override.windows)
        pattern_day = day.weekday()
        if self.follow_holidays:
            if self.calendar.is_closed_day(day):
                return []
            stands_in_for = self.calendar.stands_in_for(day)
            if stands_in_for is not None:
                pattern_day = stands_in_for
        return sorted(
            (window.start, window.end)
            for window in self.weekly
            if window.weekday == pattern_day and window.valid_on(day)
        )

    def opening_intervals(self, range_start: datetime, range_end: datetime) -> list[Interval]:
        """Opening windows as merged UTC intervals clipped to `[range_start, range_end)`, before blackouts."""
        pieces = [
            _day_span(day, start, end)
            for day in local_dates(range_start, range_end)
            for start, end in self.windows_on(day)
        ]
        return clip(pieces, range_start, range_end)

    def closures(self, range_start: datetime, range_end: datetime) -> list[Closure]:
        """Every blackout occurrence overlapping `[range_start, range_end)`, sorted by start, unclipped."""
        window = make_interval(require_aware(range_start), require_aware(range_end))
        if window is None:
            return []
        found = [
            Closure(item.interval, item.reason) for item in self.blackouts if item.interval.overlaps(window)
        ]
        # A recurring blackout on the day before the range cannot reach into it: windows end by 24:00.
        for day in local_dates(range_start, range_end):
            for recurring in self.recurring_blackouts:
                if recurring.weekday == day.weekday() and recurring.valid_on(day):
                    span = _day_span(day, recurring.start, recurring.end)
                    if span.overlaps(window):
                        found.append(Closure(span, recurring.reason))
        return sorted(found, key=lambda closure: (closure.interval, closure.reason))

    def open_intervals(self, range_start: datetime, range_end: datetime) -> list[Interval]:
        """Bookable opening time in `[range_start, range_end)`: windows minus blackouts, merged, UTC."""
        closed = [closure.interval for closure in self.closures(range_start, range_end)]
        return subtract(self.opening_intervals(range_start, range_end), closed)

    def free_intervals(
        self, range_start: datetime, range_end: datetime, busy: Iterable[Busy | Interval]
    ) -> list[Interval]:
        """Where a new booking (without its buffers) may lie: open time minus busy time widened by the new
        booking's buffers, merged, UTC. `busy` must include every active booking that may reach into the
        range, including one that starts before `range_start`."""
        taken = [item.interval if isinstance(item, Busy) else item for item in busy]
        widened = widen(
            taken,
            before=timedelta(minutes=self.buffer_after_minutes),
            after=timedelta(minutes=self.buffer_before_minutes),
        )
        return subtract(self.open_intervals(range_start, range_end), widened)

    def closed_days(self, range_start: datetime, range_end: datetime) -> dict[date, str]:
        """Local dates in the range closed as a whole by a date override or (when followed) the holiday
        calendar, with the reason in Chinese. Weekdays that merely have no windows are not listed."""
        closed: dict[date, str] = {}
        for day in local_dates(range_start, range_end):
            override = self._override_by_day.get(day)
            if override is not None:
                if override.closed:
                    closed[day] = override.reason or "仪器停开"
            elif self.follow_holidays and self.calendar.is_closed_day(day):
                closed[day] = self.calendar.name_of(day) or "法定节假日"
        return closed


def outside(bookings: Iterable[tuple[Key, Interval]], allowed: Sequence[Interval]) -> list[Key]:
    """Keys of bookings not wholly inside one interval of `allowed`, in input order.

    For "what would this availability change do": pass the new `open_intervals` and the active bookings."""
    merged = merge(allowed)
    return [key for key, interval in bookings if find_containing(merged, interval) is None]


def colliding(
    bookings: Iterable[tuple[Key, Interval]], closures: Iterable[Closure]
) -> dict[Key, list[Closure]]:
    """Bookings that overlap a closure, with the closures they hit: whom to notify about a new blackout."""
    ordered = sorted(closures, key=lambda closure: closure.interval)
    hits: dict[Key, list[Closure]] = {}
    for key, interval in bookings:
        matched = [closure for closure in ordered if closure.interval.overlaps(interval)]
        if matched:
            hits[key] = matched
    return hits
