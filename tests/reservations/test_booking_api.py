"""Creating bookings through the API: rules, conflicts with alternatives, lifecycle, service records."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role
from booking.activity.models import ActivityEntry
from booking.core.clock import set_clock
from booking.reservations.models import Booking
from booking.usage.models import ServiceRecord
from tests.factories import bearer_headers, make_institution, make_instrument, make_schedule, make_user


async def _world(session: AsyncSession, **rules: Any) -> dict[str, Any]:
    owner = await make_institution(session, name="四川大学测试", city_code="510100")
    other = await make_institution(session, name="绵阳测试研究院", city_code="510700")
    inst = await make_instrument(session, owner, name="液相色谱-质谱联用仪", fee_unit="hour",
                                 fee_internal=Decimal("200"), fee_external=Decimal("400"), fee_minimum=Decimal("300"))
    await make_schedule(session, inst, **rules)
    manager = await make_user(session, role=Role.facility_manager, grant_institution=owner)
    researcher = await make_user(session, institution=other)
    insider = await make_user(session, institution=owner)
    return {"inst": inst, "manager": manager, "researcher": researcher, "insider": insider, "owner": owner}


def _body(inst_id: int, start: str, end: str, **extra: Any) -> dict[str, Any]:
    return {"instrument_id": inst_id, "start": start, "end": end, "purpose": "测定样品分子量", **extra}


async def _count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Booking)) or 0)


class TestCreate:
    async def test_auto_confirm_and_activity(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                              json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T11:00:00+08:00",
                                         service_mode="technical", project_name="国家自然科学基金项目"))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["status"] == "confirmed"
        assert body["start"].startswith("2026-12-02T01:00:00")
        actions = set(await session.scalars(select(ActivityEntry.action).where(
            ActivityEntry.target_id == str(body["id"]))))
        assert "booking.created" in actions

    async def test_approval_required_gives_pending(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session, approval_required=True)
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                              json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00"))
        assert r.status_code == 201 and r.json()["status"] == "pending"

    @pytest.mark.parametrize("start,end", [
        ("2026-12-02T09:00:00", "2026-12-02T10:00:00"),
        ("2026-12-02 09:00", "2026-12-02 10:00"),
    ])
    async def test_naive_times_are_422_not_shifted(self, client: httpx.AsyncClient, session: AsyncSession,
                                                   start: str, end: str) -> None:
        w = await _world(session)
        before = await _count(session)
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                              json=_body(w["inst"].id, start, end))
        assert r.status_code == 422
        assert {"start", "end"} <= {e["field"] for e in r.json()["errors"]}
        assert await _count(session) == before

    async def test_every_rule_problem_at_once(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session, min_duration_min=60, max_duration_min=120, max_horizon_days=10)
        # Outside hours (07:10), off the 30-minute grid, beyond the horizon, longer than allowed.
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                              json=_body(w["inst"].id, "2026-12-20T07:10:00+08:00", "2026-12-20T12:10:00+08:00"))
        assert r.status_code == 422
        codes = {e["code"] for e in r.json()["errors"]}
        assert {"start_not_aligned", "beyond_horizon", "too_long", "outside_opening_hours"} <= codes, codes
        assert all(e["message"] for e in r.json()["errors"])

    async def test_end_before_start(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                              json=_body(w["inst"].id, "2026-12-02T11:00:00+08:00", "2026-12-02T09:00:00+08:00"))
        assert r.status_code == 422 and "end_not_after_start" in {e["code"] for e in r.json()["errors"]}

    async def test_in_the_past(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                              json=_body(w["inst"].id, "2026-11-28T09:00:00+08:00", "2026-11-28T10:00:00+08:00"))
        assert r.status_code == 422 and "in_past" in {e["code"] for e in r.json()["errors"]}

    async def test_internal_only_refuses_external_user(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        w["inst"].sharing_mode = "internal"
        await session.flush()
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                              json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00"))
        assert r.status_code == 422 and "internal_only" in {e["code"] for e in r.json()["errors"]}
        ok = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["insider"]),
                               json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00"))
        assert ok.status_code == 201

    async def test_unqualified_user(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        w["inst"].qualification_required = True
        await session.flush()
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                              json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00"))
        assert r.status_code == 422 and "not_qualified" in {e["code"] for e in r.json()["errors"]}

    @pytest.mark.parametrize("status", ["awaiting_repair", "awaiting_scrap", "frequent_fault"])
    async def test_unbookable_status(self, client: httpx.AsyncClient, session: AsyncSession, status: str) -> None:
        w = await _world(session)
        w["inst"].status = status
        await session.flush()
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                              json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00"))
        assert r.status_code == 422 and "instrument_not_bookable" in {e["code"] for e in r.json()["errors"]}

    async def test_unknown_instrument_404(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, user),
                              json=_body(987654, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00"))
        assert r.status_code == 404

    async def test_weekly_quota(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session, max_user_hours_week=3)
        headers = await bearer_headers(session, w["researcher"])
        ok = await client.post("/api/v1/bookings", headers=headers,
                               json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T11:00:00+08:00"))
        assert ok.status_code == 201
        over = await client.post("/api/v1/bookings", headers=headers,
                                 json=_body(w["inst"].id, "2026-12-03T09:00:00+08:00", "2026-12-03T11:00:00+08:00"))
        assert over.status_code == 422 and "user_week_quota" in {e["code"] for e in over.json()["errors"]}, over.text

    async def test_institution_monthly_quota_counts_colleagues(self, client: httpx.AsyncClient,
                                                               session: AsyncSession) -> None:
        w = await _world(session, max_institution_hours_month=3)
        colleague = await make_user(session, institution_id=w["researcher"].institution_id)
        ok = await client.post("/api/v1/bookings", headers=await bearer_headers(session, colleague),
                               json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T11:00:00+08:00"))
        assert ok.status_code == 201, ok.text
        over = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                                 json=_body(w["inst"].id, "2026-12-09T09:00:00+08:00", "2026-12-09T11:00:00+08:00"))
        assert over.status_code == 422, over.text
        assert "institution_month_quota" in {e["code"] for e in over.json()["errors"]}
        # Next month starts afresh; the owner's own staff are another institution.
        later = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                                  json=_body(w["inst"].id, "2027-01-05T09:00:00+08:00", "2027-01-05T11:00:00+08:00"))
        assert later.status_code == 201, later.text

    async def test_block_and_expired_qualification_reported_together(self, client: httpx.AsyncClient,
                                                                     session: AsyncSession) -> None:
        from datetime import date

        from booking.reservations.models import BookingBlock
        from scheduling.models import Qualification

        w = await _world(session)
        w["inst"].qualification_required = True
        session.add(Qualification(instrument_id=w["inst"].id, user_id=w["researcher"].id, valid_until=date(2026, 11, 30)))
        session.add(BookingBlock(user_id=w["researcher"].id, reason="三次未到"))
        await session.flush()
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                              json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00"))
        assert r.status_code == 422, r.text
        assert {"user_blocked", "not_qualified"} <= {e["code"] for e in r.json()["errors"]}

    async def test_qualification_valid_through_its_last_day(self, client: httpx.AsyncClient,
                                                            session: AsyncSession) -> None:
        from datetime import date

        from scheduling.models import Qualification

        w = await _world(session)
        w["inst"].qualification_required = True
        session.add(Qualification(instrument_id=w["inst"].id, user_id=w["researcher"].id, valid_until=date(2026, 12, 2)))
        await session.flush()
        headers = await bearer_headers(session, w["researcher"])
        last_day = await client.post("/api/v1/bookings", headers=headers,
                                     json=_body(w["inst"].id, "2026-12-02T19:00:00+08:00", "2026-12-02T19:30:00+08:00"))
        assert last_day.status_code == 201, last_day.text
        after = await client.post("/api/v1/bookings", headers=headers,
                                  json=_body(w["inst"].id, "2026-12-03T09:00:00+08:00", "2026-12-03T10:00:00+08:00"))
        assert after.status_code == 422 and "not_qualified" in {e["code"] for e in after.json()["errors"]}

    async def test_manager_override_with_reason(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        body = _body(w["inst"].id, "2026-12-02T20:00:00+08:00", "2026-12-02T21:00:00+08:00",
                     on_behalf_of=w["researcher"].id, override_reason="夜间加急检测")
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["manager"]), json=body)
        assert r.status_code == 201, r.text
        assert r.json()["user_id"] == w["researcher"].id and r.json()["created_by"] == w["manager"].id
        entry = (await session.scalars(select(ActivityEntry).where(ActivityEntry.action == "booking.created",
                                                                   ActivityEntry.target_id == str(r.json()["id"])))).one()
        assert "夜间加急检测" in entry.after["override_reason"]

    async def test_researcher_cannot_override_or_book_for_others(self, client: httpx.AsyncClient,
                                                                 session: AsyncSession) -> None:
        w = await _world(session)
        headers = await bearer_headers(session, w["researcher"])
        r = await client.post("/api/v1/bookings", headers=headers, json=_body(
            w["inst"].id, "2026-12-02T20:00:00+08:00", "2026-12-02T21:00:00+08:00", override_reason="我想要这个时段"))
        assert r.status_code == 422 and "not_allowed" in {e["code"] for e in r.json()["errors"]}
        r = await client.post("/api/v1/bookings", headers=headers, json=_body(
            w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00", on_behalf_of=w["insider"].id))
        assert r.status_code == 403


class TestConflicts:
    async def test_overlap_is_409_with_interval_and_alternatives(self, client: httpx.AsyncClient,
                                                                  session: AsyncSession) -> None:
        w = await _world(session, buffer_after_min=30)
        first = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["insider"]),
                                  json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T11:00:00+08:00"))
        assert first.status_code == 201
        before = await _count(session)
        # Starts when the first ends, but the first's 30-minute cool-down is still running.
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                              json=_body(w["inst"].id, "2026-12-02T11:00:00+08:00", "2026-12-02T12:00:00+08:00"))
        assert r.status_code == 409
        body = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert body["conflicts"][0]["start"].startswith("2026-12-02T01:00:00")
        alts = body["alternatives"]
        assert len(alts) >= 3
        assert all(a["instrument_id"] == w["inst"].id for a in alts)
        assert alts[0]["start"] == "2026-12-02T03:30:00+00:00"  # right after the cool-down
        assert await _count(session) == before

    async def test_cancelled_slot_is_free_again(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        headers = await bearer_headers(session, w["insider"])
        first = await client.post("/api/v1/bookings", headers=headers,
                                  json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00"))
        assert (await client.post(f"/api/v1/bookings/{first.json()['id']}/cancel", headers=headers)).status_code == 200
        again = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                                  json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00"))
        assert again.status_code == 201


class TestSeries:
    async def test_weekly_series_skip_conflicts(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["insider"]),
                          json=_body(w["inst"].id, "2026-12-09T09:00:00+08:00", "2026-12-09T10:00:00+08:00"))
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                              json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00",
                                         repeat_weekly=4, on_conflict="skip"))
        assert r.status_code == 201, r.text
        assert len(r.json()["created"]) == 3
        assert r.json()["skipped"][0]["start"].startswith("2026-12-09")

    async def test_weekly_series_fail_stores_nothing(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["insider"]),
                          json=_body(w["inst"].id, "2026-12-16T09:00:00+08:00", "2026-12-16T10:00:00+08:00"))
        before = await _count(session)
        r = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                              json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00",
                                         repeat_until="2026-12-30", on_conflict="fail"))
        assert r.status_code == 409
        assert any(e["field"] == "occurrence[3]" for e in r.json()["errors"])
        assert await _count(session) == before


class TestLifecycle:
    async def test_approve_check_in_out_creates_service_record(self, client: httpx.AsyncClient,
                                                               session: AsyncSession, frozen_now: Any) -> None:
        from datetime import timedelta

        from booking.core.clock import set_clock

        w = await _world(session, approval_required=True)
        user_h = await bearer_headers(session, w["researcher"])
        mgr_h = await bearer_headers(session, w["manager"])
        created = await client.post("/api/v1/bookings", headers=user_h,
                                    json=_body(w["inst"].id, "2026-12-01T09:00:00+08:00", "2026-12-01T11:00:00+08:00"))
        booking_id = created.json()["id"]
        assert created.json()["status"] == "pending"
        denied = await client.post(f"/api/v1/bookings/{booking_id}/approve", headers=user_h)
        assert denied.status_code == 403
        approved = await client.post(f"/api/v1/bookings/{booking_id}/approve", headers=mgr_h, json={"note": "同意"})
        assert approved.status_code == 200 and approved.json()["status"] == "confirmed"
        assert approved.json()["sequence"] == 1
        set_clock(lambda: frozen_now + timedelta(hours=9))  # 09:00 local
        assert (await client.post(f"/api/v1/bookings/{booking_id}/check-in", headers=user_h)).status_code == 200
        set_clock(lambda: frozen_now + timedelta(hours=10, minutes=40))  # 10:40 local
        out = await client.post(f"/api/v1/bookings/{booking_id}/check-out", headers=user_h, json={"samples": 3})
        assert out.status_code == 200, out.text
        rec = out.json()
        assert rec["hours"] == "1.75"  # 1 h 40 min rounded up to the quarter hour
        assert rec["is_external"] is True
        assert rec["amount"] == "700.00"  # external 400/h × 1.75 h
        assert "校外" in rec["fee_basis"] or "单位外" in rec["fee_basis"]
        again = await client.post(f"/api/v1/bookings/{booking_id}/check-out", headers=user_h)
        assert again.status_code == 409
        rated = await client.post(f"/api/v1/service-records/{rec['id']}/rating", headers=user_h,
                                  json={"rating": 5, "comment": "很好"})
        assert rated.status_code == 200 and rated.json()["rating"] == 5
        assert (await client.post(f"/api/v1/service-records/{rec['id']}/rating", headers=user_h,
                                  json={"rating": 4})).status_code == 409
        mine = await client.get("/api/v1/service-records", headers=user_h)
        assert mine.status_code == 200
        assert (mine.json()["total"], [r["id"] for r in mine.json()["items"]]) == (1, [rec["id"]])
        others = await client.get("/api/v1/service-records", headers=mgr_h)
        assert others.json()["total"] == 0  # the manager's own records, not the researcher's

    async def test_minimum_fee_for_internal_user(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        mgr_h = await bearer_headers(session, w["manager"])
        created = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["insider"]),
                                    json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00",
                                               service_mode="entrusted"))
        url = f"/api/v1/bookings/{created.json()['id']}/record-service"
        early = await client.post(url, headers=mgr_h)
        assert early.status_code == 422 and early.json()["errors"][0]["code"] == "not_started"
        set_clock(lambda: datetime(2026, 12, 2, 1, 30, tzinfo=UTC))  # 09:30 in Beijing: the service has begun
        rec = await client.post(url, headers=await bearer_headers(session, w["manager"]))
        assert rec.status_code == 200, rec.text
        assert rec.json()["amount"] == "300.00" and rec.json()["is_external"] is False
        assert rec.json()["service_mode"] == "entrusted"
        assert await session.scalar(select(func.count()).select_from(ServiceRecord)) >= 1

    async def test_no_show_only_after_the_grace_period(self, client: httpx.AsyncClient,
                                                       session: AsyncSession) -> None:
        w = await _world(session, no_show_grace_min=15)
        created = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["researcher"]),
                                    json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00"))
        url = f"/api/v1/bookings/{created.json()['id']}/no-show"
        set_clock(lambda: datetime(2026, 12, 2, 1, 14, tzinfo=UTC))  # 09:14: still within the grace period
        mgr_h = await bearer_headers(session, w["manager"])
        early = await client.post(url, headers=mgr_h)
        assert early.status_code == 422 and early.json()["errors"][0]["code"] == "too_early"
        set_clock(lambda: datetime(2026, 12, 2, 1, 15, tzinfo=UTC))
        assert (await client.post(url, headers=mgr_h)).status_code == 200

    async def test_cancel_after_deadline_refused_for_owner(self, client: httpx.AsyncClient,
                                                           session: AsyncSession) -> None:
        w = await _world(session, cancellation_deadline_h=48)
        headers = await bearer_headers(session, w["researcher"])
        created = await client.post("/api/v1/bookings", headers=headers,
                                    json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00"))
        r = await client.post(f"/api/v1/bookings/{created.json()['id']}/cancel", headers=headers)
        assert r.status_code == 422
        mgr = await client.post(f"/api/v1/bookings/{created.json()['id']}/cancel",
                                headers=await bearer_headers(session, w["manager"]))
        assert mgr.status_code == 200

    async def test_other_users_booking_is_404(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        created = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["insider"]),
                                    json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00"))
        r = await client.get(f"/api/v1/bookings/{created.json()['id']}",
                             headers=await bearer_headers(session, w["researcher"]))
        assert r.status_code == 404


class TestAvailability:
    async def test_slots_exclude_bookings_and_buffers(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session, buffer_after_min=30)
        await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["insider"]),
                          json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T11:00:00+08:00"))
        r = await client.get(f"/api/v1/instruments/{w['inst'].id}/availability",
                             params={"from": "2026-12-02T00:00:00+08:00", "to": "2026-12-03T00:00:00+08:00"})
        assert r.status_code == 200, r.text
        slots = r.json()["slots"]
        assert [(s["start"], s["end"]) for s in slots] == [
            # 08:00-08:30 local: a booking until 09:00 would need its own cool-down inside the next booking
            ("2026-12-02T00:00:00Z", "2026-12-02T00:30:00Z"),
            ("2026-12-02T03:30:00Z", "2026-12-02T12:00:00Z"),  # after 11:00 + 30 min cool-down, until 20:00
        ]

    async def test_naive_range_is_422(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        r = await client.get(f"/api/v1/instruments/{w['inst'].id}/availability",
                             params={"from": "2026-12-02T00:00:00", "to": "2026-12-03T00:00:00+08:00"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "from"

    async def test_holidays_closed_when_followed(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session, follow_holidays=True)
        r = await client.get(f"/api/v1/instruments/{w['inst'].id}/availability",
                             params={"from": "2026-12-31T00:00:00+08:00", "to": "2027-01-02T00:00:00+08:00"})
        assert r.status_code == 200
        body = r.json()
        assert "2027-01-01" in body["closed_days"]
        assert all(not s["start"].startswith("2027-01-01") for s in body["slots"])
        assert any(s["start"].startswith("2026-12-31") for s in body["slots"])


class TestLists:
    async def test_mine_and_managed(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        user_h, mgr_h = await bearer_headers(session, w["researcher"]), await bearer_headers(session, w["manager"])
        created = await client.post("/api/v1/bookings", headers=user_h,
                                    json=_body(w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00"))
        assert created.status_code == 201, created.text
        mine = (await client.get("/api/v1/bookings", headers=user_h)).json()
        assert [b["id"] for b in mine["items"]] == [created.json()["id"]]
        managed = (await client.get("/api/v1/bookings", params={"scope": "managed"}, headers=mgr_h)).json()
        assert [b["id"] for b in managed["items"]] == [created.json()["id"]]
        assert (await client.get("/api/v1/bookings", headers=mgr_h)).json()["total"] == 0

    async def test_managed_scope_is_for_managers(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        """The same rule as the 审批队列 page: someone with no manager role is told so, not shown an empty list."""
        w = await _world(session)
        r = await client.get("/api/v1/bookings", params={"scope": "managed"},
                             headers=await bearer_headers(session, w["researcher"]))
        assert r.status_code == 403 and "仪器管理员" in r.json()["detail"]

    async def test_a_manager_with_no_instruments_yet_sees_an_empty_list(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        fresh_institution = await make_institution(session, name="新加入的研究所")
        manager = await make_user(session, role=Role.facility_manager, grant_institution=fresh_institution)
        headers = await bearer_headers(session, manager)
        r = await client.get("/api/v1/bookings", params={"scope": "managed"}, headers=headers)
        assert r.status_code == 200 and r.json()["total"] == 0
