"""Which instruments a manager's queue covers."""

from __future__ import annotations

from sqlalchemy import ColumnElement, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.accounts.models import Role
from booking.auth.principal import Principal
from booking.usage.models import ServiceRecord
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


def settled_by(principal: Principal) -> ColumnElement[bool] | None:
    """The services whose fee the principal settles, as a condition on ServiceRecord joined to its Instrument; None
    means every service (platform admin). The same rule as booking.usage.service._provides: the institution the
    service was recorded for (an instrument moved since leaves its past fees with the old one), and within it the
    facility managers of the instrument's facility while the instrument is still there."""
    if principal.is_admin:
        return None
    conditions: list[ColumnElement[bool]] = []
    provider = col(ServiceRecord.provider_institution_id)
    for g in principal.grants:
        if g.role == Role.institution_admin or (g.role == Role.facility_manager and g.facility_id is None):
            conditions.append(provider == g.institution_id)
        elif g.role == Role.facility_manager:
            conditions.append((provider == g.institution_id) & (col(Instrument.institution_id) == g.institution_id)
                              & (col(Instrument.facility_id) == g.facility_id))
    return or_(*conditions) if conditions else false()
