"""The waitlist: freed time goes to waiting users in order as a held booking that expires and passes on; accepting
after expiry is 410; bad input is refused with nothing stored."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import User
from booking.reservations.models import Booking
from booking.reservations.service import transition
from instruments.models import Instrument
from scheduling import waitlist
from scheduling.conflict_models import WaitlistEntry, WaitlistOffer
from scheduling.runner import load_jobs, registered_jobs, run_job_once
from tests.factories import bearer_headers, login_web, principal_for
from tests.ops_helpers import NOW, Clock, fresh, notifications_of
from tests.scheduling.conflict_world import World, at, book, make_world


def job(name: str) -> Any:
    load_jobs()
    return {j.name: j for j in registered_jobs()}[name]


async def _join(client: httpx.AsyncClient, session: AsyncSession, user: User, inst: Instrument, start: datetime,
                end: datetime, **extra: Any) -> httpx.Response:
    return await client.post("/api/v1/waitlist", headers=await bearer_headers(session, user), json={
        "instrument_id": inst.id, "start": start.isoformat(), "end": end.isoformat(), "purpose": "等候测样", **extra})


async def _taken(client: httpx.AsyncClient, session: AsyncSession, w: World, inst: Instrument | None = None,
                 start: int = 10, end: int = 12, day: int = 0) -> int:
    r = await book(client, session, w.researcher, inst or w.x, at(start, day=day), at(end, day=day))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _cancel(client: httpx.AsyncClient, session: AsyncSession, user: User, booking_id: int) -> None:
    r = await client.post(f"/api/v1/bookings/{booking_id}/cancel", headers=await bearer_headers(session, user))
    assert r.status_code == 200, r.text


async def _offer_let_lapse(client: httpx.AsyncClient, session: AsyncSession, clock: Clock
                           ) -> tuple[World, dict[str, Any], int]:
    """Two users wait for a taken slot; it is freed and held for the first, whose hold then lapses before the job
    runs. Returns the world, the lapsed offer and the second user's waitlist entry id."""
    w = await make_world(session)
    taken = await _taken(client, session, w)
    first = (await _join(client, session, w.researcher2, w.x, at(10), at(12))).json()["id"]
    second = (await _join(client, session, w.researcher3, w.x, at(10), at(12))).json()["id"]
    await _cancel(client, session, w.researcher, taken)
    offer = (await _entry(client, session, w.researcher2, first))["offer"]
    clock.advance(minutes=31)  # the job has not run yet
    return w, offer, second


async def _entries(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(WaitlistEntry)) or 0)


async def _entry(client: httpx.AsyncClient, session: AsyncSession, user: User, entry_id: int) -> dict[str, Any]:
    r = await client.get(f"/api/v1/waitlist/{entry_id}", headers=await bearer_headers(session, user))
    assert r.status_code == 200, r.text
    return dict(r.json())


