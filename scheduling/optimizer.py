"""Placing flexible requests and resolving allocation rounds: who gets which instrument when.

A `FlexibleRequest` asks for `duration_minutes` on any of its candidate instruments, inside one of the allowed
windows given per candidate, optionally preferring some local hours. `allocate` chooses placements that
maximise the total priority-weighted granted time (weight × minutes) subject to

* no two placements overlapping on one instrument, and each placement inside the instrument's free time;
* per-user and per-institution caps on granted hours in the round;
* a minimum share of granted hours for external users: external hours >= share × all granted hours, **or**,
  when external users cannot reach that share, external users get as many hours as they possibly can
  (`external_target`, found by a first solve over the external requests alone). A hard share without that
  escape would refuse internal requests merely because too few external users applied, which is not the
  policy's intent.

Among placements of equal weighted time, those inside a request's preferred hours win (a secondary objective
term that can never outweigh one granted slot). Every request gets a `Decision` with a code and a Chinese
reason.

Method. Start times are discretised to the slot grid (counted from local midnight); for each (request,
candidate instrument) the grid starts that fit inside a window and inside free time form a start domain.
1. Greedy solutions (heaviest first and longest first, each request into the free gap it fills best) give a
   good incumbent fast; best-fit keeps long gaps for long requests.
2. CP-SAT improves it: a round with at most `EXACT_OPTION_LIMIT` options is solved whole (one optional
   fixed-size interval per option, `AddNoOverlap` per instrument, at most one option per request, linear
   caps, the share as a reified pair of constraints); a larger round by large neighbourhood search: parts (a
   few days on a few instruments around a refused request; all requests of a few users) are re-solved by the
   same model with everything else fixed, and a part's new placements are kept only when they score better.
3. Every placement then moves as early as its instrument allows (without leaving its preferred hours) and
   refused requests that still fit are granted, so the result is canonical and every refusal has a real cause.

Determinism: requests are sorted by id and candidates by instrument id, neighbourhoods come from a generator
seeded by `random_seed`, CP-SAT runs on one worker with that seed, and the search stops on CP-SAT's
*deterministic* time (summed over parts), so the same input gives the same output on any machine. The
wall-clock limit is only a safety net; when it, rather than the deterministic budget, stops the search,
`Allocation.deterministic` is False.

`greedy_first_come` is the baseline (submission order, earliest slot, caps respected, no external share);
`upper_bound` bounds the granted hours from above for judging both.
"""

from __future__ import annotations

import bisect
import random
import time as wallclock
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction

from ortools.graph.python import max_flow
from ortools.sat.python import cp_model

from booking.core.clock import LOCAL_TZ
from booking.core.errors import Problem
from scheduling.intervals import Interval, local_at, local_date, local_midnight

# Half-open [lo, hi) in grid units (or, for start domains, inclusive [first, last]: named where used).
Span = tuple[int, int]

MINUTES_PER_DAY = 1440
# Part of the deterministic budget spent finding how many external minutes are attainable at all.
EXTERNAL_TARGET_TIME_SHARE = 0.15
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_EARLIEST_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Candidate:
    """An instrument that can serve the request, and the windows (UTC) one of which must hold the booking."""

    instrument_id: int
    windows: tuple[Interval, ...]


@dataclass(frozen=True)
class FlexibleRequest:
    """A request for `duration_minutes` on one of `candidates`.

    `weight` is a positive integer priority (in-house priority, project rank …); `preferred_hours` are local
    wall-clock windows (end 00:00 = 24:00) the placement should lie inside if possible; `submitted_at` orders
    the first-come baseline (None sorts first, then by id).
    """

    id: int
    user_id: int
    institution_id: int
    external: bool
    duration_minutes: int
    candidates: tuple[Candidate, ...]
    weight: int = 1
    preferred_hours: tuple[tuple[time, time], ...] = ()
    submitted_at: datetime | None = None


@dataclass(frozen=True)
class AllocationPolicy:
    """Round parameters. Caps in hours per round (None = no cap); `external_min_share` a fraction 0..1 of
    granted hours; `deterministic_time_limit` in CP-SAT's deterministic time units, the limit that decides
    the result (one unit cost about 3 s of one core in `bench/scheduler.py` on the 2-core project machine);
    `time_limit_seconds` wall-clock seconds, a safety net only."""

    slot_minutes: int = 30
    user_cap_hours: Decimal | None = None
    institution_cap_hours: Decimal | None = None
    external_min_share: Decimal = Decimal(0)
    # 0.6 units: on bench/scheduler.py (1,000 requests, 50 instruments, 4 weeks) within 0.4% of the hours that
    # 1.0 reaches, at about 60% of its time, which keeps a round under 5 s on the shared 2-core machine.
    deterministic_time_limit: float = 0.6
    time_limit_seconds: float = 10.0
    random_seed: int = 0

    def __post_init__(self) -> None:
        if self.slot_minutes < 1 or MINUTES_PER_DAY % self.slot_minutes:
            raise ValueError("slot_minutes must divide 1440")
        if not Decimal(0) <= self.external_min_share <= Decimal(1):
            raise ValueError("external_min_share must be between 0 and 1")
        for cap in (self.user_cap_hours, self.institution_cap_hours):
            if cap is not None and cap <= 0:
                raise ValueError("caps must be positive")

    def cap_minutes(self, hours: Decimal | None) -> int | None:
        """A cap in hours as whole minutes (rounded down), None for no cap."""
        return None if hours is None else int(hours * 60)


@dataclass(frozen=True)
class Decision:
    """The outcome for one request. Granted: instrument and UTC `[start, end)`. `code` is machine-readable:
    granted, granted_preferred, granted_outside_preference, no_fit, capacity, user_cap, institution_cap,
    external_share."""

    request_id: int
    granted: bool
    code: str
    reason: str
    instrument_id: int | None = None
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class Allocation:
    """Decisions in request-id order and the figures of the round; minutes are granted booking minutes."""

    decisions: tuple[Decision, ...]
    method: str
    solver_status: str
    deterministic: bool
    solve_seconds: float
    granted_minutes: int
    weighted_minutes: int
    external_minutes: int
    external_target_minutes: int | None = None

    @property
    def granted_hours(self) -> Decimal:
        return Decimal(self.granted_minutes) / 60

    @property
    def external_share(self) -> Decimal:
        if not self.granted_minutes:
            return Decimal(0)
        return Decimal(self.external_minutes) / Decimal(self.granted_minutes)

    def decision_for(self, request_id: int) -> Decision:
        for decision in self.decisions:
            if decision.request_id == request_id:
                return decision
        raise KeyError(request_id)


