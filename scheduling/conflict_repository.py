"""Queries of the conflict-resolving scheduler (equivalence groups, waitlist, flexible requests, rounds).

Row locks: the matching loops take waiting rows `FOR UPDATE SKIP LOCKED`, so two transactions freeing time at
once never offer to the same entry; an offer is accepted under `FOR UPDATE` of its row, so two acceptances
serialise and the second sees the first's outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.accounts.models import User
from instruments.models import Category, Instrument, InstrumentAccess
from scheduling.conflict_models import (
    AllocationRound,
    EquivalenceGroup,
    EquivalenceMember,
    FlexibleBooking,
    WaitlistEntry,
    WaitlistOffer,
)
from scheduling.models import Qualification

# ---- equivalence ------------------------------------------------------------------------------------------------


async def group(session: AsyncSession, group_id: int, *, for_update: bool = False) -> EquivalenceGroup | None:
    stmt = select(EquivalenceGroup).where(col(EquivalenceGroup.id) == group_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def group_by_name(session: AsyncSession, name: str) -> EquivalenceGroup | None:
    return (await session.scalars(select(EquivalenceGroup).where(col(EquivalenceGroup.name) == name))).first()


async def groups(session: AsyncSession, *, limit: int, offset: int) -> tuple[list[EquivalenceGroup], int]:
    total = await session.scalar(select(func.count()).select_from(EquivalenceGroup))
    rows = await session.scalars(select(EquivalenceGroup).order_by(col(EquivalenceGroup.name))
                                 .limit(limit).offset(offset))
    return list(rows), int(total or 0)


async def groups_within(session: AsyncSession, instrument_ids: Sequence[int] | None) -> list[EquivalenceGroup]:
    """The groups that have members, all of them among `instrument_ids` (None: every such group), by name."""
    grouped = select(col(EquivalenceMember.group_id)).group_by(col(EquivalenceMember.group_id))
    if instrument_ids is not None:
        if not instrument_ids:
            return []
        grouped = grouped.having(func.bool_and(col(EquivalenceMember.instrument_id).in_(list(instrument_ids))))
    stmt = (select(EquivalenceGroup).where(col(EquivalenceGroup.id).in_(grouped))
            .order_by(col(EquivalenceGroup.name), col(EquivalenceGroup.id)))
    return list(await session.scalars(stmt))


async def membership(session: AsyncSession, instrument_id: int) -> tuple[EquivalenceMember, EquivalenceGroup] | None:
    stmt = (select(EquivalenceMember, EquivalenceGroup)
            .join(EquivalenceGroup, col(EquivalenceGroup.id) == col(EquivalenceMember.group_id))
            .where(col(EquivalenceMember.instrument_id) == instrument_id))
    row = (await session.execute(stmt)).first()
    return (row[0], row[1]) if row else None


async def memberships(session: AsyncSession, instrument_ids: Sequence[int]) -> dict[int, EquivalenceGroup]:
    if not instrument_ids:
        return {}
    stmt = (select(col(EquivalenceMember.instrument_id), EquivalenceGroup)
            .join(EquivalenceGroup, col(EquivalenceGroup.id) == col(EquivalenceMember.group_id))
            .where(col(EquivalenceMember.instrument_id).in_(list(instrument_ids))))
    return {iid: g for iid, g in (await session.execute(stmt)).all()}


async def members(session: AsyncSession, group_ids: Sequence[int]) -> list[tuple[EquivalenceMember, Instrument]]:
    if not group_ids:
        return []
    stmt = (select(EquivalenceMember, Instrument)
            .join(Instrument, col(Instrument.id) == col(EquivalenceMember.instrument_id))
            .where(col(EquivalenceMember.group_id).in_(list(group_ids)))
            .order_by(col(EquivalenceMember.group_id), col(Instrument.city_code), col(Instrument.id)))
    return [(m, i) for m, i in (await session.execute(stmt)).all()]


async def instruments(session: AsyncSession, ids: Sequence[int]) -> dict[int, Instrument]:
    if not ids:
        return {}
    rows = await session.scalars(select(Instrument).where(col(Instrument.id).in_(list(set(ids)))))
    return {i.id: i for i in rows}  # type: ignore[misc]


async def category_names(session: AsyncSession, codes: Sequence[str]) -> dict[str, str]:
    if not codes:
        return {}
    rows = await session.execute(select(col(Category.code), col(Category.name))
                                 .where(col(Category.code).in_(list(set(codes)))))
    return {code: name for code, name in rows.all()}


async def qualified_instrument_ids(session: AsyncSession, user_id: int, instrument_ids: Sequence[int],
                                   today: date) -> set[int]:
    """Instruments on which the user holds a qualification still valid on local `today`."""
    if not instrument_ids:
        return set()
    stmt = select(col(Qualification.instrument_id)).where(
        col(Qualification.user_id) == user_id, col(Qualification.instrument_id).in_(list(instrument_ids)),
        or_(col(Qualification.valid_until).is_(None), col(Qualification.valid_until) >= today))
    return set(await session.scalars(stmt))


async def access_instrument_ids(session: AsyncSession, user_id: int, instrument_ids: Sequence[int]) -> set[int]:
    if not instrument_ids:
        return set()
    stmt = select(col(InstrumentAccess.instrument_id)).where(
        col(InstrumentAccess.user_id) == user_id, col(InstrumentAccess.instrument_id).in_(list(instrument_ids)))
    return set(await session.scalars(stmt))


async def users(session: AsyncSession, ids: Sequence[int]) -> dict[int, User]:
    if not ids:
        return {}
    rows = await session.scalars(select(User).where(col(User.id).in_(list(set(ids)))))
    return {u.id: u for u in rows}  # type: ignore[misc]


# ---- waitlist ---------------------------------------------------------------------------------------------------


async def entry(session: AsyncSession, entry_id: int, *, for_update: bool = False) -> WaitlistEntry | None:
    stmt = select(WaitlistEntry).where(col(WaitlistEntry.id) == entry_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def entries_of_user(session: AsyncSession, user_id: int, *, active_only: bool, limit: int, offset: int,
                          statuses: Sequence[str] | None = None) -> tuple[list[WaitlistEntry], int]:
    stmt = select(WaitlistEntry).where(col(WaitlistEntry.user_id) == user_id)
    if active_only:
        stmt = stmt.where(col(WaitlistEntry.status).in_(["waiting", "offered"]))
    if statuses is not None:
        stmt = stmt.where(col(WaitlistEntry.status).in_(list(statuses)))
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = await session.scalars(stmt.order_by(col(WaitlistEntry.created_at).desc(), col(WaitlistEntry.id).desc())
                                 .limit(limit).offset(offset))
    return list(rows), int(total or 0)


async def entries_of_instruments(session: AsyncSession, instrument_ids: Sequence[int] | None, *, limit: int
                                 ) -> list[WaitlistEntry]:
    """Active entries in queue order (a manager's view of who waits for what)."""
    stmt = select(WaitlistEntry).where(col(WaitlistEntry.status).in_(["waiting", "offered"]))
    if instrument_ids is not None:
        stmt = stmt.where(col(WaitlistEntry.instrument_id).in_(list(instrument_ids)))
    stmt = stmt.order_by(col(WaitlistEntry.instrument_id), col(WaitlistEntry.priority).desc(),
                         col(WaitlistEntry.created_at), col(WaitlistEntry.id)).limit(limit)
    return list(await session.scalars(stmt))


async def duplicate_entry(session: AsyncSession, user_id: int, instrument_id: int, start: datetime,
                          end: datetime) -> WaitlistEntry | None:
    stmt = select(WaitlistEntry).where(
        col(WaitlistEntry.user_id) == user_id, col(WaitlistEntry.instrument_id) == instrument_id,
        col(WaitlistEntry.status).in_(["waiting", "offered"]),
        col(WaitlistEntry.window_start) < end, col(WaitlistEntry.window_end) > start)
    return (await session.scalars(stmt)).first()


async def waiting_for(session: AsyncSession, instrument_id: int, group_instrument_ids: Sequence[int],
                      start: datetime, end: datetime, now: datetime, limit: int) -> list[WaitlistEntry]:
    """Waiting entries that could take time on `instrument_id` within [start, end), in offer order (priority,
    then first come), locked; entries another transaction is offering to are skipped, not waited for."""
    reach = col(WaitlistEntry.instrument_id) == instrument_id
    if group_instrument_ids:
        reach = or_(reach, and_(col(WaitlistEntry.any_equivalent),
                                col(WaitlistEntry.instrument_id).in_(list(group_instrument_ids))))
    stmt = (select(WaitlistEntry).where(
        col(WaitlistEntry.status) == "waiting", reach,
        col(WaitlistEntry.window_start) < end, col(WaitlistEntry.window_end) > start,
        col(WaitlistEntry.window_end) > now)
        .order_by(col(WaitlistEntry.priority).desc(), col(WaitlistEntry.created_at), col(WaitlistEntry.id))
        .limit(limit).with_for_update(skip_locked=True))
    return list(await session.scalars(stmt))


async def waiting_ids(session: AsyncSession, now: datetime, limit: int) -> list[int]:
    """Ids of waiting entries whose window is still ahead, in offer order, for the catch-up job."""
    stmt = (select(col(WaitlistEntry.id)).where(col(WaitlistEntry.status) == "waiting",
                                                col(WaitlistEntry.window_end) > now)
            .order_by(col(WaitlistEntry.priority).desc(), col(WaitlistEntry.created_at), col(WaitlistEntry.id))
            .limit(limit))
    return list(await session.scalars(stmt))


async def lock_waiting(session: AsyncSession, entry_id: int) -> WaitlistEntry | None:
    """The entry, locked, if it is still waiting and no other transaction holds it."""
    stmt = (select(WaitlistEntry).where(col(WaitlistEntry.id) == entry_id, col(WaitlistEntry.status) == "waiting")
            .with_for_update(skip_locked=True))
    return (await session.scalars(stmt)).first()


async def lapse_entries(session: AsyncSession, now: datetime) -> int:
    """Waiting entries whose window has passed are closed (offered ones wait for their offer to resolve)."""
    result = await session.execute(text(
        "UPDATE waitlist_entries SET status = 'lapsed', closed_at = :now, updated_at = :now "
        "WHERE status = 'waiting' AND window_end <= :now"), {"now": now})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def offer(session: AsyncSession, offer_id: int, *, for_update: bool = False) -> WaitlistOffer | None:
    stmt = select(WaitlistOffer).where(col(WaitlistOffer.id) == offer_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def offer_of_booking(session: AsyncSession, booking_id: int) -> WaitlistOffer | None:
    stmt = select(WaitlistOffer).where(col(WaitlistOffer.booking_id) == booking_id).with_for_update()
    return (await session.scalars(stmt)).first()


async def offers_of_entries(session: AsyncSession, entry_ids: Sequence[int]) -> dict[int, list[WaitlistOffer]]:
    if not entry_ids:
        return {}
    rows = await session.scalars(select(WaitlistOffer).where(col(WaitlistOffer.entry_id).in_(list(entry_ids)))
                                 .order_by(col(WaitlistOffer.id)))
    out: dict[int, list[WaitlistOffer]] = {}
    for row in rows:
        out.setdefault(row.entry_id, []).append(row)
    return out


async def passed_offers(session: AsyncSession, entry_id: int) -> list[WaitlistOffer]:
    """Offers the entry let pass (declined, expired, withdrawn): that time is not offered to it again."""
    stmt = select(WaitlistOffer).where(col(WaitlistOffer.entry_id) == entry_id,
                                       col(WaitlistOffer.outcome).in_(["declined", "expired", "withdrawn"]))
    return list(await session.scalars(stmt))


# ---- flexible requests ------------------------------------------------------------------------------------------


async def flexible(session: AsyncSession, request_id: int, *, for_update: bool = False) -> FlexibleBooking | None:
    stmt = select(FlexibleBooking).where(col(FlexibleBooking.id) == request_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def flexible_of_user(session: AsyncSession, user_id: int, *, limit: int, offset: int
                           ) -> tuple[list[FlexibleBooking], int]:
    stmt = select(FlexibleBooking).where(col(FlexibleBooking.user_id) == user_id)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = await session.scalars(stmt.order_by(col(FlexibleBooking.created_at).desc(), col(FlexibleBooking.id).desc())
                                 .limit(limit).offset(offset))
    return list(rows), int(total or 0)


async def flexible_overdue(session: AsyncSession, now: datetime, limit: int) -> list[FlexibleBooking]:
    """Waiting requests that can no longer be placed: past their deadline, or their window has passed."""
    stmt = (select(FlexibleBooking).where(
        col(FlexibleBooking.status) == "waiting",
        or_(col(FlexibleBooking.deadline) <= now, col(FlexibleBooking.window_end) <= now))
        .order_by(col(FlexibleBooking.id)).limit(limit).with_for_update(skip_locked=True))
    return list(await session.scalars(stmt))


async def flexible_waiting(session: AsyncSession, now: datetime, *, instrument_ids: Sequence[int] | None,
                           group_instrument_ids: Sequence[int] = (), after_id: int = 0, limit: int
                           ) -> list[FlexibleBooking]:
    """Waiting requests still placeable, oldest first, locked (skipping ones another transaction places);
    with `instrument_ids`, only those that could use one of them."""
    stmt = select(FlexibleBooking).where(col(FlexibleBooking.status) == "waiting",
                                         col(FlexibleBooking.deadline) > now, col(FlexibleBooking.window_end) > now,
                                         col(FlexibleBooking.id) > after_id)
    if instrument_ids is not None:
        reach = col(FlexibleBooking.instrument_id).in_(list(instrument_ids))
        if group_instrument_ids:
            reach = or_(reach, and_(col(FlexibleBooking.any_equivalent),
                                    col(FlexibleBooking.instrument_id).in_(list(group_instrument_ids))))
        stmt = stmt.where(reach)
    stmt = stmt.order_by(col(FlexibleBooking.id)).limit(limit).with_for_update(skip_locked=True)
    return list(await session.scalars(stmt))


# ---- rounds -----------------------------------------------------------------------------------------------------


async def collecting_round(session: AsyncSession, group_id: int, cutoff_at: datetime) -> AllocationRound:
    """The group's round with this cutoff, created if missing (concurrent submitters all land in one row)."""
    await session.execute(insert(AllocationRound).values(group_id=group_id, cutoff_at=cutoff_at, status="open")
                          .on_conflict_do_nothing(constraint="uq_allocation_rounds_group_cutoff"))
    stmt = select(AllocationRound).where(col(AllocationRound.group_id) == group_id,
                                         col(AllocationRound.cutoff_at) == cutoff_at)
    return (await session.scalars(stmt)).one()


async def round_(session: AsyncSession, round_id: int, *, for_update: bool = False) -> AllocationRound | None:
    stmt = select(AllocationRound).where(col(AllocationRound.id) == round_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def rounds_of_groups(session: AsyncSession, group_ids: Sequence[int] | None, limit: int
                           ) -> list[AllocationRound]:
    stmt = select(AllocationRound)
    if group_ids is not None:
        stmt = stmt.where(col(AllocationRound.group_id).in_(list(group_ids)))
    return list(await session.scalars(stmt.order_by(col(AllocationRound.cutoff_at).desc(),
                                                    col(AllocationRound.id).desc()).limit(limit)))


async def open_rounds_with_requests(session: AsyncSession, group_id: int) -> int:
    stmt = (select(func.count()).select_from(FlexibleBooking)
            .join(AllocationRound, col(AllocationRound.id) == col(FlexibleBooking.round_id))
            .where(col(AllocationRound.group_id) == group_id, col(AllocationRound.status) != "published",
                   col(FlexibleBooking.status) == "collected"))
    return int(await session.scalar(stmt) or 0)


async def requests_of_round(session: AsyncSession, round_id: int, *, for_update: bool = False
                            ) -> list[FlexibleBooking]:
    stmt = select(FlexibleBooking).where(col(FlexibleBooking.round_id) == round_id).order_by(col(FlexibleBooking.id))
    if for_update:
        stmt = stmt.with_for_update()
    return list(await session.scalars(stmt))


async def request_counts(session: AsyncSession, round_ids: Sequence[int]) -> dict[int, int]:
    if not round_ids:
        return {}
    stmt = (select(col(FlexibleBooking.round_id), func.count()).where(col(FlexibleBooking.round_id).in_(list(round_ids)))
            .group_by(col(FlexibleBooking.round_id)))
    return {rid: int(n) for rid, n in (await session.execute(stmt)).all()}
