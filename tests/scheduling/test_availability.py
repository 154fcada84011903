from __future__ import annotations

from datetime import date, time, timedelta

import pytest

from scheduling.availability import (
    Availability,
    Blackout,
    Busy,
    Closure,
    DateOverride,
    RecurringBlackout,
    WeeklyWindow,
    colliding,
    outside,
)
from scheduling.calendar import HolidayCalendar
from tests.scheduling.clock import MONDAY, hm, local, span

CALENDAR = HolidayCalendar.from_package([2026])
# Monday to Thursday two windows, Friday mornings only, Saturday a short morning, Sunday closed.
WEEKLY = (
    *(WeeklyWindow(day, hm("08:30"), hm("12:00")) for day in range(4)),
    *(WeeklyWindow(day, hm("13:30"), hm("17:30")) for day in range(4)),
    WeeklyWindow(4, hm("08:30"), hm("12:00")),
    WeeklyWindow(5, hm("09:00"), hm("11:00")),
)
MONDAY_WINDOWS = [(hm("08:30"), hm("12:00")), (hm("13:30"), hm("17:30"))]
FRIDAY_WINDOWS = [(hm("08:30"), hm("12:00"))]
OPEN_ON_NATIONAL_DAY = DateOverride(date(2026, 10, 1), ((hm("10:00"), hm("12:00")),), "国庆值班")


def availability(**changes: object) -> Availability:
    defaults: dict[str, object] = {"weekly": WEEKLY, "calendar": CALENDAR}
    defaults.update(changes)
    return Availability(**defaults)  # type: ignore[arg-type]


class TestWindowsOn:
    @pytest.mark.parametrize(
        ("day", "changes", "expected"),
        [
            (MONDAY, {}, MONDAY_WINDOWS),
            (date(2026, 12, 12), {}, [(hm("09:00"), hm("11:00"))]),  # an ordinary Saturday
            (date(2026, 12, 13), {}, []),  # Sunday: no windows
            (date(2026, 10, 1), {}, []),  # 国庆节, a Thursday
            (date(2026, 10, 1), {"follow_holidays": False}, MONDAY_WINDOWS),  # Thursday's own windows
            (date(2026, 1, 4), {}, FRIDAY_WINDOWS),  # Sunday working day carrying Friday 2026-01-02
            (date(2026, 2, 28), {}, MONDAY_WINDOWS),  # Saturday working day carrying Monday 2026-02-23
            (date(2026, 2, 14), {}, FRIDAY_WINDOWS),  # Saturday for Friday: Saturday's own hours unused
            (date(2026, 1, 4), {"follow_holidays": False}, []),  # plain Sunday when the calendar is ignored
            (date(2026, 10, 1), {"date_overrides": (OPEN_ON_NATIONAL_DAY,)}, [(hm("10:00"), hm("12:00"))]),
            (MONDAY, {"date_overrides": (DateOverride(MONDAY, (), "搬迁"),)}, []),
        ],
        ids=["weekday", "saturday", "sunday", "holiday", "holiday ignored", "adjusted sunday as friday",
             "adjusted saturday as monday", "adjusted saturday not saturday hours", "calendar ignored",
             "override opens holiday", "override closes"],
    )
    def test_precedence(self, day: date, changes: dict[str, object],
                        expected: list[tuple[time, time]]) -> None:
        assert availability(**changes).windows_on(day) == expected

    @pytest.mark.parametrize(
        ("valid_from", "valid_to", "opened"),
        [(None, None, True), (MONDAY, None, True), (MONDAY + timedelta(days=1), None, False),
         (None, MONDAY, True), (None, MONDAY - timedelta(days=1), False)],
        ids=["unbounded", "from that day", "from the next day", "until that day", "until the day before"],
    )
    def test_validity_dates_are_inclusive(self, valid_from: date | None, valid_to: date | None,
                                          opened: bool) -> None:
        window = WeeklyWindow(0, hm("09:00"), hm("10:00"), valid_from, valid_to)
        assert bool(Availability(weekly=(window,)).windows_on(MONDAY)) is opened


