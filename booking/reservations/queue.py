"""Which instruments a manager's queue covers."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.accounts.models import Role
from booking.auth.principal import Principal
from instruments.models import Instrument


async def managed_instrument_ids(session: AsyncSession, principal: Principal) -> list[int] | None:
    """Instrument ids the principal manages; None means every instrument (platform admin)."""
    if principal.is_admin:
        return None
    conditions = []
    for g in principal.grants:
        if g.role == Role.institution_admin or (g.role == Role.facility_manager and g.facility_id is None):
            conditions.append(col(Instrument.institution_id) == g.institution_id)
        elif g.role == Role.facility_manager:
            conditions.append((col(Instrument.institution_id) == g.institution_id)
                              & (col(Instrument.facility_id) == g.facility_id))
    if not conditions:
        return []
    from sqlalchemy import or_

    return list(await session.scalars(select(col(Instrument.id)).where(or_(*conditions))))
