"""Reading the activity log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.activity.models import ActivityEntry


async def oldest_unsealed(session: AsyncSession) -> tuple[int, datetime | None]:
    """How many entries wait for their seal, and when the oldest of them was written."""
    count, oldest = (await session.execute(
        select(func.count(), func.min(ActivityEntry.at)).where(col(ActivityEntry.seq).is_(None)))).one()
    return int(count or 0), oldest


async def list_entries(session: AsyncSession, *, action: str | None, target_type: str | None,
                       target_id: str | None, actor_id: int | None, limit: int, offset: int
                       ) -> tuple[Sequence[ActivityEntry], int]:
    stmt = select(ActivityEntry)
    if action:
        stmt = stmt.where(ActivityEntry.action.startswith(action, autoescape=True))
    if target_type:
        stmt = stmt.where(ActivityEntry.target_type == target_type)
    if target_id:
        stmt = stmt.where(ActivityEntry.target_id == target_id)
    if actor_id:
        stmt = stmt.where(ActivityEntry.actor_id == actor_id)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    # Newest first: entries not sealed yet (no seq, the newest) come first, in the order they were written.
    order = (col(ActivityEntry.seq).desc().nulls_first(), col(ActivityEntry.id).desc())
    rows = await session.scalars(stmt.order_by(*order).limit(limit).offset(offset))
    return list(rows), int(total or 0)
