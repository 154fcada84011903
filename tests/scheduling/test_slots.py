from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from scheduling.intervals import Interval, merge
from scheduling.rules import BookingRules
from scheduling.slots import bookable_slots, nearest_alternatives
from tests.scheduling.clock import MONDAY, local, span

RULES = BookingRules(slot_minutes=30, min_duration_minutes=60, min_lead_minutes=120, max_horizon_days=14)
NOW = local(MONDAY, "08:00")
DAY_START, DAY_END = local(MONDAY, "00:00"), local(MONDAY + timedelta(days=1), "00:00")


def pieces(*pairs: tuple[str, str]) -> list[Interval]:
    return [span(MONDAY, start, end) for start, end in pairs]


class TestBookableSlots:
    @pytest.mark.parametrize(
        ("free", "changes", "expected"),
        [
            ([("11:00", "12:00")], {}, [("11:00", "12:00")]),
            ([("09:00", "12:00")], {}, [("10:00", "12:00")]),  # lead time: not before 10:00
            ([("10:10", "12:00")], {}, [("10:30", "12:00")]),  # rounded up to the grid
            ([("10:30", "11:20")], {}, []),  # 50 minutes on the grid is 30: too short
            ([("13:00", "14:00"), ("15:00", "15:30")], {}, [("13:00", "14:00")]),
            ([("10:00", "12:00")], {"min_lead_minutes": 0}, [("10:00", "12:00")]),
        ],
        ids=["fits", "lead time trims", "grid trims the start", "too short after trimming",
             "drops short pieces", "no lead time"],
    )
    def test_trimming(self, free: list[tuple[str, str]], changes: dict[str, int],
                      expected: list[tuple[str, str]]) -> None:
        rules = replace(RULES, **changes)
        assert bookable_slots(pieces(*free), rules, NOW, DAY_START, DAY_END) == pieces(*expected)

    def test_grid_trim_keeps_exact_hour(self) -> None:
        assert bookable_slots(pieces(("10:30", "11:50")), RULES, NOW, DAY_START, DAY_END) == pieces(
            ("10:30", "11:30"))

    def test_horizon_cuts(self) -> None:
        rules = replace(RULES, max_horizon_days=1, min_lead_minutes=0)
        tomorrow = MONDAY + timedelta(days=1)
        free = [Interval(local(tomorrow, "06:00"), local(tomorrow, "12:00"))]
        result = bookable_slots(free, rules, NOW, DAY_START, local(tomorrow, "23:00"))
        assert result == [Interval(local(tomorrow, "06:00"), local(tomorrow, "08:00"))]

    def test_range_clips(self) -> None:
        result = bookable_slots(pieces(("10:00", "17:00")), RULES, NOW, local(MONDAY, "12:00"),
                                local(MONDAY, "14:00"))
        assert result == pieces(("12:00", "14:00"))

    def test_nothing_when_horizon_before_range(self) -> None:
        rules = replace(RULES, max_horizon_days=0)
        assert bookable_slots(pieces(("10:00", "17:00")), rules, NOW, DAY_START, DAY_END) == []


class TestNearestAlternatives:
    @pytest.mark.parametrize(
        ("free", "wanted", "minutes", "k", "expected"),
        [
            ([("08:00", "12:00")], "10:00", 60, 3, ["10:00", "09:30", "10:30"]),
            ([("08:00", "09:00"), ("11:00", "12:00")], "10:00", 60, 2, ["11:00", "08:00"]),
            ([("08:00", "09:30"), ("11:30", "12:30")], "10:00", 60, 3, ["08:30", "11:30", "08:00"]),
            ([("08:00", "09:30"), ("11:00", "12:00")], "10:00", 60, 3, ["11:00", "08:30", "08:00"]),
            ([("08:00", "08:30"), ("13:00", "14:00")], "09:00", 60, 5, ["13:00"]),
            ([("08:00", "12:00")], "07:00", 60, 2, ["08:00", "08:30"]),
            ([("08:00", "12:00")], "13:00", 60, 2, ["11:00", "10:30"]),
            ([("08:10", "10:00")], "08:00", 60, 2, ["08:30", "09:00"]),
            ([("08:00", "12:00")], "10:00", 60, 0, []),
        ],
        ids=["around wanted, earlier first on ties", "nearer gap first", "equal shift, earlier first",
             "mixed",
             "only one fits",
             "before everything", "after everything", "grid inside an unaligned gap", "k is zero"],
    )
    def test_nearest(self, free: list[tuple[str, str]], wanted: str, minutes: int, k: int,
                     expected: list[str]) -> None:
        found = nearest_alternatives(pieces(*free), local(MONDAY, wanted), timedelta(minutes=minutes), k, 30)
        assert [item.start for item in found] == [local(MONDAY, clock) for clock in expected]
        assert all(item.duration == timedelta(minutes=minutes) for item in found)

    def test_matches_brute_force(self) -> None:
        rng = random.Random(5)
        origin = local(MONDAY, "00:00")
        for _ in range(30):
            free = []
            cursor = origin
            for _ in range(rng.randint(0, 12)):
                cursor += timedelta(minutes=rng.choice([0, 15, 30, 60, 90]))
                end = cursor + timedelta(minutes=rng.choice([20, 30, 60, 120, 240]))
                free.append(Interval(cursor, end))
                cursor = end
            wanted = origin + timedelta(minutes=rng.randrange(0, 24 * 60, 10))
            duration = timedelta(minutes=rng.choice([30, 60, 90]))
            expected = sorted(
                (abs(start - wanted), start)
                for start in (origin + timedelta(minutes=30 * step) for step in range(-48, 96))
                if any(piece.start <= start and start + duration <= piece.end for piece in merge(free))
            )[:4]
            found = nearest_alternatives(free, wanted, duration, 4, 30)
            assert [item.start for item in found] == [start for _, start in expected]

    def test_scales(self) -> None:
        origin = local(MONDAY, "00:00")
        free = [Interval(origin + timedelta(hours=2 * n), origin + timedelta(hours=2 * n, minutes=90))
                for n in range(20_000)]
        begun = datetime.now()
        found = nearest_alternatives(free, origin + timedelta(days=800), timedelta(hours=1), 5, 30)
        assert len(found) == 5
        assert datetime.now() - begun < timedelta(seconds=2)
