from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from scheduling.availability import Availability, WeeklyWindow
from scheduling.calendar import HolidayCalendar
from scheduling.intervals import Interval
from scheduling.rules import (
    BookingRequest,
    BookingRules,
    Qualification,
    RuleContext,
    check_booking,
    check_cancellation,
    hours_by_month,
    hours_by_week,
    month_range,
    rules_problems,
    week_range,
)
from tests.scheduling.clock import MONDAY, hm, local, span

WEDNESDAY = MONDAY + timedelta(days=2)
NEXT_MONDAY = MONDAY + timedelta(days=7)
CJK = re.compile(r"[\u4e00-\u9fff]")

RULES = BookingRules(
    slot_minutes=30,
    min_duration_minutes=30,
    max_duration_minutes=480,
    min_lead_minutes=60,
    max_horizon_days=30,
    max_user_hours_per_week=Decimal(10),
    max_institution_hours_per_month=Decimal(100),
    cancellation_deadline_hours=24,
)
OFFICE_HOURS = Availability(
    weekly=(*(WeeklyWindow(day, hm("08:30"), hm("12:00")) for day in range(5)),
            *(WeeklyWindow(day, hm("13:30"), hm("17:30")) for day in range(5))),
)
ROUND_THE_CLOCK = Availability(weekly=tuple(WeeklyWindow(day, hm("00:00"), hm("00:00")) for day in range(7)))


def context_for(availability: Availability, start: datetime, end: datetime, **changes: Any) -> RuleContext:
    """A context whose opening data covers the request's days, as the booking service would build it."""
    first, last = min(start, end) - timedelta(days=1), max(start, end) + timedelta(days=1)
    values: dict[str, Any] = {
        "now": local(MONDAY, "08:00"),
        "rules": RULES,
        "open_intervals": availability.open_intervals(first, last),
        "closed_days": availability.closed_days(min(start, end), max(start, end)),
    }
    values.update(changes)
    return RuleContext(**values)


def codes(start: datetime, end: datetime, availability: Availability = OFFICE_HOURS,
          **changes: Any) -> list[str]:
    request = BookingRequest(instrument_id=1, user_id=7, start=start, end=end)
    context = context_for(availability, start, end, **changes)
    return [problem.code for problem in check_booking(request, context)]


