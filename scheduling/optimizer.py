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

Method: CP-SAT on start times discretised to the slot grid (counted from local midnight): one optional
fixed-size interval per (request, candidate instrument) whose start domain is exactly the grid starts that fit
in the window and the free time, `AddNoOverlap` per instrument, at most one option per request, linear caps.
The best of two greedy solutions is given as a hint. Afterwards every placement is moved as early as its
instrument allows (without leaving its preferred hours), and refused requests that still fit are added
greedily, so the result is canonical and every refusal has a real cause.

Determinism: requests are sorted by id and candidates by instrument id before the model is built, and CP-SAT
runs on one worker with a fixed seed and a *deterministic* time budget, so the same input gives the same
output on any machine. The wall-clock limit is only a safety net; when it, rather than the deterministic
budget, stops the search, `Allocation.deterministic` is False.

`greedy_first_come` is the baseline (submission order, earliest slot, caps respected, no external share);
`upper_bound` bounds the granted hours from above for judging both.
"""

from __future__ import annotations

import bisect
import time as wallclock
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction

from ortools.sat.python import cp_model

from booking.core.clock import LOCAL_TZ
from booking.core.errors import Problem
from scheduling.intervals import Interval, local_at, local_date, local_midnight

# Half-open [lo, hi) in grid units (or, for start domains, inclusive [first, last]: named where used).
Span = tuple[int, int]

MINUTES_PER_DAY = 1440
# Part of the deterministic budget spent finding how many external minutes are attainable at all.
EXTERNAL_TARGET_TIME_SHARE = 0.25
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
    granted hours; `deterministic_time_limit` in CP-SAT's deterministic time units (roughly seconds on a fast
    core), the limit that decides the result; `time_limit_seconds` wall-clock seconds, a safety net."""

    slot_minutes: int = 30
    user_cap_hours: Decimal | None = None
    institution_cap_hours: Decimal | None = None
    external_min_share: Decimal = Decimal(0)
    deterministic_time_limit: float = 3.0
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
    """An upper bound on granted minutes: per group min(requested, capacity), further capped by the user and
    institution caps (each user can get at most min(cap, asked))."""

    groups: tuple[GroupBound, ...]
    cap_bound_minutes: int | None

    @property
    def minutes(self) -> int:
        by_groups = sum(group.bound_minutes for group in self.groups)
        return by_groups if self.cap_bound_minutes is None else min(by_groups, self.cap_bound_minutes)

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


# --- building the discrete problem
# ---------------------------------------------------------------------------------


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
    discrete = _Discrete(ordered, [], [], [], origin, step, {}, {})
    for instrument_id, intervals in free.items():
        discrete.free_units[instrument_id] = _merge_spans(
            (discrete.ceil(item.start), discrete.floor(item.end)) for item in intervals
        )
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
            windows_by_instrument[candidate.instrument_id].extend(
                (discrete.ceil(window.start), discrete.floor(window.end)) for window in candidate.windows
            )
        mine: list[int] = []
        for instrument_id in sorted(windows_by_instrument):
            windows = _merge_spans(windows_by_instrument[instrument_id])
            discrete.window_units[(index, instrument_id)] = windows
            pieces = _intersect_spans(windows, discrete.free_units.get(instrument_id, []))
            starts = _start_ranges(pieces, length)
            if not starts:
                continue
            preferred_starts = _start_ranges(_intersect_spans(pieces, preferred), length) if preferred else []
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


# --- placements and the greedy core
# ---------------------------------------------------------------------------------


