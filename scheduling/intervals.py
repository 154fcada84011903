"""Half-open time intervals of UTC instants and the set operations every other module builds on.

An `Interval` is `[start, end)`: two bookings that touch (one ends at 10:00, the next starts at 10:00) do not
overlap, which is also how PostgreSQL's `tstzrange` with the default `[)` bounds behaves in the exclusion
constraint. Lists returned by these functions are sorted by start, non-overlapping and, where the docstring
says *merged*, with touching pieces joined.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from booking.core.clock import LOCAL_TZ


def require_aware(value: datetime, what: str = "datetime") -> datetime:
    """Return `value` converted to UTC; raise ValueError for a naive datetime (it would be a silent shift)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


@dataclass(frozen=True, order=True, slots=True)
class Interval:
    """`[start, end)` between two instants, stored in UTC; `end` is strictly after `start`."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        # Normalising here lets callers pass +08:00 instants and still compare, hash and print them uniformly.
        object.__setattr__(self, "start", require_aware(self.start, "start"))
        object.__setattr__(self, "end", require_aware(self.end, "end"))
        if self.end <= self.start:
            raise ValueError(
                f"interval end {self.end.isoformat()} is not after start {self.start.isoformat()}"
            )

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def overlaps(self, other: Interval) -> bool:
        return self.start < other.end and other.start < self.end

    def contains(self, other: Interval) -> bool:
        return self.start <= other.start and other.end <= self.end

    def contains_instant(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


def make_interval(start: datetime, end: datetime) -> Interval | None:
    """An interval, or None when `end <= start` (the empty result of a clip or a subtraction)."""
    return Interval(start, end) if end > start else None


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted union of `intervals`, overlapping and touching pieces joined. O(n log n)."""
    ordered = sorted(intervals)
    merged: list[Interval] = []
    for item in ordered:
        if merged and item.start <= merged[-1].end:
            if item.end > merged[-1].end:
                merged[-1] = Interval(merged[-1].start, item.end)
        else:
            merged.append(item)
    return merged


def subtract(base: Iterable[Interval], cuts: Iterable[Interval]) -> list[Interval]:
    """Merged `base` minus the union of `cuts`. O((n + m) log(n + m))."""
    remaining: list[Interval] = []
    cut_list = merge(cuts)
    index = 0
    for piece in merge(base):
        cursor = piece.start
        # Cuts wholly before this piece can never matter for later pieces either: both lists are sorted.
        while index < len(cut_list) and cut_list[index].end <= cursor:
            index += 1
        probe = index
        while probe < len(cut_list) and cut_list[probe].start < piece.end:
            cut = cut_list[probe]
            if cut.start > cursor:
                remaining.append(Interval(cursor, cut.start))
            cursor = max(cursor, cut.end)
            probe += 1
        if cursor < piece.end:
            remaining.append(Interval(cursor, piece.end))
    return remaining


def intersect(first: Iterable[Interval], second: Iterable[Interval]) -> list[Interval]:
    """Merged intersection of two interval sets. O((n + m) log(n + m))."""
    left, right = merge(first), merge(second)
    result: list[Interval] = []
    i = j = 0
    while i < len(left) and j < len(right):
        start = max(left[i].start, right[j].start)
        end = min(left[i].end, right[j].end)
        if start < end:
            result.append(Interval(start, end))
        if left[i].end <= right[j].end:
            i += 1
        else:
            j += 1
    return result


def clip(intervals: Iterable[Interval], start: datetime, end: datetime) -> list[Interval]:
    """Merged `intervals` restricted to `[start, end)`."""
    window = make_interval(require_aware(start), require_aware(end))
    return intersect(intervals, [window]) if window else []


def total(intervals: Iterable[Interval]) -> timedelta:
    """Length of the union of `intervals`."""
    return sum((item.duration for item in merge(intervals)), timedelta())


def widen(intervals: Iterable[Interval], before: timedelta, after: timedelta) -> list[Interval]:
    """Each interval extended by `before` at its start and `after` at its end, then merged."""
    return merge(Interval(item.start - before, item.end + after) for item in intervals)


def find_containing(merged: Sequence[Interval], candidate: Interval) -> Interval | None:
    """The interval of a *merged* sorted list that wholly contains `candidate`, or None. O(log n)."""
    position = bisect.bisect_right([item.start for item in merged], candidate.start) - 1
    if position >= 0 and merged[position].contains(candidate):
        return merged[position]
    return None


def local_midnight(day: date) -> datetime:
    """The UTC instant at which local (Asia/Shanghai) `day` begins."""
    return datetime.combine(day, time(0), tzinfo=LOCAL_TZ).astimezone(UTC)


def local_at(day: date, clock_time: time) -> datetime:
    """The UTC instant of local wall-clock `clock_time` on local `day`."""
    return datetime.combine(day, clock_time, tzinfo=LOCAL_TZ).astimezone(UTC)


def local_date(instant: datetime) -> date:
    """The local (Asia/Shanghai) calendar date of an instant."""
    return require_aware(instant).astimezone(LOCAL_TZ).date()


def local_dates(start: datetime, end: datetime) -> list[date]:
    """Every local date that `[start, end)` touches, in order (empty when `end <= start`)."""
    start, end = require_aware(start), require_aware(end)
    if end <= start:
        return []
    first, last = local_date(start), local_date(end - timedelta(microseconds=1))
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def floor_to_grid(instant: datetime, step_minutes: int) -> datetime:
    """The latest instant <= `instant` on the grid of `step_minutes` anchored at local midnight."""
    instant = require_aware(instant)
    midnight = local_midnight(local_date(instant))
    step = timedelta(minutes=step_minutes)
    return midnight + ((instant - midnight) // step) * step


def ceil_to_grid(instant: datetime, step_minutes: int) -> datetime:
    """The earliest instant >= `instant` on the grid of `step_minutes` anchored at local midnight."""
    floor = floor_to_grid(instant, step_minutes)
    return floor if floor == require_aware(instant) else floor + timedelta(minutes=step_minutes)


def is_on_grid(instant: datetime, step_minutes: int) -> bool:
    """True when `instant` is a whole multiple of `step_minutes` after local midnight."""
    return floor_to_grid(instant, step_minutes) == require_aware(instant)