class TestCheckBooking:
    @pytest.mark.parametrize(
        ("start", "end", "changes", "expected"),
        [
            ("09:00", "11:00", {}, []),
            ("09:00", "08:00", {}, ["end_not_after_start"]),
            ("09:10", "11:10", {}, ["start_not_aligned"]),
            ("09:00", "10:45", {}, ["duration_not_multiple"]),
            ("09:00", "09:30", {"rules": replace(RULES, min_duration_minutes=60)}, ["too_short"]),
            ("08:30", "12:00", {"rules": replace(RULES, max_duration_minutes=180)}, ["too_long"]),
            ("09:00", "11:00", {"now": local(WEDNESDAY, "10:00")}, ["in_past"]),
            ("09:00", "11:00", {"now": local(WEDNESDAY, "08:30")}, ["lead_time"]),
            ("09:00", "11:00", {"now": local(WEDNESDAY, "08:00")}, []),
            ("09:00", "11:00", {"rules": replace(RULES, max_horizon_days=1)}, ["beyond_horizon"]),
            ("11:00", "14:00", {}, ["outside_opening_hours"]),
            ("17:00", "18:00", {}, ["outside_opening_hours"]),
            ("09:00", "11:00", {"closed_days": {WEDNESDAY: "设备搬迁"}}, ["closed_day"]),
            ("09:00", "11:00", {"instrument_status": "待修"}, ["instrument_not_bookable"]),
            ("09:00", "11:00", {"instrument_status": "故障频繁"}, ["instrument_not_bookable"]),
            ("09:00", "11:00", {"instrument_status": "偶有故障"}, []),
            ("09:00", "11:00", {"instrument_status": "偶有故障",
                                "unbookable_statuses": frozenset({"偶有故障"})}, ["instrument_not_bookable"]),
            ("09:00", "11:00", {"instrument_active": False}, ["instrument_retired"]),
            ("09:00", "11:00", {"user_blocked": True}, ["user_blocked"]),
            ("09:00", "11:00", {"user_is_external": True}, []),
            ("09:00", "11:00", {"user_is_external": True,
                                "rules": replace(RULES, external_users_allowed=False)}, ["internal_only"]),
            ("09:00", "11:00", {"rules": replace(RULES, qualification_required=True)}, ["not_qualified"]),
            ("09:00", "11:00", {"rules": replace(RULES, qualification_required=True),
                                "qualifications": [Qualification(local(MONDAY, "00:00"),
                                                                 local(WEDNESDAY, "09:00"))]},
             ["not_qualified"]),
            ("09:00", "11:00", {"rules": replace(RULES, qualification_required=True),
                                "qualifications": [Qualification(local(MONDAY, "00:00"), None)]}, []),
            ("09:00", "11:00", {"user_hours_by_week": {MONDAY: Decimal(8)}}, []),
            ("09:00", "11:00", {"user_hours_by_week": {MONDAY: Decimal("8.5")}}, ["user_week_quota"]),
            ("09:00", "11:00", {"user_hours_by_week": {NEXT_MONDAY: Decimal(10)}}, []),
            ("09:00", "11:00", {"institution_hours_by_month": {date(2026, 12, 1): Decimal(99)}},
             ["institution_month_quota"]),
        ],
        ids=["valid", "end before start", "start off grid", "duration off grid", "too short", "too long",
             "past", "lead time", "lead time just met", "beyond horizon", "over lunch", "after closing",
             "closed day", "待修", "故障频繁", "偶有故障 bookable", "custom status set", "retired", "blocked",
             "external allowed", "internal only", "unqualified", "qualification expired at start",
             "qualified", "quota reached exactly", "user quota", "other week's hours", "institution quota"],
    )
    def test_single_rule(self, start: str, end: str, changes: dict[str, Any], expected: list[str]) -> None:
        assert codes(local(WEDNESDAY, start), local(WEDNESDAY, end), **changes) == expected

    def test_reports_every_problem_at_once(self) -> None:
        found = codes(local(WEDNESDAY, "11:10"), local(WEDNESDAY, "14:55"),
                      now=local(WEDNESDAY, "11:00"), instrument_status="待报废", user_blocked=True,
                      rules=replace(RULES, max_duration_minutes=120, qualification_required=True))
        assert found == ["start_not_aligned", "duration_not_multiple", "too_long", "lead_time",
                         "outside_opening_hours", "instrument_not_bookable", "user_blocked", "not_qualified"]

    def test_problems_carry_field_code_and_chinese_message(self) -> None:
        request = BookingRequest(1, 7, local(WEDNESDAY, "11:10"), local(WEDNESDAY, "14:55"))
        context = context_for(OFFICE_HOURS, request.start, request.end, user_is_external=True,
                              user_blocked=True,
                              rules=replace(RULES, external_users_allowed=False),
                              user_hours_by_week={MONDAY: Decimal(10)})
        problems = check_booking(request, context)
        assert {problem.field for problem in problems} == {"start", "end", "user"}
        assert all(CJK.search(problem.message) for problem in problems)

    def test_holiday_from_the_calendar(self) -> None:
        calendar = HolidayCalendar.from_package([2026, 2027])
        availability = replace(OFFICE_HOURS, calendar=calendar)
        new_year = date(2027, 1, 1)
        found = codes(local(new_year, "09:00"), local(new_year, "11:00"), availability,
                      now=local(date(2026, 12, 28), "09:00"))
        assert found == ["closed_day"]

    def test_holiday_message_names_it(self) -> None:
        availability = replace(OFFICE_HOURS, calendar=HolidayCalendar.from_package([2027]))
        start, end = local(date(2027, 1, 1), "09:00"), local(date(2027, 1, 1), "11:00")
        request = BookingRequest(1, 7, start, end)
        context = context_for(availability, start, end, now=local(date(2026, 12, 28), "09:00"))
        problems = check_booking(request, context)
        assert "元旦" in problems[0].message

    @pytest.mark.parametrize("naive", ["start", "end"])
    def test_naive_datetimes_are_problems_not_shifts(self, naive: str) -> None:
        start, end = local(WEDNESDAY, "09:00"), local(WEDNESDAY, "11:00")
        values = {"start": start, "end": end}
        values[naive] = values[naive].replace(tzinfo=None)
        request = BookingRequest(1, 7, values["start"], values["end"])
        problems = check_booking(request, context_for(OFFICE_HOURS, start, end))
        assert [(p.field, p.code) for p in problems] == [(naive, "naive_datetime")]

    def test_other_offsets_are_the_same_instant(self) -> None:
        start = local(WEDNESDAY, "09:00").astimezone(datetime.now().astimezone().tzinfo)
        assert codes(start, local(WEDNESDAY, "11:00")) == []

    @pytest.mark.parametrize(
        ("booked_before", "booked_after", "expected"),
        [
            (Decimal(8), Decimal(0), []),
            (Decimal("8.5"), Decimal(0), ["user_week_quota"]),
            (Decimal(0), Decimal("8.5"), ["user_week_quota"]),
            (Decimal(8), Decimal(8), []),
        ],
        ids=["fits both weeks", "earlier week full", "later week full", "each part in its own week"],
    )
    def test_quota_across_a_week_boundary(self, booked_before: Decimal, booked_after: Decimal,
                                          expected: list[str]) -> None:
        # Sunday 22:00 to Monday 02:00: two hours in each week, each checked against its own week's quota.
        sunday = NEXT_MONDAY - timedelta(days=1)
        found = codes(local(sunday, "22:00"), local(NEXT_MONDAY, "02:00"), ROUND_THE_CLOCK,
                      user_hours_by_week={MONDAY: booked_before, NEXT_MONDAY: booked_after})
        assert found == expected


