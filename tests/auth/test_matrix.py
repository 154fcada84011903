"""Authorization matrix: every role × every protected endpoint → allowed or denied.

Denied means 401 for anonymous callers and 403 for signed-in ones; allowed means neither (the request may still
fail validation, which is not an authorization decision). Cross-institution and cross-市州 callers are roles of
their own here, so scope mistakes show up as matrix failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role, RoleRequest
from tests.factories import bearer_headers, login_web, make_facility, make_institution, make_instrument, make_user

ROLES = ["anonymous", "researcher", "manager_a", "manager_b", "inst_admin_a", "inst_admin_b",
         "provincial_auditor", "city_auditor", "admin"]
SIGNED_IN = set(ROLES) - {"anonymous"}


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    allowed: frozenset[str]
    web: bool = False
    json: Any = None


# Managers of institution A's instrument (and its facility): its facility managers, its administrators, admins.
_INSTRUMENT_A_MANAGERS = frozenset({"manager_a", "inst_admin_a", "admin"})

CASES = [
    Case("GET", "/api/v1/me", frozenset(SIGNED_IN)),
    Case("PATCH", "/api/v1/me", frozenset(SIGNED_IN), json={"name": "改名"}),
    Case("POST", "/api/v1/me/password", frozenset(SIGNED_IN), json={"current_password": "x", "new_password": "y"}),
    Case("GET", "/api/v1/me/tokens", frozenset(SIGNED_IN)),
    Case("POST", "/api/v1/me/tokens", frozenset(SIGNED_IN), json={"name": "t"}),
    Case("GET", "/api/v1/me/role-requests", frozenset(SIGNED_IN)),
    Case("POST", "/api/v1/me/role-requests", frozenset(SIGNED_IN),
         json={"role": "auditor", "city_code": "510700", "reason": "市科技局"}),
    Case("POST", "/api/v1/institutions", frozenset({"admin"}),
         json={"name": "新单位", "kind": "企业", "city_code": "510100"}),
    Case("PATCH", "/api/v1/institutions/{inst_a}", frozenset({"inst_admin_a", "admin"}), json={"address": "新地址"}),
    Case("PATCH", "/api/v1/institutions/{inst_b}", frozenset({"inst_admin_b", "admin"}), json={"address": "新地址"}),
    Case("POST", "/api/v1/institutions/{inst_a}/facilities", frozenset({"inst_admin_a", "admin"}),
         json={"name": "新平台"}),
    Case("GET", "/api/v1/admin/role-requests", frozenset({"admin"})),
    Case("POST", "/api/v1/admin/role-requests/{request_id}/approve", frozenset({"admin"})),
    Case("POST", "/api/v1/admin/role-requests/{request_id}/reject", frozenset({"admin"})),
    Case("GET", "/api/v1/admin/users", frozenset({"admin"})),
    Case("GET", "/api/v1/activity", frozenset({"admin", "provincial_auditor"})),
    Case("GET", "/profile", frozenset(SIGNED_IN), web=True),
    Case("POST", "/profile", frozenset(SIGNED_IN), web=True),
    Case("GET", "/admin/role-requests", frozenset({"admin"}), web=True),
    Case("POST", "/admin/role-requests/{request_id}/approve", frozenset({"admin"}), web=True),
    Case("GET", "/admin/users", frozenset({"admin"}), web=True),
    Case("GET", "/admin/activity", frozenset({"admin", "provincial_auditor"}), web=True),
    Case("POST", "/institutions/{inst_a}/facilities", frozenset({"inst_admin_a", "admin"}), web=True),
    Case("POST", "/institutions/{inst_b}", frozenset({"inst_admin_b", "admin"}), web=True),
    # Notifications, calendars, the schedule editor, qualifications, blocks, holidays.
    Case("GET", "/api/v1/notifications", frozenset(SIGNED_IN)),
    Case("POST", "/api/v1/notifications/read-all", frozenset(SIGNED_IN)),
    Case("GET", "/notifications", frozenset(SIGNED_IN), web=True),
    Case("POST", "/notifications/read-all", frozenset(SIGNED_IN), web=True),
    Case("POST", "/api/v1/me/calendar-token", frozenset(SIGNED_IN)),
    Case("DELETE", "/api/v1/me/calendar-token", frozenset(SIGNED_IN)),
    Case("GET", "/calendar", frozenset(SIGNED_IN), web=True),
    Case("GET", "/api/v1/facilities/{facility_a}/calendar.ics", _INSTRUMENT_A_MANAGERS),
    Case("GET", "/api/v1/instruments/{instrument_a}/schedule", _INSTRUMENT_A_MANAGERS),
    Case("PUT", "/api/v1/instruments/{instrument_a}/schedule/windows", _INSTRUMENT_A_MANAGERS,
         json={"windows": [{"weekday": 0, "start": "09:00", "end": "17:00"}]}),
    Case("PUT", "/api/v1/instruments/{instrument_a}/schedule/overrides", _INSTRUMENT_A_MANAGERS,
         json={"day": "2030-01-02", "windows": [], "reason": "停电"}),
    Case("POST", "/api/v1/instruments/{instrument_a}/schedule/blackouts", _INSTRUMENT_A_MANAGERS,
         json={"reason": "年度校准", "starts_at": "2030-01-02T09:00:00+08:00", "ends_at": "2030-01-02T12:00:00+08:00"}),
    Case("GET", "/api/v1/instruments/{instrument_a}/rules", _INSTRUMENT_A_MANAGERS),
    Case("PUT", "/api/v1/instruments/{instrument_a}/rules", _INSTRUMENT_A_MANAGERS, json={"granularity_min": 15}),
    Case("GET", "/api/v1/instruments/{instrument_a}/qualifications", _INSTRUMENT_A_MANAGERS),
    Case("POST", "/api/v1/instruments/{instrument_a}/qualifications", _INSTRUMENT_A_MANAGERS,
         json={"user_id": 1, "valid_until": "2030-01-01"}),
    Case("GET", "/api/v1/instruments/{instrument_a}/blocks", _INSTRUMENT_A_MANAGERS),
    Case("POST", "/api/v1/users/{researcher_id}/lift-block",
         frozenset({"manager_a", "manager_b", "inst_admin_a", "inst_admin_b", "admin"}), json={"reason": "已说明情况"}),
    Case("GET", "/api/v1/admin/holidays?year=2027", frozenset({"admin"})),
    Case("POST", "/api/v1/admin/holidays", frozenset({"admin"}), json={"day": "2027-02-20", "kind": "open", "name": "调休"}),
    Case("DELETE", "/api/v1/admin/holidays/2027-02-20", frozenset({"admin"})),
    Case("GET", "/schedule", frozenset({"manager_a", "manager_b", "inst_admin_a", "inst_admin_b", "admin"}), web=True),
    Case("GET", "/instruments/{instrument_a}/schedule", _INSTRUMENT_A_MANAGERS, web=True),
    Case("POST", "/instruments/{instrument_a}/schedule/blackouts", _INSTRUMENT_A_MANAGERS, web=True),
    Case("POST", "/instruments/{instrument_a}/rules", _INSTRUMENT_A_MANAGERS, web=True),
    Case("GET", "/admin/holidays", frozenset({"admin"}), web=True),
    Case("POST", "/admin/holidays", frozenset({"admin"}), web=True),
    # The conflict-resolving scheduler: equivalence groups, alternatives, waitlist, flexible requests, rounds,
    # explain and simulate. Groups and rounds are managed by whoever manages every member instrument.
    Case("GET", "/api/v1/equivalence-groups", frozenset(SIGNED_IN)),
    Case("POST", "/api/v1/equivalence-groups", _INSTRUMENT_A_MANAGERS,
         json={"name": "新等效组", "instrument_ids": ["{instrument_a3}", "{instrument_a}"]}),
    Case("GET", "/api/v1/equivalence-groups/{group_a}", frozenset(SIGNED_IN)),
    Case("PATCH", "/api/v1/equivalence-groups/{group_a}", _INSTRUMENT_A_MANAGERS, json={"description": "说明"}),
    Case("POST", "/api/v1/equivalence-groups/{group_a}/members", _INSTRUMENT_A_MANAGERS,
         json={"instrument_id": "{instrument_a3}"}),
    Case("DELETE", "/api/v1/equivalence-groups/{group_a}/members/{instrument_a2}", _INSTRUMENT_A_MANAGERS),
    Case("GET", "/api/v1/instruments/{instrument_a}/equivalents", frozenset(SIGNED_IN)),
    Case("GET", "/api/v1/instruments/{instrument_a}/alternatives?start=2030-01-02T09:00:00%2B08:00"
                "&end=2030-01-02T10:00:00%2B08:00", frozenset(SIGNED_IN)),
    Case("POST", "/api/v1/waitlist", frozenset(SIGNED_IN),
         json={"instrument_id": "{instrument_a}", "start": "2030-01-02T09:00:00+08:00",
               "end": "2030-01-02T10:00:00+08:00", "purpose": "候补"}),
    Case("GET", "/api/v1/waitlist", frozenset(SIGNED_IN)),
    Case("PUT", "/api/v1/waitlist/{entry_a}/priority", _INSTRUMENT_A_MANAGERS, json={"priority": 2}),
    Case("GET", "/api/v1/instruments/{instrument_a}/waitlist", _INSTRUMENT_A_MANAGERS),
    Case("POST", "/api/v1/requests/flexible", frozenset(SIGNED_IN),
         json={"instrument_id": "{instrument_a}", "duration_minutes": 60, "purpose": "灵活预约",
               "window_start": "2030-01-02T09:00:00+08:00", "window_end": "2030-01-02T18:00:00+08:00"}),
    Case("GET", "/api/v1/requests/flexible", frozenset(SIGNED_IN)),
    Case("PUT", "/api/v1/requests/flexible/{flexible_a}/weight", _INSTRUMENT_A_MANAGERS, json={"weight": 3}),
    Case("GET", "/api/v1/rounds", frozenset({"manager_a", "manager_b", "inst_admin_a", "inst_admin_b", "admin"})),
    Case("GET", "/api/v1/rounds/{round_a}", _INSTRUMENT_A_MANAGERS),
    Case("POST", "/api/v1/rounds/{round_a}/close", _INSTRUMENT_A_MANAGERS),
    Case("POST", "/api/v1/rounds/{round_a}/preview", _INSTRUMENT_A_MANAGERS),
    Case("POST", "/api/v1/rounds/{round_a}/publish", _INSTRUMENT_A_MANAGERS),
    Case("GET", "/api/v1/instruments/{instrument_a}/explain?start=2030-01-02T09:00:00%2B08:00"
                "&end=2030-01-02T10:00:00%2B08:00", frozenset(ROLES)),
    Case("POST", "/api/v1/instruments/{instrument_a}/schedule/simulate", _INSTRUMENT_A_MANAGERS,
         json={"rules": {"granularity_min": 30}}),
    Case("GET", "/waitlist", frozenset(SIGNED_IN), web=True),
    Case("GET", "/requests/flexible", frozenset(SIGNED_IN), web=True),
    Case("GET", "/requests/flexible/new", frozenset(SIGNED_IN), web=True),
    Case("GET", "/equivalence", frozenset({"manager_a", "manager_b", "inst_admin_a", "inst_admin_b", "admin"}),
         web=True),
    Case("POST", "/equivalence/{group_a}", _INSTRUMENT_A_MANAGERS, web=True),
    Case("GET", "/rounds", frozenset({"manager_a", "manager_b", "inst_admin_a", "inst_admin_b", "admin"}), web=True),
    Case("GET", "/rounds/{round_a}", _INSTRUMENT_A_MANAGERS, web=True),
    Case("POST", "/rounds/{round_a}/preview", _INSTRUMENT_A_MANAGERS, web=True),
    Case("GET", "/instruments/{instrument_a}/simulate", _INSTRUMENT_A_MANAGERS, web=True),
]


async def _world(session: AsyncSession) -> dict[str, Any]:
    inst_a = await make_institution(session, city_code="510100")
    inst_b = await make_institution(session, city_code="510700")
    users = {
        "researcher": await make_user(session, institution=inst_a),
        "manager_a": await make_user(session, role=Role.facility_manager, grant_institution=inst_a),
        "manager_b": await make_user(session, role=Role.facility_manager, grant_institution=inst_b),
        "inst_admin_a": await make_user(session, role=Role.institution_admin, grant_institution=inst_a),
        "inst_admin_b": await make_user(session, role=Role.institution_admin, grant_institution=inst_b),
        "provincial_auditor": await make_user(session, role=Role.auditor, institution_id=None),
        "city_auditor": await make_user(session, role=Role.auditor, city_code="510700", institution_id=None),
        "admin": await make_user(session, role=Role.platform_admin, institution_id=None),
    }
    req = RoleRequest(user_id=users["researcher"].id, role="facility_manager", institution_id=inst_a.id,  # type: ignore[arg-type]
                      reason="管理仪器")
    session.add(req)
    await session.flush()
    facility_a = await make_facility(session, inst_a)
    instrument_a = await make_instrument(session, inst_a, facility_id=facility_a.id)
    return {"users": users, "inst_a": inst_a.id, "inst_b": inst_b.id, "request_id": req.id,
            "facility_a": facility_a.id, "instrument_a": instrument_a.id, "researcher_id": users["researcher"].id,
            **await _scheduler_world(session, inst_a, facility_a.id, instrument_a.id, users["researcher"].id)}


async def _scheduler_world(session: AsyncSession, inst_a: Any, facility_id: int, instrument_a: int, user_id: int
                           ) -> dict[str, Any]:
    """Institution A's equivalence group (instrument_a, instrument_a2), its open round, a waitlist entry and a
    flexible request of the researcher's on instrument_a, and a third A instrument in no group."""
    from datetime import timedelta

    from booking.core.clock import utcnow
    from scheduling.conflict_models import (
        AllocationRound,
        EquivalenceGroup,
        EquivalenceMember,
        FlexibleBooking,
        WaitlistEntry,
    )

    a2 = await make_instrument(session, inst_a, facility_id=facility_id)
    a3 = await make_instrument(session, inst_a, facility_id=facility_id)
    group = EquivalenceGroup(name=f"矩阵测试组 {instrument_a}", category_code=a2.category_code)
    session.add(group)
    await session.flush()
    session.add_all([EquivalenceMember(instrument_id=instrument_a, group_id=group.id),
                     EquivalenceMember(instrument_id=a2.id, group_id=group.id)])
    start = utcnow() + timedelta(days=30)
    round_ = AllocationRound(group_id=group.id, cutoff_at=utcnow() + timedelta(days=7), status="open")
    entry = WaitlistEntry(user_id=user_id, instrument_id=instrument_a, kind="slot", window_start=start,
                          window_end=start + timedelta(hours=1), duration_minutes=60, purpose="候补", status="waiting")
    flexible = FlexibleBooking(user_id=user_id, instrument_id=instrument_a, duration_minutes=60, window_start=start,
                               window_end=start + timedelta(hours=8), deadline=start, purpose="灵活预约",
                               status="waiting")
    session.add_all([round_, entry, flexible])
    await session.flush()
    return {"group_a": group.id, "round_a": round_.id, "entry_a": entry.id, "flexible_a": flexible.id,
            "instrument_a2": a2.id, "instrument_a3": a3.id}


