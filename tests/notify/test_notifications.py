"""The in-app notification list: API (mine only, unread first, paginated), the page with htmx mark-as-read and
the unread badge in the header."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import User
from booking.notify.models import Notification
from tests.factories import bearer_headers, login_web, make_user
from tests.ops_helpers import NOW, Clock, fresh


async def _notes(session: AsyncSession, user: User, n: int, read: int = 0) -> list[Notification]:
    rows = []
    for i in range(n):
        note = Notification(user_id=user.id, kind="booking.approve", title=f"预约已批准 {i}", body=f"第 {i} 条",  # type: ignore[arg-type]
                            link=f"/bookings/{i}", created_at=NOW - timedelta(minutes=n - i),
                            read_at=NOW if i < read else None)
        session.add(note)
        rows.append(note)
    await session.flush()
    return rows


class TestApi:
    async def test_mine_unread_first_paginated(self, client: httpx.AsyncClient, session: AsyncSession,
                                               clock: Clock) -> None:
        me, other = await make_user(session), await make_user(session)
        mine = await _notes(session, me, 5, read=2)
        await _notes(session, other, 3)
        headers = await bearer_headers(session, me)
        r = await client.get("/api/v1/notifications", headers=headers, params={"limit": 4})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["total"], body["unread"], body["limit"], body["offset"]) == (5, 3, 4, 0)
        ids = [n["id"] for n in body["items"]]
        # Unread newest first, then read newest first; nobody else's.
        assert ids == [mine[4].id, mine[3].id, mine[2].id, mine[1].id]
        rest = (await client.get("/api/v1/notifications", headers=headers, params={"offset": 4})).json()
        assert [n["id"] for n in rest["items"]] == [mine[0].id]

    async def test_mark_one_and_all(self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        me = await make_user(session)
        mine = await _notes(session, me, 3)
        headers = await bearer_headers(session, me)
        r = await client.post(f"/api/v1/notifications/{mine[0].id}/read", headers=headers)
        assert r.status_code == 200 and r.json()["read_at"] is not None
        assert (await client.get("/api/v1/notifications", headers=headers)).json()["unread"] == 2
        r = await client.post("/api/v1/notifications/read-all", headers=headers)
        assert r.json() == {"updated": 2, "unread": 0}
        assert (await fresh(session, Notification, mine[2].id)).read_at == NOW

    async def test_someone_elses_is_404_and_unchanged(self, client: httpx.AsyncClient, session: AsyncSession,
                                                      clock: Clock) -> None:
        me, other = await make_user(session), await make_user(session)
        theirs = (await _notes(session, other, 1))[0]
        r = await client.post(f"/api/v1/notifications/{theirs.id}/read", headers=await bearer_headers(session, me))
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
        assert (await fresh(session, Notification, theirs.id)).read_at is None

    async def test_bad_paging_is_422_naming_the_field(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        me = await make_user(session)
        r = await client.get("/api/v1/notifications", headers=await bearer_headers(session, me),
                             params={"limit": 0})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "limit"


class TestPage:
    async def test_page_badge_and_htmx_mark_read(self, client: httpx.AsyncClient, session: AsyncSession,
                                                 clock: Clock) -> None:
        me = await make_user(session)
        mine = await _notes(session, me, 2)
        await login_web(session, client, me)
        page = await client.get("/notifications")
        assert page.status_code == 200
        assert "预约已批准 1" in page.text and 'data-nav="notifications"' in page.text
        assert 'hx-get="/notifications/badge"' in page.text  # the header loads the count
        badge = await client.get("/notifications/badge", headers={"HX-Request": "true"})
        assert 'id="nav-badge-notifications"' in badge.text and ">2</span>" in badge.text
        r = await client.post(f"/notifications/{mine[1].id}/read", headers={"HX-Request": "true"})
        assert r.status_code == 200
        assert "<html" not in r.text and 'id="notification-list"' in r.text
        # The header's badge is updated out of band with the new count.
        assert 'hx-swap-oob="true"' in r.text and ">1</span>" in r.text
        r = await client.post("/notifications/read-all")
        assert r.status_code == 303 and r.headers["location"] == "/notifications"
        badge = await client.get("/notifications/badge", headers={"HX-Request": "true"})
        assert " hidden" in badge.text

    async def test_csrf_required(self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        me = await make_user(session)
        note = (await _notes(session, me, 1))[0]
        await login_web(session, client, me)
        del client.headers["X-CSRF-Token"]
        r = await client.post(f"/notifications/{note.id}/read")
        assert r.status_code == 403
        assert (await fresh(session, Notification, note.id)).read_at is None
