"""Booking rules as data, and the pure check that lists every problem of a booking request at once.

Rule choices (they are part of the interface; the tests pin them):

* **Grid.** Starts must lie on the `slot_minutes` grid counted from local (Asia/Shanghai) midnight, and
  durations must be whole multiples of it. `slot_minutes` must divide 1,440 so that the grid is the same every
  day.
* **Past, lead time, horizon.** A start before `now` is `in_past` (and then not also `lead_time`); a start
  earlier than `now + min_lead_minutes` is `lead_time`; a start later than `now + max_horizon_days` is
  `beyond_horizon`. The horizon is measured on the start: a booking may end after it.
* **Opening hours.** The booking must lie wholly inside one interval of `RuleContext.open_intervals` (windows
  that touch are merged, so a booking may run from a morning window into an afternoon window that starts when
  the first ends). When it touches a local date that is closed as a whole (`closed_day`: holiday or an
  instrument's closed date), that problem is reported instead of the less precise `outside_opening_hours`.
  Buffers are not checked against opening hours (see `scheduling.availability`).
* **Qualification** must be valid at the start instant: `valid_from <= start < valid_until`.
* **Quotas** count booked hours without buffers. A booking that spans a local week (Monday 00:00
  Asia/Shanghai) or month boundary counts each part in the week or month it falls in, and each part is checked
  against its own period's remaining quota. The context supplies the hours already booked per period,
  *excluding* the request itself (exclude the booking being edited when re-checking an edit); `hours_by_week`
  / `hours_by_month` and `week_range` / `month_range` give the lead the period keys and UTC ranges to query.
* **Cancellation** is possible until `cancellation_deadline_hours` before the start; at or after the start it
  is `already_started`.

The check never raises for bad instants: naive datetimes become a `naive_datetime` problem (a silent shift of
eight hours is the worst outcome), and the remaining checks are skipped because nothing can be compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from booking.core.errors import Problem
from scheduling.intervals import (
    Interval,
    find_containing,
    is_on_grid,
    local_dates,
    local_midnight,
    merge,
    require_aware,
)

MINUTES_PER_DAY = 1440
SECONDS_PER_HOUR = 3600

# 运行状态 values of the national platform under which an instrument takes no bookings. A retired instrument
# is expressed by `RuleContext.instrument_active=False`, since the national list has no "retired" state.
DEFAULT_UNBOOKABLE_STATUSES: frozenset[str] = frozenset({"故障频繁", "待修", "待报废"})


@dataclass(frozen=True)
class BookingRules:
    """Per-instrument booking rules, edited by managers. Minutes, hours and days as the names say.

    `None` for a maximum means "no limit". Validate edits with `rules_problems` before storing them.
    """

    slot_minutes: int = 30
    min_duration_minutes: int = 30
    max_duration_minutes: int | None = 8 * 60
    min_lead_minutes: int = 0
    max_horizon_days: int | None = 60
    max_user_hours_per_week: Decimal | None = None
    max_institution_hours_per_month: Decimal | None = None
    approval_required: bool = False
    qualification_required: bool = False
    external_users_allowed: bool = True
    cancellation_deadline_hours: int = 24
    buffer_before_minutes: int = 0
    buffer_after_minutes: int = 0

    def occupied(self, start: datetime, end: datetime) -> Interval:
        """The UTC interval a booking `[start, end)` holds with its set-up and cool-down buffers: what the
        exclusion constraint compares and what `Busy` should contain for other requests."""
        return Interval(
            require_aware(start) - timedelta(minutes=self.buffer_before_minutes),
            require_aware(end) + timedelta(minutes=self.buffer_after_minutes),
        )


def rules_problems(rules: BookingRules) -> list[Problem]:
    """Every inconsistency in a manager's rule edit, fields named after the attributes."""
    problems: list[Problem] = []
    slot = rules.slot_minutes
    if slot < 1 or MINUTES_PER_DAY % slot:
        problems.append(
            Problem("slot_minutes", "invalid_slot", "时间粒度须为能整除 1440 的正整数分钟（如 15、30、60）")
        )
        slot = 0
    if rules.min_duration_minutes < 1:
        problems.append(Problem("min_duration_minutes", "invalid_minimum", "最短时长须为正数"))
    elif slot and rules.min_duration_minutes % slot:
        problems.append(Problem("min_duration_minutes", "not_multiple",
                                f"最短时长须为时间粒度 {slot} 分钟的整数倍"))
    if rules.max_duration_minutes is not None:
        if rules.max_duration_minutes < rules.min_duration_minutes:
            problems.append(Problem("max_duration_minutes", "max_below_min", "最长时长不能小于最短时长"))
        elif slot and rules.max_duration_minutes % slot:
            problems.append(Problem("max_duration_minutes", "not_multiple",
                                    f"最长时长须为时间粒度 {slot} 分钟的整数倍"))
    non_negative = {
        "min_lead_minutes": "最少提前时间",
        "cancellation_deadline_hours": "取消截止时间",
        "buffer_before_minutes": "准备时间",
        "buffer_after_minutes": "冷却时间",
    }
    for name, label in non_negative.items():
        if getattr(rules, name) < 0:
            problems.append(Problem(name, "negative", f"{label}不能为负数"))
    positive: dict[str, tuple[Decimal | int | None, str]] = {
        "max_horizon_days": (rules.max_horizon_days, "最远可预约天数"),
        "max_user_hours_per_week": (rules.max_user_hours_per_week, "每人每周上限"),
        "max_institution_hours_per_month": (rules.max_institution_hours_per_month, "每单位每月上限"),
    }
    for name, (value, label) in positive.items():
        if value is not None and value <= 0:
            problems.append(Problem(name, "not_positive", f"{label}须为正数，或留空表示不限"))
    return problems