@dataclass
class _Board:
    """Placements being built, with the sums the caps and the share need."""

    discrete: _Discrete
    user_cap: int | None
    institution_cap: int | None
    share: Fraction
    external_target: int | None
    starts: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    ends: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
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
        if self.discrete.requests[index].external or not self.share:
            return True
        if self.external_target is not None and self.external_minutes >= self.external_target:
            return True
        return self.external_minutes >= self.share * (self.total_minutes + self.minutes(index))

    def share_met(self) -> bool:
        if not self.share:
            return True
        if self.external_target is not None and self.external_minutes >= self.external_target:
            return True
        return self.external_minutes >= self.share * self.total_minutes

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

    def best_slot(self, index: int) -> tuple[int, int, bool] | None:
        """(option, start, preferred) for request `index`: preferred hours first, earliest, lowest id."""
        for preferred in (True, False):
            best: tuple[int, int, int] | None = None
            for option_index in self.discrete.options_of[index]:
                option = self.discrete.options[option_index]
                ranges = option.preferred if preferred else option.starts
                start = self.earliest(option_index, ranges)
                if start is not None and (best is None or (start, option.instrument_id) < best[:2]):
                    best = (start, option.instrument_id, option_index)
            if best is not None:
                return best[2], best[0], preferred
        return None

    def place(self, index: int, option_index: int, start: int) -> None:
        option = self.discrete.options[option_index]
        length = self.discrete.units[index]
        starts, ends = self.starts[option.instrument_id], self.ends[option.instrument_id]
        position = bisect.bisect_left(starts, start)
        starts.insert(position, start)
        ends.insert(position, start + length)
        self.placed[index] = (option_index, start)
        request, minutes = self.discrete.requests[index], self.minutes(index)
        self.user_minutes[request.user_id] += minutes
        self.institution_minutes[request.institution_id] += minutes
        self.total_minutes += minutes
        if request.external:
            self.external_minutes += minutes

    def unplace(self, index: int) -> tuple[int, int]:
        option_index, start = self.placed.pop(index)
        instrument_id = self.discrete.options[option_index].instrument_id
        starts, ends = self.starts[instrument_id], self.ends[instrument_id]
        position = bisect.bisect_left(starts, start)
        del starts[position], ends[position]
        request, minutes = self.discrete.requests[index], self.minutes(index)
        self.user_minutes[request.user_id] -= minutes
        self.institution_minutes[request.institution_id] -= minutes
        self.total_minutes -= minutes
        if request.external:
            self.external_minutes -= minutes
        return option_index, start

    def is_preferred(self, index: int) -> bool:
        option_index, start = self.placed[index]
        return any(first <= start <= last for first, last in self.discrete.options[option_index].preferred)

    def weighted(self) -> int:
        return sum(self.discrete.requests[i].weight * self.minutes(i) for i in self.placed)


def _new_board(discrete: _Discrete, policy: AllocationPolicy, *, with_share: bool,
               external_target: int | None = None) -> _Board:
    share = Fraction(str(policy.external_min_share)) if with_share else Fraction(0)
    return _Board(discrete, policy.cap_minutes(policy.user_cap_hours),
                  policy.cap_minutes(policy.institution_cap_hours), share, external_target)


def _greedy(board: _Board, order: Iterable[int], *, respect_share: bool) -> None:
    for index in order:
        if index in board.placed or board.cap_blocker(index):
            continue
        if respect_share and not board.share_allows(index):
            continue
        slot = board.best_slot(index)
        if slot is not None:
            board.place(index, slot[0], slot[1])


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


# --- CP-SAT
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Solved:
    placements: dict[int, tuple[int, int]]
    status: str
    deterministic: bool


