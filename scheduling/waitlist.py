"""The waitlist: wait for a taken slot (or any slot of a length inside a window); when time frees up it is offered
to the waiting users in order (priority, then first come) as a *held* booking that expires.

How it fits together:

* `on_time_freed` is installed as a freed-time listener of reservations (`booking.reservations.hooks`): the
  transition that cancels, rejects, expires or shortens a booking calls it in the same transaction, so the next
  user's offer exists the moment the slot is free, and nobody else can take the slot meanwhile (a held booking is
  a row in the exclusion constraint like any other).
* An offer is accepted (`accept`) or declined; an expired one is released by the `release_holds` job through
  `transition("expire_hold")`, which frees the slot again and so offers it to the next user in line.
* When the user opted in and the instrument confirms without approval, the booking is made at once instead of
  held (`auto_booked`).
* `catch_up` (a job) lapses entries whose window has passed and offers time that became free without a
  transition (a blackout removed, opening hours extended, a listener that failed).

Accepting: the offer row is locked first, so two acceptances serialise; the second sees `accepted` (409). After
the deadline the answer is 410, and the hold is released right there (the refusal commits that change) so the
slot passes on without waiting for the job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import User
from booking.activity.service import record
from booking.auth.principal import Principal
from booking.core.clock import to_local, utcnow
from booking.core.errors import Conflict, Forbidden, Gone, NotFound, Problem, RuleViolation
from booking.core.settings import get_settings
from booking.notify.service import notify
from booking.reservations import hooks
from booking.reservations import service as reservations
from booking.reservations.models import Booking, BookingStatus
from booking.reservations.schemas import BookingCreate
from instruments.models import Instrument
from instruments.service import get_visible, may_manage
from scheduling import conflict_repository as repo
from scheduling import equivalence
from scheduling.conflict_models import WaitlistEntry, WaitlistOffer
from scheduling.conflict_schemas import WaitlistIn
from scheduling.intervals import Interval, subtract
from scheduling.slots import bookable_slots, nearest_alternatives

log = logging.getLogger("booking.waitlist")

BATCH = 200


def _when(start: datetime, end: datetime) -> str:
    return f"{to_local(start):%Y-%m-%d %H:%M}–{to_local(end):%H:%M}"


# ---- joining and leaving ------------------------------------------------------------------------------------------


async def join(session: AsyncSession, principal: Principal, data: WaitlistIn) -> WaitlistEntry:
    """Wait for [start, end) (or `duration_minutes` inside it). Checked first, stored only when sound; when the
    time is free already, the offer follows at once."""
    now = utcnow()
    inst = await get_visible(session, principal, data.instrument_id)
    found = await equivalence.candidates(session, principal, inst, data.any_equivalent)
    problems: list[Problem] = []
    if not found.instruments:
        problems += found.excluded.get(inst.id, []) or [  # type: ignore[call-overload]
            Problem("instrument_id", "not_bookable", "您不能预约该仪器，也没有可预约的等效仪器")]
    if data.end <= data.start:
        problems.append(Problem("end", "end_not_after_start", "结束时间须晚于开始时间"))
    elif data.end <= now:
        problems.append(Problem("end", "in_past", "该时段已经过去"))
    duration = data.duration_minutes or int((data.end - data.start).total_seconds() // 60)
    if data.end > data.start and timedelta(minutes=duration) > data.end - data.start:
        problems.append(Problem("end", "window_too_short", f"时间窗短于所需时长 {duration} 分钟"))
    if found.instruments and not problems:
        grid = await equivalence.duration_problem(session, found.instruments, duration)
        if grid:
            problems.append(grid)
    if not problems and await repo.duplicate_entry(session, principal.id, inst.id, data.start, data.end):  # type: ignore[arg-type]
        raise Conflict("您已在该时段的候补队列中", problems=[Problem("start", "duplicate", "您已在该时段的候补队列中")])
    if problems:
        raise RuleViolation("候补申请有误", problems=problems)
    entry = WaitlistEntry(
        user_id=principal.id, instrument_id=inst.id, any_equivalent=data.any_equivalent,  # type: ignore[arg-type]
        kind="window" if data.duration_minutes else "slot", window_start=data.start, window_end=data.end,
        duration_minutes=duration, auto_confirm=data.auto_confirm, purpose=data.purpose.strip(),
        project_name=data.project_name, funding_source=data.funding_source, service_mode=data.service_mode.value,
        sample_notes=data.sample_notes, status="waiting", created_at=now, updated_at=now)
    session.add(entry)
    await session.flush()
    record(session, actor_id=principal.id, action="waitlist.joined", target_type="waitlist_entry",
           target_id=entry.id, after={"instrument_id": inst.id, "start": data.start, "end": data.end,
                                      "duration_minutes": duration, "any_equivalent": data.any_equivalent,
                                      "auto_confirm": data.auto_confirm})
    await try_offer(session, entry, now)
    return entry


async def cancel(session: AsyncSession, principal: Principal, entry_id: int) -> WaitlistEntry:
    entry = await _own_entry(session, principal, entry_id, for_update=True)
    if entry.status not in ("waiting", "offered"):
        raise Conflict("该候补已结束", problems=[Problem("status", "closed", "该候补已结束，无需取消")])
    now = utcnow()
    open_offer = next((o for o in (await repo.offers_of_entries(session, [entry.id])).get(entry.id, [])  # type: ignore[list-item]
                       if o.outcome == "open"), None)
    entry.status = "cancelled"
    entry.closed_at = entry.updated_at = now
    await session.flush()
    if open_offer is not None:
        # Giving up the entry gives up its hold: the slot goes to the next user in line.
        await reservations.transition(session, principal, open_offer.booking_id, "decline", note="取消候补")
    record(session, actor_id=principal.id, action="waitlist.cancelled", target_type="waitlist_entry",
           target_id=entry.id)
    return entry


async def set_priority(session: AsyncSession, principal: Principal, entry_id: int, priority: int) -> WaitlistEntry:
    entry = await repo.entry(session, entry_id, for_update=True)
    if entry is None:
        raise NotFound(f"候补 {entry_id} 不存在")
    inst = await session.get(Instrument, entry.instrument_id)
    assert inst is not None
    if not may_manage(principal, inst.institution_id, inst.facility_id):
        raise Forbidden("只有该仪器的管理员可以调整候补优先级")
    before = entry.priority
    entry.priority = priority
    entry.updated_at = utcnow()
    await session.flush()
    record(session, actor_id=principal.id, action="waitlist.priority", target_type="waitlist_entry",
           target_id=entry.id, before={"priority": before}, after={"priority": priority})
    return entry


async def _own_entry(session: AsyncSession, principal: Principal, entry_id: int, *, for_update: bool = False
                     ) -> WaitlistEntry:
    entry = await repo.entry(session, entry_id, for_update=for_update)
    if entry is None or entry.user_id != principal.id:
        raise NotFound(f"候补 {entry_id} 不存在")
    return entry


# ---- reading ------------------------------------------------------------------------------------------------------


@dataclass
class EntryView:
    entry: WaitlistEntry
    instrument: Instrument | None
    offers: list[WaitlistOffer]
    position: int | None

    @property
    def open_offer(self) -> WaitlistOffer | None:
        return next((o for o in self.offers if o.outcome == "open"), None)


async def views(session: AsyncSession, entries: list[WaitlistEntry]) -> list[EntryView]:
    offers = await repo.offers_of_entries(session, [e.id for e in entries])  # type: ignore[misc]
    instruments = await repo.instruments(session, [e.instrument_id for e in entries])
    out = []
    for e in entries:
        position = None
        if e.status == "waiting":
            queue = await repo.entries_of_instruments(session, [e.instrument_id], limit=1000)
            waiting = [q for q in queue if q.status == "waiting"]
            position = next((n for n, q in enumerate(waiting, start=1) if q.id == e.id), None)
        out.append(EntryView(e, instruments.get(e.instrument_id), offers.get(e.id, []), position))  # type: ignore[arg-type]
    return out


async def mine(session: AsyncSession, principal: Principal, *, active_only: bool, limit: int, offset: int,
               statuses: Sequence[str] | None = None) -> tuple[list[EntryView], int]:
    rows, total = await repo.entries_of_user(session, principal.id, active_only=active_only, limit=limit,
                                             offset=offset, statuses=statuses)
    return await views(session, rows), total


async def get(session: AsyncSession, principal: Principal, entry_id: int) -> EntryView:
    return (await views(session, [await _own_entry(session, principal, entry_id)]))[0]


async def queue_of_instrument(session: AsyncSession, principal: Principal, instrument_id: int) -> list[EntryView]:
    inst = await get_visible(session, principal, instrument_id)
    if not may_manage(principal, inst.institution_id, inst.facility_id):
        raise Forbidden("只有该仪器的管理员可以查看候补队列")
    return await views(session, await repo.entries_of_instruments(session, [instrument_id], limit=500))


# ---- offers -------------------------------------------------------------------------------------------------------


async def _placement(session: AsyncSession, entry: WaitlistEntry, inst: Instrument, user: User, now: datetime
                     ) -> Interval | None:
    """The earliest grid slot of the entry's length inside its window on `inst` that is free, passes the time
    rules and was not already offered to this entry and let go."""
    ctx = await reservations.instrument_context(session, inst, entry.window_start, entry.window_end)
    rules = ctx.rules
    duration = timedelta(minutes=entry.duration_minutes)
    if not equivalence.duration_allowed(rules, entry.duration_minutes):
        return None
    free = await reservations.free_intervals(session, ctx, entry.window_start, entry.window_end)
    passed = [Interval(o.start_at, o.end_at) for o in await repo.passed_offers(session, entry.id)  # type: ignore[arg-type]
              if o.instrument_id == inst.id]
    if passed:
        free = subtract(free, passed)
    slots = bookable_slots(free, rules, now, entry.window_start, entry.window_end)
    for candidate in nearest_alternatives(slots, entry.window_start, duration, 8, rules.slot_minutes):
        if candidate.start < entry.window_start:
            continue
        if not await reservations.rule_problems(session, ctx, user, candidate.start, candidate.end):
            return candidate
    return None


async def try_offer(session: AsyncSession, entry: WaitlistEntry, now: datetime, *,
                    only_instrument_id: int | None = None) -> WaitlistOffer | None:
    """Offer the entry the best free time there is (on `only_instrument_id` when given): a held booking, or the
    booking itself when the user opted in and the instrument auto-confirms. None when nothing fits."""
    settings = get_settings()
    user = await session.get(User, entry.user_id)
    inst = await session.get(Instrument, entry.instrument_id)
    if user is None or inst is None or not user.is_active:
        return None
    principal = await equivalence.principal_of(session, user)
    found = await equivalence.candidates(session, principal, inst, entry.any_equivalent)
    for candidate in found.instruments:
        if only_instrument_id is not None and candidate.id != only_instrument_id:
            continue
        slot = await _placement(session, entry, candidate, user, now)
        if slot is None:
            continue
        expires = min(now + timedelta(minutes=settings.waitlist_hold_minutes), slot.start)
        if expires - now < timedelta(minutes=settings.waitlist_min_hold_minutes):
            continue
        ctx = await reservations.instrument_context(session, candidate, slot.start, slot.end)
        if entry.auto_confirm and not ctx.rules.approval_required:
            offer = await _book_now(session, entry, principal, candidate, slot, now)
        else:
            offer = await _hold(session, entry, user, candidate, slot, expires, now)
        if offer is not None:
            return offer
    return None


async def _book_now(session: AsyncSession, entry: WaitlistEntry, principal: Principal, inst: Instrument,
                    slot: Interval, now: datetime) -> WaitlistOffer | None:
    data = BookingCreate(instrument_id=inst.id, start=slot.start, end=slot.end, purpose=entry.purpose,  # type: ignore[arg-type]
                         project_name=entry.project_name, funding_source=entry.funding_source,
                         service_mode=entry.service_mode, sample_notes=entry.sample_notes)  # type: ignore[arg-type]
    try:
        async with session.begin_nested():
            booking = await reservations.create_booking(session, principal, data)
    except (Conflict, RuleViolation, Forbidden, NotFound) as exc:
        log.info("waitlist entry %s: auto-booking refused: %s", entry.id, exc.detail)
        return None
    offer = WaitlistOffer(entry_id=entry.id, booking_id=booking.id, instrument_id=inst.id, start_at=slot.start,  # type: ignore[arg-type]
                          end_at=slot.end, offered_at=now, outcome="auto_booked", decided_at=now)
    session.add(offer)
    entry.status = "fulfilled"
    entry.closed_at = entry.updated_at = now
    await session.flush()
    record(session, actor_id=None, action="waitlist.auto_booked", target_type="waitlist_entry", target_id=entry.id,
           after={"booking_id": booking.id, "instrument_id": inst.id, "start": slot.start, "end": slot.end})
    await notify(session, entry.user_id, kind="waitlist.booked", title=f"候补成功，已为您预约：{inst.name}",
                 body=f"您候补的时段有空了，已按您的选择直接预约 {inst.name} {_when(slot.start, slot.end)}。",
                 link=f"/bookings/{booking.id}")
    return offer


async def _hold(session: AsyncSession, entry: WaitlistEntry, user: User, inst: Instrument, slot: Interval,
                expires: datetime, now: datetime) -> WaitlistOffer | None:
    booking, _problems = await reservations.create_hold(
        session, user, inst, slot.start, slot.end, expires, purpose=entry.purpose, project_name=entry.project_name,
        funding_source=entry.funding_source, service_mode=entry.service_mode, sample_notes=entry.sample_notes)
    if booking is None:
        return None
    offer = WaitlistOffer(entry_id=entry.id, booking_id=booking.id, instrument_id=inst.id, start_at=slot.start,  # type: ignore[arg-type]
                          end_at=slot.end, offered_at=now, expires_at=expires, outcome="open")
    session.add(offer)
    entry.status = "offered"
    entry.updated_at = now
    await session.flush()
    record(session, actor_id=None, action="waitlist.offered", target_type="waitlist_entry", target_id=entry.id,
           after={"offer_id": offer.id, "booking_id": booking.id, "instrument_id": inst.id, "start": slot.start,
                  "end": slot.end, "expires_at": expires})
    await notify(session, entry.user_id, kind="waitlist.offer", title=f"候补时段已为您保留：{inst.name}",
                 body=f"{inst.name} {_when(slot.start, slot.end)} 已为您保留，请在 {to_local(expires):%H:%M}"
                      "（北京时间）前确认，逾期将顺延给下一位候补用户。",
                 link="/waitlist")
    return offer


async def accept(session: AsyncSession, principal: Principal, offer_id: int) -> Booking:
    offer = await repo.offer(session, offer_id, for_update=True)
    entry = await repo.entry(session, offer.entry_id, for_update=True) if offer else None
    if offer is None or entry is None or entry.user_id != principal.id:
        raise NotFound(f"候补时段 {offer_id} 不存在")
    if offer.outcome in ("accepted", "auto_booked"):
        raise Conflict("该时段已接受", problems=[Problem("offer", "already_accepted", "您已接受该时段，无需重复确认")])
    if offer.outcome != "open":
        raise Gone("保留已失效", problems=[Problem("offer", "offer_gone", "该保留已过期或已放弃，时段已顺延给其他用户")])
    booking, inst = await reservations.get_booking(session, principal, offer.booking_id, for_update=True)
    now = utcnow()
    if booking.status != BookingStatus.held or booking.hold_expires_at is None or booking.hold_expires_at <= now:
        if booking.status == BookingStatus.held:
            # Released here rather than by the job: the next user gets the slot now, and the 410 keeps this change.
            await reservations.transition(session, None, booking.id, "expire_hold", booking=booking, now=now)  # type: ignore[arg-type]
        raise Gone("保留已过期", commit_anyway=True, problems=[Problem(
            "offer", "offer_expired",
            f"保留已于 {to_local(offer.expires_at or now):%H:%M} 过期，时段已顺延给下一位候补用户")])
    ctx = await reservations.instrument_context(session, inst, booking.start_at, booking.end_at)
    manager = may_manage(principal, inst.institution_id, inst.facility_id)
    action = "accept_pending" if ctx.rules.approval_required and not manager else "accept"
    booking = await reservations.transition(session, principal, booking.id, action, booking=booking, now=now)  # type: ignore[arg-type]
    offer.outcome = "accepted"
    offer.decided_at = now
    entry.status = "fulfilled"
    entry.closed_at = entry.updated_at = now
    await session.flush()
    record(session, actor_id=principal.id, action="waitlist.accepted", target_type="waitlist_entry",
           target_id=entry.id, after={"offer_id": offer.id, "booking_id": booking.id, "status": booking.status})
    return booking


async def decline(session: AsyncSession, principal: Principal, offer_id: int) -> WaitlistOffer:
    offer = await repo.offer(session, offer_id, for_update=True)
    entry = await repo.entry(session, offer.entry_id) if offer else None
    if offer is None or entry is None or entry.user_id != principal.id:
        raise NotFound(f"候补时段 {offer_id} 不存在")
    if offer.outcome != "open":
        raise Gone("保留已失效", problems=[Problem("offer", "offer_gone", "该保留已结束，无需放弃")])
    # The transition frees the slot; the listener below records the outcome and offers it onward.
    await reservations.transition(session, principal, offer.booking_id, "decline", note="放弃候补时段")
    return offer


# ---- freed time ---------------------------------------------------------------------------------------------------


async def _settle_offer(session: AsyncSession, freed: hooks.FreedTime) -> None:
    """If the freed booking was an offer, record what became of it; its entry waits again (unless cancelled)."""
    offer = await repo.offer_of_booking(session, freed.booking_id)
    if offer is None or offer.outcome != "open":
        return
    outcome = {"decline": "declined", "expire_hold": "expired"}.get(freed.action, "withdrawn")
    offer.outcome = outcome
    offer.decided_at = freed.at
    entry = await repo.entry(session, offer.entry_id, for_update=True)
    if entry is not None and entry.status == "offered":
        entry.status = "waiting"
        entry.updated_at = freed.at
    await session.flush()


async def offer_freed_time(session: AsyncSession, instrument_id: int, start: datetime, end: datetime,
                           now: datetime) -> int:
    """Offer time freed on an instrument to the entries that can use it, in queue order, until none fits."""
    group_ids = await equivalence.group_instrument_ids(session, instrument_id)
    made = 0
    for entry in await repo.waiting_for(session, instrument_id, group_ids, start, end, now, BATCH):
        if await try_offer(session, entry, now, only_instrument_id=instrument_id) is not None:
            made += 1
    return made


async def on_time_freed(session: AsyncSession, freed: hooks.FreedTime) -> None:
    """The freed-time listener: settle the offer the booking was, then offer the time onward."""
    await _settle_offer(session, freed)
    await offer_freed_time(session, freed.instrument_id, freed.start, freed.end, freed.at)


async def catch_up(session: AsyncSession, now: datetime, limit: int = 2000) -> int:
    """Job: close entries whose window has passed; offer free time to waiting entries in queue order (for time
    freed without a transition). Returns entries lapsed plus offers made."""
    done = await repo.lapse_entries(session, now)
    for entry_id in await repo.waiting_ids(session, now, limit):
        entry = await repo.lock_waiting(session, entry_id)
        if entry is not None and await try_offer(session, entry, now) is not None:
            done += 1
    return done