class TestJoin:
    async def test_wait_for_a_taken_slot(self, client: httpx.AsyncClient, session: AsyncSession,
                                         clock: Clock) -> None:
        w = await make_world(session)
        await _taken(client, session, w)
        r = await _join(client, session, w.researcher2, w.x, at(10), at(12))
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["status"], body["kind"], body["duration_minutes"], body["position"]) == ("waiting", "slot", 120, 1)
        assert body["offer"] is None
        r = await _join(client, session, w.researcher3, w.x, at(10), at(12))
        assert r.json()["position"] == 2

    async def test_free_time_is_offered_at_once(self, client: httpx.AsyncClient, session: AsyncSession,
                                                clock: Clock) -> None:
        w = await make_world(session)
        r = await _join(client, session, w.researcher2, w.x, at(9), at(18), duration_minutes=60)
        assert r.status_code == 201 and r.json()["status"] == "offered"
        offer = r.json()["offer"]
        assert datetime.fromisoformat(offer["start"]) == at(9) and offer["seconds_left"] == 30 * 60

    @pytest.mark.parametrize("case,field", [
        ("short_window", "end"), ("past", "end"), ("reversed", "end"), ("grid", "duration_minutes"),
    ])
    async def test_bad_input_names_the_field_and_stores_nothing(self, client: httpx.AsyncClient,
                                                                session: AsyncSession, clock: Clock, case: str,
                                                                field: str) -> None:
        w = await make_world(session)
        start, end, extra = at(10), at(12), {}
        if case == "short_window":
            extra = {"duration_minutes": 180}
        elif case == "past":
            start, end = NOW - timedelta(hours=3), NOW - timedelta(hours=1)
        elif case == "reversed":
            start, end = at(12), at(10)
        elif case == "grid":
            extra = {"duration_minutes": 45}
        before = await _entries(session)
        r = await _join(client, session, w.researcher2, w.x, start, end, **extra)
        assert r.status_code == 422, r.text
        assert field in {e["field"] for e in r.json()["errors"]}
        assert await _entries(session) == before

    async def test_an_instrument_the_user_may_never_book(self, client: httpx.AsyncClient, session: AsyncSession,
                                                         clock: Clock) -> None:
        w = await make_world(session)
        w.x.sharing_mode = "internal"
        await session.flush()
        r = await _join(client, session, w.researcher2, w.x, at(10), at(12))
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "instrument_id" and r.json()["errors"][0]["code"] == "internal_only"
        assert await _entries(session) == 0
        # Asking for an equivalent too makes it acceptable: the others may be booked.
        r = await _join(client, session, w.researcher2, w.x, at(10), at(12), any_equivalent=True)
        assert r.status_code == 201

    async def test_duplicate_is_409(self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        await _taken(client, session, w)
        assert (await _join(client, session, w.researcher2, w.x, at(10), at(12))).status_code == 201
        r = await _join(client, session, w.researcher2, w.x, at(11), at(12))
        assert r.status_code == 409 and await _entries(session) == 1


class TestOffers:
    async def test_cancellation_offers_the_slot_as_a_hold_and_the_user_accepts(
            self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        taken = await _taken(client, session, w)
        entry_id = (await _join(client, session, w.researcher2, w.x, at(10), at(12))).json()["id"]
        await _cancel(client, session, w.researcher, taken)
        entry = await _entry(client, session, w.researcher2, entry_id)
        assert entry["status"] == "offered"
        offer = entry["offer"]
        hold = await fresh(session, Booking, offer["booking_id"])
        assert (hold.status, hold.user_id, hold.instrument_id) == ("held", w.researcher2.id, w.x.id)
        assert hold.hold_expires_at == NOW + timedelta(minutes=30)
        [note] = await notifications_of(session, w.researcher2.id, "waitlist.offer")
        assert "已为您保留" in note.title
        # The hold is real: nobody else can take the slot meanwhile.
        r = await book(client, session, w.researcher3, w.x, at(10), at(12))
        assert r.status_code == 409
        r = await client.post(f"/api/v1/waitlist/offers/{offer['id']}/accept",
                              headers=await bearer_headers(session, w.researcher2))
        assert r.status_code == 200, r.text
        assert (r.json()["id"], r.json()["status"]) == (hold.id, "confirmed")
        assert (await _entry(client, session, w.researcher2, entry_id))["status"] == "fulfilled"
        r = await client.post(f"/api/v1/waitlist/offers/{offer['id']}/accept",
                              headers=await bearer_headers(session, w.researcher2))
        assert r.status_code == 409

    async def test_offers_go_by_priority_then_first_come_and_pass_on_when_declined(
            self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        taken = await _taken(client, session, w)
        first = (await _join(client, session, w.researcher2, w.x, at(10), at(12))).json()["id"]
        clock.advance(minutes=1)
        second = (await _join(client, session, w.researcher3, w.x, at(10), at(12))).json()["id"]
        # The manager raises the later entry's priority: it is offered first.
        r = await client.put(f"/api/v1/waitlist/{second}/priority", headers=await bearer_headers(session, w.manager),
                             json={"priority": 5})
        assert r.status_code == 200 and r.json()["priority"] == 5
        await _cancel(client, session, w.researcher, taken)
        assert (await _entry(client, session, w.researcher3, second))["status"] == "offered"
        assert (await _entry(client, session, w.researcher2, first))["status"] == "waiting"
        offer = (await _entry(client, session, w.researcher3, second))["offer"]
        r = await client.post(f"/api/v1/waitlist/offers/{offer['id']}/decline",
                              headers=await bearer_headers(session, w.researcher3))
        assert r.status_code == 200
        passed = await _entry(client, session, w.researcher3, second)
        assert passed["status"] == "waiting" and passed["offers"][0]["outcome"] == "declined"
        assert (await _entry(client, session, w.researcher2, first))["status"] == "offered"

    async def test_an_expired_hold_passes_to_the_next_user_through_the_job(
            self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        taken = await _taken(client, session, w)
        first = (await _join(client, session, w.researcher2, w.x, at(10), at(12))).json()["id"]
        clock.advance(minutes=1)
        second = (await _join(client, session, w.researcher3, w.x, at(10), at(12))).json()["id"]
        await _cancel(client, session, w.researcher, taken)
        offer = (await _entry(client, session, w.researcher2, first))["offer"]
        assert await run_job_once(job("release_holds"), clock.advance(minutes=29)) == 0
        assert await run_job_once(job("release_holds"), clock.advance(minutes=1)) == 1
        assert (await fresh(session, Booking, offer["booking_id"])).status == "expired"
        lapsed = await _entry(client, session, w.researcher2, first)
        assert lapsed["status"] == "waiting" and lapsed["offers"][0]["outcome"] == "expired"
        nxt = await _entry(client, session, w.researcher3, second)
        assert nxt["status"] == "offered"
        assert datetime.fromisoformat(nxt["offer"]["expires_at"]) == clock.now + timedelta(minutes=30)
        assert await notifications_of(session, w.researcher2.id, "booking.expire_hold")
        # Once the second user lets it pass too, the time is not offered again to the first: they let it go.
        clock.advance(minutes=31)
        assert await run_job_once(job("release_holds"), clock.now) == 1
        assert (await _entry(client, session, w.researcher2, first))["status"] == "waiting"

    async def test_accepting_after_expiry_is_410_and_the_slot_moves_on(
            self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        w, offer, second = await _offer_let_lapse(client, session, clock)
        r = await client.post(f"/api/v1/waitlist/offers/{offer['id']}/accept",
                              headers=await bearer_headers(session, w.researcher2))
        assert r.status_code == 410, r.text
        assert r.json()["errors"][0]["field"] == "offer"
        # The refusal kept its change: the hold is released and the next user holds the slot now.
        assert (await fresh(session, Booking, offer["booking_id"])).status == "expired"
        assert (await _entry(client, session, w.researcher3, second))["status"] == "offered"
        r = await client.post(f"/api/v1/waitlist/offers/{offer['id']}/accept",
                              headers=await bearer_headers(session, w.researcher2))
        assert r.status_code == 410

    async def test_accepting_after_expiry_on_the_page_also_moves_the_slot_on(
            self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        """The page shows the refusal again, in a savepoint that must keep what the 410 keeps."""
        w, offer, second = await _offer_let_lapse(client, session, clock)
        await login_web(session, client, w.researcher2)
        r = await client.post(f"/waitlist/offers/{offer['id']}/accept")
        assert r.status_code == 410 and "过期" in r.text
        assert (await fresh(session, Booking, offer["booking_id"])).status == "expired"
        client.cookies.clear()
        client.headers.pop("X-CSRF-Token", None)
        assert (await _entry(client, session, w.researcher3, second))["status"] == "offered"

    async def test_opted_in_auto_confirm_books_at_once(self, client: httpx.AsyncClient, session: AsyncSession,
                                                       clock: Clock) -> None:
        w = await make_world(session)
        taken = await _taken(client, session, w)
        entry_id = (await _join(client, session, w.researcher2, w.x, at(10), at(12), auto_confirm=True)).json()["id"]
        await _cancel(client, session, w.researcher, taken)
        entry = await _entry(client, session, w.researcher2, entry_id)
        assert entry["status"] == "fulfilled" and entry["offers"][0]["outcome"] == "auto_booked"
        booking = await fresh(session, Booking, entry["offers"][0]["booking_id"])
        assert (booking.status, booking.hold_expires_at) == ("confirmed", None)

    async def test_approval_instruments_hold_even_when_opted_in_and_accept_gives_pending(
            self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session, approval_required=True)
        taken = await _taken(client, session, w)  # pending requests hold their slot too
        entry_id = (await _join(client, session, w.researcher2, w.x, at(10), at(12), auto_confirm=True)).json()["id"]
        r = await client.post(f"/api/v1/bookings/{taken}/reject", headers=await bearer_headers(session, w.manager),
                              json={"note": "样品不符合要求"})
        assert r.status_code == 200
        offer = (await _entry(client, session, w.researcher2, entry_id))["offer"]
        assert offer is not None
        r = await client.post(f"/api/v1/waitlist/offers/{offer['id']}/accept",
                              headers=await bearer_headers(session, w.researcher2))
        assert r.status_code == 200 and r.json()["status"] == "pending"

    async def test_any_equivalent_takes_time_freed_on_an_equivalent(
            self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        for inst in (w.x, w.y):
            await _taken(client, session, w, inst)
        on_z = await _taken(client, session, w, w.z)
        entry_id = (await _join(client, session, w.researcher2, w.x, at(10), at(12), any_equivalent=True)).json()["id"]
        assert (await _entry(client, session, w.researcher2, entry_id))["status"] == "waiting"
        await _cancel(client, session, w.researcher, on_z)
        offer = (await _entry(client, session, w.researcher2, entry_id))["offer"]
        assert offer["instrument_id"] == w.z.id

    async def test_early_check_out_offers_the_rest_of_the_slot(self, client: httpx.AsyncClient,
                                                               session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        taken = await _taken(client, session, w)
        entry_id = (await _join(client, session, w.researcher2, w.x, at(11), at(12))).json()["id"]
        clock.now = at(10)
        headers = await bearer_headers(session, w.researcher)  # issued now: tokens live a day
        assert (await client.post(f"/api/v1/bookings/{taken}/check-in", headers=headers)).status_code == 200
        clock.now = at(10, 20)
        assert (await client.post(f"/api/v1/bookings/{taken}/check-out", headers=headers, json={})).status_code == 200
        offer = (await _entry(client, session, w.researcher2, entry_id))["offer"]
        assert offer is not None and datetime.fromisoformat(offer["start"]) == at(11)
        # The hold never outlasts the slot's start.
        assert datetime.fromisoformat(offer["expires_at"]) == at(10, 50)

    async def test_cancelling_the_entry_gives_the_hold_to_the_next(self, client: httpx.AsyncClient,
                                                                   session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        taken = await _taken(client, session, w)
        first = (await _join(client, session, w.researcher2, w.x, at(10), at(12))).json()["id"]
        second = (await _join(client, session, w.researcher3, w.x, at(10), at(12))).json()["id"]
        await _cancel(client, session, w.researcher, taken)
        r = await client.post(f"/api/v1/waitlist/{first}/cancel", headers=await bearer_headers(session, w.researcher2))
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert (await _entry(client, session, w.researcher3, second))["status"] == "offered"


class TestCatchUp:
    async def test_job_offers_time_freed_without_a_transition_and_lapses_old_entries(
            self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        manager = await principal_for(session, w.manager)
        from scheduling import editor
        from scheduling.schemas import BlackoutIn

        result = await editor.create_blackout(session, manager, w.x.id, BlackoutIn(  # type: ignore[arg-type]
            reason="真空维护", starts_at=at(8), ends_at=at(20)))
        entry_id = (await _join(client, session, w.researcher2, w.x, at(10), at(12))).json()["id"]
        await _taken(client, session, w, w.x, 19, 20, day=-1)  # today is the day before DAY: the slot is taken
        old = (await _join(client, session, w.researcher3, w.x, at(19, day=-1), at(20, day=-1))).json()["id"]
        assert (await _entry(client, session, w.researcher2, entry_id))["status"] == "waiting"
        await editor.delete_blackout(session, manager, w.x.id, result.blackout.id)  # type: ignore[arg-type]
        clock.advance(hours=20)
        assert await run_job_once(job("waitlist_catch_up"), clock.now) >= 2
        assert (await _entry(client, session, w.researcher2, entry_id))["status"] == "offered"
        assert (await _entry(client, session, w.researcher3, old))["status"] == "lapsed"


class TestPages:
    async def test_waitlist_page_shows_offer_with_countdown_and_accepts(self, client: httpx.AsyncClient,
                                                                        session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        taken = await _taken(client, session, w)
        await login_web(session, client, w.researcher2)
        r = await client.get(f"/waitlist/new?instrument_id={w.x.id}&start={at(10).isoformat()}"
                             f"&end={at(12).isoformat()}".replace("+", "%2B"))
        assert r.status_code == 200 and "加入候补" in r.text and w.y.name in r.text
        r = await client.post("/waitlist", data={"instrument_id": str(w.x.id), "kind": "slot",
                                                 "start": at(10).strftime("%Y-%m-%dT%H:%M"),
                                                 "end": at(12).strftime("%Y-%m-%dT%H:%M"), "purpose": ""})
        assert r.status_code == 422 and "用途" in r.text and await _entries(session) == 0
        r = await client.post("/waitlist", data={"instrument_id": str(w.x.id), "kind": "slot",
                                                 "start": at(10).strftime("%Y-%m-%dT%H:%M"),
                                                 "end": at(12).strftime("%Y-%m-%dT%H:%M"), "purpose": "测分子量"})
        assert r.status_code == 303 and r.headers["location"] == "/waitlist?joined=1"
        await _cancel(client, session, w.researcher, taken)
        r = await client.get("/waitlist")
        assert r.status_code == 200 and 'data-testid="offers"' in r.text and "data-expires=" in r.text
        offer_id = (await session.scalar(select(WaitlistOffer.id).where(WaitlistOffer.outcome == "open")))
        r = await client.post(f"/waitlist/offers/{offer_id}/accept")
        assert r.status_code == 303
        assert "已接受" in (await client.get(r.headers["location"])).text


async def test_system_transition_listener_failure_never_blocks_freeing(session: AsyncSession, clock: Clock,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    w = await make_world(session)
    principal = await principal_for(session, w.researcher)
    from booking.reservations import service as reservations
    from booking.reservations.schemas import BookingCreate

    booking = await reservations.create_booking(session, principal, BookingCreate(
        instrument_id=w.x.id, start=at(10), end=at(12), purpose="测样"))  # type: ignore[arg-type]

    async def broken(*args: Any) -> None:
        raise RuntimeError("listener bug")

    monkeypatch.setattr(waitlist, "offer_freed_time", broken)
    await transition(session, principal, booking.id, "cancel")  # type: ignore[arg-type]
    assert (await fresh(session, Booking, booking.id)).status == "cancelled"


async def test_my_waitlist_is_paged_and_held_slots_show_on_every_page(
        client: httpx.AsyncClient, session: AsyncSession, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduling import conflict_routes

    monkeypatch.setattr(conflict_routes, "WAITLIST_PAGE", 1)
    w = await make_world(session)
    morning = await _taken(client, session, w, start=10, end=12)
    await _taken(client, session, w, start=14, end=16)
    held = (await _join(client, session, w.researcher2, w.x, at(10), at(12))).json()["id"]
    waiting = (await _join(client, session, w.researcher2, w.x, at(14), at(16))).json()["id"]
    await _cancel(client, session, w.researcher, morning)  # the older entry is offered the morning
    assert (await _entry(client, session, w.researcher2, held))["status"] == "offered"
    await login_web(session, client, w.researcher2)
    page = await client.get("/waitlist")  # newest first: the waiting entry; the held slot above the list anyway
    assert "共 2 条候补记录，第 1–1 条" in page.text
    assert f"/waitlist/{waiting}/cancel" in page.text and f"/waitlist/{held}/cancel" not in page.text
    assert 'data-testid="offers"' in page.text
    assert "/waitlist?offset=1" in page.text
    page = await client.get("/waitlist", params={"offset": 1})
    assert f"/waitlist/{held}/cancel" in page.text and f"/waitlist/{waiting}/cancel" not in page.text
    assert 'hx-get="/waitlist?offset=1"' in page.text  # the refresh keeps the page
    assert (await client.get("/waitlist", params={"offset": -1})).status_code == 422


async def test_waiting_for_any_slot_needs_its_length(client: httpx.AsyncClient, session: AsyncSession,
                                                     clock: Clock) -> None:
    w = await make_world(session)
    await _taken(client, session, w)
    await login_web(session, client, w.researcher2)
    r = await client.post("/waitlist", data={"instrument_id": str(w.x.id), "kind": "window",
                                             "start": at(8).strftime("%Y-%m-%dT%H:%M"),
                                             "end": at(18).strftime("%Y-%m-%dT%H:%M"), "purpose": "测分子量",
                                             "duration_minutes": ""})
    assert r.status_code == 422 and "所需时长" in r.text and "请填写所需时长（分钟）" in r.text
    assert "600 分钟" not in r.text and await _entries(session) == 0
