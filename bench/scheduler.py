"""Allocation round benchmark: flexible requests on equivalent instruments; CP-SAT vs greedy vs a bound.

    python bench/scheduler.py                          # 1,000 requests, 50 instruments, 4 weeks
    python bench/scheduler.py --occupancy 0.6 --seed 7

The scenario is synthetic but shaped like a provincial round: 50 equivalent instruments open Monday to
Friday 08:30-17:30 local time, already carry bookings (`--occupancy` of their opening time, in blocks of
1-6 h) and one calibration morning each; 1,000 requests from 300 users in 40 institutions (a third
external) ask for 1-8 hours (mostly 1-4) anywhere in a window of 1-5 working days on any of the
instruments, some with preferred morning or afternoon hours, priority weights 1-3. Policy: 16 h per user
and 120 h per institution in the round, external share >= 30%. Each occupancy given is its own scenario.

Every result is checked independently (no overlap, inside a window and inside free time, caps, share) before
its figures are printed. Targets: `allocate` within 5 s and granted hours >= 95% of the upper bound.
Wall-clock seconds depend on what else runs on the machine; CPU seconds are printed beside them.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time as wallclock
from collections import defaultdict
from datetime import date, time, timedelta
from decimal import Decimal
from pathlib import Path

# The project may be installed from another checkout; measure this one.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduling.availability import Availability, Blackout, Busy, WeeklyWindow
from scheduling.intervals import Interval, local_at, total
from scheduling.optimizer import (
    Allocation,
    AllocationPolicy,
    Candidate,
    FlexibleRequest,
    allocate,
    greedy_first_come,
    upper_bound,
)

FIRST_MONDAY = date(2027, 3, 1)
OPENING = ((time(8, 30), time(17, 30)),)
PREFERRED = ((time(8, 30), time(12, 0)), (time(13, 0), time(17, 30)))
SLOT_MINUTES = 30
# Minutes asked by a request, and how often: mostly a few hours, some whole days.
DURATIONS = (60, 90, 120, 180, 240, 360, 480)
DURATION_WEIGHTS = (15, 10, 25, 20, 15, 10, 5)


def working_days(weeks: int) -> list[date]:
    every_day = (FIRST_MONDAY + timedelta(days=offset) for offset in range(weeks * 7))
    return [day for day in every_day if day.weekday() < 5]


def instruments_free(
    count: int, weeks: int, occupancy: float, rng: random.Random
) -> dict[int, list[Interval]]:
    """Free time per instrument: opening windows minus a calibration morning and random existing bookings."""
    weekly = tuple(WeeklyWindow(weekday, start, end) for weekday in range(5) for start, end in OPENING)
    start, end = local_at(FIRST_MONDAY, time(0)), local_at(FIRST_MONDAY + timedelta(weeks=weeks), time(0))
    free: dict[int, list[Interval]] = {}
    for instrument_id in range(1, count + 1):
        calibration_day = FIRST_MONDAY + timedelta(days=rng.randrange(weeks * 7))
        calibration = Blackout(local_at(calibration_day, time(8, 30)), local_at(calibration_day, time(12, 0)),
                               "月度校准")
        availability = Availability(weekly=weekly, blackouts=(calibration,), follow_holidays=False)
        opening = availability.open_intervals(start, end)
        open_minutes = total(opening) // timedelta(minutes=1)
        busy: list[Busy] = []
        taken = 0
        while taken < occupancy * open_minutes:
            piece = rng.choice(opening)
            slots = int(piece.duration // timedelta(minutes=SLOT_MINUTES))
            length = rng.randint(2, min(12, slots))
            booking_start = piece.start + timedelta(minutes=rng.randint(0, slots - length) * SLOT_MINUTES)
            busy.append(Busy(booking_start, booking_start + timedelta(minutes=length * SLOT_MINUTES)))
            taken = total(b.interval for b in busy) // timedelta(minutes=1)
        free[instrument_id] = availability.free_intervals(start, end, busy)
    return free


def flexible_requests(
    count: int, instrument_ids: list[int], weeks: int, rng: random.Random
) -> list[FlexibleRequest]:
    days = working_days(weeks)
    users = [(user_id, 1 + user_id % 40, user_id % 3 == 0) for user_id in range(1, 301)]
    durations = rng.choices(DURATIONS, weights=DURATION_WEIGHTS, k=count)
    submitted = local_at(FIRST_MONDAY - timedelta(weeks=4), time(0))
    requests = []
    for request_id in range(1, count + 1):
        user_id, institution_id, external = rng.choice(users)
        first = rng.randrange(len(days))
        last = days[min(first + rng.randint(1, 5), len(days) - 1)]
        window = Interval(local_at(days[first], time(0)), local_at(last + timedelta(days=1), time(0)))
        requests.append(FlexibleRequest(
            id=request_id,
            user_id=user_id,
            institution_id=institution_id,
            external=external,
            duration_minutes=durations[request_id - 1],
            candidates=tuple(Candidate(instrument_id, (window,)) for instrument_id in instrument_ids),
            weight=rng.choice([1, 1, 2, 3]),
            preferred_hours=(rng.choice(PREFERRED),) if rng.random() < 0.3 else (),
            submitted_at=submitted + timedelta(minutes=rng.randrange(60 * 24 * 14)),
        ))
    return requests


def verify(allocation: Allocation, requests: list[FlexibleRequest], free: dict[int, list[Interval]],
           policy: AllocationPolicy, *, check_share: bool) -> None:
    """Independent feasibility check of an allocation; raises AssertionError on the first violation."""
    by_id = {request.id: request for request in requests}
    per_instrument: dict[int, list[Interval]] = defaultdict(list)
    user_minutes: dict[int, int] = defaultdict(int)
    institution_minutes: dict[int, int] = defaultdict(int)
    external = granted = 0
    for decision in allocation.decisions:
        if not decision.granted:
            continue
        assert decision.start is not None and decision.end is not None and decision.instrument_id is not None
        request = by_id[decision.request_id]
        placed = Interval(decision.start, decision.end)
        assert placed.duration == timedelta(minutes=request.duration_minutes)
        windows = [w for c in request.candidates if c.instrument_id == decision.instrument_id
                   for w in c.windows]
        assert any(w.contains(placed) for w in windows), f"request {request.id} outside its window"
        assert any(f.contains(placed) for f in free[decision.instrument_id]), f"request {request.id} not free"
        per_instrument[decision.instrument_id].append(placed)
        user_minutes[request.user_id] += request.duration_minutes
        institution_minutes[request.institution_id] += request.duration_minutes
        granted += request.duration_minutes
        external += request.duration_minutes if request.external else 0
    for placements in per_instrument.values():
        assert all(a.end <= b.start for a, b in itertools.pairwise(sorted(placements))), "overlap"
    if policy.user_cap_hours is not None:
        assert max(user_minutes.values(), default=0) <= policy.user_cap_hours * 60, "user cap"
    if policy.institution_cap_hours is not None:
        limit = policy.institution_cap_hours * 60
        assert max(institution_minutes.values(), default=0) <= limit, "institution cap"
    if check_share and granted:
        share_met = Decimal(external) >= policy.external_min_share * granted
        target = allocation.external_target_minutes
        assert share_met or (target is not None and external >= target), "external share"


def run(args: argparse.Namespace, occupancy: float) -> tuple[bool, bool]:
    rng = random.Random(args.seed)
    free = instruments_free(args.instruments, args.weeks, occupancy, rng)
    free_minutes = sum(total(pieces) // timedelta(minutes=1) for pieces in free.values())
    requests = flexible_requests(args.requests, sorted(free), args.weeks, rng)
    policy = AllocationPolicy(
        slot_minutes=SLOT_MINUTES,
        user_cap_hours=Decimal(16),
        institution_cap_hours=Decimal(120),
        external_min_share=Decimal("0.3"),
        deterministic_time_limit=args.deterministic_time,
    )

    began = wallclock.perf_counter()
    bound = upper_bound(requests, free, policy)
    bound_seconds = wallclock.perf_counter() - began
    greedy = greedy_first_come(requests, free, policy)
    verify(greedy, requests, free, policy, check_share=False)
    began, began_cpu = wallclock.perf_counter(), wallclock.process_time()
    solved = allocate(requests, free, policy)
    seconds, cpu = wallclock.perf_counter() - began, wallclock.process_time() - began_cpu
    verify(solved, requests, free, policy, check_share=True)

    requested = sum(r.duration_minutes for r in requests)
    print(f"occupancy {occupancy:.0%}: {len(requests)} requests, {args.instruments} instruments, "
          f"{args.weeks} weeks, seed {args.seed}")
    print(f"  free {free_minutes / 60:,.0f} h, requested {requested / 60:,.0f} h; upper bound "
          f"{bound.minutes / 60:,.1f} h (groups {bound.group_minutes / 60:,.0f}, caps "
          f"{(bound.cap_bound_minutes or 0) / 60:,.0f}, flow {bound.flow_minutes / 60:,.1f}; "
          f"{bound_seconds:.2f} s)")
    for label, result, wall, used in (("greedy first-come", greedy, greedy.solve_seconds, None),
                                      ("allocate (CP-SAT)", solved, seconds, cpu)):
        count = sum(1 for d in result.decisions if d.granted)
        timing = f"{wall:.2f} s" + (f" ({used:.2f} s CPU)" if used is not None else "")
        share = result.granted_minutes / bound.minutes
        print(f"  {label}: {result.granted_minutes / 60:,.1f} h = {share:.1%} of bound, weighted "
              f"{result.weighted_minutes / 60:,.1f}, {count} granted, external {result.external_share:.1%}, "
              f"{timing}")
    print(f"  allocate / greedy: hours {solved.granted_minutes / greedy.granted_minutes:.3f}x, weighted "
          f"{solved.weighted_minutes / greedy.weighted_minutes:.3f}x; deterministic {solved.deterministic}; "
          f"{solved.solver_status}")
    codes: dict[str, int] = defaultdict(int)
    for decision in solved.decisions:
        codes[decision.code] += 1
    print("  decisions: " + ", ".join(f"{code} {count}" for code, count in sorted(codes.items())))
    ok_time, ok_bound = seconds <= 5.0, solved.granted_minutes >= 0.95 * bound.minutes
    print(f"  targets: <= 5 s {'met' if ok_time else 'MISSED'}; >= 95% of bound "
          f"{'met' if ok_bound else 'MISSED'}")
    return ok_time, ok_bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--instruments", type=int, default=50)
    parser.add_argument("--weeks", type=int, default=4)
    parser.add_argument("--occupancy", default="0.5,0.6,0.7",
                        help="share of opening time already booked; several, comma-separated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deterministic-time", type=float,
                        default=AllocationPolicy().deterministic_time_limit)
    args = parser.parse_args()
    for occupancy in (float(value) for value in args.occupancy.split(",")):
        run(args, occupancy)


if __name__ == "__main__":
    main()