class TestOpenIntervals:
    def test_local_windows_become_utc(self) -> None:
        result = availability().open_intervals(local(MONDAY, "00:00"), local(MONDAY, "23:59"))
        assert result == [span(MONDAY, "08:30", "12:00"), span(MONDAY, "13:30", "17:30")]
        assert result[0].start.hour == 0 and result[0].start.minute == 30  # 08:30 +08:00 is 00:30 UTC

    def test_clipped_to_range(self) -> None:
        result = availability().open_intervals(local(MONDAY, "10:00"), local(MONDAY, "14:00"))
        assert result == [span(MONDAY, "10:00", "12:00"), span(MONDAY, "13:30", "14:00")]

    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            ({"blackouts": (Blackout(local(MONDAY, "09:00"), local(MONDAY, "10:00"), "校准"),)},
             [("08:30", "09:00"), ("10:00", "12:00"), ("13:30", "17:30")]),
            ({"recurring_blackouts": (RecurringBlackout(0, hm("13:00"), hm("15:00"), "例行维护"),)},
             [("08:30", "12:00"), ("15:00", "17:30")]),
            ({"recurring_blackouts": (RecurringBlackout(0, hm("13:00"), hm("15:00"), "例行维护",
                                                        valid_from=MONDAY + timedelta(days=7)),)},
             [("08:30", "12:00"), ("13:30", "17:30")]),
            ({"date_overrides": (DateOverride(MONDAY, ((hm("09:00"), hm("18:00")),)),),
              "blackouts": (Blackout(local(MONDAY, "12:00"), local(MONDAY, "13:00"), "断电"),)},
             [("09:00", "12:00"), ("13:00", "18:00")]),
        ],
        ids=["one-off", "recurring", "recurring not yet valid", "blackout beats override"],
    )
    def test_blackouts_cut(self, changes: dict[str, object], expected: list[tuple[str, str]]) -> None:
        result = availability(**changes).open_intervals(local(MONDAY, "00:00"), local(MONDAY, "23:59"))
        assert result == [span(MONDAY, start, end) for start, end in expected]

    def test_round_the_clock_windows_join_at_midnight(self) -> None:
        always = Availability(weekly=tuple(WeeklyWindow(day, time(0), time(0)) for day in range(7)))
        result = always.open_intervals(local(MONDAY, "06:00"), local(MONDAY + timedelta(days=2), "06:00"))
        assert result == [span(MONDAY, "06:00", "06:00", MONDAY + timedelta(days=2))]

    def test_holiday_week(self) -> None:
        # National Day week 2026: Thursday 1 to Wednesday 7 October closed; Saturday 10 October works as
        # Wednesday.
        week = availability().open_intervals(local(date(2026, 9, 28), "00:00"),
                                             local(date(2026, 10, 12), "00:00"))
        days = sorted({piece.start.astimezone(local(MONDAY, "00:00").tzinfo).date() for piece in week})
        assert date(2026, 10, 1) not in days and date(2026, 10, 7) not in days
        assert date(2026, 10, 10) in days and date(2026, 10, 11) not in days


class TestFreeIntervals:
    @pytest.mark.parametrize(
        ("buffers", "busy", "expected"),
        [
            ((0, 0), [("09:00", "10:00")], [("08:30", "09:00"), ("10:00", "12:00")]),
            ((0, 30), [("09:00", "10:00")], [("10:00", "12:00")]),  # 30 min cool-down before the busy hour
            ((15, 0), [("09:00", "10:00")], [("08:30", "09:00"), ("10:15", "12:00")]),
            ((0, 0), [("08:00", "12:30")], []),
            ((0, 0), [], [("08:30", "12:00")]),
        ],
        ids=["plain", "own cool-down", "own set-up", "busy covers all", "nothing busy"],
    )
    def test_free(self, buffers: tuple[int, int], busy: list[tuple[str, str]],
                  expected: list[tuple[str, str]]) -> None:
        instrument = availability(buffer_before_minutes=buffers[0], buffer_after_minutes=buffers[1])
        taken = [Busy(span(MONDAY, *pair).start, span(MONDAY, *pair).end) for pair in busy]
        free = instrument.free_intervals(local(MONDAY, "00:00"), local(MONDAY, "12:30"), taken)
        assert free == [span(MONDAY, start, end) for start, end in expected]

    def test_accepts_plain_intervals(self) -> None:
        free = availability().free_intervals(local(MONDAY, "08:00"), local(MONDAY, "12:00"),
                                             [span(MONDAY, "08:30", "11:00")])
        assert free == [span(MONDAY, "11:00", "12:00")]


