"""Factories with defaults and overrides: make_x(session, field=...) returns a flushed row."""

from __future__ import annotations

import itertools
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Facility, Institution, Role, RoleGrant, User
from booking.auth import service as auth_service
from booking.auth.deps import SESSION_COOKIE, SESSION_SALT
from booking.auth.principal import Principal
from booking.core.clock import utcnow
from booking.core.middleware import CSRF_COOKIE
from booking.core.security import hash_password, sign

if TYPE_CHECKING:
    from instruments.models import Instrument

PASSWORD = "correct-horse-battery"
_seq = itertools.count(1)


@lru_cache
def password_hash() -> str:
    return hash_password(PASSWORD)


async def make_institution(session: AsyncSession, **overrides: Any) -> Institution:
    n = next(_seq)
    values: dict[str, Any] = {"name": f"测试大学{n}", "kind": "高校", "city_code": "510100", "address": "测试路1号"}
    values.update(overrides)
    inst = Institution(**values)
    session.add(inst)
    await session.flush()
    return inst


async def make_facility(session: AsyncSession, institution: Institution | None = None, **overrides: Any) -> Facility:
    institution = institution or await make_institution(session)
    n = next(_seq)
    facility = Facility(institution_id=institution.id, name=overrides.pop("name", f"分析测试中心{n}"), **overrides)  # type: ignore[arg-type]
    session.add(facility)
    await session.flush()
    return facility


async def make_user(session: AsyncSession, *, institution: Institution | None = None, role: Role | str | None = None,
                    grant_institution: Institution | None = None, facility: Facility | None = None,
                    city_code: str | None = None, **overrides: Any) -> User:
    n = next(_seq)
    if institution is None and "institution_id" not in overrides:
        institution = grant_institution or await make_institution(session)
    values: dict[str, Any] = {"email": f"user{n}@example.cn", "name": f"用户{n}", "password_hash": password_hash(),
                              "institution_id": institution.id if institution else None}
    values.update(overrides)
    user = User(**values)
    session.add(user)
    await session.flush()
    if role and str(role) != Role.researcher:
        scope_inst = grant_institution or institution
        grant = RoleGrant(user_id=user.id, role=str(role),  # type: ignore[arg-type]
                          institution_id=scope_inst.id if str(role) in (Role.facility_manager, Role.institution_admin)
                          and scope_inst else None,
                          facility_id=facility.id if facility else None,
                          city_code=city_code if str(role) == Role.auditor else None)
        session.add(grant)
        await session.flush()
    return user


async def principal_for(session: AsyncSession, user: User) -> Principal:
    from booking.auth.repository import grants_for

    return Principal(user=user, grants=tuple(await grants_for(session, user.id)))  # type: ignore[arg-type]


async def bearer_headers(session: AsyncSession, user: User) -> dict[str, str]:
    token, _ = await auth_service.issue_access_token(session, user)
    await session.flush()
    return {"Authorization": f"Bearer {token}"}


CSRF_VALUE = "test-csrf-token-0123456789abcdef"


async def login_web(session: AsyncSession, client: httpx.AsyncClient, user: User) -> httpx.AsyncClient:
    """Sign a client in through a real server-side session, with the CSRF cookie and header set."""
    token = await auth_service.start_web_session(session, user, user_agent="pytest", address="127.0.0.1")
    await session.flush()
    client.cookies.set(SESSION_COOKIE, sign(token, SESSION_SALT))
    client.cookies.set(CSRF_COOKIE, CSRF_VALUE)
    client.headers["X-CSRF-Token"] = CSRF_VALUE
    return client


async def make_instrument(session: AsyncSession, institution: Institution | None = None, **overrides: Any) -> Instrument:
    """A live instrument with its open history row; chains=[names] links existing chain tags."""
    from instruments import repository as instruments_repo
    from instruments.models import Instrument, InstrumentHistory

    institution = institution or await make_institution(session)
    n = next(_seq)
    chains: list[str] = overrides.pop("chains", [])
    values: dict[str, Any] = {
        "name": f"测试仪器{n}", "asset_number": f"T{n:06d}", "category_code": "010200",
        "original_value": Decimal("600000.00"), "city_code": institution.city_code, "sharing_mode": "external",
        "status": "normal", "model": f"M-{n}", "manufacturer": "测试仪器厂",
    }
    values.update(overrides)
    inst = Instrument(institution_id=institution.id, **values)  # type: ignore[arg-type]
    session.add(inst)
    await session.flush()
    session.add(InstrumentHistory(instrument_id=inst.id, valid_from=utcnow(), sharing_mode=inst.sharing_mode,  # type: ignore[arg-type]
                                  status=inst.status, original_value=inst.original_value,
                                  institution_id=inst.institution_id, city_code=inst.city_code))
    if chains:
        ids = await instruments_repo.chain_ids_by_name(session)
        await instruments_repo.set_chains(session, inst.id, [ids[c] for c in chains])  # type: ignore[arg-type]
    await session.flush()
    return inst


async def grant_instrument_access(session: AsyncSession, instrument: Instrument, user: User) -> None:
    from instruments.models import InstrumentAccess

    session.add(InstrumentAccess(instrument_id=instrument.id, user_id=user.id))  # type: ignore[arg-type]
    await session.flush()


async def make_schedule(session: AsyncSession, instrument: Instrument, *, windows: list[tuple[int, str, str]] | None = None,
                        **rules: Any) -> None:
    """Opening windows (weekday, "HH:MM", "HH:MM"; default every day 08:00-20:00) and a rules row.

    Tests default to auto-confirm, 30-minute slots, no lead time and no holidays, and override what they test."""
    from datetime import time as dtime

    from scheduling.models import InstrumentRules, OpeningWindow

    for weekday, start, end in windows if windows is not None else [(d, "08:00", "20:00") for d in range(7)]:
        session.add(OpeningWindow(instrument_id=instrument.id, weekday=weekday,  # type: ignore[arg-type]
                                  start_time=dtime.fromisoformat(start), end_time=dtime.fromisoformat(end)))
    values: dict[str, Any] = {"granularity_min": 30, "min_duration_min": 30, "max_duration_min": 480,
                              "min_lead_min": 0, "max_horizon_days": 90, "approval_required": False,
                              "follow_holidays": False, "cancellation_deadline_h": 0}
    values.update(rules)
    session.add(InstrumentRules(instrument_id=instrument.id, **values))  # type: ignore[arg-type]
    await session.flush()
