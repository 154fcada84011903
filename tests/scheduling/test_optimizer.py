from __future__ import annotations

import itertools
import random
from collections import defaultdict
from datetime import date, time, timedelta
from decimal import Decimal

import pytest

from scheduling import optimizer
from scheduling.intervals import Interval
from scheduling.optimizer import (
    Allocation,
    AllocationPolicy,
    Candidate,
    FlexibleRequest,
    allocate,
    best_placement,
    flexible_request_problems,
    greedy_first_come,
    upper_bound,
)
from tests.scheduling.clock import MONDAY, hm, local, span

POLICY = AllocationPolicy(slot_minutes=30)


def request(
    request_id: int,
    minutes: int,
    *,
    instruments: tuple[int, ...] = (1,),
    window: tuple[str, str] = ("00:00", "23:30"),
    day: date = MONDAY,
    user: int | None = None,
    institution: int = 1,
    external: bool = False,
    weight: int = 1,
    preferred: tuple[tuple[str, str], ...] = (),
    submitted_minute: int | None = None,
) -> FlexibleRequest:
    allowed = (span(day, *window),)
    return FlexibleRequest(
        id=request_id,
        user_id=request_id if user is None else user,
        institution_id=institution,
        external=external,
        duration_minutes=minutes,
        candidates=tuple(Candidate(instrument, allowed) for instrument in instruments),
        weight=weight,
        preferred_hours=tuple((hm(start), hm(end)) for start, end in preferred),
        submitted_at=None if submitted_minute is None else local(MONDAY, "00:00") + timedelta(
            minutes=submitted_minute),
    )


def granted(allocation: Allocation) -> dict[int, tuple[int | None, str]]:
    """Granted request id -> (instrument, local start "HH:MM")."""
    return {
        d.request_id: (d.instrument_id, d.start.astimezone(local(MONDAY, "00:00").tzinfo).strftime("%H:%M"))
        for d in allocation.decisions if d.granted and d.start is not None
    }


def codes(allocation: Allocation) -> dict[int, str]:
    return {decision.request_id: decision.code for decision in allocation.decisions}


def assert_feasible(allocation: Allocation, requests: list[FlexibleRequest], free: dict[int, list[Interval]],
                    policy: AllocationPolicy) -> None:
    by_id = {r.id: r for r in requests}
    assert sorted(d.request_id for d in allocation.decisions) == sorted(by_id)
    placed: dict[int, list[Interval]] = defaultdict(list)
    users: dict[int, int] = defaultdict(int)
    institutions: dict[int, int] = defaultdict(int)
    for decision in allocation.decisions:
        assert decision.reason
        if not decision.granted:
            continue
        assert decision.start and decision.end and decision.instrument_id is not None
        r = by_id[decision.request_id]
        booking = Interval(decision.start, decision.end)
        assert booking.duration == timedelta(minutes=r.duration_minutes)
        windows = [w for c in r.candidates if c.instrument_id == decision.instrument_id for w in c.windows]
        assert any(w.contains(booking) for w in windows)
        assert any(f.contains(booking) for f in free[decision.instrument_id])
        placed[decision.instrument_id].append(booking)
        users[r.user_id] += r.duration_minutes
        institutions[r.institution_id] += r.duration_minutes
    for bookings in placed.values():
        ordered = sorted(bookings)
        assert all(a.end <= b.start for a, b in itertools.pairwise(ordered))
    if policy.user_cap_hours is not None:
        assert all(minutes <= policy.user_cap_hours * 60 for minutes in users.values())
    if policy.institution_cap_hours is not None:
        assert all(minutes <= policy.institution_cap_hours * 60 for minutes in institutions.values())


