"""Demo data for the scheduler: equivalence groups over the demo province's mass spectrometers.

Province-wide groups (the same capability in several 市州, administered by the platform) and one group of
四川大学's own instruments in rounds mode, which the demo manager (manager@demo.local) can preview and publish.
Deterministic (ordered by city and id) and fast: one query for the candidates, a few inserts.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from rich.console import Console
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.accounts.models import Institution
from booking.activity.service import record
from instruments.models import Instrument
from scheduling.conflict_models import EquivalenceGroup, EquivalenceMember

# (template name in instruments.seed, group name, capability tags)
PROVINCE_GROUPS: tuple[tuple[str, str, list[str]], ...] = (
    ("液相色谱-质谱联用仪", "液相色谱-质谱联用（三重四极杆）", ["ESI", "三重四极杆", "小分子定量"]),
    ("电感耦合等离子体质谱仪", "电感耦合等离子体质谱（ICP-MS）", ["痕量元素", "同位素"]),
    ("高分辨质谱仪", "高分辨质谱（Orbitrap / Q-TOF）", ["精确质量数", "组学"]),
)
MAX_MEMBERS = 6
HOME = "四川大学"


def _spread(instruments: list[Instrument], limit: int) -> list[Instrument]:
    """Up to `limit` instruments, one per 市州 first (成都 first), so the group spans cities."""
    by_city: dict[str, list[Instrument]] = defaultdict(list)
    for inst in instruments:
        by_city[inst.city_code].append(inst)
    cities = sorted(by_city, key=lambda c: (c != "510100", c))
    chosen: list[Instrument] = []
    while len(chosen) < limit and any(by_city.values()):
        for city in cities:
            if by_city[city] and len(chosen) < limit:
                chosen.append(by_city[city].pop(0))
    return chosen


async def seed_demo(session: AsyncSession, console: Console | None = None) -> dict[str, Any]:
    stmt = (select(Instrument).where(col(Instrument.category_code) == "010200",
                                     col(Instrument.sharing_mode) == "external", col(Instrument.status) == "normal",
                                     col(Instrument.restricted).is_(False), col(Instrument.retired_at).is_(None))
            .order_by(col(Instrument.city_code), col(Instrument.id)))
    candidates = list(await session.scalars(stmt))
    home = (await session.scalars(select(Institution).where(col(Institution.name) == HOME))).first()
    used: set[int] = set()
    created: list[tuple[str, int]] = []

    async def group(name: str, tags: list[str], members: list[Instrument], **policy: Any) -> None:
        row = EquivalenceGroup(name=name, category_code="010200", capability_tags=tags,
                               description="演示数据：能完成同类测量的仪器", **policy)
        session.add(row)
        await session.flush()
        for inst in members:
            session.add(EquivalenceMember(instrument_id=inst.id, group_id=row.id))  # type: ignore[arg-type]
            used.add(inst.id)  # type: ignore[arg-type]
        created.append((name, len(members)))
        record(session, actor_id=None, action="equivalence_group.created", target_type="equivalence_group",
               target_id=row.id, after={"name": name, "instrument_ids": [i.id for i in members], "demo": True})

    if home is not None:
        # The demo manager's own group: every member is 四川大学's, so manager@demo.local may run its rounds.
        by_name: dict[str, list[Instrument]] = defaultdict(list)
        for inst in candidates:
            if inst.institution_id == home.id:
                by_name[inst.name].append(inst)
        name, own = max(sorted(by_name.items()), key=lambda item: len(item[1]), default=("", []))
        if len(own) >= 2:
            await group(f"川大{name}（按轮次分配）", ["校内共享平台"], own[:4], allocation_mode="rounds",
                        round_weekday=4, user_cap_hours=Decimal(8), institution_cap_hours=Decimal(24),
                        external_min_share=Decimal("0.3"))
    for template, name, tags in PROVINCE_GROUPS:
        members = _spread([i for i in candidates if i.name == template and i.id not in used], MAX_MEMBERS)
        if len(members) >= 2:
            await group(name, tags, members)
    await session.flush()
    if console is not None:
        console.print(f"[green]demo equivalence groups: {', '.join(f'{n} ({k})' for n, k in created)}[/]")
    return {"groups": len(created), "members": sum(k for _, k in created)}
