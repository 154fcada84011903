"""A small fixed data set for the audit tests, with its hand-computed expected figures.

The clock is frozen at 2026-06-15 12:00 (Asia/Shanghai); the figures are asked as of D = 2026-06-14, i.e. up to
T = 2026-06-15 00:00 local. Instruments:

  A1 绵阳, 60万, external, normal, general, opening window        → registered, open, shared (r1 external, Feb)
  A2 绵阳, 250万, external, standby, special, no availability     → registered only
  A3 绵阳, 40万 (below the threshold)                              → not counted (its external record r8 neither)
  A4 绵阳, 90万, retired 2026-03-01                                → not counted
  B1 成都, 120万, internal, normal, opening window                 → registered; r7 external but 13 months ago
  B2 成都, 80万, external, awaiting_repair, opening window         → registered, shared (r6 external, May), not open

Service records (ended, local time): r1 A1 external 10 h 1000.00 rating 5 (2026-02-10); r2 A1 internal 5.5 h
200.00 rating 4 (2026-06-10, the partial month); r3 A1 external 4 h 400.00 ended 2026-06-14 but stored 2026-06-16
(known after T: not counted as of D); r4 A2 internal 20 h (2025-12-20, year 2025); r5 A2 internal 30 h 3000.00
(2026-03-05); r6 B2 external 8 h 1600.00 rating 3 (2026-05-01); r7 B1 external 2 h 100.00 (2025-05-10);
r8 A3 external 3 h 300.00 (2026-04-01).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Institution, Role, User
from booking.core.clock import LOCAL_TZ, set_clock
from booking.usage.models import ServiceRecord
from scheduling.models import OpeningWindow
from tests.factories import make_institution, make_instrument, make_user

NOW = datetime(2026, 6, 15, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
AS_OF = date(2026, 6, 14)
SINCE = datetime(2025, 1, 1, tzinfo=LOCAL_TZ)

# Hand-computed, as of 2026-06-14.
EXPECTED_HEADLINE = {"registered": 4, "open": 1, "shared": 2}
EXPECTED_BY_CITY = {"510700": {"registered": 2, "open": 1, "shared": 1},
                    "510100": {"registered": 2, "open": 0, "shared": 1}}
# year 2026 up to D: hours, external hours, share rate, amount, external amount, users, external institutions,
# mean rating, ratings given
EXPECTED_USAGE_CITY = {
    "510700": {"records": 3, "hours": 45.5, "external_hours": 10.0, "share_rate": 0.2198, "amount": 4200.0,
               "external_amount": 1000.0, "users": 2, "external_institutions": 1, "rating_mean": 4.5,
               "rating_count": 2},
    "510100": {"records": 1, "hours": 8.0, "external_hours": 8.0, "share_rate": 1.0, "amount": 1600.0,
               "external_amount": 1600.0, "users": 1, "external_institutions": 1, "rating_mean": 3.0,
               "rating_count": 1},
}
EXPECTED_USAGE_TOTAL = {"records": 4, "hours": 53.5, "external_hours": 18.0, "share_rate": 0.3364, "amount": 5800.0,
                        "external_amount": 2600.0, "users": 3, "external_institutions": 2, "rating_mean": 4.0,
                        "rating_count": 3}


def local(y: int, m: int, d: int, h: int = 10) -> datetime:
    return datetime.combine(date(y, m, d), time(h), tzinfo=LOCAL_TZ).astimezone(UTC)


@dataclass
class World:
    a: Institution
    b: Institution
    c: Institution
    ids: dict[str, int]
    users: dict[str, User]


async def _backdate(session: AsyncSession, instrument_id: int, since: datetime) -> None:
    await session.execute(text("UPDATE instrument_history SET valid_from = :s WHERE instrument_id = :i"),
                          {"s": since, "i": instrument_id})


async def record(session: AsyncSession, world_ids: dict[str, int], key: str, provider: Institution, *,
                 ended: datetime, hours: str, amount: str, external: bool, user: User | None,
                 rating: int | None = None, created: datetime | None = None) -> ServiceRecord:
    from datetime import timedelta

    h = Decimal(hours)
    r = ServiceRecord(instrument_id=world_ids[key], provider_institution_id=provider.id, is_external=external,
                      user_id=user.id if user else None, user_institution_id=user.institution_id if user else None,
                      started_at=ended - timedelta(hours=float(h)), ended_at=ended, hours=h, amount=Decimal(amount),
                      service_mode="technical", rating=rating,
                      rated_at=(ended + timedelta(hours=2)) if rating else None)
    r.created_at = created or ended + timedelta(minutes=5)
    session.add(r)
    await session.flush()
    return r


async def build(session: AsyncSession) -> World:
    set_clock(lambda: NOW)
    a = await make_institution(session, name="绵阳测试大学", kind="高校", city_code="510700")
    b = await make_institution(session, name="成都测试企业", kind="企业", city_code="510100")
    c = await make_institution(session, name="成都测试研究所", kind="科研院所", city_code="510100")
    ids: dict[str, int] = {}
    specs: dict[str, tuple[Institution, dict[str, Any]]] = {
        "A1": (a, {"original_value": Decimal("600000"), "sharing_mode": "external", "status": "normal",
                   "usage_kind": "general", "name": "扫描电子显微镜A1"}),
        "A2": (a, {"original_value": Decimal("2500000"), "sharing_mode": "external", "status": "standby",
                   "usage_kind": "special", "category_code": "020000", "name": "专用测试系统A2"}),
        "A3": (a, {"original_value": Decimal("400000"), "sharing_mode": "external", "status": "normal",
                   "name": "小型光谱仪A3"}),
        "A4": (a, {"original_value": Decimal("900000"), "sharing_mode": "external", "status": "normal",
                   "name": "退役色谱仪A4"}),
        "B1": (b, {"original_value": Decimal("1200000"), "sharing_mode": "internal", "status": "normal",
                   "name": "核磁共振波谱仪B1"}),
        "B2": (b, {"original_value": Decimal("800000"), "sharing_mode": "external", "status": "awaiting_repair",
                   "name": "质谱仪B2"}),
    }
    for key, (inst, values) in specs.items():
        instrument = await make_instrument(session, inst, **values)
        assert instrument.id is not None
        ids[key] = instrument.id
        await _backdate(session, instrument.id, SINCE)
    retired = local(2026, 3, 1)
    await session.execute(text("UPDATE instruments SET retired_at = :r, retired_reason = '报废' WHERE id = :i"),
                          {"r": retired, "i": ids["A4"]})
    await session.execute(text("UPDATE instrument_history SET valid_to = :r WHERE instrument_id = :i"),
                          {"r": retired, "i": ids["A4"]})
    for key in ("A1", "B1", "B2"):
        session.add(OpeningWindow(instrument_id=ids[key], weekday=0, start_time=time(9), end_time=time(17)))
    users = {
        "u1": await make_user(session, institution=c),
        "u2": await make_user(session, institution=a),
        "u3": await make_user(session, institution=a),
    }
    await record(session, ids, "A1", a, ended=local(2026, 2, 10), hours="10", amount="1000.00", external=True,
                 user=users["u1"], rating=5)
    await record(session, ids, "A1", a, ended=local(2026, 6, 10), hours="5.5", amount="200.00", external=False,
                 user=users["u2"], rating=4)
    await record(session, ids, "A1", a, ended=local(2026, 6, 14), hours="4", amount="400.00", external=True,
                 user=users["u1"], created=local(2026, 6, 16))
    await record(session, ids, "A2", a, ended=local(2025, 12, 20), hours="20", amount="0", external=False,
                 user=users["u2"])
    await record(session, ids, "A2", a, ended=local(2026, 3, 5), hours="30", amount="3000.00", external=False,
                 user=users["u2"])
    await record(session, ids, "B2", b, ended=local(2026, 5, 1), hours="8", amount="1600.00", external=True,
                 user=users["u3"], rating=3)
    await record(session, ids, "B1", b, ended=local(2025, 5, 10), hours="2", amount="100.00", external=True,
                 user=users["u1"])
    await record(session, ids, "A3", a, ended=local(2026, 4, 1), hours="3", amount="300.00", external=True,
                 user=users["u1"])
    await session.flush()
    return World(a, b, c, ids, users)


async def auditor(session: AsyncSession, city: str | None = None) -> User:
    return await make_user(session, role=Role.auditor, city_code=city, institution_id=None)
