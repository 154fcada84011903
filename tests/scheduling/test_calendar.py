from __future__ import annotations

from datetime import date

import pytest

from scheduling.calendar import AdjustedWorkday, DayOverride, HolidayCalendar

FRIDAY, MONDAY, TUESDAY = 4, 0, 1


@pytest.fixture(scope="module")
def package_calendar() -> HolidayCalendar:
    return HolidayCalendar.from_package([2025, 2026, 2027])


class TestFromPackage:
    @pytest.mark.parametrize(
        ("day", "closed", "adjusted", "stands_in_for"),
        [
            (date(2026, 1, 1), True, False, None),  # 元旦
            (date(2026, 1, 2), True, False, None),  # Friday off, paid for by Sunday 2026-01-04
            (date(2026, 1, 4), False, True, FRIDAY),  # Sunday working day carrying Friday's work
            (date(2026, 2, 14), False, True, FRIDAY),  # Saturday for Friday 2026-02-20
            (date(2026, 2, 28), False, True, MONDAY),  # Saturday for Monday 2026-02-23
            (date(2026, 2, 17), True, False, None),  # 春节
            (date(2026, 10, 1), True, False, None),  # 国庆节
            (date(2025, 9, 28), False, True, TUESDAY),  # Sunday for Tuesday 2025-10-07
            (date(2026, 3, 7), False, False, None),  # an ordinary Saturday is not the calendar's business
            (date(2026, 3, 9), False, False, None),  # an ordinary Monday
        ],
    )
    def test_days(self, package_calendar: HolidayCalendar, day: date, closed: bool, adjusted: bool,
                  stands_in_for: int | None) -> None:
        assert package_calendar.is_closed_day(day) is closed
        assert package_calendar.is_adjusted_workday(day) is adjusted
        assert package_calendar.stands_in_for(day) == stands_in_for

    def test_keeps_only_requested_years(self) -> None:
        calendar = HolidayCalendar.from_package([2026])
        assert all(day.year == 2026 for day in calendar.closed_days)
        assert all(day.year == 2026 for day in calendar.adjusted_workdays)

    def test_no_years_gives_an_empty_calendar(self) -> None:
        calendar = HolidayCalendar.from_package([])
        assert not calendar.closed_days and not calendar.adjusted_workdays


class TestNameOf:
    @pytest.mark.parametrize(
        ("day", "name"),
        [
            (date(2026, 1, 1), "元旦"),
            (date(2026, 2, 17), "春节"),
            (date(2026, 1, 2), "休息日（由 2026-01-04 调休）"),
            (date(2026, 1, 4), "调休上班"),
            (date(2026, 3, 9), None),
        ],
    )
    def test_name_of(self, package_calendar: HolidayCalendar, day: date, name: str | None) -> None:
        assert package_calendar.name_of(day) == name


class TestPackageHasSchedule:
    @pytest.mark.parametrize(("year", "expected"), [(2025, True), (2026, True), (2027, False)])
    def test_official_schedule_known(self, package_calendar: HolidayCalendar, year: int,
                                     expected: bool) -> None:
        # holidays 0.109 lists official 调休 working days up to 2026; 2027 is rule-based only.
        assert package_calendar.package_has_schedule(year) is expected


class TestOverrides:
    @pytest.mark.parametrize(
        ("override", "closed", "adjusted", "stands_in_for", "name"),
        [
            (DayOverride(date(2026, 3, 9), "closed", "停电检修"), True, False, None, "停电检修"),
            (DayOverride(date(2026, 10, 1), "open", "照常开放"), False, False, None, None),
            (DayOverride(date(2026, 3, 7), "open", "补班", as_weekday=TUESDAY), False, True, TUESDAY, "补班"),
            (DayOverride(date(2026, 3, 8), "open", "补班"), False, True, MONDAY, "补班"),
            (DayOverride(date(2026, 1, 4), "closed", "不补班"), True, False, None, "不补班"),
            (DayOverride(date(2030, 5, 6), "closed", "2030 年劳动节"), True, False, None, "2030 年劳动节"),
        ],
        ids=["close a weekday", "open a holiday weekday", "open a Saturday as Tuesday",
             "open a Sunday, Monday by default", "close an adjusted working day", "year the package lacks"],
    )
    def test_override_wins(self, override: DayOverride, closed: bool, adjusted: bool,
                           stands_in_for: int | None, name: str | None) -> None:
        calendar = HolidayCalendar.from_package([2026], [override])
        assert calendar.is_closed_day(override.day) is closed
        assert calendar.is_adjusted_workday(override.day) is adjusted
        assert calendar.stands_in_for(override.day) == stands_in_for
        assert calendar.name_of(override.day) == name

    def test_later_override_wins(self) -> None:
        day = date(2026, 3, 9)
        calendar = HolidayCalendar.from_package(
            [2026], [DayOverride(day, "closed", "停电"), DayOverride(day, "open", "恢复开放")]
        )
        assert not calendar.is_closed_day(day)

    def test_with_overrides_keeps_earlier_ones(self, package_calendar: HolidayCalendar) -> None:
        first = DayOverride(date(2026, 3, 9), "closed", "停电")
        second = DayOverride(date(2026, 3, 10), "closed", "停水")
        calendar = package_calendar.with_overrides([first]).with_overrides([second])
        assert calendar.is_closed_day(first.day) and calendar.is_closed_day(second.day)
        assert calendar.overrides == (first, second)
        assert calendar.is_closed_day(date(2026, 1, 1))

    @pytest.mark.parametrize(
        "arguments",
        [(date(2026, 3, 9), "shut", "x"), (date(2026, 3, 9), "open", "x", 7)],
        ids=["unknown kind", "weekday out of range"],
    )
    def test_rejects_invalid(self, arguments: tuple) -> None:  # type: ignore[type-arg]
        with pytest.raises(ValueError):
            DayOverride(*arguments)

    def test_resolved_from_plain_data(self) -> None:
        day = date(2026, 3, 7)
        calendar = HolidayCalendar(adjusted_workdays={day: AdjustedWorkday(day, FRIDAY, "调休上班")})
        assert calendar.stands_in_for(day) == FRIDAY
