from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from scheduling.intervals import (
    Interval,
    ceil_to_grid,
    clip,
    find_containing,
    floor_to_grid,
    intersect,
    local_dates,
    merge,
    subtract,
    total,
    widen,
)
from tests.scheduling.clock import MONDAY, local, span


def spans(*pairs: tuple[str, str]) -> list[Interval]:
    return [span(MONDAY, start, end) for start, end in pairs]


class TestInterval:
    def test_normalises_to_utc(self) -> None:
        interval = Interval(local(MONDAY, "09:00"), local(MONDAY, "10:00"))
        assert interval.start == datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
        assert interval.start.tzinfo is UTC

    @pytest.mark.parametrize(
        ("start", "end"),
        [
            (datetime(2026, 12, 7, 9), datetime(2026, 12, 7, 10, tzinfo=UTC)),
            (datetime(2026, 12, 7, 9, tzinfo=UTC), datetime(2026, 12, 7, 10)),
        ],
        ids=["naive start", "naive end"],
    )
    def test_rejects_naive(self, start: datetime, end: datetime) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            Interval(start, end)

    @pytest.mark.parametrize("minutes", [0, -30])
    def test_rejects_empty_or_reversed(self, minutes: int) -> None:
        start = local(MONDAY, "09:00")
        with pytest.raises(ValueError, match="not after start"):
            Interval(start, start + timedelta(minutes=minutes))

    def test_touching_intervals_do_not_overlap(self) -> None:
        first, second = spans(("09:00", "10:00"), ("10:00", "11:00"))
        assert not first.overlaps(second)
        assert first.overlaps(span(MONDAY, "09:59", "10:01"))


