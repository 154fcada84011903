"""Flexible requests: "D minutes on instrument X (or an equivalent), anywhere in [a, b), preferably in these
hours, decided by a deadline".

* Immediate mode: `submit` places the request at once at the best feasible slot (`optimizer.best_placement`:
  inside the preferred hours if possible, else the earliest start, ties to the lower instrument id; on the day that
  gives, the requested instrument, then an equivalent in its 市州, is preferred) and books it
  through the reservations service, so every rule and the exclusion constraint apply as to any booking. When
  nothing fits it is kept (`waiting`) and placed as capacity appears: at once when a booking on a candidate frees
  time (a freed-time listener), and by the `place_flexible` job otherwise; past its deadline it expires.
* Rounds mode (the instrument's equivalence group allocates in rounds): the request is collected into the group's
  open round and decided with the others at the cutoff (`scheduling.rounds`).

`reason` always tells the user why: why this slot, why still waiting, why refused.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from datetime import datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import User
from booking.activity.service import record
from booking.auth.principal import Principal
from booking.core.clock import to_local, utcnow
from booking.core.errors import Conflict, Forbidden, NotFound, Problem, RuleViolation
from booking.core.regions import CITIES
from booking.core.settings import get_settings
from booking.notify.service import notify
from booking.reservations import hooks
from booking.reservations import service as reservations
from booking.reservations.models import Booking
from booking.reservations.schemas import BookingCreate
from instruments.models import Instrument
from instruments.service import get_visible, may_manage
from scheduling import conflict_repository as repo
from scheduling import equivalence, rounds
from scheduling.conflict_models import FlexibleBooking
from scheduling.conflict_schemas import FlexibleIn
from scheduling.intervals import Interval
from scheduling.optimizer import Candidate, Decision, FlexibleRequest, best_placement
from scheduling.slots import bookable_slots

log = logging.getLogger("booking.flexible")

BATCH = 200

WHY = {
    "granted_preferred": "位于您的偏好时段内，且是候选仪器上最早的可用时段",
    "granted_outside_preference": "偏好时段内已无连续空档，故安排在允许时间窗内最早的可用时段",
    "granted": "是允许时间窗内、候选仪器上最早的可用时段",
}


def _when(start: datetime, end: datetime) -> str:
    return f"{to_local(start):%Y-%m-%d %H:%M}–{to_local(end):%H:%M}"


def _hours(minutes: int) -> str:
    return f"{minutes / 60:g}"


def parse_hours(spans: list[list[str]]) -> tuple[tuple[time, time], ...]:
    return tuple((time.fromisoformat(a), time.fromisoformat(b)) for a, b in spans)


# ---- submitting ---------------------------------------------------------------------------------------------------


async def submit(session: AsyncSession, principal: Principal, data: FlexibleIn) -> FlexibleBooking:
    """Check everything (all problems at once, nothing stored on any), store, then place or collect."""
    now = utcnow()
    settings = get_settings()
    inst = await get_visible(session, principal, data.instrument_id)
    found = await equivalence.candidates(session, principal, inst, data.any_equivalent)
    problems: list[Problem] = []
    if not found.instruments:
        problems += found.excluded.get(inst.id, []) or [  # type: ignore[call-overload]
            Problem("instrument_id", "not_bookable", "您不能预约该仪器，也没有可预约的等效仪器")]
    duration = timedelta(minutes=data.duration_minutes)
    start, end = data.window_start, data.window_end
    if end <= start:
        problems.append(Problem("window_end", "end_not_after_start", "时间窗结束须晚于开始"))
    elif end <= now:
        problems.append(Problem("window_end", "in_past", "时间窗已经过去"))
    elif end - max(start, now) < duration:
        problems.append(Problem("window_end", "window_too_short",
                                f"时间窗（{_when(max(start, now), end)}）短于所需时长 {_hours(data.duration_minutes)} 小时"))
    elif end - start > timedelta(days=settings.flexible_max_window_days):
        problems.append(Problem("window_end", "window_too_long",
                                f"时间窗最长 {settings.flexible_max_window_days} 天"))
    latest_start = end - duration
    deadline = data.deadline or latest_start
    if data.deadline is not None and data.deadline <= now:
        problems.append(Problem("deadline", "in_past", "截止时间已过"))
    elif data.deadline is not None and end > start and data.deadline > latest_start:
        problems.append(Problem("deadline", "after_latest_start",
                                f"截止时间不能晚于时间窗内最晚可开始的时间 {to_local(latest_start):%Y-%m-%d %H:%M}"))
    for index, span in enumerate(data.preferred_hours):
        if span.end != time(0) and span.end <= span.start:
            problems.append(Problem(f"preferred_hours[{index}]", "invalid_window",
                                    "偏好时段的结束须晚于开始（同一天内，00:00 表示 24:00）"))
    if found.instruments:
        grid = await equivalence.duration_problem(session, found.instruments, data.duration_minutes)
        if grid:
            problems.append(grid)
    group = found.group
    in_rounds = group is not None and group.allocation_mode == "rounds"
    cutoff = rounds.next_cutoff(group, now) if in_rounds and group is not None else None
    if cutoff is not None and not any(p.field == "deadline" for p in problems) and deadline < cutoff:
        problems.append(Problem("deadline", "before_cutoff",
                                f"「{group.name}」按轮次分配，本轮 {to_local(cutoff):%Y-%m-%d %H:%M} 截止后统一安排，"  # type: ignore[union-attr]
                                "截止时间不能早于本轮截止"))
    if problems:
        raise RuleViolation("灵活预约申请有误", problems=problems)
    row = FlexibleBooking(
        user_id=principal.id, instrument_id=inst.id, any_equivalent=data.any_equivalent,  # type: ignore[arg-type]
        duration_minutes=data.duration_minutes, window_start=start, window_end=end, deadline=deadline,
        preferred_hours=[[s.start.strftime("%H:%M"), s.end.strftime("%H:%M")] for s in data.preferred_hours],
        purpose=data.purpose.strip(), project_name=data.project_name, funding_source=data.funding_source,
        service_mode=data.service_mode.value, sample_notes=data.sample_notes, status="waiting", created_at=now,
        updated_at=now)
    if in_rounds and group is not None and cutoff is not None:
        round_ = await repo.collecting_round(session, group.id, cutoff)  # type: ignore[arg-type]
        row.status, row.round_id, row.decision_code = "collected", round_.id, "collected"
        row.reason = (f"「{group.name}」按轮次分配：本轮申请收集至 {to_local(cutoff):%Y-%m-%d %H:%M}，"
                      "截止后统一分配并通知结果")
    session.add(row)
    await session.flush()
    record(session, actor_id=principal.id, action="flexible_request.created", target_type="flexible_request",
           target_id=row.id, after={"instrument_id": inst.id, "any_equivalent": data.any_equivalent,
                                    "duration_minutes": data.duration_minutes, "window_start": start,
                                    "window_end": end, "deadline": deadline, "round_id": row.round_id})
    if row.status == "waiting":
        await place(session, row, now, principal=principal)
    return row


# ---- placing ------------------------------------------------------------------------------------------------------


async def place(session: AsyncSession, row: FlexibleBooking, now: datetime, *, principal: Principal | None = None,
                only_instrument_ids: set[int] | None = None) -> Booking | None:
    """Place a waiting request at its best feasible slot and book it (as the user: the rules that apply to them
    apply). A candidate whose booking check refuses the user is dropped and the next best slot tried."""
    user = await session.get(User, row.user_id)
    inst = await session.get(Instrument, row.instrument_id)
    if user is None or inst is None or not user.is_active:
        return None
    principal = principal or await equivalence.principal_of(session, user)
    found = await equivalence.candidates(session, principal, inst, row.any_equivalent)
    pool = [i for i in found.instruments if only_instrument_ids is None or i.id in only_instrument_ids]
    start, end = max(row.window_start, now), row.window_end
    refusals: list[str] = []
    for _ in range(len(pool) + 3):
        if not pool or end - start < timedelta(minutes=row.duration_minutes):
            break
        contexts = {i.id: await reservations.instrument_context(session, i, start, end) for i in pool}
        usable = [i for i in pool if equivalence.duration_allowed(contexts[i.id].rules, row.duration_minutes)]
        if not usable:
            break
        # One grid for all candidates: the least common multiple of their slot lengths. Every grid counts from
        # local midnight, and each slot length divides the duration, so their lcm divides it too.
        slot = math.lcm(*(contexts[i.id].rules.slot_minutes for i in usable))
        free = {}
        for i in usable:
            ctx = contexts[i.id]
            free[i.id] = bookable_slots(await reservations.free_intervals(session, ctx, start, end), ctx.rules, now,
                                        start, end)
        request = FlexibleRequest(
            id=row.id, user_id=row.user_id, institution_id=user.institution_id or -row.user_id,  # type: ignore[arg-type]
            external=user.institution_id not in {i.institution_id for i in usable}, weight=row.weight,
            duration_minutes=row.duration_minutes,
            candidates=tuple(Candidate(i.id, (Interval(start, end),)) for i in usable),  # type: ignore[arg-type]
            preferred_hours=parse_hours(row.preferred_hours), submitted_at=row.created_at)
        decision = best_placement(request, free, slot)
        if not decision.granted or decision.instrument_id is None or decision.start is None or decision.end is None:
            break
        decision = _nearest_on_the_day(request, free, slot, decision, inst, usable)
        chosen = next(i for i in usable if i.id == decision.instrument_id)
        data = BookingCreate(instrument_id=chosen.id, start=decision.start, end=decision.end,  # type: ignore[arg-type]
                             purpose=row.purpose, project_name=row.project_name, funding_source=row.funding_source,
                             service_mode=row.service_mode, sample_notes=row.sample_notes)  # type: ignore[arg-type]
        try:
            async with session.begin_nested():
                booking = await reservations.create_booking(session, principal, data)
        except RuleViolation as exc:
            refusals.append(f"「{chosen.name}」：{'；'.join(p.message for p in exc.problems)}")
            pool = [i for i in pool if i.id != chosen.id]
            continue
        except Conflict:
            continue  # taken meanwhile: look again
        except (Forbidden, NotFound):
            pool = [i for i in pool if i.id != chosen.id]
            continue
        own = None
        if chosen.id != inst.id and inst.id in free:
            own = _only_on(request, free, slot, inst.id)
        await _placed(session, row, booking, chosen, inst, decision.code, now, own)
        return booking
    if only_instrument_ids is None:
        waiting = (f"允许时间窗内，候选仪器暂无连续 {_hours(row.duration_minutes)} 小时的可预约空档；"
                   f"有空档时将自动安排（截止 {to_local(row.deadline):%Y-%m-%d %H:%M}）")
        if not found.instruments:
            waiting = "当前没有您可预约的候选仪器；" + "；".join(
                p.message for ps in found.excluded.values() for p in ps)[:300]
        elif refusals:
            waiting += "。不符合预约规则的仪器：" + "；".join(refusals)
        row.decision_code, row.reason = "waiting", waiting[:500]
        row.updated_at = now
        await session.flush()
    return None


def _only_on(request: FlexibleRequest, free: dict[int, list[Interval]], slot: int, instrument_id: int) -> Decision:
    """The best placement of the request on one of its candidates alone."""
    only = replace(request, candidates=tuple(c for c in request.candidates if c.instrument_id == instrument_id))
    return best_placement(only, {instrument_id: free[instrument_id]}, slot)


def _nearest_on_the_day(request: FlexibleRequest, free: dict[int, list[Interval]], slot: int, best: Decision,
                        requested: Instrument, usable: list[Instrument]) -> Decision:
    """The earliest slot anywhere decides the day; on that day the requested instrument is preferred, then an
    equivalent in its 市州, as long as the slot is as good (inside the preferred hours when the best one is).
    Moving a researcher to another city to start an hour earlier serves nobody."""
    assert best.start is not None
    day = to_local(best.start).date()

    def remoteness(i: Instrument) -> tuple[bool, bool]:
        return i.id != requested.id, i.city_code != requested.city_code

    chosen = next(i for i in usable if i.id == best.instrument_id)
    for candidate in sorted(usable, key=lambda i: (remoteness(i), i.id)):
        if remoteness(candidate) >= remoteness(chosen):
            break
        option = _only_on(request, free, slot, candidate.id)
        if (option.granted and option.start is not None and to_local(option.start).date() == day
                and option.code == best.code):
            return replace(option, code=best.code)
    return best


async def _placed(session: AsyncSession, row: FlexibleBooking, booking: Booking, chosen: Instrument,
                  requested: Instrument, code: str, now: datetime, own: Decision | None = None) -> None:
    where = f"「{chosen.name}」（{CITIES.get(chosen.city_code, chosen.city_code)}）"
    reason = f"已安排在{where} {_when(booking.start_at, booking.end_at)}：{WHY.get(code, WHY['granted'])}"
    if chosen.id != requested.id:
        if own is not None and own.granted and own.start is not None and own.end is not None:
            reason += (f"；原申请的「{requested.name}」最早的可用空档是 {_when(own.start, own.end)}，"
                       "按“可用等效仪器”安排")
        else:
            reason += f"；原申请的「{requested.name}」在时间窗内没有可用空档，按“可用等效仪器”安排"
    row.status, row.booking_id, row.decision_code, row.reason = "placed", booking.id, code, reason[:500]
    row.updated_at = now
    await session.flush()
    record(session, actor_id=None, action="flexible_request.placed", target_type="flexible_request",
           target_id=row.id, after={"booking_id": booking.id, "instrument_id": chosen.id,
                                    "start": booking.start_at, "end": booking.end_at, "code": code})
    await notify(session, row.user_id, kind="flexible.placed", title=f"灵活预约已安排：{chosen.name}",
                 body=reason, link=f"/requests/flexible/{row.id}")


async def on_time_freed(session: AsyncSession, freed: hooks.FreedTime) -> None:
    """Freed-time listener (after the waitlist's, which has precedence): place waiting requests that could use
    the instrument that just freed time."""
    group_ids = await equivalence.group_instrument_ids(session, freed.instrument_id)
    for row in await repo.flexible_waiting(session, freed.at, instrument_ids=[freed.instrument_id],
                                           group_instrument_ids=group_ids, limit=BATCH):
        if row.window_start < freed.end and row.window_end > freed.start:
            await place(session, row, freed.at, only_instrument_ids={freed.instrument_id})


async def place_due(session: AsyncSession, now: datetime) -> int:
    """Job: expire requests past their deadline (telling the user), then try to place every waiting one."""
    done = 0
    for row in await repo.flexible_overdue(session, now, limit=1000):
        row.status, row.decision_code = "expired", "expired"
        row.reason = (f"截止时间 {to_local(row.deadline):%Y-%m-%d %H:%M} 前未能在允许时间窗内找到可预约的空档，"
                      "申请已结束")
        row.updated_at = now
        record(session, actor_id=None, action="flexible_request.expired", target_type="flexible_request",
               target_id=row.id)
        await notify(session, row.user_id, kind="flexible.expired", title="灵活预约未能安排", body=row.reason,
                     link=f"/requests/flexible/{row.id}")
        done += 1
    await session.flush()
    after = 0
    while True:
        batch = await repo.flexible_waiting(session, now, instrument_ids=None, after_id=after, limit=BATCH)
        for row in batch:
            if await place(session, row, now) is not None:
                done += 1
        if len(batch) < BATCH:
            return done
        after = max(r.id for r in batch)  # type: ignore[type-var]


# ---- reading and changing -----------------------------------------------------------------------------------------


async def get_own(session: AsyncSession, principal: Principal, request_id: int, *, for_update: bool = False
                  ) -> FlexibleBooking:
    row = await repo.flexible(session, request_id, for_update=for_update)
    if row is None or (row.user_id != principal.id and not await _manages(session, principal, row)):
        raise NotFound(f"灵活预约申请 {request_id} 不存在")
    return row


async def _manages(session: AsyncSession, principal: Principal, row: FlexibleBooking) -> bool:
    inst = await session.get(Instrument, row.instrument_id)
    return inst is not None and may_manage(principal, inst.institution_id, inst.facility_id)


async def cancel(session: AsyncSession, principal: Principal, request_id: int) -> FlexibleBooking:
    row = await get_own(session, principal, request_id, for_update=True)
    if row.user_id != principal.id:
        raise Forbidden("只有申请人可以撤销灵活预约申请")
    if row.status == "placed":
        raise Conflict("申请已安排", problems=[Problem("status", "already_placed",
                                                     "申请已安排为预约，请在“我的预约”中取消该预约")])
    if row.status not in ("waiting", "collected"):
        raise Conflict("申请已结束", problems=[Problem("status", "closed", "该申请已结束，无需撤销")])
    row.status, row.decision_code, row.reason = "cancelled", "cancelled", "申请人已撤销"
    row.updated_at = utcnow()
    await session.flush()
    record(session, actor_id=principal.id, action="flexible_request.cancelled", target_type="flexible_request",
           target_id=row.id)
    return row


async def set_weight(session: AsyncSession, principal: Principal, request_id: int, weight: int) -> FlexibleBooking:
    row = await repo.flexible(session, request_id, for_update=True)
    if row is None:
        raise NotFound(f"灵活预约申请 {request_id} 不存在")
    if not await _manages(session, principal, row):
        raise Forbidden("只有该仪器的管理员可以调整申请的优先级权重")
    before = row.weight
    row.weight = weight
    row.updated_at = utcnow()
    await session.flush()
    record(session, actor_id=principal.id, action="flexible_request.weight", target_type="flexible_request",
           target_id=row.id, before={"weight": before}, after={"weight": weight})
    return row


async def bookings_of(session: AsyncSession, rows: list[FlexibleBooking]) -> dict[int, Booking]:
    ids = [r.booking_id for r in rows if r.booking_id is not None]
    if not ids:
        return {}
    from sqlalchemy import select
    from sqlmodel import col

    return {b.id: b for b in await session.scalars(select(Booking).where(col(Booking.id).in_(ids)))}  # type: ignore[misc]
