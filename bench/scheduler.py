"""Allocation round benchmark: flexible requests over equivalent instruments, CP-SAT against greedy and a bound.

    python bench/scheduler.py                      # 1,000 requests, 50 instruments, 4 weeks
    python bench/scheduler.py --demand 1.5 --seed 7

The scenario is synthetic but shaped like a provincial round: instruments open Monday to Friday 08:30-12:00 and
13:30-17:30 local time, already carry bookings (`--occupancy` of their opening time), and have a monthly
calibration blackout; requests ask for 1-8 hours somewhere in a window of 1-5 working days, a third of them from
external users, some with preferred hours, priority weights 1-3. `--demand` scales the total requested hours
against the free capacity. Caps: 16 h per user and 120 h per institution in the round, external share >= 30%.

Every result is checked independently (no overlap, inside a window and inside free time, caps, share) before its
figures are printed. Targets: CP-SAT solve <= 5 s and granted hours >= 95% of the upper bound.
"""

from __future__ import annotations

import argparse
import random
import sys
import time as wallclock
from collections import defaultdict
from datetime import date, time, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduling.availability import Availability, Blackout, Busy, WeeklyWindow  # noqa: E402
from scheduling.intervals import Interval, local_at, total  # noqa: E402
from scheduling.optimizer import (  # noqa: E402
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
# Minutes asked by a request, and how often: mostly a few hours, some whole days.
DURATIONS = (60, 90, 120, 180, 240, 360, 480)
DURATION_WEIGHTS = (15, 10, 25, 20, 15, 10, 5)
SLOT_MINUTES = 30


def working_days(weeks: int) -> list[date]:
    every_day = (FIRST_MONDAY + timedelta(days=offset) for offset in range(weeks * 7))
    return [day for day in every_day if day.weekday() < 5]


def instruments_free(count: int, weeks: int, occupancy: float, rng: random.Random) -> dict[int, list[Interval]]:
    weekly = tuple(WeeklyWindow(weekday, start, end) for weekday in range(5) for start, end in OPENING)
    start, end = local_at(FIRST_MONDAY, time(0)), local_at(FIRST_MONDAY + timedelta(weeks=weeks), time(0))
    free: dict[int, list[Interval]] = {}
    for instrument_id in range(1, count + 1):
        calibration_day = FIRST_MONDAY + timedelta(days=rng.randrange(weeks * 7))
        availability = Availability(
            weekly=weekly,
            blackouts=(Blackout(local_at(calibration_day, time(8, 30)), local_at(calibration_day, time(12, 0)),
                                "月度校准"),),
            follow_holidays=False,
        )
        opening = availability.open_intervals(start, end)
        open_minutes = total(opening) // timedelta(minutes=1)
        busy: list[Busy] = []
        taken = 0
        while taken < occupancy * open_minutes:
            piece = rng.choice(opening)
            slots = int(piece.duration // timedelta(minutes=SLOT_MINUTES))
            length = rng.randint(2, min(12, slots))
            offset = rng.randint(0, slots - length)
            booking_start = piece.start + timedelta(minutes=offset * SLOT_MINUTES)
            busy.append(Busy(booking_start, booking_start + timedelta(minutes=length * SLOT_MINUTES)))
            taken = total(b.interval for b in busy) // timedelta(minutes=1)
        free[instrument_id] = availability.free_intervals(start, end, busy)
    return free


def flexible_requests(count: int, instrument_ids: list[int], weeks: int, rng: random.Random) -> list[FlexibleRequest]:
    days = working_days(weeks)
    users = [(user_id, 1 + user_id % 40, user_id % 3 == 0) for user_id in range(1, 301)]
    durations = rng.choices(DURATIONS, weights=DURATION_WEIGHTS, k=count)
    submitted = local_at(FIRST_MONDAY - timedelta(weeks=4), time(0))
    requests = []
    for request_id in range(1, count + 1):
        user_id, institution_id, external = rng.choice(users)
        first = rng.randrange(len(days))
        span = rng.randint(1, 5)
        last = days[min(first + span, len(days) - 1)]
        window = Interval(local_at(days[first], time(0)), local_at(last + timedelta(days=1), time(0)))
        preferred = ()
        if rng.random() < 0.3:
            preferred = (rng.choice(PREFERRED),)
        requests.append(FlexibleRequest(
            id=request_id,
            user_id=user_id,
            institution_id=institution_id,
            external=external,
            duration_minutes=durations[request_id - 1],
            candidates=tuple(Candidate(instrument_id, (window,)) for instrument_id in instrument_ids),
            weight=rng.choice([1, 1, 2, 3]),
            preferred_hours=preferred,
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
    external = total = 0
    for decision in allocation.decisions:
        if not decision.granted:
            continue
        assert decision.start is not None and decision.end is not None and decision.instrument_id is not None
        request = by_id[decision.request_id]
        placed = Interval(decision.start, decision.end)
        assert placed.duration == timedelta(minutes=request.duration_minutes)
        windows = [w for c in request.candidates if c.instrument_id == decision.instrument_id for w in c.windows]
        assert any(w.contains(placed) for w in windows), f"request {request.id} outside its window"
        assert any(f.contains(placed) for f in free[decision.instrument_id]), f"request {request.id} not free"
        per_instrument[decision.instrument_id].append(placed)
        user_minutes[request.user_id] += request.duration_minutes
        institution_minutes[request.institution_id] += request.duration_minutes
        total += request.duration_minutes
        external += request.duration_minutes if request.external else 0
    for placements in per_instrument.values():
        ordered = sorted(placements)
        assert all(a.end <= b.start for a, b in zip(ordered, ordered[1:], strict=False)), "overlap"
    if policy.user_cap_hours is not None:
        assert max(user_minutes.values(), default=0) <= policy.user_cap_hours * 60, "user cap"
    if policy.institution_cap_hours is not None:
        assert max(institution_minutes.values(), default=0) <= policy.institution_cap_hours * 60, "institution cap"
    if check_share and total:
        share_met = Decimal(external) >= policy.external_min_share * total
        target_met = allocation.external_target_minutes is not None and external >= allocation.external_target_minutes
        assert share_met or target_met, "external share"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--instruments", type=int, default=50)
    parser.add_argument("--weeks", type=int, default=4)
    parser.add_argument("--occupancy", type=float, default=0.6, help="share of opening time already booked")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deterministic-time", type=float, default=1.0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    began = wallclock.perf_counter()
    free = instruments_free(args.instruments, args.weeks, args.occupancy, rng)
    free_minutes = sum(total(pieces) // timedelta(minutes=1) for pieces in free.values())
    requests = flexible_requests(args.requests, sorted(free), args.weeks, rng)
    setup = wallclock.perf_counter() - began
    policy = AllocationPolicy(
        slot_minutes=SLOT_MINUTES,
        user_cap_hours=Decimal(16),
        institution_cap_hours=Decimal(120),
        external_min_share=Decimal("0.3"),
        deterministic_time_limit=args.deterministic_time,
        time_limit_seconds=10.0,
        random_seed=0,
    )

    began = wallclock.perf_counter()
    bound = upper_bound(requests, free, policy)
    bound_seconds = wallclock.perf_counter() - began
    greedy = greedy_first_come(requests, free, policy)
    verify(greedy, requests, free, policy, check_share=False)
    began = wallclock.perf_counter()
    solved = allocate(requests, free, policy)
    solve_seconds = wallclock.perf_counter() - began
    verify(solved, requests, free, policy, check_share=True)

    requested_hours = sum(r.duration_minutes for r in requests) / 60
    print(f"scenario: {len(requests)} requests, {args.instruments} instruments, {args.weeks} weeks, "
          f"occupancy {args.occupancy:.0%}, seed {args.seed} (set-up {setup:.2f} s)")
    print(f"  free capacity {free_minutes / 60:,.1f} h; requested {requested_hours:,.1f} h "
          f"({requested_hours * 60 / free_minutes:.2f}x)")
    print(f"  upper bound   {bound.minutes / 60:,.1f} h ({len(bound.groups)} group(s), {bound_seconds:.2f} s)")
    for label, result, seconds in (("greedy first-come", greedy, greedy.solve_seconds),
                                   ("cp-sat allocate", solved, solve_seconds)):
        granted = sum(1 for d in result.decisions if d.granted)
        print(f"  {label:18} {result.granted_minutes / 60:8,.1f} h = {result.granted_minutes / bound.minutes:6.1%} "
              f"of bound; weighted {result.weighted_minutes / 60:9,.1f}; {granted} granted; "
              f"external {result.external_share:.1%}; {seconds:.2f} s")
    print(f"  cp-sat vs greedy: hours {solved.granted_minutes / greedy.granted_minutes:.3f}x, "
          f"weighted {solved.weighted_minutes / greedy.weighted_minutes:.3f}x; status {solved.solver_status}; "
          f"deterministic {solved.deterministic}; external target {(solved.external_target_minutes or 0) / 60:.1f} h")
    codes: dict[str, int] = defaultdict(int)
    for decision in solved.decisions:
        codes[decision.code] += 1
    print("  decisions: " + ", ".join(f"{code} {count}" for code, count in sorted(codes.items())))
    ok_time = solve_seconds <= 5.0
    ok_bound = solved.granted_minutes >= 0.95 * bound.minutes
    print(f"  targets: solve <= 5 s {'met' if ok_time else 'MISSED'}; >= 95% of bound {'met' if ok_bound else 'MISSED'}")


if __name__ == "__main__":
    main()
