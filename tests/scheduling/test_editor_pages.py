"""The editor's HTML pages: forms in Beijing wall-clock time, collisions listed, errors re-rendered (422)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Institution, Role
from booking.reservations.models import Booking
from scheduling.models import Blackout, InstrumentRules
from tests.factories import login_web, make_institution, make_instrument, make_schedule, make_user
from tests.ops_helpers import NOW, Clock, count, make_booking


async def _world(session: AsyncSession) -> dict[str, Any]:
    owner = await make_institution(session)
    inst = await make_instrument(session, owner, name="气相色谱仪")
    await make_schedule(session, inst)
    return {"inst": inst, "manager": await make_user(session, role=Role.facility_manager, grant_institution=owner),
            "user": await make_user(session, name="赵同学")}


class TestSchedulePage:
    async def test_index_and_page(self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        w = await _world(session)
        await login_web(session, client, w["manager"])
        index = await client.get("/schedule")
        assert index.status_code == 200 and f"/instruments/{w['inst'].id}/schedule" in index.text
        owner = await session.get(Institution, w["inst"].institution_id)
        other = await make_instrument(session, owner, name="液相色谱仪", model="LC-2030")
        found = await client.get("/schedule", params={"q": "LC-20"}, headers={"HX-Request": "true"})
        assert f"/instruments/{other.id}/schedule" in found.text
        assert f"/instruments/{w['inst'].id}/schedule" not in found.text and "共 1 台" in found.text
        none = await client.get("/schedule", params={"q": "没有这种"})
        assert "没有名称、型号或内部编码含" in none.text
        page = await client.get(f"/instruments/{w['inst'].id}/schedule")
        assert page.status_code == 200
        for heading in ("每周开放时间", "特殊日期", "停机维护", "预约规则", "上机资格", "因爽约暂停预约的用户"):
            assert heading in page.text

    async def test_blackout_form_lists_colliding_bookings(self, client: httpx.AsyncClient, session: AsyncSession,
                                                          clock: Clock) -> None:
        w = await _world(session)
        inst = w["inst"]
        booking = await make_booking(session, inst, w["user"], NOW + timedelta(days=1, hours=10))
        await login_web(session, client, w["manager"])
        r = await client.post(f"/instruments/{inst.id}/schedule/blackouts", data={
            "kind": "once", "starts_at": "2026-12-02T09:00", "ends_at": "2026-12-02T12:00", "reason": "更换色谱柱",
            "weekday": "3", "start_time": "08:00"})  # fields of the other kind are ignored
        assert r.status_code == 200, r.text
        assert 'data-testid="colliding-bookings"' in r.text and "赵同学" in r.text and f"#{booking.id}" in r.text
        row = (await session.scalars(select(Blackout).where(Blackout.instrument_id == inst.id))).one()
        # The form's wall-clock time is Beijing time.
        assert row.starts_at == datetime(2026, 12, 2, 1, 0, tzinfo=UTC) and row.weekday is None
        stored = await session.get(Booking, booking.id)
        assert stored is not None and stored.status == "confirmed"

    async def test_bad_blackout_rerenders_with_errors(self, client: httpx.AsyncClient, session: AsyncSession,
                                                      clock: Clock) -> None:
        w = await _world(session)
        await login_web(session, client, w["manager"])
        r = await client.post(f"/instruments/{w['inst'].id}/schedule/blackouts", data={
            "kind": "weekly", "weekday": "1", "start_time": "12:00", "end_time": "09:00", "reason": "维护"})
        assert r.status_code == 422
        assert 'aria-invalid="true"' in r.text and "结束时间须晚于开始时间" in r.text
        assert 'value="维护"' in r.text  # the manager's input is kept
        assert await count(session, Blackout, Blackout.instrument_id == w["inst"].id) == 0

    async def test_rules_form_unticked_box_means_no(self, client: httpx.AsyncClient, session: AsyncSession,
                                                    clock: Clock) -> None:
        w = await _world(session)
        await login_web(session, client, w["manager"])
        form = {"granularity_min": "15", "min_duration_min": "15", "max_duration_min": "120", "min_lead_min": "0",
                "max_horizon_days": "30", "max_user_hours_week": "", "max_institution_hours_month": "",
                "cancellation_deadline_h": "2", "buffer_before_min": "0", "buffer_after_min": "15",
                "no_show_grace_min": "20", "follow_holidays": "true"}
        r = await client.post(f"/instruments/{w['inst'].id}/rules", data=form)
        assert r.status_code == 200, r.text
        row = (await session.execute(select(InstrumentRules).where(
            InstrumentRules.instrument_id == w["inst"].id).execution_options(populate_existing=True))).scalar_one()
        assert (row.granularity_min, row.approval_required, row.follow_holidays, row.max_user_hours_week) == (
            15, False, True, None)
        bad = await client.post(f"/instruments/{w['inst'].id}/rules", data={**form, "granularity_min": "7",
                                                                           "min_duration_min": "abc"})
        assert bad.status_code == 422 and "应为整数" in bad.text

    async def test_researcher_is_refused(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        await login_web(session, client, w["user"])
        assert (await client.get(f"/instruments/{w['inst'].id}/schedule")).status_code == 403
        r = await client.post(f"/instruments/{w['inst'].id}/schedule/blackouts", data={
            "kind": "once", "starts_at": "2026-12-02T09:00", "ends_at": "2026-12-02T12:00", "reason": "越权"})
        assert r.status_code == 403


class TestHolidayPage:
    async def test_admin_sees_package_and_adds_override(self, client: httpx.AsyncClient, session: AsyncSession,
                                                        clock: Clock) -> None:
        admin = await make_user(session, role=Role.platform_admin, institution_id=None)
        await login_web(session, client, admin)
        page = await client.get("/admin/holidays", params={"year": 2027})
        assert page.status_code == 200 and 'data-testid="package-days"' in page.text and "春节" in page.text
        r = await client.post("/admin/holidays", data={"day": "2027-02-20", "kind": "open", "name": "春节调休上班"})
        assert r.status_code == 200 and 'data-testid="override-days"' in r.text and "春节调休上班" in r.text
        bad = await client.post("/admin/holidays", data={"day": "", "kind": "closed", "name": "x"})
        assert bad.status_code == 422 and "必填" in bad.text
