# The SQL below is fixed text with bound parameters only.
"""Demo booking data for `booking demo`: opening hours and rules for most instruments, upcoming requests in the
manager's queue, and a booking history for the demo researcher. Set-based where it can be, and deterministic."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.accounts.models import Institution, User
from booking.activity.service import record
from booking.core.clock import LOCAL_TZ, to_local
from booking.core.security import hash_password
from booking.reservations.models import Booking
from booking.usage import service as usage
from booking.usage.models import ServiceRecord
from instruments.models import Instrument

USABLE = ["normal", "standby", "remote", "occasional_fault"]

# Three common publication patterns, by instrument id; id % 10 == 7 publishes nothing (not open to booking).
_WINDOWS = """
INSERT INTO opening_windows (instrument_id, weekday, start_time, end_time)
SELECT i.id, w.weekday, w.start_time, w.end_time
FROM instruments i
JOIN (VALUES
    (0, 0, time '08:30', time '12:00'), (0, 0, time '13:30', time '17:30'),
    (0, 1, time '08:30', time '12:00'), (0, 1, time '13:30', time '17:30'),
    (0, 2, time '08:30', time '12:00'), (0, 2, time '13:30', time '17:30'),
    (0, 3, time '08:30', time '12:00'), (0, 3, time '13:30', time '17:30'),
    (0, 4, time '08:30', time '12:00'), (0, 4, time '13:30', time '17:30'),
    (1, 0, time '09:00', time '17:00'), (1, 1, time '09:00', time '17:00'), (1, 2, time '09:00', time '17:00'),
    (1, 3, time '09:00', time '17:00'), (1, 4, time '09:00', time '17:00'), (1, 5, time '09:00', time '12:00'),
    (2, 0, time '08:00', time '22:00'), (2, 1, time '08:00', time '22:00'), (2, 2, time '08:00', time '22:00'),
    (2, 3, time '08:00', time '22:00'), (2, 4, time '08:00', time '22:00'), (2, 5, time '08:00', time '22:00'),
    (2, 6, time '08:00', time '22:00')
) AS w(pattern, weekday, start_time, end_time) ON w.pattern = CASE WHEN i.id % 4 IN (0, 1) THEN 0
                                                                  WHEN i.id % 4 = 2 THEN 1 ELSE 2 END
WHERE i.retired_at IS NULL AND i.sharing_mode IN ('external', 'internal') AND i.status = ANY(:usable)
  AND i.id % 10 <> 7
  AND NOT EXISTS (SELECT 1 FROM opening_windows x WHERE x.instrument_id = i.id)
"""

# A mix of auto-confirm and approval, cool-down on some, weekly quotas on a few busy ones.
_RULES = """
INSERT INTO booking_rules (instrument_id, granularity_min, min_duration_min, max_duration_min, min_lead_min,
    max_horizon_days, max_user_hours_week, max_institution_hours_month, approval_required, cancellation_deadline_h,
    buffer_before_min, buffer_after_min, follow_holidays, no_show_grace_min, updated_at)
SELECT i.id, 30, CASE WHEN i.id % 6 = 0 THEN 60 ELSE 30 END, CASE WHEN i.id % 4 = 3 THEN 720 ELSE 480 END,
       60, 60, CASE WHEN i.id % 9 = 0 THEN 16 END, CASE WHEN i.id % 11 = 0 THEN 120 END,
       i.id % 3 = 0, 24, 0, CASE WHEN i.id % 5 = 0 THEN 30 WHEN i.id % 5 = 1 THEN 15 ELSE 0 END, true, 60, now()
FROM instruments i
WHERE EXISTS (SELECT 1 FROM opening_windows w WHERE w.instrument_id = i.id)
  AND NOT EXISTS (SELECT 1 FROM booking_rules r WHERE r.instrument_id = i.id)
