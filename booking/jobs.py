"""Application-level background jobs (the runner imports this module)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from booking.activity.service import seal
from scheduling.runner import register_job


async def seal_activity_log(session: AsyncSession, now: datetime) -> int:
    """Chain every entry written since the last run (entries are written unsealed, see activity.models)."""
    return await seal(session)


register_job("activity.seal", seal_activity_log, every_s=5, description="link new activity entries into the hash chain")