def random_round(seed: int, requests: int = 30, instruments: int = 4) -> tuple[list[FlexibleRequest],
                                                                              dict[int, list[Interval]]]:
    rng = random.Random(seed)
    days = [MONDAY + timedelta(days=n) for n in range(3)]
    free: dict[int, list[Interval]] = {}
    for instrument in range(1, instruments + 1):
        pieces = []
        for day in days:
            start = rng.choice(["08:00", "08:30", "09:00"])
            middle = rng.choice(["11:00", "12:00", "12:30"])
            pieces += [span(day, start, middle), span(day, rng.choice(["13:00", "14:00"]), "17:30")]
        free[instrument] = pieces
    built = []
    for request_id in range(1, requests + 1):
        day = rng.choice(days)
        built.append(request(
            request_id, rng.choice([60, 90, 120, 180, 240]), day=day,
            instruments=tuple(sorted(rng.sample(range(1, instruments + 1), rng.randint(1, instruments)))),
            user=rng.randint(1, 8), institution=rng.randint(1, 3), external=rng.random() < 0.3,
            weight=rng.choice([1, 2, 3]), submitted_minute=rng.randrange(1000),
            preferred=(("08:00", "12:00"),) if rng.random() < 0.3 else (),
        ))
    return built, free


class TestAllocate:
    def test_heavier_request_wins_the_only_slot(self) -> None:
        free = {1: [span(MONDAY, "09:00", "11:00")]}
        result = allocate([request(1, 120, weight=1), request(2, 120, weight=3)], free, POLICY)
        assert granted(result) == {2: (1, "09:00")}
        refused = result.decision_for(1)
        assert refused.code == "capacity" and "空闲时段" in refused.reason

    def test_spreads_over_equivalent_instruments(self) -> None:
        free = {1: [span(MONDAY, "09:00", "11:00")], 2: [span(MONDAY, "09:00", "11:00")]}
        requests = [request(1, 120, instruments=(1, 2)), request(2, 120, instruments=(1, 2))]
        result = allocate(requests, free, POLICY)
        assert sorted(granted(result).values()) == [(1, "09:00"), (2, "09:00")]

    def test_packs_to_fit_everything(self) -> None:
        # First-fit in submission order puts the 1 h request at 09:00 and leaves no 2 h gap.
        free = {1: [span(MONDAY, "09:00", "11:00"), span(MONDAY, "13:00", "14:00")]}
        requests = [request(1, 60, submitted_minute=1), request(2, 120, submitted_minute=2)]
        assert set(granted(greedy_first_come(requests, free, POLICY))) == {1}
        result = allocate(requests, free, POLICY)
        assert granted(result) == {1: (1, "13:00"), 2: (1, "09:00")}
        assert result.solver_status == "OPTIMAL"

    @pytest.mark.parametrize(
        ("policy", "expected_granted", "refusal"),
        [
            (AllocationPolicy(user_cap_hours=Decimal(3)), {2}, ("user_cap", "每人上限 3 小时")),
            (AllocationPolicy(institution_cap_hours=Decimal(3)), {2},
             ("institution_cap", "每单位上限 3 小时")),
            (AllocationPolicy(), {1, 2}, None),
        ],
        ids=["user cap", "institution cap", "no cap"],
    )
    def test_caps(self, policy: AllocationPolicy, expected_granted: set[int],
                  refusal: tuple[str, str] | None) -> None:
        free = {1: [span(MONDAY, "08:00", "18:00")]}
        requests = [request(1, 120, user=5, weight=1), request(2, 120, user=5, weight=2)]
        result = allocate(requests, free, policy)
        assert set(granted(result)) == expected_granted
        if refusal:
            decision = result.decision_for(1)
            assert decision.code == refusal[0] and refusal[1] in decision.reason

    def test_external_share_holds_the_slot_for_external_users(self) -> None:
        free = {1: [span(MONDAY, "09:00", "13:00")]}
        requests = [request(1, 240, external=True, weight=1), request(2, 120, weight=3),
                    request(3, 120, weight=3)]
        assert set(granted(allocate(requests, free, POLICY))) == {2, 3}
        result = allocate(requests, free, AllocationPolicy(external_min_share=Decimal("0.5")))
        assert set(granted(result)) == {1}
        assert result.external_share == 1

    def test_share_refusal_when_time_is_left(self) -> None:
        # External users could get 6 h (both external requests), but the heavy internal request 2 is worth
        # more than external request 1 it displaces; then the share caps internal time at the 3 h external
        # users get, and requests 3 and 4 are refused although instrument 2 is free.
        free = {1: [span(MONDAY, "09:00", "12:00")], 2: [span(MONDAY, "08:00", "18:00")],
                3: [span(MONDAY, "09:00", "12:00")]}
        requests = [request(1, 180, instruments=(1,), external=True),
                    request(2, 180, instruments=(1,), weight=9),
                    request(3, 120, instruments=(2,)), request(4, 120, instruments=(2,)),
                    request(5, 180, instruments=(3,), external=True)]
        result = allocate(requests, free, AllocationPolicy(external_min_share=Decimal("0.5")))
        assert set(granted(result)) == {2, 5}
        assert [codes(result)[n] for n in (1, 3, 4)] == ["capacity", "external_share", "external_share"]
        assert "50%" in result.decision_for(4).reason
        assert result.external_share == Decimal("0.5")
        assert result.external_target_minutes == 360

    def test_share_does_not_refuse_when_external_users_got_everything(self) -> None:
        free = {1: [span(MONDAY, "08:00", "18:00")]}
        requests = [request(1, 60, external=True), request(2, 240), request(3, 240)]
        result = allocate(requests, free, AllocationPolicy(external_min_share=Decimal("0.5")))
        assert set(granted(result)) == {1, 2, 3}
        assert result.external_target_minutes == 60

    @pytest.mark.parametrize(
        ("preferred", "taken", "code", "start"),
        [
            ((("14:00", "17:00"),), None, "granted_preferred", "14:00"),
            ((("14:00", "17:00"),), ("14:00", "17:00"), "granted_outside_preference", "09:00"),
            ((), None, "granted", "09:00"),
        ],
        ids=["inside preferred hours", "preferred hours taken", "no preference"],
    )
    def test_preferred_hours(self, preferred: tuple[tuple[str, str], ...], taken: tuple[str, str] | None,
                             code: str, start: str) -> None:
        free = {1: [span(MONDAY, "09:00", "17:00")]}
        requests = [request(1, 120, preferred=preferred)]
        if taken:
            requests.append(request(2, 180, window=taken, weight=5))
        result = allocate(requests, free, POLICY)
        assert codes(result)[1] == code
        assert granted(result)[1] == (1, start)

    def test_no_fit(self) -> None:
        free = {1: [span(MONDAY, "09:00", "17:00")]}
        result = allocate([request(1, 120, window=("09:00", "10:00"))], free, POLICY)
        assert codes(result) == {1: "no_fit"}

    def test_unknown_instrument_is_no_fit(self) -> None:
        result = allocate([request(1, 60, instruments=(99,))], {1: [span(MONDAY, "09:00", "17:00")]}, POLICY)
        assert codes(result) == {1: "no_fit"}

    def test_empty_round(self) -> None:
        result = allocate([], {1: [span(MONDAY, "09:00", "17:00")]}, POLICY)
        assert result.decisions == () and result.granted_minutes == 0

    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_same_input_same_output(self, seed: int) -> None:
        requests, free = random_round(seed)
        policy = AllocationPolicy(user_cap_hours=Decimal(4), external_min_share=Decimal("0.3"),
                                  deterministic_time_limit=0.2)
        first = allocate(requests, free, policy)
        shuffled = requests[:]
        random.Random(seed).shuffle(shuffled)
        second = allocate(shuffled, {k: list(reversed(v)) for k, v in reversed(free.items())}, policy)
        assert first.decisions == second.decisions
        assert first.deterministic and second.deterministic

    @pytest.mark.parametrize("seed", [4, 5, 6, 7])
    def test_feasible_and_explained(self, seed: int) -> None:
        requests, free = random_round(seed)
        policy = AllocationPolicy(user_cap_hours=Decimal(5), institution_cap_hours=Decimal(20),
                                  external_min_share=Decimal("0.25"), deterministic_time_limit=0.2)
        result = allocate(requests, free, policy)
        assert_feasible(result, requests, free, policy)
        assert {d.code for d in result.decisions} <= {
            "granted", "granted_preferred", "granted_outside_preference", "no_fit", "capacity", "user_cap",
            "institution_cap", "external_share"}
        ext = result.external_minutes
        assert ext * 4 >= result.granted_minutes or ext >= (result.external_target_minutes or 0)

    @pytest.mark.parametrize("seed", [8, 9])
    def test_neighbourhood_search_path(self, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
        # Force the large-round path on a small round, where its result can still be checked.
        monkeypatch.setattr(optimizer, "EXACT_OPTION_LIMIT", 0)
        requests, free = random_round(seed, requests=40)
        policy = AllocationPolicy(user_cap_hours=Decimal(5), deterministic_time_limit=0.2)
        result = allocate(requests, free, policy)
        assert result.solver_status.startswith("LNS")
        assert_feasible(result, requests, free, policy)
        assert result.weighted_minutes >= greedy_first_come(requests, free, policy).weighted_minutes
        assert allocate(requests, free, policy).decisions == result.decisions

    def test_small_round_is_optimal(self) -> None:
        # Brute force over every choice of start (or refusal) on a 4-hour instrument.
        free = {1: [span(MONDAY, "09:00", "13:00")]}
        requests = [request(1, 90, weight=2), request(2, 120, weight=1), request(3, 60, weight=3),
                    request(4, 150, weight=2), request(5, 30, weight=1)]
        result = allocate(requests, free, POLICY)
        starts = [None, *range(0, 8)]  # half hours after 09:00
        best = 0
        for choice in itertools.product(starts, repeat=len(requests)):
            busy: list[tuple[int, int]] = []
            value = 0
            feasible = True
            for r, start in zip(requests, choice, strict=True):
                if start is None:
                    continue
                end = start + r.duration_minutes // 30
                if end > 8 or any(start < b and a < end for a, b in busy):
                    feasible = False
                    break
                busy.append((start, end))
                value += r.weight * r.duration_minutes
            if feasible:
                best = max(best, value)
        assert result.weighted_minutes == best

    def test_granted_requests_start_as_early_as_possible(self) -> None:
        free = {1: [span(MONDAY, "09:00", "17:00")]}
        result = allocate([request(1, 60), request(2, 60), request(3, 60)], free, POLICY)
        assert sorted(start for _, start in granted(result).values()) == ["09:00", "10:00", "11:00"]


class TestGreedyFirstCome:
    def test_first_come_wins_regardless_of_weight(self) -> None:
        free = {1: [span(MONDAY, "09:00", "11:00")]}
        requests = [request(1, 120, weight=9, submitted_minute=10),
                    request(2, 120, weight=1, submitted_minute=5)]
        assert set(granted(greedy_first_come(requests, free, POLICY))) == {2}

    def test_ignores_external_share_but_respects_caps(self) -> None:
        free = {1: [span(MONDAY, "08:00", "18:00")]}
        requests = [request(1, 120, user=1), request(2, 120, user=1), request(3, 60, external=True)]
        policy = AllocationPolicy(user_cap_hours=Decimal(2), external_min_share=Decimal("0.9"))
        result = greedy_first_come(requests, free, policy)
        assert set(granted(result)) == {1, 3}
        assert codes(result)[2] == "user_cap"


class TestUpperBound:
    @pytest.mark.parametrize(
        ("free", "minutes", "policy", "expected_hours"),
        [
            ([("09:00", "11:00")], [60, 60, 60], POLICY, "2"),
            ([("09:00", "17:00")], [60, 60, 60], POLICY, "3"),
            ([("09:00", "11:30")], [120, 120], POLICY, "2"),  # 2.5 h cannot hold more than one 2 h request
            ([("09:00", "11:30")], [120, 90], POLICY, "2.5"),  # a bound, not exact: 1.5 h + half of 2 h
            ([("09:00", "17:00")], [180, 180], AllocationPolicy(user_cap_hours=Decimal(5)), "3"),
        ],
        ids=["capacity binds", "demand binds", "whole requests in an odd gap", "odd gap, mixed lengths",
             "user cap with whole requests"],
    )
    def test_bound(self, free: list[tuple[str, str]], minutes: list[int], policy: AllocationPolicy,
                   expected_hours: str) -> None:
        requests = [request(n, m, user=1) for n, m in enumerate(minutes, start=1)]
        bound = upper_bound(requests, {1: [span(MONDAY, *pair) for pair in free]}, policy)
        assert bound.hours == Decimal(expected_hours)

    def test_groups_by_candidacy(self) -> None:
        free = {1: [span(MONDAY, "09:00", "10:00")], 2: [span(MONDAY, "09:00", "12:00")],
                3: [span(MONDAY, "09:00", "17:00")]}
        requests = [request(1, 60, instruments=(1, 2)), request(2, 120, instruments=(2,)),
                    request(3, 60, instruments=(3,))]
        bound = upper_bound(requests, free, POLICY)
        assert [(g.instrument_ids, g.request_ids) for g in bound.groups] == [((1, 2), (1, 2)), ((3,), (3,))]
        assert bound.group_minutes == 240

    @pytest.mark.parametrize("seed", range(10, 16))
    def test_bounds_every_allocation(self, seed: int) -> None:
        requests, free = random_round(seed, requests=40, instruments=3)
        policy = AllocationPolicy(user_cap_hours=Decimal(6), institution_cap_hours=Decimal(25),
                                  deterministic_time_limit=0.2)
        bound = upper_bound(requests, free, policy)
        assert allocate(requests, free, policy).granted_minutes <= bound.minutes
        assert bound.minutes <= bound.group_minutes


class TestBestPlacement:
    @pytest.mark.parametrize(
        ("preferred", "expected"),
        [((), (1, "09:00")), ((("13:00", "17:00"),), (2, "13:00"))],
        ids=["earliest, lower instrument on ties", "preferred hours first"],
    )
    def test_best_placement(self, preferred: tuple[tuple[str, str], ...], expected: tuple[int, str]) -> None:
        free = {1: [span(MONDAY, "09:00", "12:00")],
                2: [span(MONDAY, "09:00", "12:00"), span(MONDAY, "13:00", "17:00")]}
        decision = best_placement(request(1, 120, instruments=(2, 1), preferred=preferred), free, 30)
        assert decision.granted
        assert (decision.instrument_id, decision.start) == (expected[0], local(MONDAY, expected[1]))

    def test_nothing_fits(self) -> None:
        decision = best_placement(request(1, 120), {1: [span(MONDAY, "09:00", "10:00")]}, 30)
        assert not decision.granted and decision.code == "no_fit"


class TestFlexibleRequestProblems:
    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            ({}, []),
            ({"minutes": 45}, ["duration_not_multiple"]),
            ({"weight": 0}, ["invalid_weight"]),
            ({"instruments": ()}, ["no_candidates"]),
            ({"window": ("09:00", "10:00")}, ["window_too_short"]),
            ({"preferred": (("18:00", "08:00"),)}, ["invalid_window"]),
        ],
        ids=["valid", "duration off grid", "zero weight", "no candidates", "window shorter than duration",
             "preferred crosses midnight"],
    )
    def test_problems(self, changes: dict[str, object], expected: list[str]) -> None:
        values: dict[str, object] = {"minutes": 120}
        values.update(changes)
        minutes = values.pop("minutes")
        problems = flexible_request_problems(request(1, minutes, **values), 30)  # type: ignore[arg-type]
        assert [problem.code for problem in problems] == expected

    def test_allocate_rejects_what_the_check_reports(self) -> None:
        with pytest.raises(ValueError):
            allocate([request(1, 45)], {1: [span(MONDAY, "09:00", "17:00")]}, POLICY)


def test_policy_validation() -> None:
    for bad in ({"slot_minutes": 50}, {"external_min_share": Decimal(2)}, {"user_cap_hours": Decimal(0)}):
        with pytest.raises(ValueError):
            AllocationPolicy(**bad)  # type: ignore[arg-type]
    assert time(0) == hm("00:00")
