"""Queries for service records."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.usage.models import ServiceRecord


async def by_booking(session: AsyncSession, booking_ids: Sequence[int]) -> dict[int, ServiceRecord]:
    """Booking id -> its service record (bookings without one are absent)."""
    if not booking_ids:
        return {}
    rows = await session.scalars(select(ServiceRecord).where(col(ServiceRecord.booking_id).in_(list(booking_ids))))
    return {r.booking_id: r for r in rows}  # type: ignore[misc]


async def of_user(session: AsyncSession, user_id: int, *, limit: int, offset: int) -> tuple[list[ServiceRecord], int]:
    """A user's service records, newest first, and how many there are."""
    stmt = select(ServiceRecord).where(col(ServiceRecord.user_id) == user_id)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = await session.scalars(
        stmt.order_by(col(ServiceRecord.started_at).desc(), col(ServiceRecord.id).desc()).limit(limit).offset(offset)
    )
    return list(rows), int(total or 0)