class TestClosedDays:
    def test_lists_holidays_and_closed_overrides(self) -> None:
        reopened = DateOverride(date(2026, 10, 2), ((hm("09:00"), hm("10:00")),))
        instrument = availability(date_overrides=(DateOverride(date(2026, 9, 30), (), "搬迁"), reopened))
        closed = instrument.closed_days(local(date(2026, 9, 28), "00:00"), local(date(2026, 10, 5), "00:00"))
        # 2 October is reopened by its override; Sunday 4 October is an ordinary weekend day.
        assert closed == {date(2026, 9, 30): "搬迁", date(2026, 10, 1): "国庆节", date(2026, 10, 3): "国庆节"}

    def test_ignored_calendar_lists_no_holidays(self) -> None:
        closed = availability(follow_holidays=False).closed_days(local(date(2026, 10, 1), "00:00"),
                                                                 local(date(2026, 10, 2), "00:00"))
        assert closed == {}


class TestValidation:
    @pytest.mark.parametrize(
        "build",
        [
            lambda: WeeklyWindow(0, hm("22:00"), hm("02:00")),
            lambda: WeeklyWindow(7, hm("09:00"), hm("10:00")),
            lambda: WeeklyWindow(0, hm("09:00"), hm("09:00")),
            lambda: WeeklyWindow(0, time(9, tzinfo=local(MONDAY, "00:00").tzinfo), hm("10:00")),
            lambda: DateOverride(MONDAY, ((hm("18:00"), hm("08:00")),)),
            lambda: RecurringBlackout(0, hm("11:00"), hm("10:00"), "x"),
            lambda: Blackout(local(MONDAY, "10:00"), local(MONDAY, "09:00"), "x"),
            lambda: Availability(date_overrides=(DateOverride(MONDAY), DateOverride(MONDAY))),
            lambda: Availability(buffer_after_minutes=-5),
        ],
        ids=["crosses midnight", "weekday 7", "empty window", "tz-aware time", "override crosses midnight",
             "reversed recurring blackout", "reversed blackout", "two overrides one date", "negative buffer"],
    )
    def test_rejects(self, build: object) -> None:
        with pytest.raises(ValueError):
            build()  # type: ignore[operator]


class TestOutside:
    def test_lists_bookings_not_inside_one_interval(self) -> None:
        allowed = [span(MONDAY, "08:30", "12:00"), span(MONDAY, "13:30", "17:30")]
        bookings = [(1, span(MONDAY, "09:00", "10:00")), (2, span(MONDAY, "11:00", "14:00")),
                    (3, span(MONDAY, "17:00", "18:00")), (4, span(MONDAY, "13:30", "17:30"))]
        assert outside(bookings, allowed) == [2, 3]


class TestColliding:
    def test_maps_bookings_to_closures(self) -> None:
        calibration = Closure(span(MONDAY, "09:00", "10:00"), "校准")
        repair = Closure(span(MONDAY, "14:00", "16:00"), "维修")
        bookings = [("a", span(MONDAY, "08:30", "09:30")), ("b", span(MONDAY, "10:00", "11:00")),
                    ("c", span(MONDAY, "09:30", "15:00"))]
        assert colliding(bookings, [repair, calibration]) == {"a": [calibration], "c": [calibration, repair]}

    def test_closures_lists_recurring_occurrences(self) -> None:
        calibration = RecurringBlackout(0, hm("08:00"), hm("09:00"), "例行校准")
        instrument = availability(recurring_blackouts=(calibration,))
        found = instrument.closures(local(MONDAY, "00:00"), local(MONDAY + timedelta(days=14), "00:00"))
        assert [closure.interval for closure in found] == [span(MONDAY, "08:00", "09:00"),
                                                           span(MONDAY + timedelta(days=7), "08:00", "09:00")]
