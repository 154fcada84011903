"""Queries for bookings. The insert relies on the exclusion constraint: `ON CONFLICT DO NOTHING` (no conflict
target, which PostgreSQL allows for exclusion constraints) turns a clash into "no row returned" instead of an
error, so a storm of requests for one slot resolves without deadlock cascades."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, TextClause, func, select, text
from sqlalchemy.dialects.postgresql import Range, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.reservations.models import ACTIVE_STATUSES, Booking, BookingBlock, BookingStatus
from booking.usage.models import ServiceRecord
from booking.usage.rules import NO_FEE_BASIS
from instruments.models import Instrument


async def insert_if_free(session: AsyncSession, values: dict[str, Any]) -> Booking | None:
    """Insert unless the exclusion constraint finds an overlap; the stored row (as an ORM object) or None."""
    stmt = (insert(Booking).values(**values).on_conflict_do_nothing().returning(Booking)
            .execution_options(populate_existing=True))
    return (await session.scalars(stmt)).one_or_none()


async def busy(session: AsyncSession, instrument_id: int, start: datetime, end: datetime,
               exclude_id: int | None = None) -> list[tuple[datetime, datetime]]:
    """Blocked ranges (buffers included) of active bookings overlapping [start, end); served by the
    exclusion constraint's GiST index."""
    stmt = select(col(Booking.blocked)).where(
        col(Booking.instrument_id) == instrument_id,
        col(Booking.status).in_([s.value for s in ACTIVE_STATUSES]),
        col(Booking.blocked).op("&&")(Range(start, end)),
    )
    if exclude_id is not None:
        stmt = stmt.where(col(Booking.id) != exclude_id)
    rows = await session.scalars(stmt)
    return [(r.lower, r.upper) for r in rows if r.lower is not None and r.upper is not None]


async def conflicting(session: AsyncSession, instrument_id: int, blocked_start: datetime,
                      blocked_end: datetime) -> Sequence[Booking]:
    stmt = select(Booking).where(
        col(Booking.instrument_id) == instrument_id,
        col(Booking.status).in_([s.value for s in ACTIVE_STATUSES]),
        col(Booking.blocked).op("&&")(Range(blocked_start, blocked_end)),
    ).order_by(col(Booking.start_at))
    return list(await session.scalars(stmt))


async def hours_for_user(session: AsyncSession, user_id: int, start: datetime, end: datetime,
                         exclude_id: int | None = None) -> list[tuple[datetime, datetime]]:
    """Active and completed bookings of the user overlapping [start, end) on any instrument, for quotas."""
    stmt = select(col(Booking.start_at), col(Booking.end_at)).where(
        col(Booking.user_id) == user_id,
        col(Booking.status).in_(["pending", "confirmed", "in_use", "completed"]),
        col(Booking.start_at) < end, col(Booking.end_at) > start,
    )
    if exclude_id is not None:
        stmt = stmt.where(col(Booking.id) != exclude_id)
    return [(a, b) for a, b in (await session.execute(stmt)).all()]


@dataclass(frozen=True)
class UserFacts:
    """What the booking rules need to know about a user, for one instrument."""

    blocked: bool
    qualifications: list[tuple[datetime, date | None]]  # (granted at, valid until)
    user_spans: list[tuple[datetime, datetime]]  # the user's bookings on the instrument in the week span
    institution_spans: list[tuple[datetime, datetime]]  # the institution's bookings on it in the month span


