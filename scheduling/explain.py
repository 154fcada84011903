"""Explain and simulate.

* `explain_slot`: for any requested slot, the rules and the bookings that block it (and the blackouts and closed
  days behind an "outside opening hours"). Another user's booking shows its times and status only; the
  instrument's managers also see who holds it.
* `simulate_change`: for a manager, what a proposed change of weekly opening windows and/or booking rules would do
  to the active bookings of the coming weeks, before saving anything: bookings that would fall outside the new
  opening time (`availability.outside`), break the new duration or grid rules, or collide through the new set-up
  and cool-down buffers. Only bookings the change itself affects are listed (not ones already outside today).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from booking.auth.principal import Principal
from booking.core.clock import to_local, utcnow
from booking.core.errors import Problem, RuleViolation
from booking.reservations import repository as booking_repo
from booking.reservations import service as reservations
from booking.reservations.models import STATUS_LABELS, Booking
from instruments.service import get_visible, may_manage
from scheduling import editor, queries
from scheduling import repository as schedule_repo
from scheduling.availability import WeeklyWindow, outside
from scheduling.conflict_schemas import SimulationIn
from scheduling.intervals import Interval, find_containing, is_on_grid, merge


async def explain_slot(session: AsyncSession, principal: Principal | None, instrument_id: int, start: datetime,
                       end: datetime) -> dict[str, Any]:
    if end <= start:
        raise RuleViolation("时间范围无效", problems=[Problem("end", "end_not_after_start", "结束时间须晚于开始时间")])
    if end - start > timedelta(days=14):
        raise RuleViolation("时间范围过长", problems=[Problem("end", "range_too_long", "一次最多解释 14 天的时段")])
    inst = await get_visible(session, principal, instrument_id)
    ctx = await reservations.instrument_context(session, inst, start - timedelta(days=1), end + timedelta(days=1))
    problems = await reservations.rule_problems(session, ctx, principal.user, start, end) if principal else []
    occupied = ctx.rules.occupied(start, end)
    clashes = await booking_repo.conflicting(session, inst.id, occupied.start, occupied.end)  # type: ignore[arg-type]
    manager = principal is not None and may_manage(principal, inst.institution_id, inst.facility_id)
    names = await queries.users_by_id(session, [b.user_id for b in clashes]) if manager else {}
    bookings = []
    for b in clashes:
        mine = principal is not None and b.user_id == principal.id
        bookings.append({
            "booking_id": b.id if (mine or manager) else None, "status": b.status, "start": b.start_at,
            "end": b.end_at, "blocked_start": b.blocked.lower, "blocked_end": b.blocked.upper, "mine": mine,
            "user_name": names[b.user_id].name if b.user_id in names else None})
    closures = [{"start": c.interval.start, "end": c.interval.end, "reason": c.reason}
                for c in ctx.availability.closures(start, end)]
    closed_days = {d.isoformat(): reason for d, reason in ctx.availability.closed_days(start, end).items()}
    open_time = merge(ctx.availability.open_intervals(start - timedelta(days=1), end + timedelta(days=1)))
    outside_hours = find_containing(open_time, Interval(start, end)) is None
    bookable = not problems and not clashes
    reasons = []
    if clashes:
        reasons.append(f"与 {len(clashes)} 个预约（含准备/冷却时间）冲突")
    if closures:
        reasons.append("停机：" + "、".join(c["reason"] for c in closures))
    if closed_days:
        reasons.append("闭馆：" + "、".join(closed_days.values()))
    if outside_hours and not closures and not closed_days:
        reasons.append("不在开放时间内")
    other = [p.message for p in problems if p.code not in ("outside_opening_hours", "closed_day")]
    reasons += other
    summary = "该时段可以预约" if bookable else "该时段不能预约：" + "；".join(reasons or ["不符合预约规则"])
    return {"instrument_id": inst.id, "start": start, "end": end, "bookable": bookable, "summary": summary,
            "rule_problems": [p.as_dict() for p in problems], "bookings": bookings, "closures": closures,
            "closed_days": closed_days, "outside_opening_hours": outside_hours}


@dataclass
class AffectedBooking:
    booking: Booking
    user_name: str
    reasons: list[str]


@dataclass
class Simulation:
    start: datetime
    end: datetime
    checked: int
    affected: list[AffectedBooking]


def _prefixed(problems: list[Problem], prefix: str) -> list[Problem]:
    return [Problem(f"{prefix}.{p.field}" if p.field else prefix, p.code, p.message) for p in problems]


async def simulate_change(session: AsyncSession, principal: Principal, instrument_id: int, data: SimulationIn
                          ) -> Simulation:
    await editor.managed_instrument(session, principal, instrument_id)
    problems: list[Problem] = []
    if data.windows is None and data.rules is None:
        problems.append(Problem("windows", "nothing_to_simulate", "请提供新的开放时段或预约规则"))
    if data.windows is not None:
        problems += editor._window_problems(data.windows)
    if data.rules is not None:
        problems += _prefixed(editor.rule_edit_problems(data.rules), "rules")
    if problems:
        raise RuleViolation("模拟的调整有误", problems=problems)
    now = utcnow()
    end = now + timedelta(days=data.days)
    bookings = await queries.active_bookings(session, instrument_id, now, end)
    row = await schedule_repo.rules_row(session, instrument_id)
    current = await schedule_repo.load_availability(session, instrument_id, now - timedelta(days=1),
                                                    end + timedelta(days=1), row)
    proposed = current
    if data.windows is not None:
        proposed = replace(proposed, weekly=tuple(WeeklyWindow(w.weekday, w.start, w.end, w.valid_from, w.valid_to)
                                                  for w in data.windows))
    if data.rules is not None:
        proposed = replace(proposed, follow_holidays=data.rules.follow_holidays,
                           buffer_before_minutes=data.rules.buffer_before_min,
                           buffer_after_minutes=data.rules.buffer_after_min)
    reasons: dict[int, list[str]] = {b.id: [] for b in bookings}  # type: ignore[misc]
    keyed = [(b.id, Interval(b.start_at, b.end_at)) for b in bookings]
    span_start, span_end = now - timedelta(days=1), end + timedelta(days=1)
    already_out = set(outside(keyed, current.open_intervals(span_start, span_end)))
    for key in outside(keyed, proposed.open_intervals(span_start, span_end)):
        if key not in already_out:
            reasons[key].append("不在调整后的开放时间内")  # type: ignore[index]
    if data.rules is not None:
        r = data.rules
        old_before = row.buffer_before_min if row else 0
        old_after = row.buffer_after_min if row else 0
        for b in bookings:
            minutes = int((b.end_at - b.start_at).total_seconds() // 60)
            if minutes > r.max_duration_min:
                reasons[b.id].append(f"时长 {minutes} 分钟超过新的最长时长 {r.max_duration_min} 分钟")  # type: ignore[index]
            if minutes < r.min_duration_min:
                reasons[b.id].append(f"时长 {minutes} 分钟短于新的最短时长 {r.min_duration_min} 分钟")  # type: ignore[index]
            if not (is_on_grid(b.start_at, r.granularity_min) and minutes % r.granularity_min == 0):
                reasons[b.id].append(f"不在新的 {r.granularity_min} 分钟时间粒度上")  # type: ignore[index]
        ordered = sorted(bookings, key=lambda b: b.start_at)
        for a, b in pairwise(ordered):
            gap_needed_new = r.buffer_after_min + r.buffer_before_min
            gap_needed_old = old_after + old_before
            gap = b.start_at - a.end_at
            if gap < timedelta(minutes=gap_needed_new) and gap >= timedelta(minutes=gap_needed_old):
                why = f"新的准备/冷却时间（共 {gap_needed_new} 分钟）使其与 {{}} 开始的相邻预约冲突"
                reasons[a.id].append(why.format(f"{to_local(b.start_at):%m-%d %H:%M}"))  # type: ignore[index]
                reasons[b.id].append(why.format(f"{to_local(a.start_at):%m-%d %H:%M}"))  # type: ignore[index]
    users = await queries.users_by_id(session, [b.user_id for b in bookings])
    affected = [AffectedBooking(b, users[b.user_id].name if b.user_id in users else "", reasons[b.id])  # type: ignore[index]
                for b in bookings if reasons[b.id]]  # type: ignore[index]
    return Simulation(now, end, len(bookings), affected)


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status)