"""

PURPOSES = ["测定样品分子量", "材料微观形貌表征", "蛋白质结构分析", "药物杂质检测", "薄膜厚度与成分测试",
            "催化剂表面分析", "环境样品重金属检测", "细胞成像", "晶体结构解析", "元件可靠性测试"]
PROJECTS = ["国家自然科学基金面上项目", "四川省重点研发计划", "企业委托研发", "博士学位论文课题", None]


def _at(day: date, clock: str) -> datetime:
    return datetime.combine(day, time.fromisoformat(clock), tzinfo=LOCAL_TZ)


async def _people(session: AsyncSession, rng: random.Random, count: int) -> list[User]:
    """Researchers of several institutions who fill the manager's queue; nobody can sign in as them."""
    institutions = list(await session.scalars(select(Institution).order_by(col(Institution.id)).limit(60)))
    pw = hash_password(f"locked-{rng.random()}")
    surnames = "张王李刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
    people = []
    for n in range(count):
        inst = institutions[(n * 7) % len(institutions)]
        user = User(email=f"booker{n}@bookers.demo.local", name=f"{surnames[n % len(surnames)]}{'研究员' if n % 2 else '博士'}",
                    institution_id=inst.id, password_hash=pw)
        session.add(user)
        people.append(user)
    await session.flush()
    return people


async def seed_bookings(session: AsyncSession, now: datetime, rng_seed: int = 20261201) -> dict[str, int]:
    rng = random.Random(rng_seed)
    windows = (await session.execute(text(_WINDOWS), {"usable": USABLE})).rowcount  # type: ignore[attr-defined]
    rules = (await session.execute(text(_RULES))).rowcount  # type: ignore[attr-defined]

    scu = (await session.scalars(select(Institution).where(col(Institution.name) == "四川大学"))).one()
    researcher = (await session.scalars(select(User).where(col(User.email) == "researcher@demo.local"))).one()
    manager = (await session.scalars(select(User).where(col(User.email) == "manager@demo.local"))).one()
    people = await _people(session, rng, 24)

    # The manager's bookable instruments (approval-required ones fill the queue with pending requests).
    scu_instruments = list(await session.scalars(
        select(Instrument).where(col(Instrument.institution_id) == scu.id, col(Instrument.retired_at).is_(None),
                                 col(Instrument.sharing_mode) == "external", col(Instrument.status).in_(USABLE),
                                 col(Instrument.id) % 10 != 7, col(Instrument.id) % 4 != 2)
        .order_by(col(Instrument.id)).limit(40)))
    today = to_local(now).date()
    rows: list[dict[str, Any]] = []
    day_offsets = [d for d in range(1, 15) if (today + timedelta(days=d)).weekday() < 5]
    slots = [("09:00", "11:00"), ("14:00", "16:00")]
    for n, inst in enumerate(scu_instruments):
        for k in range(2):
            day = today + timedelta(days=day_offsets[(n + 3 * k) % len(day_offsets)])
            start, end = (_at(day, c) for c in slots[(n + k) % 2])
            user = people[(n * 2 + k) % len(people)]
            pending = inst.id % 3 == 0  # approval-required instruments (see _RULES)
            rows.append(_booking(inst, user, start, end, "pending" if pending else "confirmed", rng, now))
    # Today's work for the manager: confirmed bookings starting later today.
    for n, inst in enumerate(scu_instruments[:4]):
        start = max(to_local(now).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2 + n), _at(today, "08:00"))
        if start.date() == today and start.hour <= 20:
            rows.append(_booking(inst, people[n], start, start + timedelta(hours=1), "confirmed", rng, now))

    # The demo researcher: upcoming bookings elsewhere and a history with service records to rate.
    elsewhere = list(await session.scalars(
        select(Instrument).where(col(Instrument.institution_id) != researcher.institution_id,
                                 col(Instrument.retired_at).is_(None), col(Instrument.sharing_mode) == "external",
                                 col(Instrument.status) == "normal", col(Instrument.qualification_required).is_(False),
                                 col(Instrument.id) % 4 != 2, col(Instrument.id) % 10 != 7,
                                 col(Instrument.fee_unit) == "hour")
        .order_by(col(Instrument.id)).offset(5).limit(6)))
    for n, inst in enumerate(elsewhere[:2]):
        day = today + timedelta(days=day_offsets[4 + n])
        rows.append(_booking(inst, researcher, _at(day, "13:30"), _at(day, "15:30"), "confirmed", rng, now))
    history = []
    for n, inst in enumerate(elsewhere[2:6]):
        day = today - timedelta(days=7 * (n + 1))
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        start, end = _at(day, "09:00"), _at(day, "12:00")
        row = _booking(inst, researcher, start, end, "completed", rng, now)
        row.update(checked_in_at=start + timedelta(minutes=5), checked_out_at=end - timedelta(minutes=10))
        rows.append(row)
        history.append((inst, researcher, row, n != 1))
    # Services on the manager's own instruments in the past weeks: some paid, some still to record as paid.
    for n, inst in enumerate([i for i in scu_instruments if i.fee_unit is not None][:6]):
        day = today - timedelta(days=3 + 4 * n)
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        start, end = _at(day, "14:00"), _at(day, "17:00")
        user = researcher if n == 0 else people[n]  # the demo researcher has a service here still to pay
        row = _booking(inst, user, start, end, "completed", rng, now)
        row.update(checked_in_at=start + timedelta(minutes=5), checked_out_at=end - timedelta(minutes=10))
        rows.append(row)
        history.append((inst, user, row, n not in (0, 3)))

    created = list(await session.scalars(insert(Booking).returning(Booking), rows))
    by_key = {(b.instrument_id, b.start_at): b for b in created}
    for n, (inst, user, row, paid) in enumerate(history):
        booking = by_key[(inst.id, row["start_at"])]
        hours = Decimal("2.75")
        external = user.institution_id != inst.institution_id
        amount, basis = usage.fee_of(inst, hours=hours, samples=3, external=external)
        session.add(ServiceRecord(
            instrument_id=inst.id, booking_id=booking.id, user_id=user.id,  # type: ignore[arg-type]
            user_institution_id=user.institution_id, provider_institution_id=inst.institution_id,
            is_external=external, started_at=booking.checked_in_at, ended_at=booking.checked_out_at, hours=hours,  # type: ignore[arg-type]
            service_mode=booking.service_mode, project_name=booking.project_name, applicant_name=user.name,
            amount=amount, fee_basis=basis,
            rating=5 if n else None, rated_at=booking.checked_out_at + timedelta(days=1) if n else None,  # type: ignore[operator]
            recorded_by=manager.id if inst.institution_id == scu.id else None,
            **_payment(paid, n, amount, booking.checked_out_at, now,  # type: ignore[arg-type]
                       manager.id if inst.institution_id == scu.id else None)))
    record(session, actor_id=None, action="demo.bookings_seeded", target_type="system",
           after={"opening_windows": windows, "rules": rules, "bookings": len(created)})
    await session.flush()
    return {"opening_windows": int(windows or 0), "rules": int(rules or 0), "bookings": len(created)}


