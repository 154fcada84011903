"""Turning free time into what a user may book, and finding the nearest alternatives to a taken slot."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from scheduling.intervals import Interval, ceil_to_grid, clip, floor_to_grid, merge, require_aware
from scheduling.rules import BookingRules


def bookable_slots(
    free: Sequence[Interval],
    rules: BookingRules,
    now: datetime,
    range_start: datetime,
    range_end: datetime,
) -> list[Interval]:
    """Intervals in `[range_start, range_end)` inside which any grid-aligned booking of an allowed length
    passes the time rules.

    Each free interval (from `Availability.free_intervals`) is clipped to the range, to `now +
    min_lead_minutes` at the start and to `now + max_horizon_days` at the end (conservative: a booking shown
    here never starts beyond the horizon), shrunk inward to the `slot_minutes` grid from local midnight, and
    kept when at least `min_duration_minutes` (and one slot) long. Result sorted, UTC.
    """
    now = require_aware(now)
    earliest = max(require_aware(range_start), now + timedelta(minutes=rules.min_lead_minutes))
    latest = require_aware(range_end)
    if rules.max_horizon_days is not None:
        latest = min(latest, now + timedelta(days=rules.max_horizon_days))
    shortest = timedelta(minutes=max(rules.min_duration_minutes, rules.slot_minutes))
    slots: list[Interval] = []
    for piece in clip(free, earliest, latest) if earliest < latest else []:
        start = ceil_to_grid(piece.start, rules.slot_minutes)
        end = floor_to_grid(piece.end, rules.slot_minutes)
        if end - start >= shortest:
            slots.append(Interval(start, end))
    return slots


def _starts_by_shift(
    first: datetime, last: datetime, step: timedelta, wanted: datetime
) -> Iterator[tuple[timedelta, datetime]]:
    """Grid starts `first, first + step, …, last` in order of |start − wanted|, earlier first on ties."""
    count = (last - first) // step + 1
    # The grid point at or just before `wanted`, clamped into the progression.
    pivot = min(max((wanted - first) // step, 0), count - 1)
    left, right = pivot, pivot + 1
    while left >= 0 or right < count:
        take_left = left >= 0 and (
            right >= count or abs(first + left * step - wanted) <= abs(first + right * step - wanted)
        )
        if take_left:
            start = first + left * step
            left -= 1
        else:
            start = first + right * step
            right += 1
        yield abs(start - wanted), start


def nearest_alternatives(
    free: Sequence[Interval],
    wanted_start: datetime,
    duration: timedelta,
    k: int,
    granularity_minutes: int,
) -> list[Interval]:
    """The `k` bookings of length `duration` that fit in `free` with starts on the `granularity_minutes` grid
    (from local midnight) nearest to `wanted_start` by absolute time shift, earlier start first on ties;
    sorted that way.

    Pass `bookable_slots(...)` output to honour lead time and horizon. O(n log n + k log n) for n free
    intervals: each interval yields its starts in shift order and a heap merges the n streams.
    """
    wanted = require_aware(wanted_start)
    if k <= 0 or duration <= timedelta(0):
        return []
    step = timedelta(minutes=granularity_minutes)
    streams: list[Iterator[tuple[timedelta, datetime]]] = []
    for piece in merge(free):
        first = ceil_to_grid(piece.start, granularity_minutes)
        last = floor_to_grid(piece.end - duration, granularity_minutes)
        if first <= last:
            streams.append(_starts_by_shift(first, last, step, wanted))
    heap: list[tuple[timedelta, datetime, int]] = []
    for index, stream in enumerate(streams):
        shift, start = next(stream)
        heap.append((shift, start, index))
    heapq.heapify(heap)
    found: list[Interval] = []
    while heap and len(found) < k:
        shift, start, index = heapq.heappop(heap)
        found.append(Interval(start, start + duration))
        following = next(streams[index], None)
        if following is not None:
            heapq.heappush(heap, (following[0], following[1], index))
    return found
