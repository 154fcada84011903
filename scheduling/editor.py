"""The availability and rules editor: managers publish opening windows, date overrides, blackouts and rules.

Every use case checks everything first (all problems at once, fields named as in the API), then writes, records
the activity and, when the change collides with active bookings, lists them and notifies their users. The
bookings are kept: a blackout never silently drops a booking, the manager decides (cancel, move, or keep).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import User
from booking.activity.service import changed, record, snapshot
from booking.auth.principal import Principal
from booking.core.clock import to_local, utcnow
from booking.core.errors import Forbidden, NotFound, Problem, RuleViolation
from booking.notify.service import notify
from booking.reservations.models import Booking
from instruments.models import Instrument
from instruments.service import get_visible, may_manage
from scheduling import queries
from scheduling import repository as schedule_repo
from scheduling.availability import Availability, Closure, RecurringBlackout, colliding, outside
from scheduling.availability import Blackout as BlackoutSpan
from scheduling.calendar import HolidayCalendar
from scheduling.intervals import Interval, local_date, local_midnight
from scheduling.models import Blackout, HolidayOverride, InstrumentRules, OpeningWindow, ScheduleOverride
from scheduling.rules import BookingRules, rules_problems
from scheduling.schemas import BlackoutIn, HolidayOverrideIn, OverrideIn, RulesIn, WindowIn

GRANULARITIES = (5, 10, 15, 20, 30, 60, 120, 240)
# How far ahead a recurring blackout is checked against bookings (bookings beyond any horizon are rare).
RECURRING_REACH = timedelta(days=400)

# BookingRules attribute -> API field, so a problem from the pure check names the field the manager edits.
_RULE_FIELDS = {
    "slot_minutes": "granularity_min", "min_duration_minutes": "min_duration_min",
    "max_duration_minutes": "max_duration_min", "min_lead_minutes": "min_lead_min",
    "max_horizon_days": "max_horizon_days", "max_user_hours_per_week": "max_user_hours_week",
    "max_institution_hours_per_month": "max_institution_hours_month",
    "cancellation_deadline_hours": "cancellation_deadline_h", "buffer_before_minutes": "buffer_before_min",
    "buffer_after_minutes": "buffer_after_min",
}
# CHECK constraint -> field: the database's guarantee behind the checks above, should they ever disagree.
_CHECK_FIELDS = {
    "ck_booking_rules_granularity": "granularity_min", "ck_booking_rules_durations": "max_duration_min",
    "ck_booking_rules_window": "max_horizon_days", "ck_booking_rules_buffers": "buffer_before_min",
    "ck_booking_rules_deadlines": "no_show_grace_min", "ck_opening_windows_order": "end",
    "ck_opening_windows_validity": "valid_to", "ck_opening_windows_weekday": "weekday",
    "ck_blackouts_shape": "starts_at",
}
WEEKDAYS = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")


@dataclass
class Affected:
    booking: Booking
    user: User | None
    closures: list[Closure] = field(default_factory=list)


@dataclass
class Schedule:
    instrument: Instrument
    windows: list[OpeningWindow]
    overrides: list[ScheduleOverride]
    blackouts: list[Blackout]
    rules: InstrumentRules
    rules_saved: bool


@dataclass
class ChangeResult:
    affected: list[Affected]
    notified: int


@dataclass
class BlackoutResult:
    blackout: Blackout
    colliding: list[Affected]
    notified: int


async def managed_instrument(session: AsyncSession, principal: Principal, instrument_id: int) -> Instrument:
    inst = await get_visible(session, principal, instrument_id)
    if not may_manage(principal, inst.institution_id, inst.facility_id):
        raise Forbidden("只有该仪器的管理员可以编辑开放时间和预约规则")
    return inst


async def get_schedule(session: AsyncSession, principal: Principal, instrument_id: int) -> Schedule:
    inst = await managed_instrument(session, principal, instrument_id)
    now = utcnow()
    row = await schedule_repo.rules_row(session, instrument_id)
    return Schedule(
        instrument=inst,
        windows=await queries.windows(session, instrument_id),
        overrides=await queries.overrides(session, instrument_id, since=local_date(now) - timedelta(days=30)),
        blackouts=await queries.blackouts(session, instrument_id, since=now - timedelta(days=30)),
        rules=row or InstrumentRules(instrument_id=instrument_id),
        rules_saved=row is not None,
    )


# ---- checks -----------------------------------------------------------------------------------------------------

def _window_problems(windows: Sequence[WindowIn], existing: Sequence[OpeningWindow] = (),
                     prefix: str = "windows") -> list[Problem]:
    problems: list[Problem] = []

    def name(i: int, f: str) -> str:
        return f"{prefix}[{i}].{f}" if prefix else f

    for i, w in enumerate(windows):
        if w.end <= w.start:
            problems.append(Problem(name(i, "end"), "end_not_after_start", "结束时间须晚于开始时间（不支持跨午夜的时段）"))
        if w.valid_from and w.valid_to and w.valid_to < w.valid_from:
            problems.append(Problem(name(i, "valid_to"), "invalid_range", "失效日期不能早于生效日期"))
    others: list[tuple[int | None, int, time, time, date | None, date | None]] = [
        (None, e.weekday, e.start_time, e.end_time, e.valid_from, e.valid_to) for e in existing]
    for i, w in enumerate(windows):
        if w.end <= w.start:
            continue
        for j, wd, s, e, vf, vt in others:
            if wd == w.weekday and s < w.end and w.start < e and _validity_overlaps(vf, vt, w.valid_from, w.valid_to):
                where = f"第 {j + 1} 个时段" if j is not None else "已有时段"
                problems.append(Problem(name(i, "start"), "overlap",
                                        f"{WEEKDAYS[w.weekday]} {w.start:%H:%M}–{w.end:%H:%M} 与{where}重叠"))
                break
        others.append((i, w.weekday, w.start, w.end, w.valid_from, w.valid_to))
    return problems


def _validity_overlaps(a_from: date | None, a_to: date | None, b_from: date | None, b_to: date | None) -> bool:
    return (a_from is None or b_to is None or a_from <= b_to) and (b_from is None or a_to is None or b_from <= a_to)


def _blackout_problems(data: BlackoutIn) -> list[Problem]:
    problems: list[Problem] = []
    once = data.starts_at is not None or data.ends_at is not None
    weekly = data.weekday is not None or data.start_time is not None or data.end_time is not None
    if once and weekly:
        problems.append(Problem("weekday", "one_shape", "一次性停机（起止时间）与每周重复停机（星期与钟点）只能填写一种"))
        return problems
    if not once and not weekly:
        problems.append(Problem("starts_at", "missing", "请填写停机的开始和结束时间，或每周重复的星期与钟点"))
        return problems
    if once:
        if data.starts_at is None:
            problems.append(Problem("starts_at", "missing", "必填"))
        if data.ends_at is None:
            problems.append(Problem("ends_at", "missing", "必填"))
        if data.starts_at and data.ends_at and data.ends_at <= data.starts_at:
            problems.append(Problem("ends_at", "end_not_after_start", "结束时间须晚于开始时间"))
        if data.ends_at and data.ends_at <= utcnow():
            problems.append(Problem("ends_at", "in_past", "停机时段已经结束"))
        if data.valid_from or data.valid_to:
            problems.append(Problem("valid_from", "not_for_once", "生效/失效日期只用于每周重复的停机"))
    else:
        if data.weekday is None:
            problems.append(Problem("weekday", "missing", "必填"))
        if data.start_time is None:
            problems.append(Problem("start_time", "missing", "必填"))
        if data.end_time is None:
            problems.append(Problem("end_time", "missing", "必填"))
        if data.start_time and data.end_time and data.end_time <= data.start_time:
            problems.append(Problem("end_time", "end_not_after_start", "结束时间须晚于开始时间（不支持跨午夜）"))
        if data.valid_from and data.valid_to and data.valid_to < data.valid_from:
            problems.append(Problem("valid_to", "invalid_range", "失效日期不能早于生效日期"))
    return problems


def rule_edit_problems(data: RulesIn) -> list[Problem]:
    """Every problem of a rules edit: the pure consistency check plus what the database's CHECKs demand."""
    problems: list[Problem] = []
    if data.granularity_min not in GRANULARITIES:
        problems.append(Problem("granularity_min", "invalid_granularity",
                                f"时间粒度须为 {'、'.join(map(str, GRANULARITIES))} 分钟之一"))
    pure = BookingRules(
        slot_minutes=data.granularity_min if data.granularity_min in GRANULARITIES else 30,
        min_duration_minutes=data.min_duration_min, max_duration_minutes=data.max_duration_min,
        min_lead_minutes=data.min_lead_min, max_horizon_days=data.max_horizon_days,
        max_user_hours_per_week=Decimal(data.max_user_hours_week) if data.max_user_hours_week is not None else None,
        max_institution_hours_per_month=(Decimal(data.max_institution_hours_month)
                                         if data.max_institution_hours_month is not None else None),
        approval_required=data.approval_required, cancellation_deadline_hours=data.cancellation_deadline_h,
        buffer_before_minutes=data.buffer_before_min, buffer_after_minutes=data.buffer_after_min,
    )
    for p in rules_problems(pure):
        if data.granularity_min not in GRANULARITIES and p.code == "not_multiple":
            continue  # multiples of an invalid granularity say nothing useful
        problems.append(Problem(_RULE_FIELDS.get(p.field or "", p.field), p.code, p.message))
    if data.no_show_grace_min <= 0:
        problems.append(Problem("no_show_grace_min", "not_positive", "爽约宽限时间须为正数（分钟）"))
    return problems