@lru_cache(maxsize=8)
def _user_facts_sql(qualifications: bool, user_hours: bool, institution_hours: bool) -> TextClause:
    # Only the parts the instrument's rules need; each combination is its own (cached, prepared) statement.
    parts = ["EXISTS (SELECT 1 FROM booking_blocks k WHERE k.user_id = :u AND k.lifted_at IS NULL) AS blocked"]
    if qualifications:
        parts.append("""(SELECT coalesce(json_agg(json_build_array(q.created_at, q.valid_until)), '[]')
            FROM qualifications q WHERE q.instrument_id = :i AND q.user_id = :u) AS quals""")
    if user_hours:
        parts.append("""(SELECT coalesce(json_agg(json_build_array(b.start_at, b.end_at)), '[]') FROM bookings b
            WHERE b.user_id = :u AND b.instrument_id = :i AND b.status IN ('pending', 'confirmed', 'in_use', 'completed')
              AND b.start_at < :week_end AND b.end_at > :week_start) AS user_spans""")
    if institution_hours:
        parts.append("""(SELECT coalesce(json_agg(json_build_array(b.start_at, b.end_at)), '[]') FROM bookings b
            JOIN users u ON u.id = b.user_id
            WHERE u.institution_id = :inst AND b.instrument_id = :i AND b.status IN ('pending', 'confirmed', 'in_use', 'completed')
              AND b.start_at < :month_end AND b.end_at > :month_start) AS institution_spans""")
    return text("SELECT " + ",\n       ".join(parts))


def _spans(raw: list[list[str]] | None) -> list[tuple[datetime, datetime]]:
    return [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in raw or []]


async def user_facts(session: AsyncSession, user_id: int, instrument_id: int, *, institution_id: int | None,
                     qualifications: bool, week_span: tuple[datetime, datetime] | None,
                     month_span: tuple[datetime, datetime]) -> UserFacts:
    """Block, qualifications and quota hours of the user in one round trip; institution hours only when
    `institution_id` is given, user hours only when `week_span` is."""
    params: dict[str, Any] = {"u": user_id, "i": instrument_id}
    if week_span is not None:
        params.update(week_start=week_span[0], week_end=week_span[1])
    if institution_id is not None:
        params.update(inst=institution_id, month_start=month_span[0], month_end=month_span[1])
    sql = _user_facts_sql(qualifications, week_span is not None, institution_id is not None)
    row = (await session.execute(sql, params)).mappings().one()
    return UserFacts(
        blocked=bool(row["blocked"]),
        qualifications=[(datetime.fromisoformat(a), date.fromisoformat(b) if b else None)
                        for a, b in row.get("quals") or []],
        user_spans=_spans(row.get("user_spans")),
        institution_spans=_spans(row.get("institution_spans")),
    )


async def active_block(session: AsyncSession, user_id: int) -> BookingBlock | None:
    stmt = select(BookingBlock).where(col(BookingBlock.user_id) == user_id, col(BookingBlock.lifted_at).is_(None))
    return (await session.scalars(stmt)).first()


async def no_shows_since(session: AsyncSession, user_id: int, since: datetime) -> int:
    last_lift = await session.scalar(select(func.max(col(BookingBlock.lifted_at)))
                                     .where(col(BookingBlock.user_id) == user_id))
    start = max(since, last_lift) if last_lift else since
    count = await session.scalar(select(func.count()).select_from(Booking).where(
        col(Booking.user_id) == user_id, col(Booking.status) == BookingStatus.no_show,
        col(Booking.start_at) >= start))
    return int(count or 0)


async def lock_booking(session: AsyncSession, booking_id: int) -> Booking | None:
    stmt = select(Booking).where(col(Booking.id) == booking_id).with_for_update()
    return (await session.scalars(stmt)).first()


async def list_for_user(session: AsyncSession, user_id: int, *, status: str | None, upcoming: bool | None,
                        now: datetime, limit: int, offset: int) -> tuple[Sequence[Booking], int]:
    stmt = select(Booking).where(col(Booking.user_id) == user_id)
    if status:
        stmt = stmt.where(col(Booking.status) == status)
    if upcoming is True:
        stmt = stmt.where(col(Booking.end_at) >= now)
    elif upcoming is False:
        stmt = stmt.where(col(Booking.end_at) < now)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    order = col(Booking.start_at).asc() if upcoming else col(Booking.start_at).desc()
    rows = await session.scalars(stmt.order_by(order, col(Booking.id)).limit(limit).offset(offset))
    return list(rows), int(total or 0)


