"""A small province for the scheduler tests: three equivalent LC-MS instruments (two in 成都, one in 绵阳) in
one group, their managers, and researchers from a third institution. Times are local (Asia/Shanghai)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Institution, Role, User
from booking.reservations.models import Booking
from instruments.models import Instrument
from scheduling.conflict_models import EquivalenceGroup
from scheduling.conflict_schemas import GroupIn
from tests.factories import (
    bearer_headers,
    make_institution,
    make_instrument,
    make_schedule,
    make_user,
    principal_for,
)
from tests.ops_helpers import NOW

# Wednesday 2026-12-02 in Asia/Shanghai, the day after the frozen NOW (Tuesday 00:00 local).
DAY = (NOW + timedelta(hours=8, days=1)).date()


def at(hour: int, minute: int = 0, day: int = 0) -> datetime:
    from booking.core.clock import LOCAL_TZ

    return datetime.combine(DAY + timedelta(days=day), datetime.min.time(), tzinfo=LOCAL_TZ).replace(
        hour=hour, minute=minute)


@dataclass
class World:
    owner: Institution
    mianyang: Institution
    guest: Institution
    x: Instrument
    y: Instrument
    z: Instrument
    manager: User
    mianyang_manager: User
    admin: User
    researcher: User
    researcher2: User
    researcher3: User
    group: EquivalenceGroup | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    async def headers(self, session: AsyncSession, user: User) -> dict[str, str]:
        return await bearer_headers(session, user)


async def make_world(session: AsyncSession, *, grouped: bool = True, **rules: Any) -> World:
    owner = await make_institution(session, name=f"四川大学测试{id(session) % 10000}", city_code="510100")
    mianyang = await make_institution(session, city_code="510700")
    guest = await make_institution(session, city_code="510100")
    x = await make_instrument(session, owner, name="液相色谱-质谱联用仪 甲", category_code="010200")
    y = await make_instrument(session, owner, name="液相色谱-质谱联用仪 乙", category_code="010200")
    z = await make_instrument(session, mianyang, name="液相色谱-质谱联用仪 丙", category_code="010200")
    for inst in (x, y, z):
        await make_schedule(session, inst, **rules)
    w = World(
        owner=owner, mianyang=mianyang, guest=guest, x=x, y=y, z=z,
        manager=await make_user(session, role=Role.facility_manager, grant_institution=owner),
        mianyang_manager=await make_user(session, role=Role.facility_manager, grant_institution=mianyang),
        admin=await make_user(session, role=Role.platform_admin, institution_id=None),
        researcher=await make_user(session, institution=guest, name="研究员甲"),
        researcher2=await make_user(session, institution=guest, name="研究员乙"),
        researcher3=await make_user(session, institution=guest, name="研究员丙"),
    )
    if grouped:
        from scheduling import equivalence

        view = await equivalence.create_group(session, await principal_for(session, w.admin), GroupIn(
            name=f"LC-MS 三重四极杆 {x.id}", capability_tags=["ESI", "三重四极杆"],
            instrument_ids=[x.id, y.id, z.id]))  # type: ignore[list-item]
        w.group = view.group
    return w


async def book(client: httpx.AsyncClient, session: AsyncSession, user: User, inst: Instrument, start: datetime,
               end: datetime, **extra: Any) -> httpx.Response:
    return await client.post("/api/v1/bookings", headers=await bearer_headers(session, user), json={
        "instrument_id": inst.id, "start": start.isoformat(), "end": end.isoformat(), "purpose": "测定样品分子量",
        **extra})


async def bookings_of(session: AsyncSession, user: User) -> list[Booking]:
    rows = await session.scalars(select(Booking).where(Booking.user_id == user.id).order_by(Booking.id)
                                 .execution_options(populate_existing=True))
    return list(rows)