def _raise(problems: list[Problem], detail: str) -> None:
    if problems:
        raise RuleViolation(detail, problems=problems)


async def _flush(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        text = str(exc.orig)
        for name, field_name in _CHECK_FIELDS.items():
            if name in text:
                raise RuleViolation("数据不符合约束", problems=[
                    Problem(field_name, "constraint", "取值不符合数据库约束，请检查")]) from None
        raise


# ---- collisions -------------------------------------------------------------------------------------------------

async def _with_users(session: AsyncSession, rows: list[tuple[Booking, list[Closure]]]) -> list[Affected]:
    users = await queries.users_by_id(session, [b.user_id for b, _ in rows])
    return [Affected(b, users.get(b.user_id), c) for b, c in rows]


async def _outside_ids(session: AsyncSession, inst: Instrument, bookings: Sequence[Booking]) -> set[int]:
    """Ids of the bookings not wholly inside the instrument's opening time as it stands in the session."""
    if not bookings:
        return set()
    start = min(b.start_at for b in bookings)
    end = max(b.end_at for b in bookings)
    row = await schedule_repo.rules_row(session, inst.id)  # type: ignore[arg-type]
    availability = await schedule_repo.load_availability(session, inst.id, start, end, row)  # type: ignore[arg-type]
    open_time = availability.open_intervals(start - timedelta(days=1), end + timedelta(days=1))
    return set(outside([(b.id, Interval(b.start_at, b.end_at)) for b in bookings], open_time))


async def _notify_affected(session: AsyncSession, inst: Instrument, affected: Sequence[Affected], *, kind: str,
                           title: str, why: str) -> int:
    for item in affected:
        b = item.booking
        when = f"{to_local(b.start_at):%Y-%m-%d %H:%M}–{to_local(b.end_at):%H:%M}"
        detail = "；".join(f"{to_local(c.interval.start):%m-%d %H:%M}–{to_local(c.interval.end):%m-%d %H:%M}"
                          + (f"（{c.reason}）" if c.reason else "") for c in item.closures)
        await notify(session, b.user_id, kind=kind, title=f"{title}：{inst.name}",
                     body=f"{inst.name} {why}{('：' + detail) if detail else ''}，与您 {when} 的预约冲突。"
                          "预约仍然保留，仪器管理员会与您联系；您也可以改约或取消。",
                     link=f"/bookings/{b.id}")
    return len(affected)


async def _schedule_change(session: AsyncSession, inst: Instrument, before_outside: set[int],
                           bookings: Sequence[Booking], why: str) -> ChangeResult:
    """After a change to windows or overrides: bookings newly outside the opening time, listed and notified."""
    await _flush(session)
    after = await _outside_ids(session, inst, bookings)
    newly: list[tuple[Booking, list[Closure]]] = [(b, []) for b in bookings
                                                  if b.id in after and b.id not in before_outside]
    affected = await _with_users(session, newly)
    notified = await _notify_affected(session, inst, affected, kind="schedule.changed", title="开放时间调整",
                                      why=why)
    return ChangeResult(affected, notified)


async def _future_bookings(session: AsyncSession, instrument_id: int) -> list[Booking]:
    return await queries.active_bookings(session, instrument_id, utcnow(), None)


# ---- windows ----------------------------------------------------------------------------------------------------

def _window_snapshot(rows: Sequence[OpeningWindow | WindowIn]) -> list[dict[str, Any]]:
    out = []
    for w in rows:
        start = w.start_time if isinstance(w, OpeningWindow) else w.start
        end = w.end_time if isinstance(w, OpeningWindow) else w.end
        out.append({"weekday": w.weekday, "start": start.strftime("%H:%M"), "end": end.strftime("%H:%M"),
                    "valid_from": w.valid_from, "valid_to": w.valid_to})
    return out


async def replace_windows(session: AsyncSession, principal: Principal, instrument_id: int,
                          windows: Sequence[WindowIn]) -> ChangeResult:
    inst = await managed_instrument(session, principal, instrument_id)
    _raise(_window_problems(windows), "开放时段有误")
    bookings = await _future_bookings(session, instrument_id)
    before_outside = await _outside_ids(session, inst, bookings)
    old = await queries.windows(session, instrument_id)
    before = _window_snapshot(old)
    await queries.delete_windows(session, instrument_id)
    for w in windows:
        session.add(OpeningWindow(instrument_id=instrument_id, weekday=w.weekday, start_time=w.start,
                                  end_time=w.end, valid_from=w.valid_from, valid_to=w.valid_to))
    result = await _schedule_change(session, inst, before_outside, bookings, "的每周开放时间已调整")
    record(session, actor_id=principal.id, action="schedule.updated", target_type="instrument",
           target_id=instrument_id, before={"windows": before},
           after={"windows": _window_snapshot(windows), "affected_bookings": [a.booking.id for a in result.affected]})
    return result


async def add_window(session: AsyncSession, principal: Principal, instrument_id: int, window: WindowIn
                     ) -> ChangeResult:
    inst = await managed_instrument(session, principal, instrument_id)
    existing = await queries.windows(session, instrument_id)
    _raise(_window_problems([window], existing, prefix=""), "开放时段有误")
    bookings = await _future_bookings(session, instrument_id)
    before_outside = await _outside_ids(session, inst, bookings)
    session.add(OpeningWindow(instrument_id=instrument_id, weekday=window.weekday, start_time=window.start,
                              end_time=window.end, valid_from=window.valid_from, valid_to=window.valid_to))
    result = await _schedule_change(session, inst, before_outside, bookings, "的每周开放时间已调整")
    record(session, actor_id=principal.id, action="schedule.updated", target_type="instrument",
           target_id=instrument_id, after={"added_window": _window_snapshot([window])[0]})
    return result


async def delete_window(session: AsyncSession, principal: Principal, instrument_id: int, window_id: int
                        ) -> ChangeResult:
    inst = await managed_instrument(session, principal, instrument_id)
    row = await session.get(OpeningWindow, window_id)
    if row is None or row.instrument_id != instrument_id:
        raise NotFound(f"开放时段 {window_id} 不存在")
    bookings = await _future_bookings(session, instrument_id)
    before_outside = await _outside_ids(session, inst, bookings)
    snap = _window_snapshot([row])[0]
    await session.delete(row)
    result = await _schedule_change(session, inst, before_outside, bookings, "的每周开放时间已调整")
    record(session, actor_id=principal.id, action="schedule.updated", target_type="instrument",
           target_id=instrument_id, before={"removed_window": snap},
           after={"affected_bookings": [a.booking.id for a in result.affected]})
    return result


# ---- date overrides ---------------------------------------------------------------------------------------------

async def set_override(session: AsyncSession, principal: Principal, instrument_id: int, data: OverrideIn
                       ) -> tuple[ScheduleOverride, ChangeResult]:
    inst = await managed_instrument(session, principal, instrument_id)
    problems: list[Problem] = []
    if data.day < local_date(utcnow()):
        problems.append(Problem("day", "in_past", "不能修改已经过去的日期"))
    spans = sorted((s.start, s.end) for s in data.windows)
    for i, s in enumerate(data.windows):
        if s.end <= s.start:
            problems.append(Problem(f"windows[{i}].end", "end_not_after_start", "结束时间须晚于开始时间"))
    ordered = [sp for sp in spans if sp[1] > sp[0]]
    for (_, a_end), (b_start, _) in pairwise(ordered):
        if b_start < a_end:
            problems.append(Problem("windows", "overlap", "当天的开放时段相互重叠"))
            break
    if not data.windows and not (data.reason and data.reason.strip()):
        problems.append(Problem("reason", "missing", "全天停开时请填写原因"))
    _raise(problems, "特殊日期设置有误")
    day_start, day_end = local_midnight(data.day), local_midnight(data.day + timedelta(days=1))
    bookings = await queries.active_bookings(session, instrument_id, max(day_start, utcnow()), day_end)
    before_outside = await _outside_ids(session, inst, bookings)
    row = await queries.override_on(session, instrument_id, data.day)
    before = {"windows": row.windows, "reason": row.reason} if row else None
    windows = [[a.strftime("%H:%M"), b.strftime("%H:%M")] for a, b in spans]
    if row is None:
        row = ScheduleOverride(instrument_id=instrument_id, day=data.day, windows=windows, reason=data.reason)
        session.add(row)
    else:
        row.windows = windows
        row.reason = data.reason
    why = f"{data.day} 的开放时间已调整" + ("为全天停开" if not windows else "")
    result = await _schedule_change(session, inst, before_outside, bookings, why)
    record(session, actor_id=principal.id, action="schedule.override_set", target_type="instrument",
           target_id=instrument_id, before=before,
           after={"day": data.day, "windows": windows, "reason": data.reason,
                  "affected_bookings": [a.booking.id for a in result.affected]})
    return row, result


async def delete_override(session: AsyncSession, principal: Principal, instrument_id: int, override_id: int
                          ) -> None:
    await managed_instrument(session, principal, instrument_id)
    row = await session.get(ScheduleOverride, override_id)
    if row is None or row.instrument_id != instrument_id:
        raise NotFound(f"特殊日期 {override_id} 不存在")
    record(session, actor_id=principal.id, action="schedule.override_deleted", target_type="instrument",
           target_id=instrument_id, before={"day": row.day, "windows": row.windows, "reason": row.reason})
    await session.delete(row)
    await session.flush()


# ---- blackouts --------------------------------------------------------------------------------------------------

def _blackout_snapshot(row: Blackout) -> dict[str, Any]:
    # The activity log's JSON knows instants and dates; wall-clock times are written as "HH:MM".
    data = snapshot(row, exclude={"created_at", "created_by"})
    for key in ("start_time", "end_time"):
        if data.get(key) is not None:
            data[key] = data[key].strftime("%H:%M")
    return data


def _closures_of(row: Blackout, start: datetime, end: datetime) -> list[Closure]:
    if row.starts_at is not None and row.ends_at is not None:
        availability = Availability(blackouts=(BlackoutSpan(row.starts_at, row.ends_at, row.reason),))
    else:
        assert row.weekday is not None and row.start_time is not None and row.end_time is not None
        availability = Availability(recurring_blackouts=(RecurringBlackout(
            row.weekday, row.start_time, row.end_time, row.reason, row.valid_from, row.valid_to),))
    return availability.closures(start, end)


async def create_blackout(session: AsyncSession, principal: Principal, instrument_id: int, data: BlackoutIn
                          ) -> BlackoutResult:
    inst = await managed_instrument(session, principal, instrument_id)
    _raise(_blackout_problems(data), "停机时段有误")
    row = Blackout(instrument_id=instrument_id, starts_at=data.starts_at, ends_at=data.ends_at,
                   weekday=data.weekday, start_time=data.start_time, end_time=data.end_time,
                   valid_from=data.valid_from, valid_to=data.valid_to, reason=data.reason.strip(),
                   created_by=principal.id, created_at=utcnow())
    session.add(row)
    await _flush(session)
    now = utcnow()
    if row.starts_at is not None and row.ends_at is not None:
        start, end = max(row.starts_at, now), row.ends_at
    else:
        start = max(now, local_midnight(row.valid_from)) if row.valid_from else now
        end = local_midnight(row.valid_to + timedelta(days=1)) if row.valid_to else now + RECURRING_REACH
    hits: list[tuple[Booking, list[Closure]]] = []
    if end > start:
        bookings = await queries.active_bookings(session, instrument_id, start, end)
        closures = _closures_of(row, start - timedelta(days=1), end + timedelta(days=1))
        by_id = {b.id: b for b in bookings}
        found = colliding([(b.id, Interval(b.start_at, b.end_at)) for b in bookings], closures)
        hits = [(by_id[k], v) for k, v in found.items()]
    affected = await _with_users(session, hits)
    why = "将停机"  # the times and the reason follow, per closure
    notified = await _notify_affected(session, inst, affected, kind="schedule.blackout", title="仪器停机与您的预约冲突",
                                      why=why)
    record(session, actor_id=principal.id, action="blackout.created", target_type="instrument",
           target_id=instrument_id, after={**_blackout_snapshot(row),
                                           "colliding_bookings": [a.booking.id for a in affected]})
    return BlackoutResult(row, affected, notified)


async def delete_blackout(session: AsyncSession, principal: Principal, instrument_id: int, blackout_id: int) -> None:
    await managed_instrument(session, principal, instrument_id)
    row = await session.get(Blackout, blackout_id)
    if row is None or row.instrument_id != instrument_id:
        raise NotFound(f"停机时段 {blackout_id} 不存在")
    record(session, actor_id=principal.id, action="blackout.deleted", target_type="instrument",
           target_id=instrument_id, before=_blackout_snapshot(row))
    await session.delete(row)
    await session.flush()


# ---- rules ------------------------------------------------------------------------------------------------------

_RULE_COLUMNS = list(RulesIn.model_fields)


async def update_rules(session: AsyncSession, principal: Principal, instrument_id: int, data: RulesIn
                       ) -> InstrumentRules:
    await managed_instrument(session, principal, instrument_id)
    _raise(rule_edit_problems(data), "预约规则有误")
    row = await schedule_repo.rules_row(session, instrument_id)
    before = snapshot(row, fields=_RULE_COLUMNS) if row else None
    if row is None:
        row = InstrumentRules(instrument_id=instrument_id)
        session.add(row)
    for name in _RULE_COLUMNS:
        setattr(row, name, getattr(data, name))
    row.updated_by = principal.id
    row.updated_at = utcnow()
    await _flush(session)
    after = snapshot(row, fields=_RULE_COLUMNS)
    if before is None:
        record(session, actor_id=principal.id, action="rules.updated", target_type="instrument",
               target_id=instrument_id, after=after)
    else:
        b, a = changed(before, after)
        record(session, actor_id=principal.id, action="rules.updated", target_type="instrument",
               target_id=instrument_id, before=b, after=a)
    return row


# ---- holidays (platform administrators) -------------------------------------------------------------------------

@dataclass
class HolidayYearView:
    year: int
    package_has_schedule: bool
    package: list[tuple[date, str, str]]
    overrides: list[HolidayOverride]
    effective: list[tuple[date, str, str]]


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("只有平台管理员可以修改节假日安排")


def _days(calendar: HolidayCalendar, year: int) -> list[tuple[date, str, str]]:
    days = [(d, "closed", n) for d, n in calendar.closed_days.items() if d.year == year]
    days += [(d, "open", a.name) for d, a in calendar.adjusted_workdays.items() if d.year == year]
    return sorted(days)


async def holiday_year(session: AsyncSession, principal: Principal, year: int) -> HolidayYearView:
    _require_admin(principal)
    if not 2000 <= year <= 2100:
        raise RuleViolation("年份无效", problems=[Problem("year", "invalid_year", "年份须在 2000–2100 之间")])
    package = HolidayCalendar.from_package([year])
    rows = await queries.holiday_overrides(session, year)
    from scheduling.calendar import DayOverride

    effective = package.with_overrides([DayOverride(r.day, r.kind, r.name) for r in rows])  # type: ignore[arg-type]
    return HolidayYearView(year, package.package_has_schedule(year), _days(package, year), rows,
                           _days(effective, year))


async def set_holiday_override(session: AsyncSession, principal: Principal, data: HolidayOverrideIn
                               ) -> HolidayOverride:
    _require_admin(principal)
    problems: list[Problem] = []
    if not 2000 <= data.day.year <= 2100:
        problems.append(Problem("day", "invalid_year", "日期须在 2000–2100 年之间"))
    if not data.name.strip():
        problems.append(Problem("name", "missing", "请填写名称"))
    _raise(problems, "节假日设置有误")
    row = await session.get(HolidayOverride, data.day)
    before = {"kind": row.kind, "name": row.name} if row else None
    if row is None:
        row = HolidayOverride(day=data.day, kind=data.kind, name=data.name.strip(), created_by=principal.id,
                              created_at=utcnow())
        session.add(row)
    else:
        row.kind, row.name, row.created_by, row.created_at = data.kind, data.name.strip(), principal.id, utcnow()
    await session.flush()
    record(session, actor_id=principal.id, action="holiday.override_set", target_type="holiday",
           target_id=data.day.isoformat(), before=before, after={"kind": row.kind, "name": row.name})
    return row


async def delete_holiday_override(session: AsyncSession, principal: Principal, day: date) -> None:
    _require_admin(principal)
    row = await session.get(HolidayOverride, day)
    if row is None:
        raise NotFound(f"{day} 没有管理员设置")
    record(session, actor_id=principal.id, action="holiday.override_deleted", target_type="holiday",
           target_id=day.isoformat(), before={"kind": row.kind, "name": row.name})
    await session.delete(row)
    await session.flush()
