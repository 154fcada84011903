"""The scheduler's demo data: province-wide mass-spectrometry groups spanning cities, and 四川大学's own group in
rounds mode."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from scheduling.conflict_models import EquivalenceGroup, EquivalenceMember
from scheduling.seed import seed_demo
from tests.factories import make_institution, make_instrument


async def test_groups_span_cities_and_the_home_group_runs_rounds(session: AsyncSession) -> None:
    scu = await make_institution(session, name="四川大学", city_code="510100")
    others = [await make_institution(session, city_code=c) for c in ("510700", "511100", "510600")]
    own = [await make_instrument(session, scu, name="气相色谱-质谱联用仪", category_code="010200") for _ in range(3)]
    lcms = [await make_instrument(session, inst, name="液相色谱-质谱联用仪", category_code="010200")
            for inst in (scu, *others, others[0])]
    await make_instrument(session, others[1], name="液相色谱-质谱联用仪", category_code="010200", sharing_mode="internal")
    result = await seed_demo(session)
    assert result["groups"] == 2
    groups = {g.name: g for g in await session.scalars(select(EquivalenceGroup))}
    home = next(g for name, g in groups.items() if name.startswith("川大"))
    assert home.allocation_mode == "rounds" and home.user_cap_hours == 8
    members = {m.instrument_id: m.group_id for m in await session.scalars(select(EquivalenceMember))}
    assert {i.id for i in own} <= {iid for iid, gid in members.items() if gid == home.id}
    province = groups["液相色谱-质谱联用（三重四极杆）"]
    chosen = [i for i in lcms if members.get(i.id) == province.id]  # type: ignore[arg-type]
    # One per 市州 first: the four cities, then the second 绵阳 instrument; the internal-only one is left out.
    assert len(chosen) == 5 and len({i.city_code for i in chosen}) == 4
