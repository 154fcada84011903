"""JSON API of the conflict-resolving scheduler: equivalence groups, alternatives, the waitlist and its held
offers, flexible requests, allocation rounds, explain and simulate. Thin: parse, call one service, shape."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import AwareDatetime

from booking.auth.deps import ApiManager, ApiPrincipal, ApiUser
from booking.core.clock import utcnow
from booking.core.db import SessionDep
from booking.core.errors import Problem, RuleViolation
from booking.core.pagination import Page, PageDep
from booking.core.regions import CITIES
from booking.reservations import service as reservations
from booking.reservations.api import public as booking_public
from booking.reservations.schemas import BookingPublic
from instruments.service import get_visible
from scheduling import equivalence, explain, flexible, rounds, waitlist
from scheduling.conflict_models import FlexibleBooking, WaitlistOffer
from scheduling.conflict_schemas import (
    AffectedOut,
    EquivalentPublic,
    EquivalentsOut,
    Explanation,
    FlexibleIn,
    FlexiblePublic,
    GroupIn,
    GroupPublic,
    GroupUpdate,
    MemberIn,
    MemberPublic,
    OfferPublic,
    PriorityIn,
    RoundDetail,
    RoundPublic,
    SimulationIn,
    SimulationOut,
    WaitlistIn,
    WaitlistPublic,
    WeightIn,
)

router = APIRouter(prefix="/api/v1", tags=["scheduler"])


# ---- shaping ------------------------------------------------------------------------------------------------------

def group_public(v: equivalence.GroupView) -> GroupPublic:
    g = v.group
    return GroupPublic(
        id=g.id, name=g.name, category_code=g.category_code, category_name=v.category_name,  # type: ignore[arg-type]
        description=g.description, capability_tags=list(g.capability_tags), override_reason=g.override_reason,
        allocation_mode=g.allocation_mode, round_weekday=g.round_weekday, round_time=g.round_time,
        user_cap_hours=g.user_cap_hours, institution_cap_hours=g.institution_cap_hours,
        external_min_share=g.external_min_share, can_manage=v.can_manage,
        members=[MemberPublic(instrument_id=i.id, name=i.name, city_code=i.city_code,  # type: ignore[arg-type]
                              city=CITIES.get(i.city_code, i.city_code), institution_id=i.institution_id,
                              category_code=i.category_code, tags=list(m.tags)) for m, i in v.members])


def offer_public(o: WaitlistOffer, name: str) -> OfferPublic:
    left = None
    if o.outcome == "open" and o.expires_at is not None:
        left = max(0, int((o.expires_at - utcnow()).total_seconds()))
    return OfferPublic(id=o.id, booking_id=o.booking_id, instrument_id=o.instrument_id, instrument_name=name,  # type: ignore[arg-type]
                       start=o.start_at, end=o.end_at, offered_at=o.offered_at, expires_at=o.expires_at,
                       outcome=o.outcome, seconds_left=left)


async def entry_public(session: SessionDep, v: waitlist.EntryView) -> WaitlistPublic:
    e = v.entry
    names = {o.instrument_id for o in v.offers}
    from scheduling import conflict_repository as repo

    insts = await repo.instruments(session, list(names))
    name_of = {i: insts[i].name for i in insts}
    offers = [offer_public(o, name_of.get(o.instrument_id, "")) for o in v.offers]
    current = next((o for o in offers if o.outcome == "open"), None)
    return WaitlistPublic(
        id=e.id, user_id=e.user_id, instrument_id=e.instrument_id,  # type: ignore[arg-type]
        instrument_name=v.instrument.name if v.instrument else "", kind=e.kind, start=e.window_start,
        end=e.window_end, duration_minutes=e.duration_minutes, any_equivalent=e.any_equivalent,
        auto_confirm=e.auto_confirm, priority=e.priority, status=e.status, position=v.position,
        created_at=e.created_at, offer=current, offers=offers)


async def flexible_public(session: SessionDep, rows: list[FlexibleBooking]) -> list[FlexiblePublic]:
    bookings = await flexible.bookings_of(session, rows)
    from scheduling import conflict_repository as repo

    cutoffs: dict[int, datetime] = {}
    for rid in {r.round_id for r in rows if r.round_id is not None}:
        round_row = await repo.round_(session, rid)  # type: ignore[arg-type]
        if round_row is not None:
            cutoffs[rid] = round_row.cutoff_at  # type: ignore[index]
    out = []
    for r in rows:
        b = bookings.get(r.booking_id) if r.booking_id is not None else None
        out.append(FlexiblePublic(
            id=r.id, user_id=r.user_id, instrument_id=r.instrument_id, any_equivalent=r.any_equivalent,  # type: ignore[arg-type]
            duration_minutes=r.duration_minutes, window_start=r.window_start, window_end=r.window_end,
            deadline=r.deadline, preferred_hours=r.preferred_hours, weight=r.weight, status=r.status,
            decision_code=r.decision_code, reason=r.reason, booking_id=r.booking_id,
            placed_instrument_id=b.instrument_id if b else None, placed_start=b.start_at if b else None,
            placed_end=b.end_at if b else None, round_id=r.round_id,
            cutoff_at=cutoffs.get(r.round_id) if r.round_id is not None else None, created_at=r.created_at))
    return out


def round_public(v: rounds.RoundView) -> RoundPublic:
    r = v.round
    return RoundPublic(id=r.id, group_id=r.group_id, group_name=v.group.name, cutoff_at=r.cutoff_at,  # type: ignore[arg-type]
                       collecting=v.collecting, status=r.status, requests=len(v.requests), preview=r.preview,
                       previewed_at=r.previewed_at, published_at=r.published_at)


async def round_detail(session: SessionDep, v: rounds.RoundView) -> RoundDetail:
    return RoundDetail(**round_public(v).model_dump(), items=await flexible_public(session, v.requests))


# ---- equivalence groups -------------------------------------------------------------------------------------------

@router.get("/equivalence-groups", response_model=Page[GroupPublic], summary="Equivalence groups and members")
async def list_groups(session: SessionDep, principal: ApiUser, page: PageDep) -> Page[GroupPublic]:
    rows, total = await equivalence.list_groups(session, principal, limit=page.limit, offset=page.offset)
    return Page(items=[group_public(v) for v in rows], total=total, limit=page.limit, offset=page.offset)


@router.post("/equivalence-groups", response_model=GroupPublic, status_code=status.HTTP_201_CREATED,
             summary="Managers and admins: group instruments of one 小类 (or mixed, with override_reason)")
async def create_group(session: SessionDep, principal: ApiManager, data: GroupIn) -> GroupPublic:
    return group_public(await equivalence.create_group(session, principal, data))


@router.get("/equivalence-groups/{group_id}", response_model=GroupPublic)
async def get_group(session: SessionDep, principal: ApiUser, group_id: int) -> GroupPublic:
    return group_public(await equivalence.get_group(session, principal, group_id))


@router.patch("/equivalence-groups/{group_id}", response_model=GroupPublic,
              summary="Managers of every member: rename, tags, allocation mode (immediate | rounds) and policy")
async def update_group(session: SessionDep, principal: ApiManager, group_id: int, data: GroupUpdate) -> GroupPublic:
    return group_public(await equivalence.update_group(session, principal, group_id, data))


@router.post("/equivalence-groups/{group_id}/members", response_model=GroupPublic,
             status_code=status.HTTP_201_CREATED, summary="Add an instrument you manage to the group")
async def add_member(session: SessionDep, principal: ApiManager, group_id: int, data: MemberIn) -> GroupPublic:
    return group_public(await equivalence.add_member(session, principal, group_id, data))


@router.delete("/equivalence-groups/{group_id}/members/{instrument_id}", response_model=GroupPublic)
async def remove_member(session: SessionDep, principal: ApiManager, group_id: int, instrument_id: int
                        ) -> GroupPublic:
    return group_public(await equivalence.remove_member(session, principal, group_id, instrument_id))


@router.get("/instruments/{instrument_id}/equivalents", response_model=EquivalentsOut,
            summary="The instrument's equivalents, and whether you may book each")
async def equivalents(session: SessionDep, principal: ApiUser, instrument_id: int) -> EquivalentsOut:
    inst, group, others = await equivalence.equivalents_of(session, principal, instrument_id)
    return EquivalentsOut(instrument_id=inst.id, group_id=group.id if group else None,  # type: ignore[arg-type]
                          group_name=group.name if group else None,
                          equivalents=[EquivalentPublic(instrument_id=i.id, name=i.name, city_code=i.city_code,  # type: ignore[arg-type]
                                                        city=CITIES.get(i.city_code, i.city_code),
                                                        bookable=not problems,
                                                        problems=[p.as_dict() for p in problems])
                                       for i, problems in others])


def _cities(raw: list[str]) -> tuple[str, ...]:
    unknown = [c for c in raw if c not in CITIES]
    if unknown:
        raise RuleViolation("市州代码有误", problems=[Problem("city", "unknown_city",
                                                          f"未知的市州代码：{'、'.join(unknown)}")])
    return tuple(raw)


@router.get("/instruments/{instrument_id}/alternatives",
            summary="The k best alternatives to a slot: same instrument and equivalents you may book")
async def alternatives(session: SessionDep, principal: ApiUser, instrument_id: int,
                       start: Annotated[AwareDatetime, Query(description="ISO 8601 with offset")],
                       end: Annotated[AwareDatetime, Query(description="ISO 8601 with offset")],
                       city: Annotated[list[str] | None, Query(description="preferred 市州 codes")] = None,
                       ) -> dict[str, Any]:
    if end <= start:
        raise RuleViolation("时间范围无效", problems=[Problem("end", "end_not_after_start", "结束时间须晚于开始时间")])
    inst = await get_visible(session, principal, instrument_id)
    ctx = await reservations.instrument_context(session, inst, start, end)
    items = await reservations.conflict_alternatives(session, ctx, principal.user, start, end,
                                                     preferred_cities=_cities(city or []))
    return {"instrument_id": instrument_id, "start": start, "end": end, "alternatives": items}


# ---- waitlist -----------------------------------------------------------------------------------------------------

@router.post("/waitlist", response_model=WaitlistPublic, status_code=status.HTTP_201_CREATED,
             summary="Wait for a taken slot, or for any slot of duration_minutes in a window")
async def join_waitlist(session: SessionDep, principal: ApiUser, data: WaitlistIn) -> WaitlistPublic:
    entry = await waitlist.join(session, principal, data)
    return await entry_public(session, (await waitlist.views(session, [entry]))[0])


@router.get("/waitlist", response_model=Page[WaitlistPublic], summary="My waitlist entries with their offers")
async def my_waitlist(session: SessionDep, principal: ApiUser, page: PageDep, active: bool = False
                      ) -> Page[WaitlistPublic]:
    rows, total = await waitlist.mine(session, principal, active_only=active, limit=page.limit, offset=page.offset)
    return Page(items=[await entry_public(session, v) for v in rows], total=total, limit=page.limit,
                offset=page.offset)


@router.get("/waitlist/{entry_id}", response_model=WaitlistPublic)
async def get_waitlist_entry(session: SessionDep, principal: ApiUser, entry_id: int) -> WaitlistPublic:
    return await entry_public(session, await waitlist.get(session, principal, entry_id))


@router.post("/waitlist/{entry_id}/cancel", response_model=WaitlistPublic,
             summary="Leave the waitlist (an open offer is given up and passes to the next user)")
async def cancel_waitlist_entry(session: SessionDep, principal: ApiUser, entry_id: int) -> WaitlistPublic:
    entry = await waitlist.cancel(session, principal, entry_id)
    return await entry_public(session, (await waitlist.views(session, [entry]))[0])


@router.put("/waitlist/{entry_id}/priority", response_model=WaitlistPublic,
            summary="Managers of the instrument: set the entry's priority (higher is offered first)")
async def set_waitlist_priority(session: SessionDep, principal: ApiManager, entry_id: int, data: PriorityIn
                                ) -> WaitlistPublic:
    entry = await waitlist.set_priority(session, principal, entry_id, data.priority)
    return await entry_public(session, (await waitlist.views(session, [entry]))[0])


@router.post("/waitlist/offers/{offer_id}/accept", response_model=BookingPublic,
             responses={409: {"description": "already accepted"}, 410: {"description": "the hold has expired"}},
             summary="Accept a held offer: the booking is confirmed (or pending where approval is required)")
async def accept_offer(session: SessionDep, principal: ApiUser, offer_id: int) -> BookingPublic:
    return booking_public(await waitlist.accept(session, principal, offer_id))


@router.post("/waitlist/offers/{offer_id}/decline", response_model=OfferPublic,
             summary="Give up a held offer; it passes to the next user in line")
async def decline_offer(session: SessionDep, principal: ApiUser, offer_id: int) -> OfferPublic:
    offer = await waitlist.decline(session, principal, offer_id)
    return offer_public(offer, "")


@router.get("/instruments/{instrument_id}/waitlist", response_model=list[WaitlistPublic],
            summary="Managers: who waits for this instrument, in offer order")
async def instrument_waitlist(session: SessionDep, principal: ApiUser, instrument_id: int) -> list[WaitlistPublic]:
    return [await entry_public(session, v) for v in await waitlist.queue_of_instrument(session, principal,
                                                                                          instrument_id)]


# ---- flexible requests --------------------------------------------------------------------------------------------

@router.post("/requests/flexible", response_model=FlexiblePublic, status_code=status.HTTP_201_CREATED,
             summary="D minutes on the instrument (or an equivalent) anywhere in a window, by a deadline")
async def submit_flexible(session: SessionDep, principal: ApiUser, data: FlexibleIn) -> FlexiblePublic:
    return (await flexible_public(session, [await flexible.submit(session, principal, data)]))[0]


@router.get("/requests/flexible", response_model=Page[FlexiblePublic], summary="My flexible requests")
async def my_flexible(session: SessionDep, principal: ApiUser, page: PageDep) -> Page[FlexiblePublic]:
    from scheduling import conflict_repository as repo

    rows, total = await repo.flexible_of_user(session, principal.id, limit=page.limit, offset=page.offset)
    return Page(items=await flexible_public(session, rows), total=total, limit=page.limit, offset=page.offset)


@router.get("/requests/flexible/{request_id}", response_model=FlexiblePublic)
async def get_flexible(session: SessionDep, principal: ApiUser, request_id: int) -> FlexiblePublic:
    return (await flexible_public(session, [await flexible.get_own(session, principal, request_id)]))[0]


@router.post("/requests/flexible/{request_id}/cancel", response_model=FlexiblePublic)
async def cancel_flexible(session: SessionDep, principal: ApiUser, request_id: int) -> FlexiblePublic:
    return (await flexible_public(session, [await flexible.cancel(session, principal, request_id)]))[0]


@router.put("/requests/flexible/{request_id}/weight", response_model=FlexiblePublic,
            summary="Managers of the instrument: the request's priority weight in an allocation round")
async def set_flexible_weight(session: SessionDep, principal: ApiManager, request_id: int, data: WeightIn
                              ) -> FlexiblePublic:
    return (await flexible_public(session, [await flexible.set_weight(session, principal, request_id,
                                                                      data.weight)]))[0]


# ---- allocation rounds --------------------------------------------------------------------------------------------

@router.get("/rounds", response_model=list[RoundPublic], summary="Managers: rounds of the groups you manage")
async def list_rounds(session: SessionDep, principal: ApiManager) -> list[RoundPublic]:
    return [round_public(v) for v in await rounds.list_rounds(session, principal)]


@router.get("/rounds/{round_id}", response_model=RoundDetail)
async def get_round(session: SessionDep, principal: ApiManager, round_id: int) -> RoundDetail:
    return await round_detail(session, await rounds.get_round(session, principal, round_id))


@router.post("/rounds/{round_id}/close", response_model=RoundDetail, summary="Stop collecting requests now")
async def close_round(session: SessionDep, principal: ApiManager, round_id: int) -> RoundDetail:
    return await round_detail(session, await rounds.close(session, principal, round_id))


@router.post("/rounds/{round_id}/preview", response_model=RoundDetail,
             summary="Allocate (deterministic) and show every decision with its reason; nothing is booked")
async def preview_round(session: SessionDep, principal: ApiManager, round_id: int) -> RoundDetail:
    return await round_detail(session, await rounds.preview(session, principal, round_id))


@router.post("/rounds/{round_id}/publish", response_model=RoundDetail,
             summary="Book the previewed placements through the reservations service and notify every user")
async def publish_round(session: SessionDep, principal: ApiManager, round_id: int) -> RoundDetail:
    return await round_detail(session, await rounds.publish(session, principal, round_id))


# ---- explain and simulate -----------------------------------------------------------------------------------------

@router.get("/instruments/{instrument_id}/explain", response_model=Explanation,
            summary="Why a slot can or cannot be booked: the rules and the bookings that block it")
async def explain_slot(session: SessionDep, principal: ApiPrincipal, instrument_id: int,
                       start: Annotated[AwareDatetime, Query(description="ISO 8601 with offset")],
                       end: Annotated[AwareDatetime, Query(description="ISO 8601 with offset")]) -> Explanation:
    return Explanation.model_validate(await explain.explain_slot(session, principal, instrument_id, start, end))


@router.post("/instruments/{instrument_id}/schedule/simulate", response_model=SimulationOut,
             response_model_by_alias=True,
             summary="Managers: which active bookings a change of opening windows or rules would affect (not saved)")
async def simulate(session: SessionDep, principal: ApiUser, instrument_id: int, data: SimulationIn
                   ) -> SimulationOut:
    result = await explain.simulate_change(session, principal, instrument_id, data)
    return SimulationOut(instrument_id=instrument_id, **{"from": result.start}, to=result.end,
                         checked=result.checked,
                         affected=[AffectedOut(booking_id=a.booking.id, status=a.booking.status,  # type: ignore[arg-type]
                                               start=a.booking.start_at, end=a.booking.end_at,
                                               user_id=a.booking.user_id, user_name=a.user_name, reasons=a.reasons)
                                   for a in result.affected])