def _solve(
    discrete: _Discrete,
    policy: AllocationPolicy,
    members: list[int],
    *,
    hint: Mapping[int, tuple[int, int]],
    objective: str,
    external_target: int | None,
    time_share: float,
) -> _Solved:
    """CP-SAT over the requests in `members`. `objective` is "weighted" (weight × minutes, then preferred
    minutes) or "minutes" (plain granted minutes, for the external target)."""
    model = cp_model.CpModel()
    presence: dict[int, cp_model.IntVar] = {}
    start_of: dict[int, cp_model.IntVar] = {}
    intervals: dict[int, list[cp_model.IntervalVar]] = defaultdict(list)
    preferred_terms: list[tuple[int, cp_model.IntVar]] = []
    for index in members:
        length = discrete.units[index]
        for option_index in discrete.options_of[index]:
            option = discrete.options[option_index]
            chosen = model.new_bool_var(f"x{option_index}")
            domain = cp_model.Domain.from_intervals(option.starts)
            start = model.new_int_var_from_domain(domain, f"s{option_index}")
            intervals[option.instrument_id].append(
                model.new_optional_fixed_size_interval_var(start, length, chosen, f"i{option_index}")
            )
            presence[option_index], start_of[option_index] = chosen, start
            if objective == "weighted" and option.preferred:
                inside = model.new_bool_var(f"p{option_index}")
                model.add_linear_expression_in_domain(
                    start, cp_model.Domain.from_intervals(option.preferred)
                ).only_enforce_if(inside)
                model.add_implication(inside, chosen)
                preferred_terms.append((discrete.requests[index].duration_minutes, inside))
        if len(discrete.options_of[index]) > 1:
            model.add_at_most_one(presence[o] for o in discrete.options_of[index])
    for instrument_id in sorted(intervals):
        model.add_no_overlap(intervals[instrument_id])

    weight_of = {o: discrete.requests[discrete.options[o].request].weight for o in presence}
    granted_minutes = {
        option_index: discrete.requests[discrete.options[option_index].request].duration_minutes
        for option_index in presence
    }
    caps = (
        (policy.cap_minutes(policy.user_cap_hours), _user_of),
        (policy.cap_minutes(policy.institution_cap_hours), _institution_of),
    )
    for cap, owner_of in caps:
        if cap is None:
            continue
        by_owner: dict[int, list[int]] = defaultdict(list)
        for option_index in presence:
            by_owner[owner_of(discrete.requests[discrete.options[option_index].request])].append(option_index)
        for owner in sorted(by_owner):
            options = by_owner[owner]
            if sum(granted_minutes[o] for o in options) > cap:
                model.add(sum(granted_minutes[o] * presence[o] for o in options) <= cap)

    share = Fraction(str(policy.external_min_share))
    if objective == "weighted" and share:
        external = sum(granted_minutes[o] * presence[o] for o in presence
                       if discrete.requests[discrete.options[o].request].external)
        everything = sum(granted_minutes[o] * presence[o] for o in presence)
        by_share = model.new_bool_var("by_share")
        model.add(share.denominator * external >= share.numerator * everything).only_enforce_if(by_share)
        if external_target is not None:
            model.add(external >= external_target).only_enforce_if(~by_share)
        else:
            model.add(by_share == 1)

    if objective == "weighted":
        # Preference minutes can never add up to one weighted minute of a granted request: lexicographic
        # order.
        scale = sum(minutes for minutes, _ in preferred_terms) + 1
        model.maximize(
            sum(
                scale * weight_of[o] * granted_minutes[o] * presence[o]
                for o in presence
            )
            + sum(minutes * inside for minutes, inside in preferred_terms)
        )
    else:
        model.maximize(sum(granted_minutes[o] * presence[o] for o in presence))

    for option_index in presence:
        placed = hint.get(discrete.options[option_index].request)
        if placed is not None and placed[0] == option_index:
            model.add_hint(presence[option_index], True)
            model.add_hint(start_of[option_index], placed[1])
        else:
            model.add_hint(presence[option_index], False)

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = policy.random_seed
    solver.parameters.max_deterministic_time = policy.deterministic_time_limit * time_share
    solver.parameters.max_time_in_seconds = policy.time_limit_seconds * time_share
    status = solver.solve(model)
    placements: dict[int, tuple[int, int]] = {}
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        for option_index, chosen in presence.items():
            if solver.boolean_value(chosen):
                placements[discrete.options[option_index].request] = (option_index,
                                                                      solver.value(start_of[option_index]))
    stopped_by_wall = (status != cp_model.OPTIMAL
                       and solver.deterministic_time < 0.99 * solver.parameters.max_deterministic_time)
    return _Solved(placements, solver.status_name(status), not stopped_by_wall)


# --- after the solver
# -----------------------------------------------------------------------------------------------


def _compact(board: _Board) -> None:
    """Move every placement to the earliest start its instrument allows, keeping it inside preferred hours if
    it was; order on each instrument is kept, so nothing can start to overlap and no sum changes."""
    discrete = board.discrete
    by_instrument: dict[int, list[int]] = defaultdict(list)
    for index, (option_index, _) in board.placed.items():
        by_instrument[discrete.options[option_index].instrument_id].append(index)
    for instrument_id in sorted(by_instrument):
        members = sorted(by_instrument[instrument_id], key=lambda i: board.placed[i][1])
        previous_end: int | None = None
        for index in members:
            option_index, start = board.placed[index]
            option = discrete.options[option_index]
            ranges = option.preferred if board.is_preferred(index) else option.starts
            earliest = None
            for first, last in ranges:
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
                board.place(index, slot[0], slot[1])
                changed = True


