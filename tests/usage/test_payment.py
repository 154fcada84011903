"""Recording the payment of a service record: the provider's managers record it, waive the fee or take either
back, through the API and on the booking page; the user sees it and is told; the database keeps it consistent."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role
from booking.activity.models import ActivityEntry
from booking.usage.models import ServiceRecord
from tests.factories import bearer_headers, login_web, make_institution, make_instrument, make_user
from tests.ops_helpers import NOW, Clock, fresh, make_booking, make_service_record, notifications_of

pytestmark = pytest.mark.asyncio


async def _world(session: AsyncSession, amount: str = "480.00") -> dict[str, Any]:
    owner = await make_institution(session, name="付款测试大学")
    inst = await make_instrument(session, owner, name="付款测试电镜")
    manager = await make_user(session, role=Role.facility_manager, grant_institution=owner)
    user = await make_user(session)
    booking = await make_booking(session, inst, user, NOW - timedelta(days=2), 2, status="completed")
    rec = await make_service_record(session, booking, owner.id, amount=amount,  # type: ignore[arg-type]
                                    fee_basis="外部 240 元/小时 × 2 小时")
    return {"inst": inst, "manager": manager, "user": user, "booking": booking, "record": rec, "owner": owner}


async def _entries(session: AsyncSession, record_id: int) -> list[str]:
    return list(await session.scalars(select(ActivityEntry.action).where(
        ActivityEntry.target_type == "service_record", ActivityEntry.target_id == str(record_id))
        .order_by(ActivityEntry.id)))


class TestApi:
    async def test_pay_then_take_back_then_waive(self, client: httpx.AsyncClient, session: AsyncSession,
                                                 clock: Clock) -> None:
        w = await _world(session)
        rec, mgr_h = w["record"], await bearer_headers(session, w["manager"])
        user_h = await bearer_headers(session, w["user"])
        before = (await client.get("/api/v1/service-records", headers=user_h)).json()["items"][0]
        assert before["payment_status"] == "unpaid" and before["paid_at"] is None
        paid = await client.post(f"/api/v1/service-records/{rec.id}/payment", headers=mgr_h,
                                 json={"method": "transfer", "invoice_number": " FP-2026-0012 ",
                                       "paid_at": "2026-11-30T15:30:00+08:00"})
        assert paid.status_code == 200, paid.text
        body = paid.json()
        assert (body["payment_status"], body["payment_method"], body["invoice_number"]) == (
            "paid", "transfer", "FP-2026-0012")
        assert body["paid_at"].startswith("2026-11-30T07:30:00")
        mine = (await client.get("/api/v1/service-records", headers=user_h)).json()["items"][0]
        assert mine["payment_status"] == "paid"
        [note] = await notifications_of(session, w["user"].id, "service_record.paid")
        assert "已确认收到 480.00 元" in note.body and "发票号 FP-2026-0012" in note.body
        assert body["paid_amount"] == "480.00"  # the computed fee when no other amount is given
        again = await client.post(f"/api/v1/service-records/{rec.id}/payment", headers=mgr_h, json={"method": "cash"})
        assert again.status_code == 409 and "已登记付款" in again.json()["detail"]
        reset = await client.post(f"/api/v1/service-records/{rec.id}/payment/reset", headers=mgr_h,
                                  json={"reason": "发票号登记错误"})
        assert reset.status_code == 200 and reset.json()["payment_status"] == "unpaid"
        assert reset.json()["invoice_number"] is None and reset.json()["paid_amount"] is None
        assert reset.json()["payment_note"] is None  # the reason is in the log, with what was taken back
        waived = await client.post(f"/api/v1/service-records/{rec.id}/waive", headers=mgr_h,
                                   json={"reason": "设备故障后重测，不收费"})
        assert waived.status_code == 200 and waived.json()["payment_status"] == "waived"
        assert await _entries(session, rec.id) == [
            "service_record.paid", "service_record.payment_reset", "service_record.waived"]

    @pytest.mark.parametrize(("path", "body", "field"), [
        ("payment", {}, "method"),
        ("payment", {"method": "支付宝"}, "method"),
        ("payment", {"method": "cash", "paid_at": "2026-12-01T10:00:00"}, "paid_at"),  # no offset
        ("payment", {"method": "cash", "invoice_number": "F" * 65}, "invoice_number"),
        ("payment", {"method": "cash", "paid_at": "2026-12-02T08:00:00+08:00"}, "paid_at"),  # after now
        ("payment", {"method": "cash", "paid_at": "0001-01-01T00:00:00+08:00"}, "paid_at"),
        ("payment", {"method": "cash", "paid_at": "2025-01-01T00:00:00+08:00"}, "paid_at"),  # a year before
        ("payment", {"method": "cash", "amount": "-1"}, "amount"),
        ("payment", {"method": "cash", "amount": "12.345"}, "amount"),
        ("waive", {"reason": "免"}, "reason"),
        ("waive", {}, "reason"),
    ])
    async def test_bad_input_names_the_field_and_changes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock, path: str, body: dict[str, Any],
        field: str,
    ) -> None:
        w = await _world(session)
        r = await client.post(f"/api/v1/service-records/{w['record'].id}/{path}",
                              headers=await bearer_headers(session, w["manager"]), json=body)
        assert r.status_code == 422, r.text
        assert field in {e["field"] for e in r.json()["errors"]}
        assert (await fresh(session, ServiceRecord, w["record"].id)).payment_status == "unpaid"
        assert await _entries(session, w["record"].id) == []

    async def test_who_may(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        url = f"/api/v1/service-records/{w['record'].id}/payment"
        own = await client.post(url, headers=await bearer_headers(session, w["user"]), json={"method": "cash"})
        assert own.status_code == 403 and "管理员登记" in own.json()["detail"]
        elsewhere = await make_user(session, role=Role.facility_manager, grant_institution=await make_institution(session))
        assert (await client.post(url, headers=await bearer_headers(session, elsewhere),
                                  json={"method": "cash"})).status_code == 404
        assert (await client.post(url, json={"method": "cash"})).status_code == 401
        assert (await client.post("/api/v1/service-records/99999999999999999999/payment",
                                  headers=await bearer_headers(session, w["manager"]),
                                  json={"method": "cash"})).status_code in (404, 422)
        assert (await fresh(session, ServiceRecord, w["record"].id)).payment_status == "unpaid"

    async def test_a_record_without_a_fee_has_nothing_to_pay(self, client: httpx.AsyncClient,
                                                            session: AsyncSession) -> None:
        w = await _world(session, amount="0.00")
        mgr_h = await bearer_headers(session, w["manager"])
        r = await client.post(f"/api/v1/service-records/{w['record'].id}/payment", headers=mgr_h,
                              json={"method": "cash"})
        assert r.status_code == 409 and "无需登记付款" in r.json()["detail"]
        listed = (await client.get("/api/v1/service-records", headers=await bearer_headers(session, w["user"]))).json()
        assert listed["items"][0]["payment_status"] == "free"


async def test_the_database_refuses_an_inconsistent_payment(session: AsyncSession) -> None:
    w = await _world(session)
    for assignment in ("payment_status = 'paid'",  # paid without when and how
                       "payment_status = 'waived'",  # waived without a reason
                       "invoice_number = 'FP-1'",  # an invoice on an unpaid record
                       "payment_method = 'bitcoin', payment_status = 'paid', paid_at = now()"):
        with pytest.raises(IntegrityError):
            async with session.begin_nested():
                await session.execute(text(f"UPDATE service_records SET {assignment} WHERE id = :id"),  # noqa: S608
                                      {"id": w["record"].id})


class TestPage:
    async def test_manager_records_payment_on_the_booking_page(
        self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock
    ) -> None:
        w = await _world(session)
        rec, booking = w["record"], w["booking"]
        await login_web(session, client, w["manager"])
        page = (await client.get(f"/bookings/{booking.id}")).text
        assert "待付款" in page and "登记付款（应收 480.00 元）" in page and "免收费用" in page
        refused = await client.post(f"/service-records/{rec.id}/payment",
                                    data={"method": "", "paid_at": "2026-12-05T10:00", "invoice_number": "FP-9"})
        assert refused.status_code == 422
        assert 'id="e-method"' in refused.text and 'value="FP-9"' in refused.text  # typed values come back
        assert (await fresh(session, ServiceRecord, rec.id)).payment_status == "unpaid"
        future = await client.post(f"/service-records/{rec.id}/payment",
                                   data={"method": "transfer", "paid_at": "2026-12-05T10:00"})
        assert future.status_code == 422 and "付款时间不能晚于现在" in future.text
        for typed in ("0001-01-01T00:00", "昨天下午"):
            odd = await client.post(f"/service-records/{rec.id}/payment", data={"method": "transfer", "paid_at": typed})
            assert odd.status_code == 422 and 'id="e-pay-paid_at"' in odd.text, typed
        done = await client.post(f"/service-records/{rec.id}/payment",
                                 data={"method": "transfer", "paid_at": "2026-11-30T15:30", "invoice_number": "FP-9"})
        assert done.status_code == 303
        assert done.headers["location"] == f"/bookings/{booking.id}?did=paid#payment"
        shown = (await client.get(done.headers["location"])).text
        assert "已登记付款，预约人会收到通知" in shown and "2026-11-30 15:30" in shown and "发票号 FP-9" in shown
        assert "撤销已付款记录" in shown and "登记付款（应收" not in shown
        empty_reason = await client.post(f"/service-records/{rec.id}/payment-reset", data={"reason": ""})
        assert empty_reason.status_code == 422 and 'id="e-reset-reason"' in empty_reason.text

    async def test_the_user_sees_the_state_but_no_forms(self, client: httpx.AsyncClient,
                                                       session: AsyncSession) -> None:
        w = await _world(session)
        await login_web(session, client, w["user"])
        page = (await client.get(f"/bookings/{w['booking'].id}")).text
        assert 'data-testid="payment-status"' in page and "待付款" in page and "收款后由管理员在此登记" in page
        assert "登记付款（应收" not in page and "免收费用" not in page
        r = await client.post(f"/service-records/{w['record'].id}/payment", data={"method": "cash"})
        assert r.status_code == 403


async def test_my_bookings_say_what_is_still_to_pay(client: httpx.AsyncClient, session: AsyncSession) -> None:
    w = await _world(session)
    await login_web(session, client, w["user"])
    listed = (await client.get("/bookings", params={"past": 1})).text
    assert "待付款 480.00 元" in listed
    w["record"].payment_status, w["record"].paid_at, w["record"].payment_method = "paid", NOW, "cash"
    w["record"].paid_amount = w["record"].amount
    await session.flush()
    assert "待付款" not in (await client.get("/bookings", params={"past": 1})).text


async def test_services_still_to_pay_are_listed_for_the_managers(client: httpx.AsyncClient,
                                                                  session: AsyncSession) -> None:
    w = await _world(session)
    mgr_h = await bearer_headers(session, w["manager"])
    r = await client.get("/api/v1/bookings", params={"scope": "managed", "unpaid": "true"}, headers=mgr_h)
    assert r.status_code == 200 and [b["id"] for b in r.json()["items"]] == [w["booking"].id]
    bad = await client.get("/api/v1/bookings", params={"unpaid": "true"}, headers=mgr_h)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "unpaid"
    await login_web(session, client, w["manager"])
    page = (await client.get("/manage/bookings", params={"view": "unpaid"})).text
    assert "待收款 480.00 元" in page and f'href="/bookings/{w["booking"].id}#payment"' in page
    w["record"].payment_status, w["record"].payment_note = "waived", "测试免收"
    await session.flush()
    assert "没有待收款的服务" in (await client.get("/manage/bookings", params={"view": "unpaid"})).text
    r = await client.get("/api/v1/bookings", params={"scope": "managed", "unpaid": "true"}, headers=mgr_h)
    assert r.json()["total"] == 0



async def test_a_fee_not_computed_is_paid_with_the_amount_received(client: httpx.AsyncClient,
                                                                     session: AsyncSession) -> None:
    """An instrument with only the free-text fee gives a record whose fee is not known: it is not 无需付费, it
    is on the list to collect, and the payment says how much was received."""
    from booking.usage.rules import NO_FEE_BASIS

    w = await _world(session, amount="0.00")
    w["record"].fee_basis = NO_FEE_BASIS
    await session.flush()
    mgr_h = await bearer_headers(session, w["manager"])
    url = f"/api/v1/service-records/{w['record'].id}/payment"
    listed = await client.get("/api/v1/bookings", params={"scope": "managed", "unpaid": "true"}, headers=mgr_h)
    assert listed.json()["total"] == 1
    missing = await client.post(url, headers=mgr_h, json={"method": "transfer"})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "amount"
    paid = await client.post(url, headers=mgr_h, json={"method": "transfer", "amount": "350.50"})
    assert paid.status_code == 200 and paid.json()["paid_amount"] == "350.50"


async def test_managers_of_another_facility_and_self_waivers(client: httpx.AsyncClient,
                                                              session: AsyncSession) -> None:
    from tests.factories import make_facility

    w = await _world(session)
    lab = await make_facility(session, w["owner"])
    other_lab = await make_facility(session, w["owner"], name="另一个实验室")
    w["inst"].facility_id = lab.id
    await session.flush()
    neighbour = await make_user(session, role=Role.facility_manager, grant_institution=w["owner"],
                                facility=other_lab)
    url = f"/api/v1/service-records/{w['record'].id}"
    r = await client.post(f"{url}/payment", headers=await bearer_headers(session, neighbour), json={"method": "cash"})
    assert r.status_code == 404
    # A manager who used the instrument themselves may record their payment, not waive their own fee.
    w["record"].user_id = w["manager"].id
    await session.flush()
    mgr_h = await bearer_headers(session, w["manager"])
    r = await client.post(f"{url}/waive", headers=mgr_h, json={"reason": "自己的测试"})
    assert r.status_code == 403 and "不能为自己使用的服务" in r.json()["detail"]


async def test_the_list_to_collect_follows_the_provider_on_the_record(client: httpx.AsyncClient,
                                                                       session: AsyncSession) -> None:
    """待收款 lists what the manager may settle: the institution the service was recorded for keeps its fees when
    the instrument moves on, and within it a facility's managers see their facility's instruments only."""
    from tests.factories import make_facility

    w = await _world(session)
    lab = await make_facility(session, w["owner"])
    other_lab = await make_facility(session, w["owner"], name="另一个实验室")
    w["inst"].facility_id = lab.id
    await session.flush()
    lab_manager = await make_user(session, role=Role.facility_manager, grant_institution=w["owner"], facility=lab)
    neighbour = await make_user(session, role=Role.facility_manager, grant_institution=w["owner"],
                                facility=other_lab)

    async def listed(user: Any) -> list[int]:
        r = await client.get("/api/v1/bookings", params={"scope": "managed", "unpaid": "true"},
                             headers=await bearer_headers(session, user))
        assert r.status_code == 200, r.text
        return [b["id"] for b in r.json()["items"]]

    booking_id = w["booking"].id
    assert await listed(w["manager"]) == await listed(lab_manager) == [booking_id]
    assert await listed(neighbour) == []

    new_owner = await make_institution(session, name="接收仪器的研究院")
    new_manager = await make_user(session, role=Role.facility_manager, grant_institution=new_owner)
    w["inst"].institution_id, w["inst"].facility_id = new_owner.id, None
    await session.flush()
    assert await listed(w["manager"]) == [booking_id]  # the old institution still collects the fee it earned
    assert await listed(lab_manager) == []  # the instrument is no longer in their facility
    assert await listed(new_manager) == []
    # The list and the permission agree: the old institution's manager may record it, the new one may not.
    url = f"/api/v1/service-records/{w['record'].id}/payment"
    r = await client.post(url, headers=await bearer_headers(session, new_manager), json={"method": "cash"})
    assert r.status_code == 404
    r = await client.post(url, headers=await bearer_headers(session, w["manager"]), json={"method": "cash"})
    assert r.status_code == 200, r.text
    assert await listed(w["manager"]) == []
