"""Allocation rounds for oversubscribed equivalence groups.

A group in `rounds` mode collects flexible requests until its weekly cutoff (local weekday and time); after the
cutoff (or when a manager closes the round early) the group's managers *preview* the allocation and then
*publish* it:

* preview runs `optimizer.allocate` over the round's requests and the group's free time (every rule of each
  instrument applied: opening hours, blackouts, existing bookings and buffers, lead time, horizon, grid). It
  maximises priority-weighted granted hours under the group's per-user and per-institution caps and minimum
  external share; the same input gives the same decisions. Every request gets a decision with its reason; the
  figures (granted hours against an upper bound) are shown beside them. Nothing is booked yet.
* publish books exactly the previewed placements through the reservations service (as the manager, on behalf
  of each user, so every booking check and the exclusion constraint apply). A slot taken between preview and
  publish turns that request into a refusal that says so.

A request is "external" when its user's institution owns none of its candidate instruments (the policy goal of
open sharing is service to other institutions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from booking.activity.service import record
from booking.auth.principal import Principal
from booking.core.clock import to_local, utcnow
from booking.core.errors import Conflict, Forbidden, NotFound, Problem, RuleViolation
from booking.core.regions import CITIES
from booking.notify.service import notify
from booking.reservations import service as reservations
from booking.reservations.queue import managed_instrument_ids
from booking.reservations.schemas import BookingCreate
from instruments.models import Instrument
from scheduling import conflict_repository as repo
from scheduling import equivalence
from scheduling.conflict_models import AllocationRound, EquivalenceGroup, FlexibleBooking
from scheduling.intervals import Interval, local_at, local_date
from scheduling.optimizer import AllocationPolicy, Candidate, FlexibleRequest, allocate, upper_bound
from scheduling.slots import bookable_slots

WHY = {
    "granted_preferred": "位于申请的偏好时段内；兼顾本轮全部申请后，是该仪器上满足条件的最早时段",
    "granted_outside_preference": "偏好时段内已无空档，故安排在允许时间窗内该仪器最早的可用时段",
    "granted": "在允许的时间窗内，兼顾本轮全部申请后，是该仪器上最早的可用时段",
}


def next_cutoff(group: EquivalenceGroup, now: datetime) -> datetime:
    """The first weekly cutoff (local weekday and time) after `now`."""
    today = local_date(now)
    day = today + timedelta(days=(group.round_weekday - today.weekday()) % 7)
    cutoff = local_at(day, group.round_time)
    return cutoff if cutoff > now else cutoff + timedelta(days=7)


@dataclass
class RoundView:
    round: AllocationRound
    group: EquivalenceGroup
    requests: list[FlexibleBooking]
    now: datetime

    @property
    def collecting(self) -> bool:
        return self.round.status == "open" and self.round.cutoff_at > self.now


async def _managed_round(session: AsyncSession, principal: Principal, round_id: int, *, for_update: bool = False
                         ) -> tuple[AllocationRound, EquivalenceGroup, list[Instrument]]:
    row = await repo.round_(session, round_id, for_update=for_update)
    if row is None:
        raise NotFound(f"分配轮次 {round_id} 不存在")
    try:
        group, instruments = await equivalence.managed_group(session, principal, row.group_id)
    except Forbidden:
        raise Forbidden("只有管理该组全部仪器的管理员可以查看和发布分配轮次") from None
    return row, group, instruments


async def list_rounds(session: AsyncSession, principal: Principal, limit: int = 100) -> list[RoundView]:
    """The latest rounds of the groups whose every instrument the principal manages."""
    managed = await repo.groups_within(session, await managed_instrument_ids(session, principal))
    rounds = await repo.rounds_of_groups(session, [g.id for g in managed], limit)  # type: ignore[misc]
    groups = {g.id: g for g in managed}
    now = utcnow()
    out = []
    for r in rounds:
        out.append(RoundView(r, groups[r.group_id], await repo.requests_of_round(session, r.id), now))  # type: ignore[arg-type]
    return out


async def get_round(session: AsyncSession, principal: Principal, round_id: int) -> RoundView:
    row, group, _ = await _managed_round(session, principal, round_id)
    return RoundView(row, group, await repo.requests_of_round(session, round_id), utcnow())


async def close(session: AsyncSession, principal: Principal, round_id: int) -> RoundView:
    """Stop collecting now (the cutoff moves to now); later requests go to the next round."""
    row, group, _ = await _managed_round(session, principal, round_id, for_update=True)
    now = utcnow()
    if row.status != "open" or row.cutoff_at <= now:
        raise Conflict("本轮已截止", problems=[Problem("cutoff_at", "closed", "本轮已经截止，无需再次截止")])
    before = row.cutoff_at
    row.cutoff_at = now
    await session.flush()
    record(session, actor_id=principal.id, action="allocation_round.closed", target_type="allocation_round",
           target_id=row.id, before={"cutoff_at": before}, after={"cutoff_at": now})
    return RoundView(row, group, await repo.requests_of_round(session, round_id), now)


def _hours(minutes: int) -> float:
    return round(minutes / 60, 2)


async def preview(session: AsyncSession, principal: Principal, round_id: int) -> RoundView:
    """Run the allocation and store its decisions and figures; nothing is booked."""
    row, group, instruments = await _managed_round(session, principal, round_id, for_update=True)
    now = utcnow()
    if row.status == "published":
        raise Conflict("本轮已发布", problems=[Problem("status", "published", "本轮已发布，不能再预览")])
    if row.cutoff_at > now:
        raise Conflict("本轮仍在收集申请", problems=[Problem(
            "cutoff_at", "still_collecting",
            f"本轮申请收集至 {to_local(row.cutoff_at):%Y-%m-%d %H:%M}，请在截止后（或先点“立即截止”）再预览")])
    requests = [r for r in await repo.requests_of_round(session, round_id) if r.status == "collected"]
    live = [i for i in instruments if i.retired_at is None]
    result = await _allocate(session, group, live, requests, now)
    row.preview = result
    row.status = "previewed"
    row.previewed_at = now
    row.previewed_by = principal.id
    await session.flush()
    record(session, actor_id=principal.id, action="allocation_round.previewed", target_type="allocation_round",
           target_id=row.id, after={k: v for k, v in result.items() if k != "decisions"})
    return RoundView(row, group, await repo.requests_of_round(session, round_id), now)


async def _allocate(session: AsyncSession, group: EquivalenceGroup, instruments: list[Instrument],
                    requests: list[FlexibleBooking], now: datetime) -> dict[str, Any]:
    by_id = {i.id: i for i in instruments}
    users = await repo.users(session, [r.user_id for r in requests])
    pre: dict[int, dict[str, Any]] = {}
    flex: list[FlexibleRequest] = []
    free: dict[int, list[Interval]] = {}
    slot = math.lcm(*(await _slot_lengths(session, instruments))) if instruments else 30
    lo = min((max(r.window_start, now) for r in requests), default=now)
    hi = max((r.window_end for r in requests), default=now)
    if requests and hi > lo:
        for inst in instruments:
            ctx = await reservations.instrument_context(session, inst, lo, hi)
            free[inst.id] = bookable_slots(await reservations.free_intervals(session, ctx, lo, hi), ctx.rules,  # type: ignore[index]
                                           now, lo, hi)
    for r in requests:
        user = users.get(r.user_id)
        ids = [iid for iid in by_id if r.any_equivalent or iid == r.instrument_id]
        pool = [by_id[i] for i in ids]
        if user is not None and pool:
            problems = await equivalence.eligibility_problems(session, await equivalence.principal_of(session, user),
                                                              pool)
            pool = [i for i in pool if not problems[i.id]]  # type: ignore[index]
        start = max(r.window_start, now)
        if user is None or not pool:
            pre[r.id] = {"code": "not_eligible", "reason": "申请人当前不能预约本组任何候选仪器（资格、共享范围或仪器状态）"}  # type: ignore[index]
            continue
        if r.duration_minutes % slot:
            pre[r.id] = {"code": "duration_grid",  # type: ignore[index]
                         "reason": f"时长 {r.duration_minutes} 分钟不是本组统一时间粒度 {slot} 分钟的整数倍"}
            continue
        if r.window_end - start < timedelta(minutes=r.duration_minutes):
            pre[r.id] = {"code": "window_passed", "reason": "允许的时间窗已经过去或剩余时间短于所需时长"}  # type: ignore[index]
            continue
        flex.append(FlexibleRequest(
            id=r.id, user_id=r.user_id, institution_id=user.institution_id or -r.user_id,  # type: ignore[arg-type]
            external=user.institution_id not in {i.institution_id for i in pool}, duration_minutes=r.duration_minutes,
            candidates=tuple(Candidate(i.id, (Interval(start, r.window_end),)) for i in pool),  # type: ignore[arg-type]
            weight=r.weight, preferred_hours=_hours_of(r), submitted_at=r.created_at))
    policy = AllocationPolicy(slot_minutes=slot, user_cap_hours=group.user_cap_hours,
                              institution_cap_hours=group.institution_cap_hours,
                              external_min_share=group.external_min_share)
    allocation = allocate(flex, free, policy) if flex else None
    bound = upper_bound(flex, free, policy) if flex else None
    decisions = []
    for r in requests:
        if r.id in pre:
            decisions.append({"request_id": r.id, "user_id": r.user_id, "granted": False, **pre[r.id],  # type: ignore[index]
                              "instrument_id": None, "start": None, "end": None})
            continue
        assert allocation is not None
        d = allocation.decision_for(r.id)  # type: ignore[arg-type]
        reason = d.reason
        if d.granted and d.instrument_id is not None and d.start is not None and d.end is not None:
            inst = by_id[d.instrument_id]
            reason = (f"「{inst.name}」（{CITIES.get(inst.city_code, inst.city_code)}）"
                      f"{to_local(d.start):%Y-%m-%d %H:%M}–{to_local(d.end):%H:%M}：{WHY.get(d.code, WHY['granted'])}")
        decisions.append({"request_id": r.id, "user_id": r.user_id, "granted": d.granted, "code": d.code,
                          "reason": reason, "instrument_id": d.instrument_id,
                          "start": d.start.isoformat() if d.start else None,
                          "end": d.end.isoformat() if d.end else None})
    requested = sum(r.duration_minutes for r in requests)
    granted = allocation.granted_minutes if allocation else 0
    return {
        "computed_at": now.isoformat(),
        "method": allocation.method if allocation else "none",
        "solver_status": allocation.solver_status if allocation else "",
        "deterministic": allocation.deterministic if allocation else True,
        "solve_seconds": round(allocation.solve_seconds, 3) if allocation else 0.0,
        "requests": len(requests),
        "granted_requests": sum(1 for d in decisions if d["granted"]),
        "requested_hours": _hours(requested),
        "granted_hours": _hours(granted),
        "upper_bound_hours": _hours(bound.minutes) if bound else 0.0,
        "external_share": float(round(allocation.external_share, 3)) if allocation else 0.0,
        "policy": {"slot_minutes": slot,
                   "user_cap_hours": str(group.user_cap_hours) if group.user_cap_hours is not None else None,
                   "institution_cap_hours": (str(group.institution_cap_hours)
                                             if group.institution_cap_hours is not None else None),
                   "external_min_share": str(group.external_min_share)},
        "decisions": decisions,
    }


async def _slot_lengths(session: AsyncSession, instruments: list[Instrument]) -> list[int]:
    from scheduling import repository as schedule_repo

    out = []
    for inst in instruments:
        row = await schedule_repo.rules_row(session, inst.id)  # type: ignore[arg-type]
        out.append(row.granularity_min if row else 30)
    return out


def _hours_of(r: FlexibleBooking) -> tuple[Any, ...]:
    from scheduling.flexible import parse_hours

    return parse_hours(r.preferred_hours)


async def publish(session: AsyncSession, principal: Principal, round_id: int) -> RoundView:
    """Book the previewed placements (each as the manager on behalf of its user, in a savepoint) and give every
    request its decision; notify the users."""
    row, group, _ = await _managed_round(session, principal, round_id, for_update=True)
    if row.status == "published":
        raise Conflict("本轮已发布", problems=[Problem("status", "published", "本轮已发布")])
    if row.status != "previewed" or not row.preview:
        raise Conflict("请先预览", problems=[Problem("status", "not_previewed", "发布前请先预览本轮分配结果")])
    now = utcnow()
    requests = {r.id: r for r in await repo.requests_of_round(session, round_id, for_update=True)}
    granted = refused = 0
    for d in row.preview.get("decisions", []):
        r = requests.get(d["request_id"])
        if r is None or r.status != "collected":
            continue
        if d["granted"]:
            data = BookingCreate(instrument_id=d["instrument_id"], start=datetime.fromisoformat(d["start"]),
                                 end=datetime.fromisoformat(d["end"]), purpose=r.purpose, project_name=r.project_name,
                                 funding_source=r.funding_source, service_mode=r.service_mode,  # type: ignore[arg-type]
                                 sample_notes=r.sample_notes, on_behalf_of=r.user_id)
            try:
                async with session.begin_nested():
                    booking = await reservations.create_booking(session, principal, data)
            except (Conflict, RuleViolation, Forbidden, NotFound) as exc:
                detail = "；".join(p.message for p in exc.problems) or exc.detail
                r.status, r.decision_code = "refused", "unavailable_at_publish"
                r.reason = f"预览后该时段已不可用，未能预约：{detail}"[:500]
                refused += 1
            else:
                r.status, r.decision_code, r.reason, r.booking_id = "granted", d["code"], d["reason"][:500], booking.id
                granted += 1
        else:
            r.status, r.decision_code, r.reason = "refused", d["code"], d["reason"][:500]
            refused += 1
        r.updated_at = now
        await notify(session, r.user_id, kind=f"round.{r.status}",
                     title=f"分配结果：{'已获批' if r.status == 'granted' else '未获批'}（{group.name}）",
                     body=r.reason or "", link=f"/requests/flexible/{r.id}")
    row.status = "published"
    row.published_at = now
    row.published_by = principal.id
    row.preview = {**row.preview, "published": {"granted": granted, "refused": refused}}
    await session.flush()
    record(session, actor_id=principal.id, action="allocation_round.published", target_type="allocation_round",
           target_id=row.id, after={"granted": granted, "refused": refused})
    return RoundView(row, group, list(requests.values()), now)


def figures(view: RoundView) -> dict[str, Any]:
    """The preview's figures as shown on the page (granted share of the bound as a percentage)."""
    p = view.round.preview or {}
    bound = p.get("upper_bound_hours") or 0
    return {**{k: v for k, v in p.items() if k != "decisions"},
            "of_bound": f"{Decimal(str(p.get('granted_hours', 0))) / Decimal(str(bound)) * 100:.1f}%" if bound else "—"}


async def booking_policy(session: AsyncSession, ctx: Any, user: Any, actor_manages: bool) -> list[Problem]:
    """Researchers cannot book directly an instrument whose equivalence group is allocated by rounds: the
    round's optimiser shares its time fairly, and a direct booking would jump the queue. Managers still can
    (maintenance, on-behalf bookings, publishing a round)."""
    if actor_manages:
        return []
    group = ctx.rounds_group  # loaded with the instrument's schedule (scheduling.repository.load_schedule)
    if group is None:
        return []
    return [Problem("instrument_id", "allocated_by_rounds",
                    f"该仪器属于按轮次分配的等效仪器组「{group}」，请提交灵活预约申请，截止后由管理员统一分配")]