@dataclass(frozen=True)
class GroupBound:
    """Requests and instruments connected through candidacy, with what they ask and what they could get."""

    instrument_ids: tuple[int, ...]
    request_ids: tuple[int, ...]
    requested_minutes: int
    capacity_minutes: int

    @property
    def bound_minutes(self) -> int:
        return min(self.requested_minutes, self.capacity_minutes)


@dataclass(frozen=True)
class UpperBound:
    """Upper bounds on granted minutes; `minutes` is the tightest.

    `groups`: per group of instruments and requests connected by candidacy, min(requested, capacity).
    `cap_bound_minutes`: what the user and institution caps allow at most (None without caps).
    `flow_minutes`: a maximum flow from institutions through users and requests into the free pieces of time
    that could hold each request, caps and piece lengths as capacities; it relaxes only "a request is not
    split", so it is the tightest of the three."""

    groups: tuple[GroupBound, ...]
    cap_bound_minutes: int | None
    flow_minutes: int

    @property
    def group_minutes(self) -> int:
        return sum(group.bound_minutes for group in self.groups)

    @property
    def minutes(self) -> int:
        bounds = [self.group_minutes, self.flow_minutes]
        if self.cap_bound_minutes is not None:
            bounds.append(self.cap_bound_minutes)
        return min(bounds)

    @property
    def hours(self) -> Decimal:
        return Decimal(self.minutes) / 60


def flexible_request_problems(request: FlexibleRequest, slot_minutes: int) -> list[Problem]:
    """Problems with a flexible request before it enters a round; fields named after its attributes."""
    problems: list[Problem] = []
    if request.duration_minutes <= 0 or request.duration_minutes % slot_minutes:
        problems.append(Problem("duration_minutes", "duration_not_multiple",
                                f"时长须为 {slot_minutes} 分钟的正整数倍"))
    if request.weight < 1:
        problems.append(Problem("weight", "invalid_weight", "优先级权重须为正整数"))
    if not request.candidates:
        problems.append(Problem("candidates", "no_candidates", "至少需要一台候选仪器"))
    duration = timedelta(minutes=request.duration_minutes)
    if request.candidates and all(
        window.duration < duration for candidate in request.candidates for window in candidate.windows
    ):
        problems.append(Problem("candidates", "window_too_short", "允许的时间窗短于所需时长"))
    for start, end in request.preferred_hours:
        if start.tzinfo is not None or end.tzinfo is not None or (end != time(0) and end <= start):
            problems.append(
                Problem("preferred_hours", "invalid_window", "偏好时段无效（须为同一天内的本地时间段）")
            )
            break
    return problems


# Building the discrete problem.


@dataclass
class _Option:
    request: int
    instrument_id: int
    starts: list[Span]  # inclusive [first, last] grid starts that fit
    preferred: list[Span]  # inclusive start ranges that lie wholly inside preferred hours


