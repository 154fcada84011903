"""Calendar feeds, every one parsed with the strict `icalendar` package: my bookings behind a secret URL, an
instrument's public busy time, a facility's bookings for its managers, and the single-booking download."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import httpx
import icalendar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role
from booking.reservations.models import CalendarToken
from tests.factories import (
    bearer_headers,
    make_facility,
    make_institution,
    make_instrument,
    make_schedule,
    make_user,
)
from tests.ops_helpers import Clock


async def _world(session: AsyncSession) -> dict[str, Any]:
    owner = await make_institution(session, name="四川大学测试", address="成都市一环路南一段24号")
    lab = await make_facility(session, owner, name="分析测试中心")
    other_lab = await make_facility(session, owner, name="生命科学平台")
    inst = await make_instrument(session, owner, name="透射电子显微镜", facility_id=lab.id, street="望江校区化学楼101")
    await make_schedule(session, inst)
    return {
        "owner": owner, "lab": lab, "inst": inst,
        "researcher": await make_user(session, name="李研究"),
        "lab_manager": await make_user(session, role=Role.facility_manager, grant_institution=owner, facility=lab),
        "other_manager": await make_user(session, role=Role.facility_manager, grant_institution=owner,
                                         facility=other_lab),
    }


async def _book(client: httpx.AsyncClient, headers: dict[str, str], inst_id: int, start: str, end: str) -> dict[str, Any]:
    r = await client.post("/api/v1/bookings", headers=headers, json={
        "instrument_id": inst_id, "start": start, "end": end, "purpose": "观察纳米颗粒形貌（保密课题）"})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _events(text: str) -> dict[str, icalendar.Event]:
    cal = icalendar.Calendar.from_ical(text)
    assert cal.get("VERSION") == "2.0" and cal.get("PRODID")
    return {str(e["UID"]): e for e in cal.walk("VEVENT")}


def _utc(value: Any) -> datetime:
    return value.dt.astimezone(UTC)  # type: ignore[no-any-return]


class TestMyFeed:
    async def test_token_feed_status_sequence_and_times(self, client: httpx.AsyncClient, session: AsyncSession,
                                                        clock: Clock) -> None:
        w = await _world(session)
        headers = await bearer_headers(session, w["researcher"])
        kept = await _book(client, headers, w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T11:00:00+08:00")
        dropped = await _book(client, headers, w["inst"].id, "2026-12-03T14:00:00+08:00", "2026-12-03T15:30:00+08:00")
        r = await client.post("/api/v1/me/calendar-token", headers=headers)
        assert r.status_code == 201, r.text
        url = r.json()["url"]
        assert url.startswith("http") and "/calendar/my/" in url and url.endswith(".ics")
        path = url[url.index("/calendar/"):]
        feed = await client.get(path)
        assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/calendar")
        before = _events(feed.text)
        assert len(before) == 2
        uid = f"booking-{dropped['id']}@127.0.0.1"
        assert uid in before
        event = before[uid]
        assert str(event["STATUS"]) == "CONFIRMED" and int(event["SEQUENCE"]) == dropped["sequence"] == 0
        assert _utc(event["DTSTART"]) == datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
        assert _utc(event["DTEND"]) == datetime(2026, 12, 3, 7, 30, tzinfo=UTC)
        assert "透射电子显微镜" in str(event["SUMMARY"])
        assert "四川大学测试" in str(event["LOCATION"]) and "望江校区化学楼101" in str(event["LOCATION"])

        assert (await client.post(f"/api/v1/bookings/{dropped['id']}/cancel", headers=headers)).status_code == 200
        after = _events((await client.get(path)).text)
        assert set(after) == set(before)  # the UID is stable: clients update the event, not add one
        assert str(after[uid]["STATUS"]) == "CANCELLED"
        assert int(after[uid]["SEQUENCE"]) == 1 > int(before[uid]["SEQUENCE"])
        assert str(after[f"booking-{kept['id']}@127.0.0.1"]["STATUS"]) == "CONFIRMED"

    async def test_only_the_digest_is_stored_and_revoke_works(self, client: httpx.AsyncClient,
                                                              session: AsyncSession, clock: Clock) -> None:
        w = await _world(session)
        headers = await bearer_headers(session, w["researcher"])
        first = (await client.post("/api/v1/me/calendar-token", headers=headers)).json()["url"]
        secret = first.rsplit("/", 1)[1].removesuffix(".ics")
        rows = list(await session.scalars(select(CalendarToken).where(CalendarToken.user_id == w["researcher"].id)))
        assert [r.digest for r in rows] == [hashlib.sha256(secret.encode()).hexdigest()]
        assert secret not in {r.digest for r in rows}
        # A new URL replaces the old one.
        second = (await client.post("/api/v1/me/calendar-token", headers=headers)).json()["url"]
        assert (await client.get(first[first.index("/calendar/"):])).status_code == 404
        assert (await client.get(second[second.index("/calendar/"):])).status_code == 200
        assert (await client.delete("/api/v1/me/calendar-token", headers=headers)).status_code == 204
        assert (await client.get(second[second.index("/calendar/"):])).status_code == 404
        assert (await client.delete("/api/v1/me/calendar-token", headers=headers)).status_code == 404
        assert (await client.get("/calendar/my/not-a-real-token.ics")).status_code == 404


class TestInstrumentBusyFeed:
    async def test_public_without_personal_data(self, client: httpx.AsyncClient, session: AsyncSession,
                                                clock: Clock) -> None:
        w = await _world(session)
        headers = await bearer_headers(session, w["researcher"])
        await _book(client, headers, w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00")
        await _book(client, headers, w["inst"].id, "2026-12-02T10:00:00+08:00", "2026-12-02T12:00:00+08:00")
        r = await client.get(f"/calendar/instruments/{w['inst'].id}.ics")
        assert r.status_code == 200
        events = list(_events(r.text).values())
        # Touching bookings merge into one busy block.
        assert len(events) == 1
        assert _utc(events[0]["DTSTART"]) == datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
        assert _utc(events[0]["DTEND"]) == datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
        for private in ("李研究", "保密课题", w["researcher"].email, "booking-"):
            assert private not in r.text

    async def test_restricted_and_retired_are_404(self, client: httpx.AsyncClient, session: AsyncSession,
                                                  clock: Clock) -> None:
        owner = await make_institution(session)
        restricted = await make_instrument(session, owner, restricted=True)
        retired = await make_instrument(session, owner, retired_at=datetime(2026, 1, 1, tzinfo=UTC),
                                        retired_reason="报废")
        for inst in (restricted, retired):
            r = await client.get(f"/calendar/instruments/{inst.id}.ics")
            assert r.status_code == 404
        assert (await client.get("/calendar/instruments/99999999.ics")).status_code == 404


class TestFacilityFeed:
    async def test_managers_of_the_facility_only(self, client: httpx.AsyncClient, session: AsyncSession,
                                                 clock: Clock) -> None:
        w = await _world(session)
        booking = await _book(client, await bearer_headers(session, w["researcher"]), w["inst"].id,
                              "2026-12-04T09:00:00+08:00", "2026-12-04T10:00:00+08:00")
        path = f"/api/v1/facilities/{w['lab'].id}/calendar.ics"
        r = await client.get(path, headers=await bearer_headers(session, w["lab_manager"]))
        assert r.status_code == 200, r.text
        events = _events(r.text)
        event = events[f"booking-{booking['id']}@127.0.0.1"]
        assert "李研究" in str(event["DESCRIPTION"]) and int(event["SEQUENCE"]) == 0
        assert (await client.get(path, headers=await bearer_headers(session, w["other_manager"]))).status_code == 403
        assert (await client.get(path, headers=await bearer_headers(session, w["researcher"]))).status_code == 403
        assert (await client.get(path)).status_code == 401
        missing = await client.get("/api/v1/facilities/99999999/calendar.ics",
                                   headers=await bearer_headers(session, w["lab_manager"]))
        assert missing.status_code == 404


class TestSingleBookingIcs:
    async def test_download_parses_and_matches_the_feed_uid(self, client: httpx.AsyncClient,
                                                            session: AsyncSession, clock: Clock) -> None:
        w = await _world(session)
        headers = await bearer_headers(session, w["researcher"])
        booking = await _book(client, headers, w["inst"].id, "2026-12-02T09:00:00+08:00", "2026-12-02T10:00:00+08:00")
        r = await client.get(booking["ics_url"], headers=headers)
        assert r.status_code == 200
        events = _events(r.text)
        assert list(events) == [f"booking-{booking['id']}@127.0.0.1"]
