"""The availability and rules editor: managers only, every bad input a 422 naming the field with nothing
written, collisions listed and notified (bookings kept), everything in the activity log."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role
from booking.activity.models import ActivityEntry
from booking.reservations.models import Booking, BookingBlock
from scheduling.models import Blackout, InstrumentRules, OpeningWindow, Qualification
from tests.factories import bearer_headers, make_institution, make_instrument, make_schedule, make_user
from tests.ops_helpers import NOW, Clock, count, fresh, make_booking, notifications_of


async def _world(session: AsyncSession) -> dict[str, Any]:
    owner = await make_institution(session)
    inst = await make_instrument(session, owner, name="X射线衍射仪")
    await make_schedule(session, inst, windows=[(d, "08:00", "18:00") for d in range(5)])
    manager = await make_user(session, role=Role.facility_manager, grant_institution=owner)
    return {"inst": inst, "owner": owner, "manager": manager, "user": await make_user(session, name="王同学"),
            "other": await make_user(session), "outsider": await make_user(session, role=Role.facility_manager)}


async def _activity(session: AsyncSession, action: str) -> list[ActivityEntry]:
    return list(await session.scalars(select(ActivityEntry).where(ActivityEntry.action == action)))


def _fields(r: httpx.Response) -> set[str]:
    return {e["field"] for e in r.json()["errors"]}


class TestWindows:
    async def test_replace_lists_bookings_now_outside(self, client: httpx.AsyncClient, session: AsyncSession,
                                                      clock: Clock) -> None:
        w = await _world(session)
        # Wednesday 2026-12-02 16:00-17:00 local; the new windows close at 12:00.
        late = await make_booking(session, w["inst"], w["user"], NOW + timedelta(days=1, hours=16))
        morning = await make_booking(session, w["inst"], w["other"], NOW + timedelta(days=1, hours=9))
        r = await client.put(f"/api/v1/instruments/{w['inst'].id}/schedule/windows",
                             headers=await bearer_headers(session, w["manager"]),
                             json={"windows": [{"weekday": d, "start": "08:30", "end": "12:00"} for d in range(5)]
                                   + [{"weekday": 2, "start": "13:00", "end": "15:00", "valid_from": "2027-01-01"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["windows"]) == 6
        assert [a["booking_id"] for a in body["affected"]] == [late.id] and body["notified"] == 1
        assert body["affected"][0]["user_name"] == "王同学"
        assert (await fresh(session, Booking, late.id)).status == "confirmed"  # kept, never dropped
        assert (await fresh(session, Booking, morning.id)).status == "confirmed"
        assert len(await notifications_of(session, w["user"].id, "schedule.changed")) == 1
        entry = (await _activity(session, "schedule.updated"))[-1]
        assert entry.actor_id == w["manager"].id and len(entry.after["windows"]) == 6  # type: ignore[index]

    async def test_every_problem_named_nothing_written(self, client: httpx.AsyncClient, session: AsyncSession,
                                                       clock: Clock) -> None:
        w = await _world(session)
        before = await count(session, OpeningWindow, OpeningWindow.instrument_id == w["inst"].id)
        r = await client.put(f"/api/v1/instruments/{w['inst'].id}/schedule/windows",
                             headers=await bearer_headers(session, w["manager"]), json={"windows": [
                                 {"weekday": 0, "start": "09:00", "end": "12:00"},
                                 {"weekday": 0, "start": "11:00", "end": "13:00"},
                                 {"weekday": 1, "start": "14:00", "end": "10:00"},
                                 {"weekday": 2, "start": "09:00", "end": "10:00", "valid_from": "2027-02-01",
                                  "valid_to": "2027-01-01"}]})
        assert r.status_code == 422
        assert _fields(r) == {"windows[1].start", "windows[2].end", "windows[3].valid_to"}
        assert all(e["message"] for e in r.json()["errors"])
        assert await count(session, OpeningWindow, OpeningWindow.instrument_id == w["inst"].id) == before

    async def test_schema_errors_name_the_field(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await _world(session)
        r = await client.post(f"/api/v1/instruments/{w['inst'].id}/schedule/windows",
                              headers=await bearer_headers(session, w["manager"]),
                              json={"weekday": 7, "start": "9点", "end": "12:00+08:00"})
        assert r.status_code == 422
        assert _fields(r) == {"weekday", "start", "end"}

    async def test_add_and_delete_one(self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        w = await _world(session)
        headers = await bearer_headers(session, w["manager"])
        r = await client.post(f"/api/v1/instruments/{w['inst'].id}/schedule/windows", headers=headers,
                              json={"weekday": 5, "start": "09:00", "end": "12:00"})
        assert r.status_code == 201, r.text
        added = next(x for x in r.json()["windows"] if x["weekday"] == 5)
        overlap = await client.post(f"/api/v1/instruments/{w['inst'].id}/schedule/windows", headers=headers,
                                    json={"weekday": 5, "start": "11:00", "end": "13:00"})
        assert overlap.status_code == 422 and _fields(overlap) == {"start"}
        r = await client.delete(f"/api/v1/instruments/{w['inst'].id}/schedule/windows/{added['id']}", headers=headers)
        assert r.status_code == 200 and all(x["weekday"] != 5 for x in r.json()["windows"])

    async def test_other_managers_and_researchers_are_refused(self, client: httpx.AsyncClient,
                                                              session: AsyncSession) -> None:
        w = await _world(session)
        for who in ("outsider", "user"):
            r = await client.put(f"/api/v1/instruments/{w['inst'].id}/schedule/windows",
                                 headers=await bearer_headers(session, w[who]), json={"windows": []})
            assert r.status_code == 403
        assert await count(session, OpeningWindow, OpeningWindow.instrument_id == w["inst"].id) == 5


class TestOverrides:
    async def test_closed_day_lists_bookings_and_validates(self, client: httpx.AsyncClient, session: AsyncSession,
                                                           clock: Clock) -> None:
        w = await _world(session)
        b = await make_booking(session, w["inst"], w["user"], NOW + timedelta(days=2, hours=10))  # 12-03 10:00
        headers = await bearer_headers(session, w["manager"])
        bad = await client.put(f"/api/v1/instruments/{w['inst'].id}/schedule/overrides", headers=headers,
                               json={"day": "2026-11-20", "windows": []})
        assert bad.status_code == 422 and _fields(bad) == {"day", "reason"}
        r = await client.put(f"/api/v1/instruments/{w['inst'].id}/schedule/overrides", headers=headers,
                             json={"day": "2026-12-03", "windows": [], "reason": "停电检修"})
        assert r.status_code == 200, r.text
        assert [a["booking_id"] for a in r.json()["affected"]] == [b.id]
        assert r.json()["overrides"][0]["day"] == "2026-12-03"
        # Setting the same day again replaces it (one override per date); opening it again affects nobody new.
        r = await client.put(f"/api/v1/instruments/{w['inst'].id}/schedule/overrides", headers=headers,
                             json={"day": "2026-12-03", "windows": [{"start": "09:00", "end": "12:00"}]})
        assert r.status_code == 200 and r.json()["affected"] == []
        assert len(r.json()["overrides"]) == 1
        assert len(await _activity(session, "schedule.override_set")) >= 2


class TestBlackouts:
    async def test_one_off_lists_colliding_bookings_and_notifies(self, client: httpx.AsyncClient,
                                                                 session: AsyncSession, clock: Clock) -> None:
        w = await _world(session)
        hit = await make_booking(session, w["inst"], w["user"], NOW + timedelta(days=1, hours=10))
        pending = await make_booking(session, w["inst"], w["other"], NOW + timedelta(days=1, hours=12),
                                     status="pending")
        cancelled = await make_booking(session, w["inst"], w["other"], NOW + timedelta(days=1, hours=13),
                                       status="cancelled")
        clear = await make_booking(session, w["inst"], w["other"], NOW + timedelta(days=2, hours=10))
        r = await client.post(f"/api/v1/instruments/{w['inst'].id}/schedule/blackouts",
                              headers=await bearer_headers(session, w["manager"]),
                              json={"reason": "年度校准", "starts_at": "2026-12-02T09:00:00+08:00",
                                    "ends_at": "2026-12-02T13:00:00+08:00"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert sorted(c["booking_id"] for c in body["colliding"]) == sorted([hit.id, pending.id])
        assert body["notified"] == 2
        assert body["colliding"][0]["closures"][0]["reason"] == "年度校准"
        for b in (hit, pending, cancelled, clear):
            assert (await fresh(session, Booking, b.id)).status == b.status  # nothing dropped or changed
        notes = await notifications_of(session, w["user"].id, "schedule.blackout")
        assert len(notes) == 1 and "年度校准" in notes[0].body and "X射线衍射仪" in notes[0].title
        assert notes[0].body.count("年度校准") == 1, notes[0].body  # the reason once, with its times
        entry = (await _activity(session, "blackout.created"))[-1]
        assert entry.actor_id == w["manager"].id
        assert sorted(entry.after["colliding_bookings"]) == sorted([hit.id, pending.id])  # type: ignore[index]
        # The blackout closes the time for new bookings.
        slots = await client.get(f"/api/v1/instruments/{w['inst'].id}/availability",
                                 params={"from": "2026-12-02T00:00:00+08:00", "to": "2026-12-03T00:00:00+08:00"})
        starts = [s["start"] for s in slots.json()["slots"]]
        assert not any(s.startswith("2026-12-02T02:") or s.startswith("2026-12-02T03:") for s in starts)

    async def test_weekly_recurring_collides_on_its_weekday_only(self, client: httpx.AsyncClient,
                                                                 session: AsyncSession, clock: Clock) -> None:
        w = await _world(session)
        # Mondays 12-07 and 12-14 at 08:00 local collide; Tuesday 12-08 does not.
        mondays = [await make_booking(session, w["inst"], w["user"], NOW + timedelta(days=d, hours=8))
                   for d in (6, 13)]
        await make_booking(session, w["inst"], w["user"], NOW + timedelta(days=7, hours=8))
        r = await client.post(f"/api/v1/instruments/{w['inst'].id}/schedule/blackouts",
                              headers=await bearer_headers(session, w["manager"]),
                              json={"reason": "每周一例行维护", "weekday": 0, "start_time": "08:00",
                                    "end_time": "10:00", "valid_to": "2026-12-31"})
        assert r.status_code == 201, r.text
        assert sorted(c["booking_id"] for c in r.json()["colliding"]) == sorted(b.id for b in mondays)

    @pytest.mark.parametrize(("payload", "fields"), [
        ({"reason": "维护"}, {"starts_at"}),
        ({"reason": "维护", "starts_at": "2026-12-02T09:00:00+08:00", "weekday": 1}, {"weekday"}),
        ({"reason": "维护", "starts_at": "2026-12-02T09:00:00+08:00", "ends_at": "2026-12-02T08:00:00+08:00"},
         {"ends_at"}),
        ({"reason": "维护", "starts_at": "2026-12-02T09:00:00", "ends_at": "2026-12-02T10:00:00"},
         {"starts_at", "ends_at"}),
        ({"reason": "维护", "weekday": 1, "start_time": "10:00", "end_time": "09:00"}, {"end_time"}),
        ({"reason": "维护", "weekday": 1}, {"start_time", "end_time"}),
        ({"reason": "", "starts_at": "2026-12-02T09:00:00+08:00", "ends_at": "2026-12-02T10:00:00+08:00"},
         {"reason"}),
        ({"reason": "维护", "starts_at": "2026-11-01T09:00:00+08:00", "ends_at": "2026-11-01T10:00:00+08:00"},
         {"ends_at"}),
    ])
    async def test_bad_input(self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock,
                             payload: dict[str, Any], fields: set[str]) -> None:
        w = await _world(session)
        r = await client.post(f"/api/v1/instruments/{w['inst'].id}/schedule/blackouts",
                              headers=await bearer_headers(session, w["manager"]), json=payload)
        assert r.status_code == 422, r.text
        assert _fields(r) == fields
        assert await count(session, Blackout, Blackout.instrument_id == w["inst"].id) == 0


class TestRules:
    async def test_every_problem_at_once_nothing_written(self, client: httpx.AsyncClient, session: AsyncSession,
                                                         clock: Clock) -> None:
        w = await _world(session)
        r = await client.put(f"/api/v1/instruments/{w['inst'].id}/rules",
                             headers=await bearer_headers(session, w["manager"]),
                             json={"granularity_min": 7, "min_duration_min": 120, "max_duration_min": 60,
                                   "buffer_before_min": -5, "max_user_hours_week": 0, "no_show_grace_min": 0})
        assert r.status_code == 422
        assert _fields(r) == {"granularity_min", "max_duration_min", "buffer_before_min", "max_user_hours_week",
                              "no_show_grace_min"}
        row = await fresh_rules(session, w["inst"].id)
        assert row.granularity_min == 30 and row.buffer_before_min == 0

    async def test_saved_recorded_and_applied(self, client: httpx.AsyncClient, session: AsyncSession,
                                              clock: Clock) -> None:
        w = await _world(session)
        r = await client.put(f"/api/v1/instruments/{w['inst'].id}/rules",
                             headers=await bearer_headers(session, w["manager"]),
                             json={"granularity_min": 60, "min_duration_min": 60, "max_duration_min": 240,
                                   "min_lead_min": 0, "approval_required": True, "buffer_after_min": 30,
                                   "no_show_grace_min": 15, "follow_holidays": False})
        assert r.status_code == 200, r.text
        assert r.json()["granularity_min"] == 60 and r.json()["updated_by"] == w["manager"].id
        entry = (await _activity(session, "rules.updated"))[-1]
        assert entry.before["granularity_min"] == 30 and entry.after["granularity_min"] == 60  # type: ignore[index]
        booking = await client.post("/api/v1/bookings", headers=await bearer_headers(session, w["user"]), json={
            "instrument_id": w["inst"].id, "start": "2026-12-02T09:30:00+08:00", "end": "2026-12-02T10:30:00+08:00",
            "purpose": "粉末衍射"})
        assert booking.status_code == 422 and "start_not_aligned" in {e["code"] for e in booking.json()["errors"]}

    async def test_database_refuses_what_the_check_refuses(self, session: AsyncSession) -> None:
        w = await _world(session)
        row = await fresh_rules(session, w["inst"].id)
        row.granularity_min = 7
        with pytest.raises(IntegrityError, match="ck_booking_rules_granularity"):
            async with session.begin_nested():
                await session.flush()


async def fresh_rules(session: AsyncSession, instrument_id: int) -> InstrumentRules:
    return (await session.execute(select(InstrumentRules).where(InstrumentRules.instrument_id == instrument_id)
                                  .execution_options(populate_existing=True))).scalar_one()


class TestHolidays:
    async def test_package_beside_overrides(self, client: httpx.AsyncClient, session: AsyncSession,
                                            clock: Clock) -> None:
        admin = await make_user(session, role=Role.platform_admin, institution_id=None)
        headers = await bearer_headers(session, admin)
        r = await client.get("/api/v1/admin/holidays", headers=headers, params={"year": 2026})
        assert r.status_code == 200
        body = r.json()
        assert body["package_has_schedule"] is True
        days = {d["day"]: d for d in body["package"]}
        assert days["2026-10-01"]["kind"] == "closed" and any(d["kind"] == "open" for d in body["package"])
        r = await client.post("/api/v1/admin/holidays", headers=headers,
                              json={"day": "2026-10-09", "kind": "closed", "name": "校庆停开"})
        assert r.status_code == 201, r.text
        body = (await client.get("/api/v1/admin/holidays", headers=headers, params={"year": 2026})).json()
        assert [o["day"] for o in body["overrides"]] == ["2026-10-09"]
        assert {"day": "2026-10-09", "kind": "closed", "name": "校庆停开"} in body["effective"]
        assert "2026-10-09" not in {d["day"] for d in body["package"]}
        assert (await _activity(session, "holiday.override_set"))[-1].actor_id == admin.id
        assert (await client.delete("/api/v1/admin/holidays/2026-10-09", headers=headers)).status_code == 204
        assert (await client.delete("/api/v1/admin/holidays/2026-10-09", headers=headers)).status_code == 404

    async def test_bad_input_and_non_admin(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        admin = await make_user(session, role=Role.platform_admin, institution_id=None)
        r = await client.post("/api/v1/admin/holidays", headers=await bearer_headers(session, admin),
                              json={"day": "2026-13-01", "kind": "maybe", "name": ""})
        assert r.status_code == 422 and _fields(r) == {"day", "kind", "name"}
        manager = await make_user(session, role=Role.facility_manager)
        r = await client.get("/api/v1/admin/holidays", headers=await bearer_headers(session, manager),
                             params={"year": 2026})
        assert r.status_code == 403


class TestQualifications:
    async def test_grant_by_email_list_renew_revoke(self, client: httpx.AsyncClient, session: AsyncSession,
                                                    clock: Clock) -> None:
        w = await _world(session)
        w["inst"].qualification_required = True
        await session.flush()
        headers = await bearer_headers(session, w["manager"])
        user_headers = await bearer_headers(session, w["user"])
        body = {"instrument_id": w["inst"].id, "start": "2026-12-02T09:00:00+08:00",
                "end": "2026-12-02T10:00:00+08:00", "purpose": "粉末衍射"}
        refused = await client.post("/api/v1/bookings", headers=user_headers, json=body)
        assert "not_qualified" in {e["code"] for e in refused.json()["errors"]}
        path = f"/api/v1/instruments/{w['inst'].id}/qualifications"
        r = await client.post(path, headers=headers, json={"email": w["user"].email.upper(), "valid_until": "2027-06-30"})
        assert r.status_code == 201, r.text
        assert r.json()["user_id"] == w["user"].id and r.json()["expired"] is False
        assert (await client.post("/api/v1/bookings", headers=user_headers, json=body)).status_code == 201
        r = await client.post(path, headers=headers, json={"user_id": w["user"].id, "valid_until": "2027-12-31"})
        assert r.status_code == 201
        listed = (await client.get(path, headers=headers)).json()
        assert [(q["user_id"], q["valid_until"]) for q in listed] == [(w["user"].id, "2027-12-31")]
        assert {e.action for e in await _activity(session, "qualification.granted")} == {"qualification.granted"}
        assert len(await notifications_of(session, w["user"].id, "qualification.granted")) == 2
        assert (await client.delete(f"{path}/{w['user'].id}", headers=headers)).status_code == 204
        assert (await client.get(path, headers=headers)).json() == []
        assert (await client.delete(f"{path}/{w['user'].id}", headers=headers)).status_code == 404

    async def test_renewal_rearms_the_expiry_notice(self, client: httpx.AsyncClient, session: AsyncSession,
                                                    clock: Clock) -> None:
        w = await _world(session)
        q = Qualification(instrument_id=w["inst"].id, user_id=w["user"].id, valid_until=date(2026, 11, 1),
                          expired_notified_at=NOW - timedelta(days=20))
        session.add(q)
        await session.flush()
        r = await client.post(f"/api/v1/instruments/{w['inst'].id}/qualifications",
                              headers=await bearer_headers(session, w["manager"]),
                              json={"user_id": w["user"].id, "valid_until": "2027-01-31"})
        assert r.status_code == 201
        row = await fresh(session, Qualification, q.id)
        assert row.valid_until == date(2027, 1, 31) and row.expired_notified_at is None

    @pytest.mark.parametrize(("payload", "fields"), [
        ({"valid_until": "2027-01-01"}, {"user_id"}),
        ({"email": "nobody@example.cn", "valid_until": "2027-01-01"}, {"email"}),
        ({"user_id": 99999999, "valid_until": "2027-01-01"}, {"user_id"}),
        ({"email": "x@example.cn", "user_id": 1, "valid_until": "2027-01-01"}, {"email"}),
        ({"email": "not-an-email", "valid_until": "2027-01-01"}, {"email"}),
        ({"user_id": 1, "valid_until": "2026-11-01"}, {"valid_until"}),
        ({"user_id": 1, "valid_until": "2040-01-01"}, {"valid_until"}),
    ])
    async def test_bad_input(self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock,
                             payload: dict[str, Any], fields: set[str]) -> None:
        w = await _world(session)
        payload = {k: (w["user"].id if k == "user_id" and v == 1 else v) for k, v in payload.items()}
        r = await client.post(f"/api/v1/instruments/{w['inst'].id}/qualifications",
                              headers=await bearer_headers(session, w["manager"]), json=payload)
        assert r.status_code == 422, r.text
        assert _fields(r) == fields
        assert await count(session, Qualification, Qualification.instrument_id == w["inst"].id) == 0


class TestBlocks:
    async def test_manager_lifts_with_a_reason(self, client: httpx.AsyncClient, session: AsyncSession,
                                               clock: Clock) -> None:
        w = await _world(session)
        await make_booking(session, w["inst"], w["user"], NOW - timedelta(days=3), status="no_show")
        session.add(BookingBlock(user_id=w["user"].id, reason="90 天内爽约 3 次"))
        await session.flush()
        listed = await client.get(f"/api/v1/instruments/{w['inst'].id}/blocks",
                                  headers=await bearer_headers(session, w["manager"]))
        assert [b["user_id"] for b in listed.json()] == [w["user"].id]
        path = f"/api/v1/users/{w['user'].id}/lift-block"
        r = await client.post(path, headers=await bearer_headers(session, w["user"]), json={"reason": "我自己解除"})
        assert r.status_code == 403
        r = await client.post(path, headers=await bearer_headers(session, w["manager"]), json={"reason": ""})
        assert r.status_code == 422 and _fields(r) == {"reason"}
        r = await client.post(path, headers=await bearer_headers(session, w["manager"]),
                              json={"reason": "已说明情况，恢复预约"})
        assert r.status_code == 200, r.text
        assert r.json()["lifted_at"] is not None and r.json()["lift_reason"] == "已说明情况，恢复预约"
        assert await count(session, BookingBlock, BookingBlock.user_id == w["user"].id,
                           BookingBlock.lifted_at.is_(None)) == 0
        assert (await _activity(session, "booking_block.lifted"))[-1].actor_id == w["manager"].id
        assert len(await notifications_of(session, w["user"].id, "booking.unblocked")) == 1
        again = await client.post(path, headers=await bearer_headers(session, w["manager"]), json={"reason": "再次解除"})
        assert again.status_code == 404