@dataclass
class _Discrete:
    requests: list[FlexibleRequest]
    units: list[int]
    options: list[_Option]
    options_of: list[list[int]]
    origin: datetime
    step: timedelta
    free_units: dict[int, list[Span]]
    free_ends: dict[int, list[int]]
    window_units: dict[tuple[int, int], list[Span]]

    def floor(self, instant: datetime) -> int:
        return (instant - self.origin) // self.step

    def ceil(self, instant: datetime) -> int:
        return -((self.origin - instant) // self.step)

    def instant(self, unit: int) -> datetime:
        return self.origin + unit * self.step


def _merge_spans(spans: Iterable[Span]) -> list[Span]:
    merged: list[Span] = []
    for lo, hi in sorted(spans):
        if hi <= lo:
            continue
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _intersect_spans(left: list[Span], right: list[Span]) -> list[Span]:
    result: list[Span] = []
    i = j = 0
    while i < len(left) and j < len(right):
        lo, hi = max(left[i][0], right[j][0]), min(left[i][1], right[j][1])
        if lo < hi:
            result.append((lo, hi))
        if left[i][1] <= right[j][1]:
            i += 1
        else:
            j += 1
    return result


def _clip_sorted(windows: list[Span], pieces: list[Span], piece_ends: list[int]) -> list[Span]:
    """`windows` ∩ `pieces` (both merged and sorted; `piece_ends` the pieces' ends), finding each window's
    first piece by bisection: windows are short and an instrument's free list covers the whole round."""
    result: list[Span] = []
    for lo, hi in windows:
        position = bisect.bisect_right(piece_ends, lo)
        while position < len(pieces) and pieces[position][0] < hi:
            start, end = max(lo, pieces[position][0]), min(hi, pieces[position][1])
            if start < end:
                result.append((start, end))
            position += 1
    return result


def _start_ranges(pieces: list[Span], length: int) -> list[Span]:
    return [(lo, hi - length) for lo, hi in pieces if hi - lo >= length]


def _discretise(
    requests: Sequence[FlexibleRequest], free: Mapping[int, Sequence[Interval]], slot_minutes: int
) -> _Discrete:
    ordered = sorted(requests, key=lambda request: request.id)
    if len({request.id for request in ordered}) != len(ordered):
        raise ValueError("request ids must be unique")
    window_starts = [window.start for request in ordered for c in request.candidates for window in c.windows]
    # Any local midnight works as the origin; the earliest window's keeps the unit numbers small.
    origin = local_midnight(local_date(min(window_starts))) if window_starts else _EARLIEST_ORIGIN
    step = timedelta(minutes=slot_minutes)
    discrete = _Discrete(ordered, [], [], [], origin, step, {}, {}, {})
    for instrument_id, intervals in free.items():
        discrete.free_units[instrument_id] = _merge_spans(
            (discrete.ceil(item.start), discrete.floor(item.end)) for item in intervals
        )
        discrete.free_ends[instrument_id] = [end for _, end in discrete.free_units[instrument_id]]
    # Requests of a round share windows, lengths and preferences (the bench: 1,000 requests over ~100 distinct
    # windows on 50 instruments), so the grid arithmetic and the clipping to free time are memoised; the
    # lists stored in options are never mutated, so sharing them is safe.
    spans: dict[tuple[datetime, datetime], Span] = {}
    clipped: dict[tuple[int, tuple[Span, ...]], list[Span]] = {}
    clipped_preferred: dict[tuple[int, tuple[Span, ...], tuple[Span, ...]], list[Span]] = {}
    start_ranges: dict[tuple[int, tuple[Span, ...], int], list[Span]] = {}

    def span_of(window: Interval) -> Span:
        key = (window.start, window.end)
        if key not in spans:
            spans[key] = (discrete.ceil(window.start), discrete.floor(window.end))
        return spans[key]

    for index, request in enumerate(ordered):
        if request.duration_minutes <= 0 or request.duration_minutes % slot_minutes:
            raise ValueError(
                f"request {request.id}: duration must be a positive multiple of {slot_minutes} minutes"
            )
        if request.weight < 1:
            raise ValueError(f"request {request.id}: weight must be a positive integer")
        length = request.duration_minutes // slot_minutes
        discrete.units.append(length)
        preferred = _preferred_spans(discrete, request)
        windows_by_instrument: dict[int, list[Span]] = defaultdict(list)
        for candidate in request.candidates:
            windows_by_instrument[candidate.instrument_id].extend(span_of(window) for window in candidate.windows)
        mine: list[int] = []
        preferred_key = tuple(preferred)
        for instrument_id in sorted(windows_by_instrument):
            windows = _merge_spans(windows_by_instrument[instrument_id])
            discrete.window_units[(index, instrument_id)] = windows
            key = (instrument_id, tuple(windows))
            if key not in clipped:
                clipped[key] = _clip_sorted(windows, discrete.free_units.get(instrument_id, []),
                                            discrete.free_ends.get(instrument_id, []))
            pieces = clipped[key]
            starts_key = (instrument_id, key[1], length)
            if starts_key not in start_ranges:
                start_ranges[starts_key] = _start_ranges(pieces, length)
            starts = start_ranges[starts_key]
            if not starts:
                continue
            preferred_starts: list[Span] = []
            if preferred:
                pkey = (instrument_id, key[1], preferred_key)
                if pkey not in clipped_preferred:
                    clipped_preferred[pkey] = _intersect_spans(pieces, preferred)
                preferred_starts = _start_ranges(clipped_preferred[pkey], length)
            mine.append(len(discrete.options))
            discrete.options.append(_Option(index, instrument_id, starts, preferred_starts))
        discrete.options_of.append(mine)
    return discrete


def _preferred_spans(discrete: _Discrete, request: FlexibleRequest) -> list[Span]:
    if not request.preferred_hours:
        return []
    windows = [window for candidate in request.candidates for window in candidate.windows]
    if not windows:
        return []
    first = local_date(min(window.start for window in windows))
    last = local_date(max(window.end for window in windows))
    spans: list[Span] = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        for start, end in request.preferred_hours:
            end_instant = local_midnight(day + timedelta(days=1)) if end == time(0) else local_at(day, end)
            spans.append((discrete.ceil(local_at(day, start)), discrete.floor(end_instant)))
    return _merge_spans(spans)


# Placements and the greedy core.


@dataclass
class _Board:
    """Placements being built, per instrument sorted by start, with the sums the caps and the share need."""

    discrete: _Discrete
    user_cap: int | None
    institution_cap: int | None
    share: Fraction
    external_target: int | None
    starts: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    ends: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    owners: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    placed: dict[int, tuple[int, int]] = field(default_factory=dict)  # request index -> (option index, start)
    user_minutes: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    institution_minutes: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    external_minutes: int = 0
    total_minutes: int = 0

    def minutes(self, index: int) -> int:
        return self.discrete.requests[index].duration_minutes

    def cap_blocker(self, index: int) -> str | None:
        request, minutes = self.discrete.requests[index], self.minutes(index)
        if self.user_cap is not None and self.user_minutes[request.user_id] + minutes > self.user_cap:
            return "user_cap"
        if (self.institution_cap is not None
                and self.institution_minutes[request.institution_id] + minutes > self.institution_cap):
            return "institution_cap"
        return None

    def share_allows(self, index: int) -> bool:
        """Whether granting request `index` keeps the external share rule satisfied."""
        if self.discrete.requests[index].external or not self.share:
            return True
        if self.external_target is not None and self.external_minutes >= self.external_target:
            return True
        return self.external_minutes >= self.share * (self.total_minutes + self.minutes(index))

    def earliest(self, option_index: int, ranges: list[Span]) -> int | None:
        """Earliest start in inclusive `ranges` that overlaps no placement on the option's instrument."""
        option = self.discrete.options[option_index]
        length = self.discrete.units[option.request]
        starts, ends = self.starts[option.instrument_id], self.ends[option.instrument_id]
        for first, last in ranges:
            candidate = first
            while candidate <= last:
                position = bisect.bisect_right(ends, candidate)
                if position < len(starts) and starts[position] < candidate + length:
                    candidate = ends[position]
                    continue
                return candidate
        return None

    def best_slot(self, index: int) -> tuple[int, int] | None:
        """(option, start) for request `index`: inside preferred hours if possible, then the earliest start,
        then the lowest instrument id."""
        for preferred in (True, False):
            best: tuple[int, int, int] | None = None
            for option_index in self.discrete.options_of[index]:
                option = self.discrete.options[option_index]
                start = self.earliest(option_index, option.preferred if preferred else option.starts)
                if start is not None and (best is None or (start, option.instrument_id) < best[:2]):
                    best = (start, option.instrument_id, option_index)
            if best is not None:
                return best[2], best[0]
        return None

    def tightest_slot(self, index: int) -> tuple[int, int] | None:
        """(option, start) for request `index` in the free gap it fills best (least time left over in it),
        preferred hours first, then the earliest start and the lowest instrument id. Keeping large gaps for
        long requests is what makes best-fit packing better than first-fit."""
        discrete = self.discrete
        length = discrete.units[index]
        for preferred in (True, False):
            best: tuple[int, int, int, int] | None = None
            for option_index in discrete.options_of[index]:
                option = discrete.options[option_index]
                starts, ends = self.starts[option.instrument_id], self.ends[option.instrument_id]
                pieces = discrete.free_units[option.instrument_id]
                for first, last in option.preferred if preferred else option.starts:
                    # The free piece this start range lies in, cut by the placements inside it.
                    ends_of_pieces = discrete.free_ends[option.instrument_id]
                    piece_lo, piece_hi = pieces[bisect.bisect_right(ends_of_pieces, first)]
                    position = bisect.bisect_left(ends, piece_lo + 1)
                    gap_lo = piece_lo
                    while gap_lo < piece_hi:
                        gap_hi = starts[position] if position < len(starts) and starts[position] < piece_hi \
                            else piece_hi
                        start = max(gap_lo, first)
                        if start <= min(gap_hi - length, last):
                            key = (gap_hi - gap_lo - length, start, option.instrument_id, option_index)
                            if best is None or key < best:
                                best = key
                        if gap_hi >= piece_hi:
                            break
                        gap_lo = ends[position]
                        position += 1
            if best is not None:
                return best[3], best[1]
        return None

    def place(self, index: int, option_index: int, start: int) -> None:
        instrument_id = self.discrete.options[option_index].instrument_id
        position = bisect.bisect_left(self.starts[instrument_id], start)
        self.starts[instrument_id].insert(position, start)
        self.ends[instrument_id].insert(position, start + self.discrete.units[index])
        self.owners[instrument_id].insert(position, index)
        self.placed[index] = (option_index, start)
        self._count(index, +1)

    def unplace(self, index: int) -> None:
        option_index, start = self.placed.pop(index)
        instrument_id = self.discrete.options[option_index].instrument_id
        position = bisect.bisect_left(self.starts[instrument_id], start)
        del self.starts[instrument_id][position], self.ends[instrument_id][position]
        del self.owners[instrument_id][position]
        self._count(index, -1)

    def _count(self, index: int, sign: int) -> None:
        request, minutes = self.discrete.requests[index], sign * self.minutes(index)
        self.user_minutes[request.user_id] += minutes
        self.institution_minutes[request.institution_id] += minutes
        self.total_minutes += minutes
        if request.external:
            self.external_minutes += minutes

    def is_preferred(self, index: int) -> bool:
        option_index, start = self.placed[index]
        return any(first <= start <= last for first, last in self.discrete.options[option_index].preferred)

    def weighted(self) -> int:
        return sum(self.discrete.requests[i].weight * self.minutes(i) for i in self.placed)

    def score(self, indices: Iterable[int], value: Sequence[int]) -> tuple[int, int]:
        """(objective value, preferred minutes) of the placed requests among `indices`."""
        placed = [i for i in indices if i in self.placed]
        return (sum(value[i] for i in placed), sum(self.minutes(i) for i in placed if self.is_preferred(i)))


def _new_board(discrete: _Discrete, policy: AllocationPolicy, *, with_share: bool,
               external_target: int | None = None) -> _Board:
    share = Fraction(str(policy.external_min_share)) if with_share else Fraction(0)
    return _Board(discrete, policy.cap_minutes(policy.user_cap_hours),
                  policy.cap_minutes(policy.institution_cap_hours), share, external_target)


def _greedy(board: _Board, order: Iterable[int], *, respect_share: bool, best_fit: bool = False) -> None:
    for index in order:
        if index in board.placed or board.cap_blocker(index):
            continue
        if respect_share and not board.share_allows(index):
            continue
        slot = board.tightest_slot(index) if best_fit else board.best_slot(index)
        if slot is not None:
            board.place(index, *slot)


def _first_come_order(discrete: _Discrete) -> list[int]:
    requests = discrete.requests
    return sorted(range(len(requests)), key=lambda i: (requests[i].submitted_at or _EARLIEST, requests[i].id))


def _priority_order(discrete: _Discrete) -> list[int]:
    # Heaviest first; among equals the most constrained (fewest options) and the longest, so big, rare
    # requests are not crowded out by small flexible ones.
    requests = discrete.requests
    return sorted(
        range(len(requests)),
        key=lambda i: (-requests[i].weight, len(discrete.options_of[i]), -requests[i].duration_minutes,
                       requests[i].submitted_at or _EARLIEST, requests[i].id),
    )


def _longest_order(discrete: _Discrete) -> list[int]:
    # Long requests are the hardest to fit: placing them first leaves the small ones to fill the gaps.
    requests = discrete.requests
    return sorted(range(len(requests)),
                  key=lambda i: (-discrete.units[i], -requests[i].weight, requests[i].id))


# CP-SAT over a part of the round (or all of it).

_UNBOUNDED: Span = (-(10**9), 10**9)


@dataclass
class _Outcome:
    placements: dict[int, tuple[int, int]]  # new placement of every movable request that is granted
    score: tuple[int, int]
    status: str
    deterministic_time: float
    wall_limited: bool


def _restrict(ranges: list[Span], length: int, free: list[Span]) -> list[Span]:
    """Inclusive start ranges narrowed to placements of `length` inside the half-open `free` pieces."""
    pieces = [(first, last + length) for first, last in ranges]
    return _start_ranges(_intersect_spans(pieces, free), length)


def _solve_part(
    board: _Board,
    movable: Sequence[int],
    *,
    instruments: frozenset[int] | None,
    span: Span,
    value: Sequence[int],
    policy: AllocationPolicy,
    deterministic_limit: float,
    wall_limit: float,
    presolve: bool,
) -> _Outcome:
    """Re-place the `movable` requests (granted or not) optimally while every other placement stays put.

    Movable requests may use only `instruments` (None = all) and start and end inside `span`; the caps and the
    external share count the fixed placements. Maximises sum(value) of granted movable requests, then their
    minutes inside preferred hours."""
    discrete = board.discrete
    moving = frozenset(movable)
    free: dict[int, list[Span]] = {}

    def free_pieces(instrument_id: int) -> list[Span]:
        if instrument_id not in free:
            spans = zip(board.starts[instrument_id], board.ends[instrument_id], board.owners[instrument_id],
                        strict=True)
            fixed = [(start, end) for start, end, owner in spans if owner not in moving]
            pieces, cursor = [], span[0]
            for start, end in fixed:
                if start > cursor:
                    pieces.append((cursor, min(start, span[1])))
                cursor = max(cursor, end)
            if cursor < span[1]:
                pieces.append((cursor, span[1]))
            free[instrument_id] = [(lo, hi) for lo, hi in pieces if lo < hi]
        return free[instrument_id]

    model = cp_model.CpModel()
    presence: dict[int, cp_model.IntVar] = {}
    start_of: dict[int, cp_model.IntVar] = {}
    inside_of: dict[int, cp_model.IntVar] = {}
    intervals: dict[int, list[cp_model.IntervalVar]] = defaultdict(list)
    chosen_by: dict[int, list[int]] = defaultdict(list)
    for index in movable:
        length = discrete.units[index]
        for option_index in discrete.options_of[index]:
            option = discrete.options[option_index]
            if instruments is not None and option.instrument_id not in instruments:
                continue
            starts = _restrict(option.starts, length, free_pieces(option.instrument_id))
            if not starts:
                continue
            chosen = model.new_bool_var(f"x{option_index}")
            start = model.new_int_var_from_domain(cp_model.Domain.from_intervals(starts), f"s{option_index}")
            intervals[option.instrument_id].append(
                model.new_optional_fixed_size_interval_var(start, length, chosen, f"i{option_index}")
            )
            presence[option_index], start_of[option_index] = chosen, start
            chosen_by[index].append(option_index)
            preferred = _restrict(option.preferred, length, free_pieces(option.instrument_id))
            if preferred:
                inside = model.new_bool_var(f"p{option_index}")
                model.add_linear_expression_in_domain(
                    start, cp_model.Domain.from_intervals(preferred)
                ).only_enforce_if(inside)
                model.add_implication(inside, chosen)
                inside_of[option_index] = inside
    for index in sorted(chosen_by):
        if len(chosen_by[index]) > 1:
            model.add_at_most_one(presence[o] for o in chosen_by[index])
    for instrument_id in sorted(intervals):
        if len(intervals[instrument_id]) > 1:
            model.add_no_overlap(intervals[instrument_id])

    def granted(index: int) -> cp_model.LinearExprT:
        return sum(presence[o] for o in chosen_by[index])

    placed_movable = [i for i in movable if i in board.placed]
    requests = discrete.requests
    for cap, owner_of, booked in (
        (board.user_cap, _user_of, board.user_minutes),
        (board.institution_cap, _institution_of, board.institution_minutes),
    ):
        if cap is None:
            continue
        members: dict[int, list[int]] = defaultdict(list)
        for index in chosen_by:
            members[owner_of(requests[index])].append(index)
        for owner in sorted(members):
            lifted = sum(board.minutes(i) for i in placed_movable if owner_of(requests[i]) == owner)
            room = cap - (booked[owner] - lifted)
            if sum(board.minutes(i) for i in members[owner]) > room:
                model.add(sum(board.minutes(i) * granted(i) for i in members[owner]) <= room)

    if board.share:
        fixed_external = board.external_minutes - sum(
            board.minutes(i) for i in placed_movable if requests[i].external)
        fixed_total = board.total_minutes - sum(board.minutes(i) for i in placed_movable)
        external = fixed_external + sum(
            board.minutes(i) * granted(i) for i in chosen_by if requests[i].external)
        everything = fixed_total + sum(board.minutes(i) * granted(i) for i in chosen_by)
        by_share = model.new_bool_var("by_share")
        model.add(board.share.denominator * external >= board.share.numerator * everything).only_enforce_if(
            by_share)
        if board.external_target is not None:
            model.add(external >= board.external_target).only_enforce_if(~by_share)
        else:
            model.add(by_share == 1)

    # Preference minutes can never add up to one unit of value (lexicographic order): at most one option per
    # request is chosen, so they total at most the movable requests' minutes.
    scale = 1 + sum(board.minutes(i) for i in chosen_by)
    variables: list[cp_model.IntVar] = []
    coefficients: list[int] = []
    for index in sorted(chosen_by):
        variables.extend(presence[o] for o in chosen_by[index])
        coefficients.extend(scale * value[index] for _ in chosen_by[index])
    for option_index in sorted(inside_of):
        variables.append(inside_of[option_index])
        coefficients.append(board.minutes(discrete.options[option_index].request))
    model.maximize(cp_model.LinearExpr.weighted_sum(variables, coefficients))

    # The current placements are feasible here: hint them so the search starts from the incumbent.
    for index, options in chosen_by.items():
        current = board.placed.get(index)
        for option_index in options:
            here = current is not None and current[0] == option_index
            hinted_start = current[1] if current is not None and here else None
            model.add_hint(presence[option_index], here)
            if hinted_start is not None:
                model.add_hint(start_of[option_index], hinted_start)
                if option_index in inside_of:
                    model.add_hint(inside_of[option_index], board.is_preferred(index))
            elif option_index in inside_of:
                model.add_hint(inside_of[option_index], False)

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = policy.random_seed
    solver.parameters.max_deterministic_time = max(deterministic_limit, 0.001)
    solver.parameters.max_time_in_seconds = max(wall_limit, 0.01)
    # For parts, presolve costs more than it saves: they are small and re-solved from a complete hint.
    solver.parameters.cp_model_presolve = presolve
    status = solver.solve(model)
    placements: dict[int, tuple[int, int]] = {}
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        for index, options in chosen_by.items():
            for option_index in options:
                if solver.boolean_value(presence[option_index]):
                    placements[index] = (option_index, solver.value(start_of[option_index]))
        inside_minutes = sum(board.minutes(discrete.options[o].request)
                             for o in inside_of if solver.boolean_value(inside_of[o]))
        score = (sum(value[i] for i in placements), inside_minutes)
    else:
        score = (-1, -1)
    wall_limited = (status != cp_model.OPTIMAL
                    and solver.deterministic_time < 0.99 * solver.parameters.max_deterministic_time)
    return _Outcome(placements, score, solver.status_name(status), solver.deterministic_time, wall_limited)


def _apply_if_better(board: _Board, movable: Sequence[int], outcome: _Outcome, value: Sequence[int]) -> bool:
    if outcome.score <= board.score(movable, value):
        return False
    for index in movable:
        if index in board.placed:
            board.unplace(index)
    for index in sorted(outcome.placements):
        board.place(index, *outcome.placements[index])
    return True


# Parts are small enough for CP-SAT to solve them in a few hundredths of a deterministic second.
EXACT_OPTION_LIMIT = 3000
PART_DAYS = 2
PART_INSTRUMENTS = 6
PART_OWNERS = 4
PART_UNGRANTED = 120
PART_DETERMINISTIC_LIMIT = 0.1
# Charged per part besides CP-SAT's own deterministic time: building the model and starting the solver cost
# about that much, uncounted by CP-SAT, and the charge ends the loop even if every part is trivial.
PART_OVERHEAD = 0.01


def _neighbourhoods(
    board: _Board, members: list[int], value: Sequence[int], rng: random.Random
) -> Iterator[tuple[list[int], frozenset[int] | None, Span]]:
    """An endless, seeded sequence of parts: alternately a block of days on a few instruments, and all
    requests of a few users (which lets the caps be re-balanced)."""
    discrete = board.discrete
    day = timedelta(days=1) // discrete.step
    member_set = frozenset(members)
    instrument_ids = sorted(
        {discrete.options[o].instrument_id for i in members for o in discrete.options_of[i]})
    first_day = min(first for i in members for o in discrete.options_of[i]
                    for first, _ in discrete.options[o].starts) // day
    last_day = max(last for i in members for o in discrete.options_of[i]
                   for _, last in discrete.options[o].starts) // day
    users = sorted({discrete.requests[i].user_id for i in members})
    by_user: dict[int, list[int]] = defaultdict(list)
    # Start ranges of each request per instrument, so a part is assembled without scanning every option.
    ranges_on: list[dict[int, list[Span]]] = [{} for _ in discrete.requests]
    for index in members:
        by_user[discrete.requests[index].user_id].append(index)
        for option_index in discrete.options_of[index]:
            option = discrete.options[option_index]
            ranges_on[index][option.instrument_id] = option.starts

    def block(chosen: frozenset[int], span: Span, waiting_limit: int) -> list[int]:
        """Granted requests lying in `span` on `chosen`, and the most valuable waiting ones that could."""
        movable = [
            owner
            for instrument_id in chosen
            for start, end, owner in zip(board.starts[instrument_id], board.ends[instrument_id],
                                         board.owners[instrument_id], strict=True)
            if owner in member_set and span[0] <= start and end <= span[1]
        ]
        waiting = [
            i for i in member_set - board.placed.keys()
            if any(first <= span[1] - discrete.units[i] and last >= span[0]
                   for instrument_id in chosen for first, last in ranges_on[i].get(instrument_id, ()))
        ]
        waiting.sort(key=lambda i: (-value[i], i))
        return sorted(movable + waiting[:waiting_limit])

    while True:
        # A few days on a few instruments around where a refused request could go: re-packs gaps locally.
        refused = sorted(i for i in member_set - board.placed.keys() if discrete.options_of[i])
        if refused:
            option = discrete.options[rng.choice(discrete.options_of[rng.choice(refused)])]
            first, last = rng.choice(option.starts)
            start_day = rng.randint(first, last) // day - rng.randrange(PART_DAYS)
            others = [instrument for instrument in instrument_ids if instrument != option.instrument_id]
            extra = rng.sample(others, min(PART_INSTRUMENTS - 1, len(others)))
            chosen = frozenset([option.instrument_id, *extra])
        else:
            start_day = rng.randint(first_day, last_day)
            chosen = frozenset(rng.sample(instrument_ids, min(PART_INSTRUMENTS, len(instrument_ids))))
        span = (start_day * day, (start_day + PART_DAYS) * day)
        yield block(chosen, span, PART_UNGRANTED), chosen, span

        # All of a few users' requests: re-balances who uses their cap on what.
        hungry = sorted({discrete.requests[i].user_id for i in member_set - board.placed.keys()
                         if discrete.options_of[i]})
        pool = hungry or users
        picked = rng.sample(pool, min(PART_OWNERS, len(pool)))
        movable = sorted(i for user in picked for i in by_user[user])
        # Their current instruments (so every granted one can stay) and a few more to move to.
        held = {discrete.options[board.placed[i][0]].instrument_id for i in movable if i in board.placed}
        others = [instrument for instrument in instrument_ids if instrument not in held]
        extra = rng.sample(others, min(max(PART_INSTRUMENTS - len(held), 0), len(others)))
        yield movable, frozenset(held | set(extra)), _UNBOUNDED


def _maximise(
    board: _Board,
    members: list[int],
    value: Sequence[int],
    policy: AllocationPolicy,
    *,
    budget: float,
    deadline: float,
) -> tuple[_Board, str, bool]:
    """Improve `board` for the `members` requests. Small rounds are solved whole; larger ones by large
    neighbourhood search: parts re-solved exactly by CP-SAT, each kept only when it scores better.
    Returns the board, a status text and whether the deterministic budget (not the wall clock) ended it."""
    discrete = board.discrete
    if not members:
        return board, "empty", True
    option_count = sum(len(discrete.options_of[i]) for i in members)
    if option_count <= EXACT_OPTION_LIMIT:
        outcome = _solve_part(board, members, instruments=None, span=_UNBOUNDED, value=value, policy=policy,
                              deterministic_limit=budget, wall_limit=deadline - wallclock.perf_counter(),
                              presolve=True)
        _apply_if_better(board, members, outcome, value)
        return board, outcome.status, not outcome.wall_limited
    rng = random.Random(policy.random_seed)
    spent, parts, improved, deterministic = 0.0, 0, 0, True
    for movable, instruments, span in _neighbourhoods(board, members, value, rng):
        if spent >= budget:
            break
        remaining_wall = deadline - wallclock.perf_counter()
        if remaining_wall <= 0:
            deterministic = False
            break
        if not movable:
            spent += PART_OVERHEAD
            continue
        outcome = _solve_part(board, movable, instruments=instruments, span=span, value=value, policy=policy,
                              deterministic_limit=min(PART_DETERMINISTIC_LIMIT, budget - spent),
                              wall_limit=remaining_wall, presolve=False)
        deterministic = deterministic and not outcome.wall_limited
        spent += outcome.deterministic_time + PART_OVERHEAD
        parts += 1
        improved += _apply_if_better(board, movable, outcome, value)
    return board, f"LNS: {parts} parts, {improved} improved", deterministic


# After the search.


def _compact(board: _Board) -> None:
    """Move every placement to the earliest start its instrument allows, keeping it inside preferred hours if
    it was; the order on each instrument is kept, so nothing starts to overlap and no sum changes."""
    discrete = board.discrete
    for instrument_id in sorted(board.owners):
        previous_end: int | None = None
        for index in list(board.owners[instrument_id]):
            option_index, start = board.placed[index]
            option = discrete.options[option_index]
            earliest = None
            for first, last in option.preferred if board.is_preferred(index) else option.starts:
                candidate = first if previous_end is None else max(first, previous_end)
                if candidate <= min(last, start):
                    earliest = candidate
                    break
            if earliest is not None and earliest < start:
                board.unplace(index)
                board.place(index, option_index, earliest)
                start = earliest
            previous_end = start + discrete.units[index]


def _fill(board: _Board, order: list[int]) -> None:
    """Grant refused requests that still fit, in `order`, until nothing changes (an external grant can make
    room in the share for an internal one)."""
    changed = True
    while changed:
        changed = False
        for index in order:
            if index in board.placed or board.cap_blocker(index) or not board.share_allows(index):
                continue
            slot = board.best_slot(index)
            if slot is not None:
                board.place(index, *slot)
                changed = True


def _local_text(start: datetime, end: datetime) -> str:
    local_start, local_end = start.astimezone(LOCAL_TZ), end.astimezone(LOCAL_TZ)
    if local_end.date() == local_start.date():
        end_text = f"{local_end:%H:%M}"
    else:
        end_text = f"{local_end.month}月{local_end.day}日 {local_end:%H:%M}"
    return f"{local_start.month}月{local_start.day}日 {local_start:%H:%M}–{end_text}"


def _hours_text(minutes: int) -> str:
    return f"{(Decimal(minutes) / 60).quantize(Decimal('0.01')):f}".rstrip("0").rstrip(".")


def _decisions(board: _Board, *, explain_share: bool) -> tuple[Decision, ...]:
    discrete = board.discrete
    decisions: list[Decision] = []
    for index, request in enumerate(discrete.requests):
        if index not in board.placed:
            code, reason = _refusal(board, index, explain_share=explain_share)
            decisions.append(Decision(request.id, False, code, reason))
            continue
        option_index, start_unit = board.placed[index]
        instrument_id = discrete.options[option_index].instrument_id
        start = discrete.instant(start_unit)
        end = start + timedelta(minutes=request.duration_minutes)
        if board.is_preferred(index):
            code, why = "granted_preferred", "位于您的偏好时段内，且是该仪器上满足条件的最早时段"
        elif request.preferred_hours:
            code, why = ("granted_outside_preference",
                         "偏好时段内已无可用空档，故安排在允许时间窗内该仪器最早的可用时段")
        else:
            code, why = "granted", "在您允许的时间窗内，是该仪器上兼顾本轮全部申请后最早的可用时段"
        reason = f"已安排在仪器 #{instrument_id}，{_local_text(start, end)}：{why}"
        decisions.append(Decision(request.id, True, code, reason, instrument_id, start, end))
    return tuple(decisions)


def _refusal(board: _Board, index: int, *, explain_share: bool) -> tuple[str, str]:
    discrete = board.discrete
    request = discrete.requests[index]
    hours = _hours_text(request.duration_minutes)
    if not discrete.options_of[index]:
        return "no_fit", f"在允许的时间窗内，候选仪器都没有连续 {hours} 小时的空闲时段"
    if board.best_slot(index) is None:
        return "capacity", (f"允许时间窗内能容纳 {hours} 小时的空闲时段，已分配给本轮优先级更高"
                            "或合计收益更大的其他申请")
    blocker = board.cap_blocker(index)
    if blocker == "user_cap":
        used, cap = _hours_text(board.user_minutes[request.user_id]), _hours_text(board.user_cap or 0)
        return "user_cap", f"申请人本轮已获批 {used} 小时，再批 {hours} 小时将超过每人上限 {cap} 小时"
    if blocker == "institution_cap":
        used = _hours_text(board.institution_minutes[request.institution_id])
        cap = _hours_text(board.institution_cap or 0)
        return "institution_cap", (
            f"所在单位本轮已获批 {used} 小时，再批 {hours} 小时将超过每单位上限 {cap} 小时"
        )
    if explain_share and not board.share_allows(index):
        share = f"{float(board.share) * 100:g}%"
        return "external_share", f"为保证外部用户机时占比不低于 {share}，本轮内部用户的机时已满"
    # `_fill` grants every request that fits and is allowed, so this is reached only if that rule changes.
    return "capacity", "本轮可分配机时已满"


# Public entry points.


def _allocation(board: _Board, method: str, status: str, deterministic: bool, began: float,
                *, explain_share: bool) -> Allocation:
    requests = board.discrete.requests
    return Allocation(
        decisions=_decisions(board, explain_share=explain_share),
        method=method,
        solver_status=status,
        deterministic=deterministic,
        solve_seconds=wallclock.perf_counter() - began,
        granted_minutes=board.total_minutes,
        weighted_minutes=board.weighted(),
        external_minutes=sum(board.minutes(i) for i in board.placed if requests[i].external),
        external_target_minutes=board.external_target,
    )


def greedy_first_come(
    requests: Sequence[FlexibleRequest], free: Mapping[int, Sequence[Interval]], policy: AllocationPolicy
) -> Allocation:
    """Baseline: requests in submission order each take their earliest feasible slot (preferred hours first),
    caps respected, external share ignored. `free` maps instrument id to its free intervals (UTC)."""
    began = wallclock.perf_counter()
    discrete = _discretise(requests, free, policy.slot_minutes)
    board = _new_board(discrete, policy, with_share=False)
    _greedy(board, _first_come_order(discrete), respect_share=False)
    return _allocation(board, "greedy-first-come", "", True, began, explain_share=False)


def allocate(
    requests: Sequence[FlexibleRequest], free: Mapping[int, Sequence[Interval]], policy: AllocationPolicy
) -> Allocation:
    """Resolve a round: maximise priority-weighted granted minutes under the policy (module docstring).
    `free` maps instrument id to its free intervals (UTC), existing bookings and their buffers removed."""
    began = wallclock.perf_counter()
    deadline = began + policy.time_limit_seconds
    discrete = _discretise(requests, free, policy.slot_minutes)
    everyone = list(range(len(discrete.requests)))
    minutes = [request.duration_minutes for request in discrete.requests]
    statuses: list[str] = []
    deterministic = True
    budget = policy.deterministic_time_limit

    external_target: int | None = None
    if policy.external_min_share:
        # First: the most external minutes attainable at all, which is what the share may demand at most.
        externals = [i for i in _priority_order(discrete) if discrete.requests[i].external]
        target_board = _new_board(discrete, policy, with_share=False)
        _greedy(target_board, externals, respect_share=False, best_fit=True)
        target_board, status, exact = _maximise(
            target_board, sorted(externals), minutes, policy,
            budget=budget * EXTERNAL_TARGET_TIME_SHARE, deadline=deadline,
        )
        external_target = target_board.total_minutes
        statuses.append(f"external target: {status}")
        deterministic = deterministic and exact
        budget -= budget * EXTERNAL_TARGET_TIME_SHARE

    value = [request.weight * request.duration_minutes for request in discrete.requests]
    candidates = []
    # The first-come order is among the candidates so that the result is never worse than the baseline's.
    for order, best_fit in ((_priority_order(discrete), True), (_longest_order(discrete), True),
                            (_longest_order(discrete), False), (_first_come_order(discrete), False)):
        candidate = _new_board(discrete, policy, with_share=True, external_target=external_target)
        _greedy(candidate, order, respect_share=True, best_fit=best_fit)
        candidates.append(candidate)
    board = max(candidates, key=lambda candidate: candidate.score(everyone, value))
    board, status, exact = _maximise(board, everyone, value, policy, budget=budget, deadline=deadline)
    statuses.append(status)
    deterministic = deterministic and exact
    _compact(board)
    _fill(board, _priority_order(discrete))
    return _allocation(board, "cp-sat", "; ".join(statuses), deterministic, began,
                       explain_share=bool(policy.external_min_share))


def best_placement(
    request: FlexibleRequest, free: Mapping[int, Sequence[Interval]], slot_minutes: int
) -> Decision:
    """Place one flexible request at once (immediate placement): inside preferred hours if possible, else the
    earliest grid start on any candidate, ties to the lower instrument id. `free` as for `allocate`."""
    policy = AllocationPolicy(slot_minutes=slot_minutes)
    discrete = _discretise([request], free, slot_minutes)
    board = _new_board(discrete, policy, with_share=False)
    _greedy(board, [0], respect_share=False)
    return _decisions(board, explain_share=False)[0]


def _most_within(lengths: Iterable[int], cap: int) -> int:
    """The largest total of a subset of `lengths` not above `cap` (subset sum on a bitset)."""
    reachable, mask = 1, (1 << (cap + 1)) - 1
    for length in lengths:
        reachable |= (reachable << length) & mask
    return reachable.bit_length() - 1


def upper_bound(
    requests: Sequence[FlexibleRequest], free: Mapping[int, Sequence[Interval]], policy: AllocationPolicy
) -> UpperBound:
    """An upper bound on the minutes any allocation can grant.

    Instruments and requests are grouped by candidacy (connected components); a group grants at most
    min(minutes asked by its requests that fit somewhere, free minutes of its instruments inside the union of
    its requests' windows, counting only free pieces at least as long as its shortest request). The caps bound
    the total again: a user gets at most the largest sum of their requests' durations within the user cap,
    an institution at most the smaller of that over its requests within its cap and the sum of its users'
    bounds."""
    discrete = _discretise(requests, free, policy.slot_minutes)
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def find(node: tuple[str, int]) -> tuple[str, int]:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for option in discrete.options:
        left, right = find(("r", option.request)), find(("i", option.instrument_id))
        if left != right:
            parent[max(left, right)] = min(left, right)
    members: dict[tuple[str, int], list[tuple[str, int]]] = defaultdict(list)
    for node in list(parent):
        members[find(node)].append(node)

    groups: list[GroupBound] = []
    for root in sorted(members):
        request_indices = sorted(n[1] for n in members[root] if n[0] == "r")
        instrument_ids = sorted(n[1] for n in members[root] if n[0] == "i")
        shortest = min(discrete.units[i] for i in request_indices)
        capacity_units = 0
        for instrument_id in instrument_ids:
            windows = _merge_spans(
                span for i in request_indices for span in discrete.window_units.get((i, instrument_id), [])
            )
            pieces = _intersect_spans(windows, discrete.free_units.get(instrument_id, []))
            capacity_units += sum(hi - lo for lo, hi in pieces if hi - lo >= shortest)
        groups.append(GroupBound(
            instrument_ids=tuple(instrument_ids),
            request_ids=tuple(discrete.requests[i].id for i in request_indices),
            requested_minutes=sum(discrete.requests[i].duration_minutes for i in request_indices),
            capacity_minutes=capacity_units * policy.slot_minutes,
        ))

    user_cap = policy.cap_minutes(policy.user_cap_hours)
    institution_cap = policy.cap_minutes(policy.institution_cap_hours)
    step = policy.slot_minutes
    by_user: dict[int, list[int]] = defaultdict(list)
    by_institution: dict[int, list[int]] = defaultdict(list)
    for index in range(len(discrete.requests)):
        if discrete.options_of[index]:
            by_user[discrete.requests[index].user_id].append(index)
            by_institution[discrete.requests[index].institution_id].append(index)
    # Most grid units each user and each institution could be granted, caps and request lengths considered.
    user_units: dict[int, int] = {}
    for user, indices in by_user.items():
        lengths = [discrete.units[i] for i in indices]
        user_units[user] = sum(lengths) if user_cap is None else _most_within(lengths, user_cap // step)
    institution_units: dict[int, int] = {}
    for institution, indices in by_institution.items():
        through_users = sum(user_units[user] for user in {discrete.requests[i].user_id for i in indices})
        if institution_cap is not None:
            lengths = [discrete.units[i] for i in indices]
            through_users = min(through_users, _most_within(lengths, institution_cap // step))
        institution_units[institution] = through_users
    flow = _flow_bound(discrete, user_units, institution_units) * step
    if user_cap is None and institution_cap is None:
        return UpperBound(tuple(groups), None, flow)
    return UpperBound(tuple(groups), sum(institution_units.values()) * step, flow)


_FLOW_MODULI = (2, 4, 8)


def _flow_bound(
    discrete: _Discrete, user_units: Mapping[int, int], institution_units: Mapping[int, int]
) -> int:
    """Maximum flow in grid units: source → institution → user (the most each can be granted) → request (its
    length) → free piece of an instrument that could hold it within its window → sink (the piece's length).
    Every allocation is such a flow with each request unsplit, so the maximum bounds them all."""
    graph = max_flow.SimpleMaxFlow()
    nodes: dict[tuple[str, int, int], int] = {}

    def node(key: tuple[str, int, int]) -> int:
        return nodes.setdefault(key, len(nodes))

    source, sink = node(("source", 0, 0)), node(("sink", 0, 0))
    for index, request in enumerate(discrete.requests):
        if not discrete.options_of[index]:
            continue
        institution = ("institution", request.institution_id, 0)
        user = ("user", request.institution_id, request.user_id)
        if institution not in nodes:
            graph.add_arc_with_capacity(source, node(institution), institution_units[request.institution_id])
        if user not in nodes:
            graph.add_arc_with_capacity(nodes[institution], node(user), user_units[request.user_id])
        length = discrete.units[index]
        request_node = node(("request", index, 0))
        graph.add_arc_with_capacity(nodes[user], request_node, length)
        reachable: set[tuple[int, int]] = set()
        for option_index in discrete.options_of[index]:
            option = discrete.options[option_index]
            for first, _ in option.starts:
                piece = bisect.bisect_right(discrete.free_ends[option.instrument_id], first)
                reachable.add((option.instrument_id, piece))
        # A request enters a piece through the node of the largest modulus dividing its length (below).
        modulus = max((m for m in _FLOW_MODULI if length % m == 0), default=1)
        for instrument_id, piece in sorted(reachable):
            piece_key = ("piece", instrument_id, piece)
            if piece_key not in nodes:
                lo, hi = discrete.free_units[instrument_id][piece]
                graph.add_arc_with_capacity(node(piece_key), sink, hi - lo)
                # Requests whose lengths are multiples of m fill at most the largest multiple of m that fits:
                # a chain of nodes per modulus (8 → 4 → 2 → piece) states it for whole requests, which
                # splitting would otherwise ignore (a 5-unit gap "filled" by halves of two 4-unit requests).
                below = nodes[piece_key]
                for m in _FLOW_MODULI:
                    chain = node(("modulus", instrument_id, piece * 16 + m))
                    graph.add_arc_with_capacity(chain, below, (hi - lo) // m * m)
                    below = chain
            entry = piece_key if modulus == 1 else ("modulus", instrument_id, piece * 16 + modulus)
            graph.add_arc_with_capacity(request_node, nodes[entry], length)
    if graph.solve(source, sink) != graph.OPTIMAL:
        raise RuntimeError("maximum flow failed")
    return int(graph.optimal_flow())


def _user_of(request: FlexibleRequest) -> int:
    return request.user_id


def _institution_of(request: FlexibleRequest) -> int:
    return request.institution_id
