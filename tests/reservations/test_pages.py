"""Booking pages: week calendar, the form with live checks, my bookings, the manager's queue."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role
from booking.core.clock import LOCAL_TZ
from booking.reservations import routes
from booking.reservations.models import Booking
from scheduling.models import Blackout
from tests.factories import bearer_headers, login_web, make_institution, make_instrument, make_schedule, make_user


async def _world(session: AsyncSession, **rules: Any) -> dict[str, Any]:
    owner = await make_institution(session)
    inst = await make_instrument(session, owner, name="场发射扫描电镜", fee_unit="hour",
                                 fee_internal=Decimal("150"), fee_external=Decimal("300"))
    await make_schedule(session, inst, **rules)
    return {"inst": inst, "manager": await make_user(session, role=Role.facility_manager, grant_institution=owner),
            "researcher": await make_user(session)}


FORM = {"date": "2026-12-02", "start_time": "09:00", "end_time": "10:30", "purpose": "观察样品形貌",
        "service_mode": "occupancy", "repeat_weekly": "1"}


class TestWeek:
    async def test_week_fragment_for_htmx(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        r = await client.get(f"/instruments/{w['inst'].id}/week", params={"start": "2026-12-02"},
                             headers={"HX-Request": "true"})
        assert r.status_code == 200
        assert "<html" not in r.text and 'id="week"' in r.text
        assert "周一 11/30" in r.text  # the Monday of that week
        assert "可约" in r.text
        page = await client.get(f"/instruments/{w['inst'].id}/week", params={"start": "2026-12-02"})
        assert "<html" in page.text

    async def test_bad_date_is_422_page(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        r = await client.get(f"/instruments/{w['inst'].id}/week", params={"start": "2026-13-40"})
        assert r.status_code == 422 and "日期格式应为" in r.text


class TestForm:
    async def test_book_through_the_form(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session, approval_required=True)
        await login_web(session, client, w["researcher"])
        page = await client.get(f"/instruments/{w['inst'].id}/book",
                                params={"start": "2026-12-02T09:00:00+08:00", "end": "2026-12-02T09:30:00+08:00"})
        assert page.status_code == 200 and 'value="09:00"' in page.text
        r = await client.post(f"/instruments/{w['inst'].id}/book", data=FORM)
        assert r.status_code == 303, r.text[:2000]
        booking = (await session.scalars(select(Booking).where(Booking.user_id == w["researcher"].id))).one()
        assert booking.status == "pending"
        detail = await client.get(r.headers["location"])
        assert "待审批" in detail.text and "场发射扫描电镜" in detail.text
        assert "预计费用 450.00 元" in detail.text

    async def test_live_check_lists_problems_before_submit(self, client: httpx.AsyncClient,
                                                           session: AsyncSession) -> None:
        w = await _world(session)
        await login_web(session, client, w["researcher"])
        r = await client.post(f"/instruments/{w['inst'].id}/book/check",
                              data={**FORM, "start_time": "06:10", "end_time": "07:00"}, headers={"HX-Request": "true"})
        assert r.status_code == 200
        assert "check-problems" in r.text and "刻度" in r.text and "开放时间" in r.text
        ok = await client.post(f"/instruments/{w['inst'].id}/book/check", data=FORM, headers={"HX-Request": "true"})
        assert "check-ok" in ok.text
        # The price before booking: 09:00–10:30 at the external price (the researcher is from elsewhere).
        assert "预计费用 450.00 元：校外/单位外价格 300.00 元/小时 × 1.5 小时" in ok.text
        # Nothing picked yet: no error before the user has typed anything.
        blank = await client.post(f"/instruments/{w['inst'].id}/book/check",
                                  data={**FORM, "start_time": "", "end_time": ""}, headers={"HX-Request": "true"})
        assert blank.status_code == 200 and "check-problems" not in blank.text and "check-ok" not in blank.text
        half = await client.post(f"/instruments/{w['inst'].id}/book/check",
                                 data={**FORM, "end_time": ""}, headers={"HX-Request": "true"})
        assert "check-problems" not in half.text

    async def test_conflict_shows_alternatives(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        other = await make_user(session)
        await login_web(session, client, other)
        assert (await client.post(f"/instruments/{w['inst'].id}/book", data=FORM)).status_code == 303
        client.cookies.clear()
        await login_web(session, client, w["researcher"])
        check = await client.post(f"/instruments/{w['inst'].id}/book/check", data=FORM, headers={"HX-Request": "true"})
        assert "check-conflict" in check.text
        r = await client.post(f"/instruments/{w['inst'].id}/book", data=FORM)
        assert r.status_code == 409
        assert 'id="alternatives"' in r.text and "该时段已被预约" in r.text

    async def test_missing_purpose_and_time_rerender(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        await login_web(session, client, w["researcher"])
        r = await client.post(f"/instruments/{w['inst'].id}/book", data={**FORM, "purpose": "", "end_time": ""})
        assert r.status_code == 422
        assert "请填写时间" in r.text and 'aria-invalid="true"' in r.text

    async def test_anonymous_redirected_to_login(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        r = await client.get(f"/instruments/{w['inst'].id}/book")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


class TestMineAndQueue:
    async def test_my_bookings_cancel(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        await login_web(session, client, w["researcher"])
        await client.post(f"/instruments/{w['inst'].id}/book", data=FORM)
        page = await client.get("/bookings")
        assert "场发射扫描电镜" in page.text and "已确认" in page.text
        booking = (await session.scalars(select(Booking).where(Booking.user_id == w["researcher"].id))).one()
        r = await client.post(f"/bookings/{booking.id}/cancel", data={"next": "/bookings"})
        assert r.status_code == 303
        await session.refresh(booking)
        assert booking.status == "cancelled"

    async def test_queue_bulk_approve(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session, approval_required=True)
        await login_web(session, client, w["researcher"])
        await client.post(f"/instruments/{w['inst'].id}/book", data=FORM)
        await client.post(f"/instruments/{w['inst'].id}/book", data={**FORM, "start_time": "13:00", "end_time": "14:00"})
        ids = list(await session.scalars(select(Booking.id).where(Booking.user_id == w["researcher"].id)))
        assert len(ids) == 2
        client.cookies.clear()
        await login_web(session, client, w["manager"])
        queue = await client.get("/manage/bookings")
        assert queue.status_code == 200 and "待审批" in queue.text
        # Two instruments of the same name are told apart by model and internal number, and link to their page.
        inst_id = w["inst"].id
        assert f'<a href="/instruments/{inst_id}">场发射扫描电镜</a>' in queue.text
        assert w["inst"].asset_number in queue.text
        r = await client.post("/manage/bookings/bulk", data={"action": "approve", "booking_id": [str(i) for i in ids],
                                                             "note": "同意"})
        assert r.status_code == 303
        statuses = set(await session.scalars(select(Booking.status).where(Booking.id.in_(ids))))  # type: ignore[attr-defined]
        assert statuses == {"confirmed"}
        after = await client.get(r.headers["location"])
        assert "已批准 2 个预约" in after.text
        none = await client.post("/manage/bookings/bulk", data={"action": "approve"}, headers={"HX-Request": "true"})
        assert none.status_code == 422 and "请至少选择一个预约" in none.text and "booking_id" not in none.text

    async def test_queue_is_paged(self, client: httpx.AsyncClient, session: AsyncSession,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(routes, "QUEUE_PAGE", 1)
        w = await _world(session, approval_required=True)
        await login_web(session, client, w["researcher"])
        await client.post(f"/instruments/{w['inst'].id}/book", data=FORM)
        await client.post(f"/instruments/{w['inst'].id}/book", data={**FORM, "start_time": "13:00", "end_time": "14:00"})
        first, second = await session.scalars(select(Booking.id).where(Booking.user_id == w["researcher"].id)
                                              .order_by(Booking.start_at))
        client.cookies.clear()
        await login_web(session, client, w["manager"])
        page = await client.get("/manage/bookings")
        assert "共 2 条，第 1–1 条" in page.text
        assert f'value="{first}"' in page.text and f'value="{second}"' not in page.text
        assert "/manage/bookings?view=pending&amp;offset=1" in page.text
        page = await client.get("/manage/bookings", params={"view": "pending", "offset": 1})
        assert "共 2 条，第 2–2 条" in page.text
        assert f'value="{second}"' in page.text and f'value="{first}"' not in page.text
        assert (await client.get("/manage/bookings", params={"offset": -1})).status_code == 422
        # Past the end (the last page was just decided): a way back instead of "第 3–2 条".
        page = await client.get("/manage/bookings", params={"view": "pending", "offset": 2})
        assert "回到最后一页" in page.text and "/manage/bookings?view=pending&amp;offset=1" in page.text
        assert "第 3–" not in page.text

    async def test_my_bookings_are_paged(self, client: httpx.AsyncClient, session: AsyncSession,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(routes, "MINE_PAGE", 1)
        w = await _world(session)
        await login_web(session, client, w["researcher"])
        await client.post(f"/instruments/{w['inst'].id}/book", data=FORM)
        await client.post(f"/instruments/{w['inst'].id}/book", data={**FORM, "start_time": "13:00", "end_time": "14:00"})
        first, second = await session.scalars(select(Booking.id).where(Booking.user_id == w["researcher"].id)
                                              .order_by(Booking.start_at))
        page = await client.get("/bookings")  # upcoming: soonest first
        assert "共 2 个预约，第 1–1 个" in page.text
        assert f"/bookings/{first}" in page.text and f"/bookings/{second}" not in page.text
        page = await client.get("/bookings", params={"offset": 1})
        assert f"/bookings/{second}" in page.text and f"/bookings/{first}" not in page.text

    async def test_approve_refused_over_a_blackout_and_actions_say_what_they_did(
            self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session, approval_required=True)
        await login_web(session, client, w["researcher"])
        await client.post(f"/instruments/{w['inst'].id}/book", data={**FORM, "repeat_weekly": "1"})
        await client.post(f"/instruments/{w['inst'].id}/book", data={**FORM, "start_time": "13:00", "end_time": "14:00"})
        morning, afternoon = await session.scalars(select(Booking).where(Booking.user_id == w["researcher"].id)
                                                   .order_by(Booking.start_at))
        # Maintenance added after the request, over part of the morning booking (Beijing time).
        session.add(Blackout(instrument_id=w["inst"].id, reason="真空泵维护",
                             starts_at=datetime(2026, 12, 2, 10, 0, tzinfo=LOCAL_TZ),
                             ends_at=datetime(2026, 12, 2, 12, 0, tzinfo=LOCAL_TZ)))
        await session.flush()
        client.cookies.clear()
        await login_web(session, client, w["manager"])
        r = await client.post(f"/bookings/{morning.id}/approve")
        assert r.status_code == 409
        assert "预约时段与停机维护重叠（2026-12-02 10:00–12:00 真空泵维护）" in r.text
        api = await client.post(f"/api/v1/bookings/{morning.id}/approve", headers=await bearer_headers(
            session, w["manager"]))
        assert api.status_code == 409 and api.json()["errors"][0]["code"] == "blackout"
        await session.refresh(morning)
        assert morning.status == "pending"

        # In a bulk approval the blocked one is skipped and named; the other is approved all the same.
        r = await client.post("/manage/bookings/bulk", data={"action": "approve",
                                                             "booking_id": [str(morning.id), str(afternoon.id)]})
        assert r.status_code == 303 and r.headers["location"].endswith(f"done=1&did=approve&skipped={morning.id}")
        page = await client.get(r.headers["location"])
        assert f"已批准 1 个预约；1 个未能批准（#{morning.id}），请打开该预约查看原因" in page.text
        await session.refresh(morning)
        await session.refresh(afternoon)
        assert (morning.status, afternoon.status) == ("pending", "confirmed")
        # Confirmed but days away: no check-in button yet, the time it opens instead.
        page = await client.get(f"/bookings/{afternoon.id}")
        assert "签到上机</button>" not in page.text and "2026-12-02 12:30 起可签到上机" in page.text
        assert 'data-testid="blackout-warning"' not in page.text
        # The booking under the blackout says so on its page, to its manager and to its user.
        page = await client.get(f"/bookings/{morning.id}")
        assert "该预约时段与停机维护重叠（2026-12-02 10:00–12:00 真空泵维护）。请与预约人协商改期或取消。" in page.text
        client.cookies.clear()
        await login_web(session, client, w["researcher"])
        page = await client.get(f"/bookings/{morning.id}")
        assert "真空泵维护）。仪器管理员会与您联系" in page.text
        client.cookies.clear()
        await login_web(session, client, w["manager"])
        # A single action's page says what was done.
        r = await client.post(f"/bookings/{morning.id}/reject", data={"note": "维护期间"})
        assert r.headers["location"] == f"/bookings/{morning.id}?did=reject"
        page = await client.get(r.headers["location"])
        assert "已拒绝该预约，预约人会收到通知" in page.text
        assert 'data-testid="blackout-warning"' not in page.text  # no longer active: nothing to warn about
        assert (await client.get(f"/bookings/{morning.id}", params={"did": "explode"})).status_code == 422

    async def test_queue_forbidden_for_researchers(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        await login_web(session, client, user)
        assert (await client.get("/manage/bookings")).status_code == 403


class TestActionInput:
    """Notes and counts typed on the booking page: refused with the field named, never cut or read as 0."""

    async def _per_sample(self, session: AsyncSession) -> dict[str, Any]:
        from tests.ops_helpers import NOW, make_booking

        owner = await make_institution(session)
        inst = await make_instrument(session, owner, name="电感耦合等离子体质谱仪", fee_unit="sample",
                                     fee_internal=Decimal("80"), fee_external=Decimal("160"))
        manager = await make_user(session, role=Role.facility_manager, grant_institution=owner)
        user = await make_user(session)
        booking = await make_booking(session, inst, user, NOW - timedelta(hours=3), hours=2)
        return {"inst": inst, "manager": manager, "user": user, "booking": booking}

    async def test_a_per_sample_service_needs_its_sample_count(
            self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        from booking.usage.models import ServiceRecord

        w = await self._per_sample(session)
        b = w["booking"]
        await login_web(session, client, w["manager"])
        page = await client.get(f"/bookings/{b.id}")
        assert 'id="record-samples"' in page.text and 'hx-history="false"' in page.text
        for samples, status, message in (("", 422, "至少 1 个"), ("0", 422, "至少 1 个"), ("-2", 422, "样品数应为"),
                                         ("两个", 422, "样品数应为"), ("999999", 422, "样品数应为")):
            r = await client.post(f"/bookings/{b.id}/record_service", data={"samples": samples})
            assert r.status_code == status and message in r.text, (samples, r.text[-600:])
            assert await session.scalar(select(ServiceRecord.id).where(ServiceRecord.booking_id == b.id)) is None
        r = await client.post(f"/bookings/{b.id}/record_service", data={"samples": "3"})
        assert r.status_code == 303
        record = await session.scalar(select(ServiceRecord).where(ServiceRecord.booking_id == b.id))
        assert record is not None and record.amount == Decimal("480.00")  # 3 samples x 160: a user from elsewhere
        # The user rates it; a comment longer than the column is refused, not cut; then the page thanks them.
        client.cookies.clear()
        await login_web(session, client, w["user"])
        r = await client.post(f"/service-records/{record.id}/rate", data={"rating": "5", "comment": "好" * 501})
        assert r.status_code == 422 and "最多 500 个字符" in r.text
        r = await client.post(f"/service-records/{record.id}/rate", data={"rating": "5", "comment": "很专业"})
        assert r.headers["location"] == f"/bookings/{b.id}?did=rate"
        assert "感谢评价，已记录" in (await client.get(r.headers["location"])).text

    async def test_an_hourly_instrument_records_without_a_count(
            self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        from tests.ops_helpers import NOW, make_booking

        w = await _world(session)
        b = await make_booking(session, w["inst"], w["researcher"], NOW - timedelta(hours=3), hours=2)
        await login_web(session, client, w["manager"])
        assert 'id="record-samples"' not in (await client.get(f"/bookings/{b.id}")).text
        assert (await client.post(f"/bookings/{b.id}/record_service", data={})).status_code == 303

    async def test_a_reason_longer_than_the_column_is_refused_not_cut(
            self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session, approval_required=True)
        await login_web(session, client, w["researcher"])
        await client.post(f"/instruments/{w['inst'].id}/book", data=FORM)
        booking = await session.scalar(select(Booking).where(Booking.user_id == w["researcher"].id))
        await login_web(session, client, w["manager"])
        page = await client.get(f"/bookings/{booking.id}")
        assert 'id="reject-note" name="note" placeholder="拒绝理由" maxlength="500"' in page.text
        r = await client.post(f"/bookings/{booking.id}/reject", data={"note": "样" * 501})
        assert r.status_code == 422 and "最多 500 个字符，现有 501 个" in r.text
        await session.refresh(booking)
        assert booking.status == "pending" and booking.decision_note is None
        r = await client.post(f"/bookings/{booking.id}/reject", data={"note": "  样" * 1 + " "})
        assert r.status_code == 303
        await session.refresh(booking)
        assert booking.status == "rejected" and booking.decision_note == "样"


class TestWhoSeesWhat:
    async def test_requester_rebook_and_flashes(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session, approval_required=True)
        researcher = w["researcher"]
        await login_web(session, client, researcher)
        await client.post(f"/instruments/{w['inst'].id}/book", data=FORM)
        await client.post(f"/instruments/{w['inst'].id}/book", data={**FORM, "start_time": "13:00", "end_time": "14:00"})
        first, second = await session.scalars(select(Booking).where(Booking.user_id == researcher.id)
                                              .order_by(Booking.start_at))
        mine = await client.get("/bookings")
        assert "成都市" in mine.text  # which instrument, when two have the same name
        r = await client.post(f"/bookings/{second.id}/cancel", data={"next": "/bookings?cancelled=1"})
        assert r.headers["location"] == "/bookings?cancelled=1"
        assert "已取消该预约" in (await client.get(r.headers["location"])).text
        client.cookies.clear()
        await login_web(session, client, w["manager"])
        page = await client.get(f"/bookings/{first.id}")
        from booking.accounts.models import Institution

        home = await session.get_one(Institution, researcher.institution_id)
        assert 'data-testid="requester"' in page.text and home.name in page.text and researcher.email in page.text
        await client.post(f"/bookings/{first.id}/reject", data={"note": "样品不符合要求"})
        assert "重新预约" not in (await client.get(f"/bookings/{first.id}")).text  # not the manager's to rebook
        client.cookies.clear()
        await login_web(session, client, researcher)
        page = await client.get(f"/bookings/{first.id}")
        assert "重新预约" in page.text and 'data-testid="requester"' not in page.text


async def test_a_week_with_nothing_left_to_book_opens_on_the_next(client: httpx.AsyncClient,
                                                                  session: AsyncSession) -> None:
    """Saturday evening, an instrument open on weekdays: the first view is next week, not a week of closed cells."""
    from booking.core.clock import set_clock

    owner = await make_institution(session)
    inst = await make_instrument(session, owner)
    await make_schedule(session, inst, windows=[(d, "08:00", "20:00") for d in range(5)])
    researcher = await make_user(session)
    set_clock(lambda: datetime(2026, 12, 5, 19, 0, tzinfo=LOCAL_TZ))  # Saturday
    await login_web(session, client, researcher)
    page = await client.get(f"/instruments/{inst.id}/book")
    assert "2026-12-07 起一周" in page.text and 'value="2026-12-07"' in page.text  # Monday
    fragment = await client.get(f"/instruments/{inst.id}/week", headers={"HX-Request": "true"})
    assert "周一 12/7" in fragment.text
    # Asked for explicitly, the current week is shown as it is.
    fragment = await client.get(f"/instruments/{inst.id}/week", params={"start": "2026-12-05"},
                                headers={"HX-Request": "true"})
    assert "周一 11/30" in fragment.text
    # On a Tuesday the current week is the first view.
    set_clock(lambda: datetime(2026, 12, 1, 9, 0, tzinfo=LOCAL_TZ))
    assert "周一 11/30" in (await client.get(f"/instruments/{inst.id}/week", headers={"HX-Request": "true"})).text


async def test_the_queue_is_for_managers_even_before_they_have_instruments(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    newcomer = await make_institution(session, name="刚入驻的研究所")
    await login_web(session, client, await make_user(session, role=Role.facility_manager, grant_institution=newcomer))
    page = await client.get("/manage/bookings")
    assert page.status_code == 200 and "没有待审批的预约" in page.text
    client.cookies.clear()
    await login_web(session, client, await make_user(session))
    refused = await client.get("/manage/bookings")
    assert refused.status_code == 403 and "只有仪器管理员可以查看审批队列" in refused.text