async def list_for_instruments(session: AsyncSession, instrument_ids: Sequence[int] | None, *,
                               status: str | None, start: datetime | None, end: datetime | None,
                               limit: int, offset: int) -> tuple[Sequence[Booking], int]:
    """Bookings of a manager's instruments (None = all instruments: platform admin)."""
    stmt = select(Booking)
    if instrument_ids is not None:
        stmt = stmt.where(col(Booking.instrument_id).in_(list(instrument_ids)))
    if status:
        stmt = stmt.where(col(Booking.status) == status)
    if start is not None:
        stmt = stmt.where(col(Booking.end_at) > start)
    if end is not None:
        stmt = stmt.where(col(Booking.start_at) < end)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = await session.scalars(stmt.order_by(col(Booking.start_at), col(Booking.id)).limit(limit).offset(offset))
    return list(rows), int(total or 0)


async def list_unpaid(session: AsyncSession, settled_by: ColumnElement[bool] | None, *, limit: int,
                     offset: int) -> tuple[Sequence[Booking], int]:
    """Bookings whose service has a fee nobody recorded as paid or waived yet, oldest service first. `settled_by`:
    a condition on the service record and its instrument (booking.reservations.queue.settled_by); None = all."""
    stmt = (select(Booking).join(ServiceRecord, col(ServiceRecord.booking_id) == col(Booking.id))
            .join(Instrument, col(Instrument.id) == col(ServiceRecord.instrument_id))
            .where(col(ServiceRecord.payment_status) == "unpaid",
                   (col(ServiceRecord.amount) > 0) | (col(ServiceRecord.fee_basis) == NO_FEE_BASIS)))
    if settled_by is not None:
        stmt = stmt.where(settled_by)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = await session.scalars(stmt.order_by(col(ServiceRecord.ended_at), col(Booking.id)).limit(limit)
                                 .offset(offset))
    return list(rows), int(total or 0)


async def due_pending(session: AsyncSession, now: datetime, limit: int = 500) -> Sequence[Booking]:
    """Pending requests whose start has passed without a decision."""
    stmt = (select(Booking).where(col(Booking.status) == BookingStatus.pending, col(Booking.start_at) <= now)
            .order_by(col(Booking.id)).limit(limit).with_for_update(skip_locked=True))
    return list(await session.scalars(stmt))


async def due_no_shows(session: AsyncSession, now: datetime, limit: int = 500) -> Sequence[Booking]:
    """Confirmed bookings never checked in, whose instrument's grace period after the start has passed."""
    stmt = text("""
        SELECT b.id FROM bookings b LEFT JOIN booking_rules r ON r.instrument_id = b.instrument_id
        WHERE b.status = 'confirmed' AND b.checked_in_at IS NULL
          AND b.start_at + make_interval(mins => coalesce(r.no_show_grace_min, 60)) <= :now
        ORDER BY b.id LIMIT :limit FOR UPDATE OF b SKIP LOCKED
    """)
    ids = [r[0] for r in (await session.execute(stmt, {"now": now, "limit": limit})).all()]
    if not ids:
        return []
    return list(await session.scalars(select(Booking).where(col(Booking.id).in_(ids)).order_by(col(Booking.id))))


async def due_reminders(session: AsyncSession, now: datetime, until: datetime, limit: int = 500
                        ) -> Sequence[Booking]:
    stmt = (select(Booking).where(col(Booking.status) == BookingStatus.confirmed,
                                  col(Booking.reminder_sent_at).is_(None),
                                  col(Booking.start_at) > now, col(Booking.start_at) <= until)
            .order_by(col(Booking.id)).limit(limit).with_for_update(skip_locked=True))
    return list(await session.scalars(stmt))


def hours_between(a: datetime, b: datetime) -> Decimal:
    return Decimal((b - a).total_seconds()) / Decimal(3600)
