"""The audit's background job: record today's published availability and freeze complete months' figures."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from booking.audit import service
from booking.core.clock import to_local
from scheduling.runner import register_job


async def audit_snapshot(session: AsyncSession, now: datetime) -> int:
    return await service.snapshot(session, to_local(now).date())


register_job("audit.snapshot", audit_snapshot, 3600,
             "record which instruments publish availability today; freeze month-end sharing figures")