class TestCheckCancellation:
    @pytest.mark.parametrize(
        ("hours_before", "deadline", "expected"),
        [
            (48, 24, []),
            (24, 24, []),
            (23.5, 24, ["cancellation_deadline_passed"]),
            (0.5, 0, []),
            (0, 24, ["already_started"]),
            (-1, 0, ["already_started"]),
        ],
        ids=["well before", "exactly at deadline", "after deadline", "no deadline", "at start",
             "after start"],
    )
    def test_cancellation(self, hours_before: float, deadline: int, expected: list[str]) -> None:
        start = local(WEDNESDAY, "09:00")
        now = start - timedelta(hours=hours_before)
        problems = check_cancellation(start, now, replace(RULES, cancellation_deadline_hours=deadline))
        assert [problem.code for problem in problems] == expected


class TestRulesProblems:
    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            ({}, []),
            ({"slot_minutes": 50}, [("slot_minutes", "invalid_slot")]),
            ({"slot_minutes": 0}, [("slot_minutes", "invalid_slot")]),
            ({"min_duration_minutes": 45}, [("min_duration_minutes", "not_multiple")]),
            ({"min_duration_minutes": 0}, [("min_duration_minutes", "invalid_minimum")]),
            ({"max_duration_minutes": 20}, [("max_duration_minutes", "max_below_min")]),
            ({"max_duration_minutes": 100}, [("max_duration_minutes", "not_multiple")]),
            ({"max_duration_minutes": None}, []),
            ({"min_lead_minutes": -1, "buffer_after_minutes": -5},
             [("min_lead_minutes", "negative"), ("buffer_after_minutes", "negative")]),
            ({"max_horizon_days": 0}, [("max_horizon_days", "not_positive")]),
            ({"max_user_hours_per_week": Decimal(0)}, [("max_user_hours_per_week", "not_positive")]),
        ],
        ids=["valid", "slot not dividing a day", "zero slot", "minimum off grid", "zero minimum",
             "maximum below minimum", "maximum off grid", "no maximum", "negatives", "zero horizon",
             "zero quota"],
    )
    def test_rules_problems(self, changes: dict[str, Any], expected: list[tuple[str, str]]) -> None:
        problems = rules_problems(replace(RULES, **changes))
        assert [(problem.field, problem.code) for problem in problems] == expected


class TestHoursByPeriod:
    @pytest.mark.parametrize(
        ("start", "end", "expected"),
        [
            ((WEDNESDAY, "09:00"), (WEDNESDAY, "11:30"), {MONDAY: Decimal("2.5")}),
            ((NEXT_MONDAY - timedelta(days=1), "23:00"), (NEXT_MONDAY, "01:00"),
             {MONDAY: Decimal(1), NEXT_MONDAY: Decimal(1)}),
            ((WEDNESDAY, "09:00"), (WEDNESDAY, "09:20"), {MONDAY: Decimal(1) / 3}),
        ],
        ids=["inside a week", "across the week boundary", "a third of an hour"],
    )
    def test_hours_by_week(self, start: tuple[date, str], end: tuple[date, str],
                           expected: dict[date, Decimal]) -> None:
        assert hours_by_week(local(*start), local(*end)) == expected

    def test_hours_by_month_across_new_year(self) -> None:
        result = hours_by_month(local(date(2026, 12, 31), "22:00"), local(date(2027, 1, 1), "03:00"))
        assert result == {date(2026, 12, 1): Decimal(2), date(2027, 1, 1): Decimal(3)}

    def test_week_is_monday_midnight_local(self) -> None:
        assert week_range(MONDAY) == Interval(local(MONDAY, "00:00"), local(NEXT_MONDAY, "00:00"))
        # Local Monday 00:00 is Sunday 16:00 UTC.
        assert week_range(MONDAY).start.weekday() == 6 and week_range(MONDAY).start.hour == 16

    def test_month_range(self) -> None:
        assert month_range(date(2026, 12, 1)) == Interval(local(date(2026, 12, 1), "00:00"),
                                                          local(date(2027, 1, 1), "00:00"))


class TestOccupied:
    def test_adds_buffers(self) -> None:
        rules = replace(RULES, buffer_before_minutes=15, buffer_after_minutes=30)
        assert rules.occupied(local(WEDNESDAY, "09:00"), local(WEDNESDAY, "11:00")) == span(
            WEDNESDAY, "08:45", "11:30")
