"""Allocation rounds: requests collected until the cutoff, previewed (every request gets a decision and a reason,
deterministically, within the caps and the external share), then published through the reservations service."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role, User
from booking.reservations.models import Booking
from scheduling import conflict_repository as repo
from scheduling import equivalence
from scheduling.conflict_models import FlexibleBooking
from scheduling.conflict_schemas import GroupIn
from tests.factories import bearer_headers, login_web, make_instrument, make_user, principal_for
from tests.ops_helpers import Clock, notifications_of
from tests.scheduling.conflict_world import World, at, book, make_world

DURATIONS = [120, 180, 240, 120, 180]


async def _round_world(client: httpx.AsyncClient, session: AsyncSession) -> tuple[World, dict[str, Any], list[User]]:
    """A 3-instrument group in rounds mode (cutoff Thursday 12:00, 6 h per user, 16 h per institution, 30%
    external) and 20 requests for Friday from 7 users of 3 institutions: oversubscribed (about 60 h asked, 36 h
    open)."""
    w = await make_world(session)
    admin = await bearer_headers(session, w.admin)
    r = await client.patch(f"/api/v1/equivalence-groups/{w.group.id}", headers=admin, json={  # type: ignore[union-attr]
        "allocation_mode": "rounds", "round_weekday": 3, "round_time": "12:00", "user_cap_hours": "6",
        "institution_cap_hours": "16", "external_min_share": "0.3"})
    assert r.status_code == 200, r.text
    users = [w.researcher, w.researcher2, w.researcher3,
             await make_user(session, institution=w.guest), await make_user(session, institution=w.owner),
             await make_user(session, institution=w.owner), await make_user(session, institution=w.mianyang)]
    instruments = [w.x, w.y, w.z]
    round_id = None
    for n in range(20):
        user = users[n % len(users)]
        inst = instruments[n % 3]
        r = await client.post("/api/v1/requests/flexible", headers=await bearer_headers(session, user), json={
            "instrument_id": inst.id, "any_equivalent": n % 4 != 0, "duration_minutes": DURATIONS[n % 5],
            "window_start": at(8, day=2).isoformat(), "window_end": at(20, day=2).isoformat(),
            "preferred_hours": [{"start": "08:00", "end": "12:00"}] if n % 3 == 0 else [],
            "purpose": f"第 {n + 1} 批样品"})
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "collected"
        round_id = round_id or r.json()["round_id"]
        assert r.json()["round_id"] == round_id
    return w, {"round_id": round_id, "admin": admin}, users


def _check_feasible(decisions: list[dict[str, Any]], requests: dict[int, FlexibleBooking], users: dict[int, User],
                    w: World) -> None:
    by_instrument: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    per_user: dict[int, int] = defaultdict(int)
    per_institution: dict[int, int] = defaultdict(int)
    external = granted = 0
    for d in decisions:
        assert d["reason"], d
        if not d["granted"]:
            continue
        req = requests[d["request_id"]]
        start, end = datetime.fromisoformat(d["start"]), datetime.fromisoformat(d["end"])
        assert end - start == timedelta(minutes=req.duration_minutes)
        assert at(8, day=2) <= start and end <= at(20, day=2)
        assert req.any_equivalent or d["instrument_id"] == req.instrument_id
        by_instrument[d["instrument_id"]].append((start, end))
        per_user[req.user_id] += req.duration_minutes
        institution = users[req.user_id].institution_id
        per_institution[institution] += req.duration_minutes  # type: ignore[index]
        granted += req.duration_minutes
        external += req.duration_minutes if institution == w.guest.id else 0
    for spans in by_instrument.values():
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(sorted(spans))), "overlap"
    assert max(per_user.values()) <= 6 * 60
    assert max(per_institution.values()) <= 16 * 60
    assert external >= 0.3 * granted


class TestRound:
    async def test_preview_then_publish(self, client: httpx.AsyncClient, session: AsyncSession,
                                        clock: Clock) -> None:
        w, ctx, users = await _round_world(client, session)
        rid, admin = ctx["round_id"], ctx["admin"]
        r = await client.post(f"/api/v1/rounds/{rid}/preview", headers=admin)
        assert r.status_code == 409 and r.json()["errors"][0]["code"] == "still_collecting"
        assert (await client.post(f"/api/v1/rounds/{rid}/close", headers=admin)).status_code == 200
        r = await client.post(f"/api/v1/rounds/{rid}/preview", headers=admin)
        assert r.status_code == 200, r.text
        preview = r.json()["preview"]
        decisions = preview["decisions"]
        assert len(decisions) == 20 and preview["requests"] == 20
        granted = [d for d in decisions if d["granted"]]
        refused = [d for d in decisions if not d["granted"]]
        assert granted and refused  # oversubscribed
        assert {d["code"] for d in refused} <= {"capacity", "user_cap", "institution_cap", "external_share", "no_fit"}
        assert preview["granted_hours"] <= preview["upper_bound_hours"]
        assert preview["granted_hours"] == sum(
            (datetime.fromisoformat(d["end"]) - datetime.fromisoformat(d["start"])).total_seconds() / 3600
            for d in granted)
        requests = {r.id: r for r in await session.scalars(select(FlexibleBooking))}  # type: ignore[misc]
        by_user = {u.id: u for u in users}
        _check_feasible(decisions, requests, by_user, w)  # type: ignore[arg-type]
        # Nothing is booked by a preview; the same input gives the same decisions.
        booked = await session.scalar(select(func.count()).select_from(Booking).where(
            Booking.user_id.in_([u.id for u in users])))  # type: ignore[attr-defined]
        assert booked == 0
        again = (await client.post(f"/api/v1/rounds/{rid}/preview", headers=admin)).json()["preview"]["decisions"]
        assert again == decisions

        # A manager books a granted slot directly between preview and publish (researchers cannot book an
        # instrument allocated by rounds): that request is refused, saying so.
        victim = granted[0]
        outsider = await make_user(session, institution=w.guest)
        r = await book(client, session, w.manager, await _inst(session, victim["instrument_id"]),
                       datetime.fromisoformat(victim["start"]), datetime.fromisoformat(victim["end"]),
                       on_behalf_of=outsider.id)
        assert r.status_code == 201
        r = await client.post(f"/api/v1/rounds/{rid}/publish", headers=admin)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "published"
        items = {i["id"]: i for i in body["items"]}
        assert items[victim["request_id"]]["status"] == "refused"
        assert "预览后该时段已不可用" in items[victim["request_id"]]["reason"]
        for d in granted[1:]:
            item = items[d["request_id"]]
            assert item["status"] == "granted" and item["booking_id"]
            booking = await session.get(Booking, item["booking_id"])
            assert booking is not None and booking.status == "confirmed"
            assert booking.user_id == requests[d["request_id"]].user_id and booking.created_by == w.admin.id
            assert booking.instrument_id == d["instrument_id"]
        for d in refused:
            assert items[d["request_id"]]["status"] == "refused" and items[d["request_id"]]["reason"] == d["reason"]
        assert body["preview"]["published"] == {"granted": len(granted) - 1, "refused": len(refused) + 1}
        assert await notifications_of(session, users[0].id)
        assert (await client.post(f"/api/v1/rounds/{rid}/publish", headers=admin)).status_code == 409

    async def test_only_managers_of_the_whole_group(self, client: httpx.AsyncClient, session: AsyncSession,
                                                    clock: Clock) -> None:
        w, ctx, _ = await _round_world(client, session)
        rid = ctx["round_id"]
        r = await client.post(f"/api/v1/rounds/{rid}/close", headers=await bearer_headers(session, w.manager))
        assert r.status_code == 403
        r = await client.get(f"/api/v1/rounds/{rid}", headers=await bearer_headers(session, w.researcher))
        assert r.status_code == 403
        assert (await client.get("/api/v1/rounds", headers=await bearer_headers(session, w.manager))).json() == []
        listed = (await client.get("/api/v1/rounds", headers=ctx["admin"])).json()
        assert [x["id"] for x in listed] == [rid] and listed[0]["requests"] == 20 and listed[0]["collecting"]

    async def test_pages(self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        w, ctx, _ = await _round_world(client, session)
        rid = ctx["round_id"]
        admin = await make_user(session, role=Role.platform_admin, institution_id=None)
        await login_web(session, client, admin)
        r = await client.get("/rounds")
        assert r.status_code == 200 and w.group.name in r.text  # type: ignore[union-attr]
        r = await client.post(f"/rounds/{rid}/preview")
        assert r.status_code == 409 and "立即截止" in r.text
        assert (await client.post(f"/rounds/{rid}/close")).status_code == 200
        r = await client.post(f"/rounds/{rid}/preview")
        assert r.status_code == 200 and 'data-testid="round-figures"' in r.text and r.text.count("round-row") == 20
        assert "发布并预约" in r.text
        r = await client.post(f"/rounds/{rid}/publish")
        assert r.status_code == 200 and "已发布" in r.text
        r = await client.get(f"/equivalence/{w.group.id}")  # type: ignore[union-attr]
        assert r.status_code == 200 and "按轮次分配" in r.text and f"/rounds/{rid}" in r.text


async def _inst(session: AsyncSession, instrument_id: int) -> Any:
    from instruments.models import Instrument

    return await session.get(Instrument, instrument_id)


class TestDirectBookingInRoundsMode:
    async def test_researchers_must_go_through_the_round(self, client: httpx.AsyncClient, session: AsyncSession,
                                                         clock: Clock) -> None:
        w = await make_world(session)
        assert w.group is not None
        w.group.allocation_mode = "rounds"
        w.group.round_weekday, w.group.round_time = 4, datetime.min.time().replace(hour=17)
        await session.flush()
        before = len(await bookings_of_user(session, w.researcher))
        r = await book(client, session, w.researcher, w.x, at(9), at(10))
        assert r.status_code == 422
        assert "allocated_by_rounds" in {e["code"] for e in r.json()["errors"]}
        assert len(await bookings_of_user(session, w.researcher)) == before
        # The instrument's manager may still book directly (maintenance, on-behalf bookings, publishing).
        r = await book(client, session, w.manager, w.x, at(9), at(10), on_behalf_of=w.researcher.id)
        assert r.status_code == 201, r.text


async def bookings_of_user(session: AsyncSession, user: User) -> list[Booking]:
    return list(await session.scalars(select(Booking).where(Booking.user_id == user.id)))


class TestGroupsWithin:
    """Which groups' rounds a manager sees: those whose every member they manage (no cap on how many groups)."""

    async def test_table(self, session: AsyncSession) -> None:
        w = await make_world(session)  # group: x, y (owner) and z (绵阳)
        extra = [await make_instrument(session, w.owner, category_code="010200") for _ in range(2)]
        own = await equivalence.create_group(session, await principal_for(session, w.manager), GroupIn(
            name="本单位组", instrument_ids=[i.id for i in extra]))
        mixed, mine = w.group.id, own.group.id  # type: ignore[union-attr]
        owner_ids = [w.x.id, w.y.id, *(i.id for i in extra)]
        for ids, expected in (
            (owner_ids, {mine}),  # the mixed group has z, which the owner's manager does not manage
            ([*owner_ids, w.z.id], {mine, mixed}),
            ([w.x.id, extra[0].id], set()),  # part of each
            ([], set()),
        ):
            got = {g.id for g in await repo.groups_within(session, ids)} & {mine, mixed}
            assert got == expected, ids
        assert {mine, mixed} <= {g.id for g in await repo.groups_within(session, None)}