def _local_text(start: datetime, end: datetime) -> str:
    local_start, local_end = start.astimezone(LOCAL_TZ), end.astimezone(LOCAL_TZ)
    end_text = local_end.strftime("%H:%M") if local_end.date() == local_start.date() else \
        f"{local_end.month}月{local_end.day}日 {local_end:%H:%M}"
    return f"{local_start.month}月{local_start.day}日 {local_start:%H:%M}–{end_text}"


def _hours_text(minutes: int) -> str:
    hours = Decimal(minutes) / 60
    text = f"{hours.quantize(Decimal('0.01')):f}".rstrip("0").rstrip(".")
    return text


def _decisions(board: _Board, *, explain_share: bool) -> tuple[Decision, ...]:
    discrete = board.discrete
    decisions: list[Decision] = []
    for index, request in enumerate(discrete.requests):
        if index in board.placed:
            option_index, start_unit = board.placed[index]
            option = discrete.options[option_index]
            start = discrete.instant(start_unit)
            end = start + timedelta(minutes=request.duration_minutes)
            where = f"已安排在仪器 #{option.instrument_id}，{_local_text(start, end)}"
            if board.is_preferred(index):
                code, why = "granted_preferred", "位于您的偏好时段内，且是该仪器上满足条件的最早时段"
            elif request.preferred_hours:
                code, why = ("granted_outside_preference",
                             "偏好时段内已无可用空档，故安排在允许时间窗内该仪器最早的可用时段")
            else:
                code, why = "granted", "在您允许的时间窗内，是该仪器上兼顾本轮全部申请后最早的可用时段"
            decisions.append(
                Decision(request.id, True, code, f"{where}：{why}", option.instrument_id, start, end)
            )
            continue
        code, reason = _refusal(board, index, explain_share=explain_share)
        decisions.append(Decision(request.id, False, code, reason))
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
        used = _hours_text(board.user_minutes[request.user_id])
        cap = _hours_text(board.user_cap or 0)
        return "user_cap", f"申请人本轮已获批 {used} 小时，再批 {hours} 小时将超过每人上限 {cap} 小时"
    if blocker == "institution_cap":
        used = _hours_text(board.institution_minutes[request.institution_id])
        cap = _hours_text(board.institution_cap or 0)
        return "institution_cap", (
            f"所在单位本轮已获批 {used} 小时，再批 {hours} 小时将超过每单位上限 {cap} 小时"
        )
    if explain_share and not board.share_allows(index):
        share = f"{board.share.numerator * 100 / board.share.denominator:g}%"
        return "external_share", f"为保证外部用户机时占比不低于 {share}，本轮内部用户的机时已满"
    # Unreachable after `_fill`; kept so a refusal always carries a reason should the fill rules change.
    return "capacity", "本轮可分配机时已满"


# --- public entry points
# --------------------------------------------------------------------------------------------