@dataclass(frozen=True)
class BookingRequest:
    """What a user asks for: an instrument, a user, and `[start, end)` as timezone-aware instants."""

    instrument_id: int
    user_id: int
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Qualification:
    """A manager's qualification of the user on the instrument, valid in `[valid_from, valid_until)`."""

    valid_from: datetime
    valid_until: datetime | None = None

    def valid_at(self, instant: datetime) -> bool:
        """Whether the qualification holds at `instant` (aware)."""
        return self.valid_from <= instant and (self.valid_until is None or instant < self.valid_until)


@dataclass(frozen=True)
class RuleContext:
    """Facts the check needs besides the request, gathered by the service.

    `open_intervals` must cover every local date the request touches (`Availability.open_intervals` over those
    dates); `closed_days` maps closed local dates to a reason (`Availability.closed_days`). Quota maps are
    keyed by the local Monday of a week and the local first day of a month, values in hours, the request
    itself excluded.
    """

    now: datetime
    rules: BookingRules
    open_intervals: Sequence[Interval] = ()
    closed_days: Mapping[date, str] = field(default_factory=dict)
    instrument_status: str = "正常"
    instrument_active: bool = True
    user_is_external: bool = False
    user_blocked: bool = False
    qualifications: Sequence[Qualification] = ()
    user_hours_by_week: Mapping[date, Decimal] = field(default_factory=dict)
    institution_hours_by_month: Mapping[date, Decimal] = field(default_factory=dict)
    unbookable_statuses: frozenset[str] = DEFAULT_UNBOOKABLE_STATUSES


def week_start(day: date) -> date:
    """The Monday of the week containing local date `day`."""
    return day - timedelta(days=day.weekday())


def month_start(day: date) -> date:
    """The first day of the month containing local date `day`."""
    return day.replace(day=1)


def _next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def week_range(monday: date) -> Interval:
    """UTC interval of the local week beginning on `monday`."""
    return Interval(local_midnight(monday), local_midnight(monday + timedelta(days=7)))


def month_range(first: date) -> Interval:
    """UTC interval of the local month beginning on `first`."""
    return Interval(local_midnight(first), local_midnight(_next_month(first)))