class TestMerge:
    @pytest.mark.parametrize(
        ("pieces", "expected"),
        [
            ([], []),
            ([("09:00", "10:00"), ("10:00", "11:00")], [("09:00", "11:00")]),
            ([("10:00", "12:00"), ("09:00", "10:30")], [("09:00", "12:00")]),
            ([("09:00", "10:00"), ("11:00", "12:00")], [("09:00", "10:00"), ("11:00", "12:00")]),
            ([("09:00", "12:00"), ("10:00", "11:00")], [("09:00", "12:00")]),
        ],
        ids=["empty", "touching", "unsorted overlap", "gap kept", "nested"],
    )
    def test_merge(self, pieces: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
        assert merge(spans(*pieces)) == spans(*expected)


class TestSubtract:
    @pytest.mark.parametrize(
        ("base", "cuts", "expected"),
        [
            ([("09:00", "17:00")], [], [("09:00", "17:00")]),
            ([("09:00", "17:00")], [("12:00", "13:00")], [("09:00", "12:00"), ("13:00", "17:00")]),
            ([("09:00", "17:00")], [("08:00", "10:00"), ("16:00", "18:00")], [("10:00", "16:00")]),
            ([("09:00", "12:00"), ("13:00", "17:00")], [("11:00", "14:00")],
             [("09:00", "11:00"), ("14:00", "17:00")]),
            ([("09:00", "10:00")], [("09:00", "10:00")], []),
            ([("09:00", "10:00"), ("11:00", "12:00")], [("06:00", "07:00"), ("20:00", "21:00")],
             [("09:00", "10:00"), ("11:00", "12:00")]),
        ],
        ids=["no cuts", "hole", "both ends", "across pieces", "everything", "cuts elsewhere"],
    )
    def test_subtract(self, base: list[tuple[str, str]], cuts: list[tuple[str, str]],
                      expected: list[tuple[str, str]]) -> None:
        assert subtract(spans(*base), spans(*cuts)) == spans(*expected)


class TestIntersect:
    @pytest.mark.parametrize(
        ("first", "second", "expected"),
        [
            ([("09:00", "12:00")], [("11:00", "13:00")], [("11:00", "12:00")]),
            ([("09:00", "10:00"), ("11:00", "12:00")], [("09:30", "11:30")],
             [("09:30", "10:00"), ("11:00", "11:30")]),
            ([("09:00", "10:00")], [("10:00", "11:00")], []),
        ],
        ids=["overlap", "two pieces", "touching only"],
    )
    def test_intersect(self, first: list[tuple[str, str]], second: list[tuple[str, str]],
                       expected: list[tuple[str, str]]) -> None:
        assert intersect(spans(*first), spans(*second)) == spans(*expected)


class TestClipTotalWiden:
    def test_clip(self) -> None:
        assert clip(spans(("08:00", "18:00")), local(MONDAY, "09:00"), local(MONDAY, "10:00")) == spans(
            ("09:00", "10:00"))
        assert clip(spans(("08:00", "18:00")), local(MONDAY, "10:00"), local(MONDAY, "09:00")) == []

    def test_total_counts_overlaps_once(self) -> None:
        assert total(spans(("09:00", "11:00"), ("10:00", "12:00"))) == timedelta(hours=3)

    def test_widen(self) -> None:
        widened = widen(spans(("10:00", "11:00")), before=timedelta(minutes=15), after=timedelta(minutes=30))
        assert widened == spans(("09:45", "11:30"))


class TestFindContaining:
    @pytest.mark.parametrize(
        ("candidate", "found"),
        [
            (("09:00", "10:00"), ("09:00", "12:00")),
            (("13:00", "17:00"), ("13:00", "17:00")),
            (("11:00", "14:00"), None),
            (("08:00", "09:30"), None),
        ],
        ids=["inside first", "exactly second", "across the gap", "starts before"],
    )
    def test_find_containing(self, candidate: tuple[str, str], found: tuple[str, str] | None) -> None:
        merged = spans(("09:00", "12:00"), ("13:00", "17:00"))
        expected = span(MONDAY, *found) if found else None
        assert find_containing(merged, span(MONDAY, *candidate)) == expected


class TestGrid:
    @pytest.mark.parametrize(
        ("clock", "step", "floor", "ceil"),
        [
            ("09:00", 30, "09:00", "09:00"),
            ("09:10", 30, "09:00", "09:30"),
            ("09:10", 15, "09:00", "09:15"),
            ("23:50", 60, "23:00", "00:00"),
        ],
        ids=["on grid", "half hour", "quarter hour", "next midnight"],
    )
    def test_floor_and_ceil(self, clock: str, step: int, floor: str, ceil: str) -> None:
        instant = local(MONDAY, clock)
        assert floor_to_grid(instant, step) == local(MONDAY, floor)
        ceil_day = MONDAY + timedelta(days=1) if ceil == "00:00" else MONDAY
        assert ceil_to_grid(instant, step) == local(ceil_day, ceil)

    def test_grid_is_local_midnight_based(self) -> None:
        # 90 minutes from local midnight: 01:30 local is on the grid even though 17:30 UTC is not a multiple
        # of 90 minutes from UTC midnight.
        instant = local(MONDAY, "01:30")
        assert floor_to_grid(instant, 90) == instant


class TestLocalDates:
    @pytest.mark.parametrize(
        ("start", "end", "expected"),
        [
            (("09:00", 0), ("10:00", 0), [0]),
            (("22:00", 0), ("02:00", 1), [0, 1]),
            (("09:00", 0), ("00:00", 1), [0]),
            (("09:00", 0), ("09:00", 0), []),
        ],
        ids=["same day", "over midnight", "ends at midnight", "empty"],
    )
    def test_local_dates(self, start: tuple[str, int], end: tuple[str, int], expected: list[int]) -> None:
        first = local(MONDAY + timedelta(days=start[1]), start[0])
        last = local(MONDAY + timedelta(days=end[1]), end[0])
        assert local_dates(first, last) == [MONDAY + timedelta(days=offset) for offset in expected]

    def test_uses_local_not_utc_date(self) -> None:
        # 07:00 local on Monday is 23:00 UTC on Sunday.
        assert local_dates(local(MONDAY, "07:00"), local(MONDAY, "08:00")) == [date(2026, 12, 7)]