def _allocation(board: _Board, method: str, status: str, deterministic: bool, seconds: float,
                *, explain_share: bool, external_target: int | None = None) -> Allocation:
    external = sum(board.minutes(i) for i in board.placed if board.discrete.requests[i].external)
    return Allocation(
        decisions=_decisions(board, explain_share=explain_share),
        method=method,
        solver_status=status,
        deterministic=deterministic,
        solve_seconds=seconds,
        granted_minutes=board.total_minutes,
        weighted_minutes=board.weighted(),
        external_minutes=external,
        external_target_minutes=external_target,
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
    return _allocation(board, "greedy-first-come", "", True, wallclock.perf_counter() - began,
                       explain_share=False)


def allocate(
    requests: Sequence[FlexibleRequest], free: Mapping[int, Sequence[Interval]], policy: AllocationPolicy
) -> Allocation:
    """Resolve a round: maximise priority-weighted granted minutes under the policy (see the module
    docstring). `free` maps instrument id to its free intervals (UTC), existing bookings and buffers already
    removed."""
    began = wallclock.perf_counter()
    discrete = _discretise(requests, free, policy.slot_minutes)
    everyone = list(range(len(discrete.requests)))
    share = Fraction(str(policy.external_min_share))

    external_target: int | None = None
    target_deterministic = True
    main_share = 1.0
    if share:
        # First solve: the most external minutes attainable at all, which bounds what the share can demand.
        externals = [i for i in _priority_order(discrete) if discrete.requests[i].external]
        external_hint = _new_board(discrete, policy, with_share=False)
        _greedy(external_hint, externals, respect_share=False)
        target = _solve(discrete, policy, sorted(externals), hint=external_hint.placed, objective="minutes",
                        external_target=None, time_share=EXTERNAL_TARGET_TIME_SHARE)
        target_deterministic = target.deterministic
        external_target = max(
            sum(discrete.requests[i].duration_minutes for i in placements)
            for placements in (target.placements, external_hint.placed)
        )
        main_share = 1.0 - EXTERNAL_TARGET_TIME_SHARE

    hints = []
    for order in (_priority_order(discrete), _first_come_order(discrete)):
        candidate = _new_board(discrete, policy, with_share=True, external_target=external_target)
        _greedy(candidate, order, respect_share=True)
        hints.append(candidate)
    hint = max(hints, key=lambda candidate: candidate.weighted())

    solved = _solve(discrete, policy, everyone, hint=hint.placed, objective="weighted",
                    external_target=external_target, time_share=main_share)
    board = _rebuild(discrete, policy, solved.placements, with_share=True, external_target=external_target)
    status = solved.status
    if board.weighted() < hint.weighted():
        # The budget ran out before the solver reached its own hint: never return less than the greedy
        # solution, which satisfies every constraint too.
        board = _rebuild(discrete, policy, hint.placed, with_share=True, external_target=external_target)
        status = f"{solved.status}; greedy hint kept"
    _compact(board)
    _fill(board, _priority_order(discrete))
    return _allocation(board, "cp-sat", status, solved.deterministic and target_deterministic,
                       wallclock.perf_counter() - began, explain_share=bool(share),
                       external_target=external_target)


def _rebuild(discrete: _Discrete, policy: AllocationPolicy, placements: Mapping[int, tuple[int, int]], *,
             with_share: bool, external_target: int | None = None) -> _Board:
    board = _new_board(discrete, policy, with_share=with_share, external_target=external_target)
    for index in sorted(placements):
        option_index, start = placements[index]
        board.place(index, option_index, start)
    return board


def best_placement(
    request: FlexibleRequest, free: Mapping[int, Sequence[Interval]], slot_minutes: int
) -> Decision:
    """Place one flexible request at once (issue 5's immediate placement): inside preferred hours if possible,
    else the earliest grid start on any candidate, ties to the lower instrument id. `free` as for
    `allocate`."""
    policy = AllocationPolicy(slot_minutes=slot_minutes)
    discrete = _discretise([request], free, slot_minutes)
    board = _new_board(discrete, policy, with_share=False)
    _greedy(board, [0], respect_share=False)
    return _decisions(board, explain_share=False)[0]


def upper_bound(
    requests: Sequence[FlexibleRequest], free: Mapping[int, Sequence[Interval]], policy: AllocationPolicy
) -> UpperBound:
    """An upper bound on the minutes any allocation can grant. Instruments and requests are grouped by
    candidacy (connected components); a group grants at most min(minutes asked by its requests that fit
    somewhere, free minutes of its instruments inside the union of its requests' windows, counting only free
    pieces at least as long as the group's shortest request). The user and institution caps bound the total
    again."""
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

    placeable = [i for i in range(len(discrete.requests)) if discrete.options_of[i]]
    cap_bounds: list[int] = []
    for cap, owner_of in (
        (policy.cap_minutes(policy.user_cap_hours), _user_of),
        (policy.cap_minutes(policy.institution_cap_hours), _institution_of),
    ):
        if cap is None:
            continue
        asked: dict[int, int] = defaultdict(int)
        for index in placeable:
            asked[owner_of(discrete.requests[index])] += discrete.requests[index].duration_minutes
        cap_bounds.append(sum(min(cap, minutes) for minutes in asked.values()))
    return UpperBound(tuple(groups), min(cap_bounds) if cap_bounds else None)


def _user_of(request: FlexibleRequest) -> int:
    return request.user_id


def _institution_of(request: FlexibleRequest) -> int:
    return request.institution_id