def _split_hours(start: datetime, end: datetime, period_of: dict[date, Interval]) -> dict[date, Decimal]:
    span = Interval(start, end)
    hours: dict[date, Decimal] = {}
    for key, period in sorted(period_of.items()):
        overlap = min(span.end, period.end) - max(span.start, period.start)
        if overlap > timedelta(0):
            hours[key] = Decimal(overlap // timedelta(seconds=1)) / SECONDS_PER_HOUR
    return hours


def hours_by_week(start: datetime, end: datetime) -> dict[date, Decimal]:
    """Hours of `[start, end)` in each local week it touches, keyed by the week's Monday."""
    mondays = {week_start(day) for day in local_dates(start, end)}
    return _split_hours(start, end, {monday: week_range(monday) for monday in mondays})


def hours_by_month(start: datetime, end: datetime) -> dict[date, Decimal]:
    """Hours of `[start, end)` in each local month it touches, keyed by the month's first day."""
    firsts = {month_start(day) for day in local_dates(start, end)}
    return _split_hours(start, end, {first: month_range(first) for first in firsts})


def _hours_text(value: Decimal) -> str:
    text = f"{value.quantize(Decimal('0.01')):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _minutes_text(minutes: int) -> str:
    if minutes % 60 == 0:
        return f"{minutes // 60} 小时"
    return f"{minutes} 分钟"


def check_booking(request: BookingRequest, context: RuleContext) -> list[Problem]:
    """Every problem with `request` under `context`, in a stable order; an empty list means the booking may be
    made.

    Conflicts with other bookings are not checked here: the database's exclusion constraint decides those.
    """
    naive = [name for name in ("start", "end") if getattr(request, name).utcoffset() is None]
    if context.now.utcoffset() is None:
        raise ValueError("context.now must be timezone-aware")
    if naive:
        message = "时间须带时区（如 2026-12-01T09:00:00+08:00）"
        return [Problem(name, "naive_datetime", message) for name in naive]

    rules = context.rules
    start, end = require_aware(request.start), require_aware(request.end)
    now = require_aware(context.now)
    problems: list[Problem] = []

    span_valid = end > start
    if not span_valid:
        problems.append(Problem("end", "end_not_after_start", "结束时间须晚于开始时间"))
    if not is_on_grid(start, rules.slot_minutes):
        problems.append(Problem("start", "start_not_aligned",
                                f"开始时间须对齐到 {rules.slot_minutes} 分钟的整点刻度"))
    if span_valid:
        problems.extend(_duration_problems(start, end, rules))

    if start < now:
        problems.append(Problem("start", "in_past", "开始时间已过"))
    elif start < now + timedelta(minutes=rules.min_lead_minutes):
        problems.append(Problem("start", "lead_time",
                                f"须至少提前 {_minutes_text(rules.min_lead_minutes)}预约"))
    if rules.max_horizon_days is not None and start > now + timedelta(days=rules.max_horizon_days):
        problems.append(
            Problem("start", "beyond_horizon", f"最多只能预约 {rules.max_horizon_days} 天以内的时段")
        )

    if span_valid:
        problems.extend(_opening_problems(start, end, context))

    if not context.instrument_active:
        problems.append(Problem("instrument_id", "instrument_retired", "该仪器已停用，不接受预约"))
    elif context.instrument_status in context.unbookable_statuses:
        problems.append(Problem("instrument_id", "instrument_not_bookable",
                                f"仪器当前状态为「{context.instrument_status}」，暂不接受预约"))

    if context.user_blocked:
        problems.append(Problem("user", "user_blocked", "因多次爽约，预约资格已被暂停，请联系仪器管理员解除"))
    if not rules.external_users_allowed and context.user_is_external:
        problems.append(Problem("user", "internal_only", "该仪器仅对本单位内部用户开放"))
    if rules.qualification_required and not any(q.valid_at(start) for q in context.qualifications):
        problems.append(
            Problem("user", "not_qualified", "使用该仪器需先取得上机资格（培训考核），或资格已过期")
        )

    if span_valid:
        problems.extend(_quota_problems(start, end, context))
    return problems


def _duration_problems(start: datetime, end: datetime, rules: BookingRules) -> list[Problem]:
    problems: list[Problem] = []
    duration = end - start
    if duration % timedelta(minutes=rules.slot_minutes):
        problems.append(Problem("end", "duration_not_multiple",
                                f"预约时长须为 {rules.slot_minutes} 分钟的整数倍"))
    if duration < timedelta(minutes=rules.min_duration_minutes):
        shortest = _minutes_text(rules.min_duration_minutes)
        problems.append(Problem("end", "too_short", f"预约时长不能少于 {shortest}"))
    if rules.max_duration_minutes is not None and duration > timedelta(minutes=rules.max_duration_minutes):
        longest = _minutes_text(rules.max_duration_minutes)
        problems.append(Problem("end", "too_long", f"预约时长不能超过 {longest}"))
    return problems


def _opening_problems(start: datetime, end: datetime, context: RuleContext) -> list[Problem]:
    closed = [
        (day, context.closed_days[day]) for day in local_dates(start, end) if day in context.closed_days
    ]
    if closed:
        names = "、".join(f"{day.isoformat()}（{reason}）" for day, reason in closed)
        return [Problem("start", "closed_day", f"所选日期不开放：{names}")]
    if find_containing(merge(context.open_intervals), Interval(start, end)) is None:
        message = "所选时段不在仪器开放时间内（或与停机维护时段重叠）"
        return [Problem("start", "outside_opening_hours", message)]
    return []


def _quota_problems(start: datetime, end: datetime, context: RuleContext) -> list[Problem]:
    rules = context.rules
    problems: list[Problem] = []
    checks = (
        (rules.max_user_hours_per_week, hours_by_week(start, end), context.user_hours_by_week,
         "user_week_quota", "本周（{key} 起）"),
        (rules.max_institution_hours_per_month, hours_by_month(start, end),
         context.institution_hours_by_month, "institution_month_quota", "{month} 月"),
    )
    for cap, wanted, booked, code, period_text in checks:
        if cap is None:
            continue
        for key, hours in wanted.items():
            total = booked.get(key, Decimal(0)) + hours
            if total > cap:
                period = period_text.format(key=key.isoformat(), month=f"{key.year} 年 {key.month}")
                who = "您" if code == "user_week_quota" else "您所在单位"
                problems.append(Problem(
                    "user", code,
                    f"{who}{period}的预约将达 {_hours_text(total)} 小时，超过上限 {_hours_text(cap)} 小时",
                ))
    return problems


def check_cancellation(booking_start: datetime, now: datetime, rules: BookingRules) -> list[Problem]:
    """Problems with cancelling a booking that starts at `booking_start` at instant `now` (both aware)."""
    start, current = require_aware(booking_start), require_aware(now)
    if current >= start:
        return [Problem("start", "already_started", "预约已开始，不能取消")]
    deadline = start - timedelta(hours=rules.cancellation_deadline_hours)
    if current > deadline:
        return [Problem("start", "cancellation_deadline_passed",
                        f"须在开始前 {rules.cancellation_deadline_hours} 小时以前取消，现已超过取消截止时间")]
    return []