def _fill(value: Any, world: dict[str, Any]) -> Any:
    """Ids of the world in a JSON body: "{instrument_a}" becomes that instrument's id."""
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, world) for v in value]
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in world:
        return world[value[1:-1]]
    return value


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.path}")
async def test_matrix(client: httpx.AsyncClient, session: AsyncSession, case: Case, role: str) -> None:
    world = await _world(session)
    path = case.path.format(**{k: v for k, v in world.items() if k != "users"})
    headers: dict[str, str] = {}
    if role != "anonymous":
        user = world["users"][role]
        if case.web:
            await login_web(session, client, user)
        else:
            headers = await bearer_headers(session, user)
    elif case.web:
        await client.get("/login")
        headers["X-CSRF-Token"] = client.cookies.get("bk_csrf") or ""
    kwargs: dict[str, Any] = {"headers": headers}
    if case.json is not None:
        kwargs["json"] = _fill(case.json, world)
    r = await client.request(case.method, path, **kwargs)
    if role in case.allowed:
        assert r.status_code not in (401, 403), f"{role} should be allowed: {r.status_code} {r.text[:300]}"
        if case.web and r.status_code == 303:
            assert not r.headers["location"].startswith("/login")
    elif role == "anonymous":
        if case.web:
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), r.status_code
        else:
            assert r.status_code == 401, r.text[:300]
    else:
        assert r.status_code == 403, f"{role} should be denied: {r.status_code} {r.text[:300]}"