def _payment(paid: bool, n: int, amount: Decimal, served_until: datetime, now: datetime, manager_id: int | None
             ) -> dict[str, Any]:
    """A paid service: by bank transfer a few days after it (never after now), with an invoice."""
    if not paid:
        return {}
    paid_at = min(served_until + timedelta(days=3), now)
    return {"payment_status": "paid", "paid_at": paid_at, "payment_method": "transfer", "paid_amount": amount,
            "invoice_number": f"FP-{paid_at:%Y%m}-{n + 1:04d}", "payment_recorded_by": manager_id,
            "payment_recorded_at": paid_at}


def _booking(inst: Instrument, user: User, start: datetime, end: datetime, status: str, rng: random.Random,
             now: datetime) -> dict[str, Any]:
    buffer = 30 if inst.id % 5 == 0 else 15 if inst.id % 5 == 1 else 0  # type: ignore[operator]
    return {
        "instrument_id": inst.id, "user_id": user.id, "created_by": user.id, "status": status,
        "start_at": start, "end_at": end, "blocked": Range(start, end + timedelta(minutes=buffer), bounds="[)"),
        "purpose": rng.choice(PURPOSES), "project_name": rng.choice(PROJECTS),
        "service_mode": rng.choice(["occupancy", "occupancy", "technical", "entrusted"]),
        "decided_at": now if status != "pending" else None, "created_at": now - timedelta(days=rng.randint(1, 6)),
        "updated_at": now, "sequence": 0 if status == "pending" else 1,
    }
