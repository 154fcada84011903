"""Booking use cases. Every status change goes through `transition`, which records the activity with its actor.

Python checks give friendly, complete answers (every rule problem at once); the database gives the guarantee
(the exclusion constraint), so no path can store overlapping active bookings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts import repository as accounts_repo
from booking.accounts.models import Institution, User
from booking.activity.service import record
from booking.auth.principal import Principal
from booking.core.clock import to_local, utcnow
from booking.core.errors import Conflict, Forbidden, NotFound, Problem, RuleViolation
from booking.core.settings import get_settings
from booking.notify.service import notify
from booking.reservations import hooks
from booking.reservations import repository as repo
from booking.reservations.models import (
    ACTIVE_STATUSES,
    STATUS_LABELS,
    Booking,
    BookingBlock,
    BookingSeries,
    BookingStatus,
)
from booking.reservations.queue import managed_instrument_ids, settled_by
from booking.reservations.rules import TRANSITIONS, Actor, transition_problem
from booking.reservations.schemas import BookingCreate
from booking.usage import service as usage
from instruments import repository as instruments_repo
from instruments.models import STATUS_LABELS as INSTRUMENT_STATUS_LABELS
from instruments.models import Instrument, SharingMode
from instruments.service import get_visible, may_manage
from scheduling import repository as schedule_repo
from scheduling.availability import Availability, Busy, Closure
from scheduling.intervals import Interval, local_date
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
    week_range,
)
from scheduling.slots import bookable_slots, nearest_alternatives

log = logging.getLogger("booking.reservations")


@dataclass
class InstrumentContext:
    """An instrument with its rules and published time, loaded once per use case."""

    instrument: Instrument
    rules: BookingRules
    grace_min: int
    availability: Availability
    rounds_group: str | None = None


def _is_external(user: User, instrument: Instrument) -> bool:
    return user.institution_id != instrument.institution_id


async def instrument_context(session: AsyncSession, instrument: Instrument, start: datetime, end: datetime
                             ) -> InstrumentContext:
    schedule = await schedule_repo.load_schedule(session, instrument.id, start, end)  # type: ignore[arg-type]
    row = schedule.rules
    rules = schedule_repo.rules_from_row(
        row, qualification_required=instrument.qualification_required,
        # 内部共享 instruments take only their own institution's users; 不共享 takes none from outside either.
        external_allowed=instrument.sharing_mode == SharingMode.external,
    )
    return InstrumentContext(instrument, rules, row.no_show_grace_min if row else 60, schedule.availability,
                             schedule.rounds_group)


def _qualifications(rows: list[tuple[datetime, date | None]]) -> list[Qualification]:
    from scheduling.intervals import local_midnight

    return [Qualification(valid_from=created_at,
                          valid_until=local_midnight(valid_until + timedelta(days=1)) if valid_until else None)
            for created_at, valid_until in rows]


def _period_hours(spans: list[tuple[datetime, datetime]], splitter: Any, start: datetime, end: datetime
                  ) -> dict[date, Decimal]:
    totals: dict[date, Decimal] = {}
    for a, b in spans:
        for key, hours in splitter(a, b).items():
            totals[key] = totals.get(key, Decimal(0)) + hours
    return totals


async def rule_problems(session: AsyncSession, ctx: InstrumentContext, user: User, start: datetime,
                        end: datetime, *, exclude_id: int | None = None) -> list[Problem]:
    """Every rule problem of booking `user` on the instrument for [start, end)."""
    now = utcnow()
    inst = ctx.instrument
    span_start, span_end = min(start, end), max(start, end)
    weeks = [week_range(local_date(span_start) - timedelta(days=local_date(span_start).weekday())),
             week_range(local_date(span_end) - timedelta(days=local_date(span_end).weekday()))]
    months = [month_range(local_date(span_start).replace(day=1)), month_range(local_date(span_end).replace(day=1))]
    # Everything about the user that the rules need, in one round trip: this runs on every booking request.
    facts = await repo.user_facts(
        session, user.id, inst.id,  # type: ignore[arg-type]
        institution_id=user.institution_id if ctx.rules.max_institution_hours_per_month is not None else None,
        qualifications=ctx.rules.qualification_required,
        week_span=(weeks[0].start, weeks[-1].end) if ctx.rules.max_user_hours_per_week is not None else None,
        month_span=(months[0].start, months[-1].end))
    user_hours = _period_hours(facts.user_spans, hours_by_week, weeks[0].start, weeks[-1].end)
    inst_hours = _period_hours(facts.institution_spans, hours_by_month, months[0].start, months[-1].end)
    day_start = min(start, end) - timedelta(days=1)
    day_end = max(start, end) + timedelta(days=1)
    context = RuleContext(
        now=now,
        rules=ctx.rules,
        open_intervals=ctx.availability.open_intervals(day_start, day_end),
        closed_days=ctx.availability.closed_days(day_start, day_end),
        instrument_status=INSTRUMENT_STATUS_LABELS.get(inst.status, inst.status),
        instrument_active=inst.retired_at is None,
        user_is_external=_is_external(user, inst),
        user_blocked=facts.blocked,
        qualifications=_qualifications(facts.qualifications),
        user_hours_by_week=user_hours,
        institution_hours_by_month=inst_hours,
    )
    return check_booking(BookingRequest(inst.id, user.id, start, end), context)  # type: ignore[arg-type]


async def free_intervals(session: AsyncSession, ctx: InstrumentContext, start: datetime, end: datetime,
                         exclude_id: int | None = None) -> list[Interval]:
    reach = timedelta(minutes=ctx.rules.buffer_before_minutes + ctx.rules.buffer_after_minutes + 1)
    taken = await repo.busy(session, ctx.instrument.id, start - reach, end + reach, exclude_id)  # type: ignore[arg-type]
    return ctx.availability.free_intervals(start, end, [Busy(a, b) for a, b in taken])


async def bookable(session: AsyncSession, principal: Principal | None, instrument_id: int, start: datetime,
                   end: datetime) -> tuple[list[Interval], dict[date, str], InstrumentContext]:
    """Bookable intervals honouring every rule and existing booking, and the closed days, for [start, end)."""
    if end <= start:
        raise RuleViolation("时间范围无效", problems=[Problem("to", "end_not_after_start", "结束时间须晚于开始时间")])
    if end - start > timedelta(days=62):
        raise RuleViolation("时间范围过长", problems=[Problem("to", "range_too_long", "一次最多查询 62 天")])
    inst = await get_visible(session, principal, instrument_id)
    ctx = await instrument_context(session, inst, start, end)
    if inst.retired_at is not None or inst.sharing_mode == SharingMode.none:
        return [], ctx.availability.closed_days(start, end), ctx
    free = await free_intervals(session, ctx, start, end)
    slots = bookable_slots(free, ctx.rules, utcnow(), start, end)
    return slots, ctx.availability.closed_days(start, end), ctx


async def alternatives(session: AsyncSession, ctx: InstrumentContext, start: datetime, end: datetime,
                       k: int | None = None) -> list[dict[str, Any]]:
    """The k nearest bookable slots of the same length on the same instrument (by time shift)."""
    k = k or get_settings().alternatives_count
    now = utcnow()
    window_start = max(now, start - timedelta(days=14))
    window_end = end + timedelta(days=28)
    wide = await instrument_context(session, ctx.instrument, window_start, window_end)
    free = await free_intervals(session, wide, window_start, window_end)
    slots = bookable_slots(free, wide.rules, now, window_start, window_end)
    found = nearest_alternatives(slots, start, end - start, k, wide.rules.slot_minutes)
    return [{"instrument_id": ctx.instrument.id, "start": iv.start.isoformat(), "end": iv.end.isoformat(),
             "reason": "同一仪器最近的空闲时段"} for iv in found]


async def conflict_alternatives(session: AsyncSession, ctx: InstrumentContext, user: User, start: datetime,
                                end: datetime, *, preferred_cities: tuple[str, ...] = (), k: int | None = None
                                ) -> list[dict[str, Any]]:
    """What to propose when [start, end) is taken: the installed provider's answer (the scheduler adds equivalent
    instruments the user may book, see `hooks`), else the nearest slots on the same instrument."""
    k = k or get_settings().alternatives_count
    provider = hooks.alternatives_provider()
    if provider is None:
        return await alternatives(session, ctx, start, end, k)
    return await provider(session, hooks.AlternativesQuery(ctx, user, start, end, k, preferred_cities))


def _blocked(rules: BookingRules, start: datetime, end: datetime) -> Range[datetime]:
    return Range(start - timedelta(minutes=rules.buffer_before_minutes),
                 end + timedelta(minutes=rules.buffer_after_minutes), bounds="[)")


async def _resolve_user(session: AsyncSession, actor: Principal, inst: Instrument, on_behalf_of: int | None
                        ) -> User:
    if on_behalf_of is None or on_behalf_of == actor.id:
        return actor.user
    if not may_manage(actor, inst.institution_id, inst.facility_id):
        raise Forbidden("只有该仪器的管理员可以代他人预约",
                        problems=[Problem("on_behalf_of", "not_manager", "只有该仪器的管理员可以代他人预约")])
    user = await session.get(User, on_behalf_of)
    if user is None or not user.is_active:
        raise RuleViolation("用户不存在", problems=[Problem("on_behalf_of", "unknown_user", f"用户 {on_behalf_of} 不存在")])
    return user


async def _conflict(session: AsyncSession, ctx: InstrumentContext, user: User, start: datetime, end: datetime,
                    preferred_cities: tuple[str, ...] = ()) -> Conflict:
    blocked = _blocked(ctx.rules, start, end)
    clashes = await repo.conflicting(session, ctx.instrument.id, blocked.lower, blocked.upper)  # type: ignore[arg-type]
    conflicts = [{"start": b.start_at.isoformat(), "end": b.end_at.isoformat(),
                  "blocked_start": b.blocked.lower.isoformat() if b.blocked.lower else None,
                  "blocked_end": b.blocked.upper.isoformat() if b.blocked.upper else None} for b in clashes]
    return Conflict(
        "该时段已被预约（含仪器准备/冷却时间）",
        problems=[Problem("start", "slot_taken", "该时段已被预约，请选择其他时间")],
        extra={"conflicts": conflicts,
               "alternatives": await conflict_alternatives(session, ctx, user, start, end,
                                                           preferred_cities=preferred_cities)},
    )


def ics_url(booking_id: int) -> str:
    return f"/api/v1/bookings/{booking_id}.ics"


async def _insert(session: AsyncSession, actor: Principal, user: User, ctx: InstrumentContext, data: BookingCreate,
                  start: datetime, end: datetime, status: BookingStatus, override: str | None,
                  series_id: int | None = None) -> Booking | None:
    now = utcnow()
    return await repo.insert_if_free(session, {
        "instrument_id": ctx.instrument.id, "user_id": user.id, "created_by": actor.id, "series_id": series_id,
        "status": status.value, "start_at": start, "end_at": end, "blocked": _blocked(ctx.rules, start, end),
        "purpose": data.purpose.strip(), "project_name": data.project_name, "funding_source": data.funding_source,
        "service_mode": data.service_mode.value, "sample_notes": data.sample_notes, "override_reason": override,
        "decided_by": actor.id if status == BookingStatus.confirmed else None,
        "decided_at": now if status == BookingStatus.confirmed else None,
        "created_at": now, "updated_at": now,
    })


def _initial_status(ctx: InstrumentContext, actor: Principal) -> BookingStatus:
    manager = may_manage(actor, ctx.instrument.institution_id, ctx.instrument.facility_id)
    return BookingStatus.confirmed if manager or not ctx.rules.approval_required else BookingStatus.pending


async def _check_or_override(session: AsyncSession, actor: Principal, ctx: InstrumentContext, user: User,
                             start: datetime, end: datetime, override_reason: str | None) -> str | None:
    problems = await rule_problems(session, ctx, user, start, end)
    policy = hooks.booking_policy()
    if policy is not None:
        problems += await policy(session, ctx, user,
                                 may_manage(actor, ctx.instrument.institution_id, ctx.instrument.facility_id))
    if not problems:
        return None
    hard = {"end_not_after_start", "naive_datetime", "instrument_retired"}
    if override_reason and may_manage(actor, ctx.instrument.institution_id, ctx.instrument.facility_id) \
            and not any(p.code in hard for p in problems):
        return f"{override_reason.strip()}（越过：{'、'.join(p.code for p in problems)}）"
    if override_reason:
        problems.append(Problem("override_reason", "not_allowed", "只有该仪器的管理员可以越过预约规则"))
    raise RuleViolation("预约不符合规则", problems=problems)


async def create_booking(session: AsyncSession, actor: Principal, data: BookingCreate, *,
                         requested_instrument_id: int | None = None) -> Booking:
    if data.repeat_weekly or data.repeat_until:
        raise RuleViolation("请使用周期预约", problems=[Problem("repeat_weekly", "use_series", "周期预约请调用 create_series")])
    start, end = data.start, data.end
    inst = await get_visible(session, actor, data.instrument_id)
    user = await _resolve_user(session, actor, inst, data.on_behalf_of)
    ctx = await instrument_context(session, inst, start - timedelta(days=1), end + timedelta(days=1))
    override = await _check_or_override(session, actor, ctx, user, start, end, data.override_reason)
    status = _initial_status(ctx, actor)
    booking = await _insert(session, actor, user, ctx, data, start, end, status, override)
    if booking is None:
        conflict = await _conflict(session, ctx, user, start, end, tuple(data.preferred_cities))
        if data.any_equivalent:
            # Every equivalent's own nearest slot is the same time when that is free there, but the k shown in
            # the 409 may all be shifted slots: ask for enough to see each instrument's same-time slot.
            same_time = await conflict_alternatives(session, ctx, user, start, end,
                                                    preferred_cities=tuple(data.preferred_cities), k=100)
            booking = await _book_equivalent(session, actor, data, same_time, inst.id)  # type: ignore[arg-type]
            if booking is not None:
                return booking
        raise conflict
    record(session, actor_id=actor.id, action="booking.created", target_type="booking", target_id=booking.id,
           after={"instrument_id": inst.id, "user_id": user.id, "status": status.value, "start": start,
                  "end": end, "override_reason": override, "requested_instrument_id": requested_instrument_id})
    await _notify_created(session, booking, inst, user, actor)
    return booking


async def create_hold(session: AsyncSession, user: User, inst: Instrument, start: datetime, end: datetime,
                      expires_at: datetime, *, purpose: str, project_name: str | None = None,
                      funding_source: str | None = None, service_mode: str = "occupancy",
                      sample_notes: str | None = None) -> tuple[Booking | None, list[Problem]]:
    """A waitlist offer: [start, end) held for `user` until `expires_at` (status `held`, inside the exclusion
    constraint, so nobody else can take it meanwhile). Checked against every rule for that user like a request.

    Returns the stored row, or None with the rule problems (an empty list when the slot was taken)."""
    ctx = await instrument_context(session, inst, start - timedelta(days=1), end + timedelta(days=1))
    problems = await rule_problems(session, ctx, user, start, end)
    if problems:
        return None, problems
    now = utcnow()
    booking = await repo.insert_if_free(session, {
        "instrument_id": inst.id, "user_id": user.id, "created_by": user.id, "status": BookingStatus.held.value,
        "start_at": start, "end_at": end, "blocked": _blocked(ctx.rules, start, end), "purpose": purpose.strip(),
        "project_name": project_name, "funding_source": funding_source, "service_mode": service_mode,
        "sample_notes": sample_notes, "hold_expires_at": expires_at, "created_at": now, "updated_at": now,
    })
    if booking is None:
        return None, []
    record(session, actor_id=None, action="booking.held", target_type="booking", target_id=booking.id,
           after={"instrument_id": inst.id, "user_id": user.id, "start": start, "end": end,
                  "hold_expires_at": expires_at, "actor": "system"})
    return booking, []


async def _book_equivalent(session: AsyncSession, actor: Principal, data: BookingCreate,
                           alternatives: list[dict[str, Any]], requested_id: int) -> Booking | None:
    """"This instrument or an equivalent": the same time on the best-ranked other instrument among the
    alternatives, each attempt checked and inserted like any request (in a savepoint, so a refusal leaves
    nothing)."""
    for alt in alternatives:
        if alt["instrument_id"] == requested_id or datetime.fromisoformat(alt["start"]) != data.start \
                or datetime.fromisoformat(alt["end"]) != data.end:
            continue
        attempt = data.model_copy(update={"instrument_id": alt["instrument_id"], "any_equivalent": False})
        try:
            async with session.begin_nested():
                return await create_booking(session, actor, attempt, requested_instrument_id=requested_id)
        except (Conflict, RuleViolation, Forbidden, NotFound):
            continue
    return None


def occurrences(start: datetime, end: datetime, *, count: int | None, until: date | None) -> list[tuple[datetime, datetime]]:
    """Weekly repeats in local wall-clock time (Asia/Shanghai has no DST, so adding 7 days keeps the hour)."""
    out: list[tuple[datetime, datetime]] = []
    n = 0
    while True:
        s, e = start + timedelta(weeks=n), end + timedelta(weeks=n)
        if count is not None and n >= count:
            break
        if until is not None and local_date(s) > until:
            break
        out.append((s, e))
        n += 1
        if n > 104:
            break
    return out


async def create_series(session: AsyncSession, actor: Principal, data: BookingCreate
                        ) -> tuple[BookingSeries, list[Booking], list[dict[str, Any]]]:
    """A weekly series: each instance is checked on its own; conflicting or rule-breaking instances are either
    skipped (on_conflict=skip) or drop the whole series (on_conflict=fail, nothing stored)."""
    if data.any_equivalent:
        raise RuleViolation("周期预约不支持等效仪器", problems=[Problem(
            "any_equivalent", "not_for_series", "周期预约只能预约同一台仪器，请取消“可用等效仪器”")])
    inst = await get_visible(session, actor, data.instrument_id)
    user = await _resolve_user(session, actor, inst, data.on_behalf_of)
    times = occurrences(data.start, data.end, count=data.repeat_weekly, until=data.repeat_until)
    if len(times) < 2:
        raise RuleViolation("周期预约至少需要两次", problems=[Problem("repeat_until", "too_few", "周期预约至少需要两次")])
    ctx = await instrument_context(session, inst, times[0][0] - timedelta(days=1), times[-1][1] + timedelta(days=1))
    series = BookingSeries(instrument_id=inst.id, user_id=user.id, created_by=actor.id, count=len(times),  # type: ignore[arg-type]
                           conflict_policy=data.on_conflict)
    session.add(series)
    await session.flush()
    created: list[Booking] = []
    skipped: list[dict[str, Any]] = []
    failures: list[Problem] = []
    status = _initial_status(ctx, actor)
    for index, (s, e) in enumerate(times, start=1):
        try:
            override = await _check_or_override(session, actor, ctx, user, s, e, data.override_reason)
        except RuleViolation as exc:
            reason = "；".join(p.message for p in exc.problems)
            skipped.append({"start": s.isoformat(), "end": e.isoformat(), "reason": reason,
                            "codes": [p.code for p in exc.problems]})
            failures.append(Problem(f"occurrence[{index}]", "rule_problem", f"第 {index} 次（{local_date(s)}）：{reason}"))
            continue
        booking = await _insert(session, actor, user, ctx, data, s, e, status, override, series.id)
        if booking is None:
            skipped.append({"start": s.isoformat(), "end": e.isoformat(), "reason": "该时段已被预约",
                            "codes": ["slot_taken"]})
            failures.append(Problem(f"occurrence[{index}]", "slot_taken", f"第 {index} 次（{local_date(s)}）：该时段已被预约"))
            continue
        created.append(booking)
    if failures and data.on_conflict == "fail":
        # The boundary rolls back: nothing of the series is stored.
        raise Conflict("周期预约中有时段不可用，整组未提交", problems=failures, extra={"skipped": skipped})
    if not created:
        raise Conflict("周期预约的所有时段都不可用", problems=failures, extra={"skipped": skipped})
    record(session, actor_id=actor.id, action="booking_series.created", target_type="booking_series",
           target_id=series.id, after={"instrument_id": inst.id, "user_id": user.id, "created": len(created),
                                       "skipped": skipped})
    for booking in created:
        record(session, actor_id=actor.id, action="booking.created", target_type="booking", target_id=booking.id,
               after={"instrument_id": inst.id, "user_id": user.id, "status": booking.status,
                      "start": booking.start_at, "end": booking.end_at, "series_id": series.id})
    if created:
        await _notify_created(session, created[0], inst, user, actor, series_count=len(created))
    return series, created, skipped


async def _notify_created(session: AsyncSession, booking: Booking, inst: Instrument, user: User, actor: Principal,
                          series_count: int = 1) -> None:
    from booking.core.clock import to_local

    when = to_local(booking.start_at).strftime("%Y-%m-%d %H:%M")
    extra = f"（共 {series_count} 次）" if series_count > 1 else ""
    if booking.status == BookingStatus.pending:
        await notify(session, user.id, kind="booking.pending", title=f"预约已提交，等待审批：{inst.name}",  # type: ignore[arg-type]
                     body=f"{inst.name} {when} 起的预约{extra}已提交，等待仪器管理员审批。", link=f"/bookings/{booking.id}")
    else:
        await notify(session, user.id, kind="booking.confirmed", title=f"预约已确认：{inst.name}",  # type: ignore[arg-type]
                     body=f"{inst.name} {when} 起的预约{extra}已确认。", link=f"/bookings/{booking.id}")


async def get_booking(session: AsyncSession, principal: Principal, booking_id: int, *, for_update: bool = False
                      ) -> tuple[Booking, Instrument]:
    booking = await repo.lock_booking(session, booking_id) if for_update else await session.get(Booking, booking_id)
    if booking is None:
        raise NotFound(f"预约 {booking_id} 不存在")
    inst = await session.get(Instrument, booking.instrument_id)
    assert inst is not None
    if booking.user_id != principal.id and booking.created_by != principal.id \
            and not may_manage(principal, inst.institution_id, inst.facility_id):
        raise NotFound(f"预约 {booking_id} 不存在")
    return booking, inst


def actor_kind(principal: Principal | None, booking: Booking, inst: Instrument) -> Actor:
    if principal is None:
        return Actor.system
    if may_manage(principal, inst.institution_id, inst.facility_id):
        return Actor.manager
    return Actor.owner


def _span_text(start: datetime, end: datetime) -> str:
    a, b = to_local(start), to_local(end)
    return f"{a:%Y-%m-%d %H:%M}–{b:%H:%M}" if a.date() == b.date() else f"{a:%Y-%m-%d %H:%M}–{b:%Y-%m-%d %H:%M}"


async def blackouts_over(session: AsyncSession, booking: Booking, inst: Instrument) -> list[Closure]:
    """Maintenance blackouts over an active booking's time: added after the booking was made (a booking is never
    accepted into one), so its user and managers must see them on the booking."""
    if booking.status not in {s.value for s in ACTIVE_STATUSES}:
        return []
    ctx = await instrument_context(session, inst, booking.start_at, booking.end_at)
    return ctx.availability.closures(booking.start_at, booking.end_at)


def closures_text(closures: Sequence[Closure]) -> str:
    return "；".join(_span_text(c.interval.start, c.interval.end) + (f" {c.reason}" if c.reason else "")
                    for c in closures)


async def transition(session: AsyncSession, principal: Principal | None, booking_id: int, action: str, *,
                     note: str | None = None, now: datetime | None = None, booking: Booking | None = None,
                     samples: int = 0, service_type: str = "research") -> Booking:
    """The one place a booking changes status: checks the lifecycle and who may act, applies the change, raises
    the calendar SEQUENCE, records the activity with its actor, and notifies the user."""
    now = now or utcnow()
    if booking is None:
        if principal is None:
            raise ValueError("system transitions pass the locked booking")
        booking, inst = await get_booking(session, principal, booking_id, for_update=True)
    else:
        inst = await session.get(Instrument, booking.instrument_id)  # type: ignore[assignment]
        assert inst is not None
    actor = actor_kind(principal, booking, inst)
    problem = transition_problem(action, booking.status, actor)
    if problem:
        code = "forbidden_action" if "无权" in problem else "invalid_transition"
        err = Forbidden if code == "forbidden_action" else Conflict
        raise err(problem, problems=[Problem("status", code, problem)])
    before: dict[str, Any] = {"status": booking.status}
    was_active = booking.status in {s.value for s in ACTIVE_STATUSES}
    t = TRANSITIONS[action]
    if action == "cancel" and actor == Actor.owner:
        rules = (await instrument_context(session, inst, booking.start_at, booking.end_at)).rules
        problems = check_cancellation(booking.start_at, now, rules)
        if problems:
            raise RuleViolation("已过取消期限", problems=problems)
    if action == "record_service" and now < booking.start_at:
        # A service that has not begun cannot be recorded (nor charged, nor counted in the statistics).
        raise RuleViolation("服务尚未开始", problems=[Problem(
            "status", "not_started", "预约开始后才能登记服务")])
    if action == "no_show" and principal is not None:
        # (The job picks only bookings past their grace period: repository.due_no_shows.)
        grace = (await instrument_context(session, inst, booking.start_at, booking.end_at)).grace_min
        if now < booking.start_at + timedelta(minutes=grace):
            raise RuleViolation("还不能记为爽约", problems=[Problem(
                "status", "too_early", f"预约开始 {grace} 分钟后仍未签到，才能记为爽约")])
    if action == "approve":
        # A maintenance blackout added after the request: approving would confirm time the instrument is down.
        closures = await blackouts_over(session, booking, inst)
        if closures:
            raise Conflict("该时段已停机维护，不能批准", problems=[Problem(
                "status", "blackout", f"预约时段与停机维护重叠（{closures_text(closures)}），请拒绝该申请或与预约人协商改期")])
    if action == "check_in":
        early = timedelta(minutes=get_settings().check_in_early_min)
        if now < booking.start_at - early or now >= booking.end_at:
            raise RuleViolation("不在签到时间内", problems=[Problem(
                "status", "outside_check_in", f"只能在开始前 {get_settings().check_in_early_min} 分钟至结束前签到")])
        booking.checked_in_at = now
    if booking.status == BookingStatus.held:
        # The database allows a hold deadline only on held rows; the deadline moves into the activity record.
        before["hold_expires_at"] = booking.hold_expires_at
        booking.hold_expires_at = None
    booking.status = t.target.value
    booking.updated_at = now
    booking.sequence += 1
    if action in ("approve", "reject"):
        booking.decided_by = principal.id if principal else None
        booking.decided_at = now
        booking.decision_note = note
    if action == "cancel":
        booking.cancelled_at = now
        booking.cancel_reason = note
    if action in ("check_out", "record_service"):
        from booking.usage import service as usage

        if inst.fee_unit == "sample" and samples < 1:
            # Charged per sample: a record without the count would charge nothing but the minimum fee.
            raise RuleViolation("请填写样品数", problems=[Problem(
                "samples", "samples_required", "该仪器按样品收费，请填写本次服务的样品数（至少 1 个）")])
        booking.checked_out_at = now if action == "check_out" else None
        start = booking.checked_in_at or booking.start_at
        end = now if action == "check_out" else booking.end_at
        if action == "check_out" and end <= start:
            end = start + timedelta(minutes=1)
        await usage.record_from_booking(session, booking, inst, started_at=start, ended_at=end, samples=samples,
                                        service_type=service_type, recorded_by=principal.id if principal else None)
    await session.flush()
    record(session, actor_id=principal.id if principal else None, action=f"booking.{action}",
           target_type="booking", target_id=booking.id, before=before,
           after={"status": booking.status, "note": note, "actor": actor.value})
    await _notify_transition(session, booking, inst, action, note)
    if action == "no_show":
        await _maybe_block(session, booking.user_id, now)
    if was_active and t.target not in ACTIVE_STATUSES:
        await _time_freed(session, booking, action, now)
    return booking


async def _time_freed(session: AsyncSession, booking: Booking, action: str, now: datetime) -> None:
    """Tell the installed listeners (the waitlist, flexible placement) about the time this booking no longer
    holds, in this transaction, so the next person in line gets it at once.

    Each listener runs in a savepoint and its failure is logged, never raised: freeing a slot must not fail
    because an offer could not be made (the scheduler's catch-up job retries those)."""
    start = max(booking.start_at, now)
    if start >= booking.end_at:
        return
    freed = hooks.FreedTime(booking.id, booking.instrument_id, booking.user_id, start, booking.end_at,  # type: ignore[arg-type]
                            action, now)
    for listener in hooks.freed_listeners():
        try:
            async with session.begin_nested():
                await listener(session, freed)
        except Exception:
            log.exception("freed-time listener %s failed for booking %s", getattr(listener, "__name__", listener),
                          booking.id)


async def _notify_transition(session: AsyncSession, booking: Booking, inst: Instrument, action: str,
                             note: str | None) -> None:
    from booking.core.clock import to_local

    when = to_local(booking.start_at).strftime("%Y-%m-%d %H:%M")
    titles = {
        "approve": f"预约已批准：{inst.name}", "reject": f"预约未获批准：{inst.name}",
        "cancel": f"预约已取消：{inst.name}", "no_show": f"预约记为爽约：{inst.name}",
        "expire": f"预约申请已过期：{inst.name}", "check_out": f"服务已完成，请评价：{inst.name}",
        "record_service": f"服务已登记，请评价：{inst.name}",
        "accept": f"已接受候补时段，预约已确认：{inst.name}",
        "accept_pending": f"已接受候补时段，等待审批：{inst.name}",
        "decline": f"已放弃候补保留的时段：{inst.name}",
        "expire_hold": f"候补保留已过期：{inst.name}",
    }
    if action not in titles:
        return
    body = f"{inst.name} {when} 的预约状态：{STATUS_LABELS[booking.status]}。" + (f"说明：{note}" if note else "")
    if action == "expire_hold":
        body = f"为您保留的 {inst.name} {when} 时段未在期限内确认，已释放给其他用户。"
    await notify(session, booking.user_id, kind=f"booking.{action}", title=titles[action], body=body,
                 link=f"/bookings/{booking.id}")


async def _maybe_block(session: AsyncSession, user_id: int, now: datetime) -> None:
    settings = get_settings()
    if await repo.active_block(session, user_id) is not None:
        return
    since = now - timedelta(days=settings.no_show_window_days)
    count = await repo.no_shows_since(session, user_id, since)
    if count >= settings.no_show_limit:
        block = BookingBlock(user_id=user_id, reason=f"{settings.no_show_window_days} 天内爽约 {count} 次")
        session.add(block)
        await session.flush()
        record(session, actor_id=None, action="booking_block.created", target_type="user", target_id=user_id,
               after={"no_shows": count, "window_days": settings.no_show_window_days})
        await notify(session, user_id, kind="booking.blocked", title="预约资格已暂停",
                     body=f"您在 {settings.no_show_window_days} 天内爽约 {count} 次，预约资格已暂停，请联系仪器管理员解除。")


async def lift_block(session: AsyncSession, actor: Principal, user_id: int, reason: str) -> BookingBlock:
    block = await repo.active_block(session, user_id)
    if block is None:
        raise NotFound("该用户没有被暂停预约")
    if not (actor.is_admin or actor.managed_institution_ids):
        raise Forbidden("只有仪器管理员可以解除暂停")
    block.lifted_at = utcnow()
    block.lifted_by = actor.id
    block.lift_reason = reason
    record(session, actor_id=actor.id, action="booking_block.lifted", target_type="user", target_id=user_id,
           after={"reason": reason})
    return block


async def institution_of(session: AsyncSession, institution_id: int | None) -> Institution | None:
    return await session.get(Institution, institution_id) if institution_id else None


async def my_bookings(session: AsyncSession, principal: Principal, *, status: str | None, upcoming: bool | None,
                      limit: int, offset: int) -> tuple[Sequence[Booking], int]:
    """The principal's own bookings (upcoming: soonest first; past or all: latest first) and how many there are."""
    return await repo.list_for_user(session, principal.id, status=status, upcoming=upcoming, now=utcnow(),
                                    limit=limit, offset=offset)


async def managed_bookings(session: AsyncSession, principal: Principal, *, status: str | None,
                           start: datetime | None, end: datetime | None, limit: int, offset: int
                           ) -> tuple[Sequence[Booking], int]:
    """Bookings of the instruments the principal manages (every instrument for a platform admin), by start."""
    # By role, not by instrument count: a manager whose facility has no instruments yet sees an empty list.
    if not (principal.is_admin or principal.managed_institution_ids):
        raise Forbidden("只有仪器管理员可以查看审批队列和所管理仪器的预约")
    ids = await managed_instrument_ids(session, principal)
    return await repo.list_for_instruments(session, ids, status=status, start=start, end=end, limit=limit,
                                           offset=offset)


async def managed_unpaid(session: AsyncSession, principal: Principal, *, limit: int, offset: int
                         ) -> tuple[Sequence[Booking], int]:
    """Services whose fee the principal is to record as paid (or waived): those they may settle, which follow the
    institution each service was recorded for, not where its instrument is now."""
    if not (principal.is_admin or principal.managed_institution_ids):
        raise Forbidden("只有仪器管理员可以查看审批队列和所管理仪器的预约")
    return await repo.list_unpaid(session, settled_by(principal), limit=limit, offset=offset)


async def booking_rows(session: AsyncSession, bookings: Sequence[Booking]) -> list[dict[str, Any]]:
    """Each booking with its instrument, its user and its service record (if any), as the pages list them: three
    queries for the whole page, not three per booking."""
    instruments = {i.id: i for i in await instruments_repo.get_many(session, list({b.instrument_id for b in bookings}))}
    users = await accounts_repo.users_by_id(session, list({b.user_id for b in bookings}))
    records = await usage.records_of_bookings(session, [b.id for b in bookings if b.id is not None])
    return [{"b": b, "inst": instruments.get(b.instrument_id), "user": users.get(b.user_id), "record": records.get(b.id)}
            for b in bookings]  # type: ignore[arg-type]
