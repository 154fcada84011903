"""Flexible requests: placed at once at the best feasible slot (and told why), else kept and placed when capacity
appears; collected into the open round when the group allocates in rounds; bad input refused, nothing stored."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import User
from instruments.models import Instrument
from scheduling.conflict_models import FlexibleBooking
from scheduling.runner import load_jobs, registered_jobs, run_job_once
from tests.factories import bearer_headers, login_web
from tests.ops_helpers import NOW, Clock, notifications_of
from tests.scheduling.conflict_world import at, book, make_world


def job(name: str) -> Any:
    load_jobs()
    return {j.name: j for j in registered_jobs()}[name]


async def _submit(client: httpx.AsyncClient, session: AsyncSession, user: User, inst: Instrument, start: datetime,
                  end: datetime, minutes: int = 120, **extra: Any) -> httpx.Response:
    return await client.post("/api/v1/requests/flexible", headers=await bearer_headers(session, user), json={
        "instrument_id": inst.id, "duration_minutes": minutes, "window_start": start.isoformat(),
        "window_end": end.isoformat(), "purpose": "蛋白质组学样品", **extra})


async def _count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(FlexibleBooking)) or 0)


class TestImmediatePlacement:
    async def test_placed_at_the_earliest_slot_with_a_reason(self, client: httpx.AsyncClient,
                                                             session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        assert (await book(client, session, w.researcher2, w.x, at(8), at(11))).status_code == 201
        r = await _submit(client, session, w.researcher, w.x, at(8), at(18))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["status"] == "placed" and body["placed_instrument_id"] == w.x.id
        assert datetime.fromisoformat(body["placed_start"]) == at(11)
        assert datetime.fromisoformat(body["placed_end"]) == at(13)
        assert "最早的可用时段" in body["reason"] and w.x.name in body["reason"]
        assert (await notifications_of(session, w.researcher.id, "flexible.placed"))

    async def test_preferred_hours_win_over_earlier_slots(self, client: httpx.AsyncClient, session: AsyncSession,
                                                          clock: Clock) -> None:
        w = await make_world(session)
        r = await _submit(client, session, w.researcher, w.x, at(8), at(20),
                          preferred_hours=[{"start": "14:00", "end": "18:00"}])
        body = r.json()
        assert body["decision_code"] == "granted_preferred" and datetime.fromisoformat(body["placed_start"]) == at(14)
        assert "偏好时段内" in body["reason"]

    async def test_equivalent_used_when_the_instrument_is_full(self, client: httpx.AsyncClient,
                                                               session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        for a, b in ((8, 16), (16, 20)):
            assert (await book(client, session, w.researcher2, w.x, at(a), at(b))).status_code == 201
        r = await _submit(client, session, w.researcher, w.x, at(8), at(20), any_equivalent=True)
        body = r.json()
        assert body["status"] == "placed" and body["placed_instrument_id"] in (w.y.id, w.z.id)
        assert "可用等效仪器" in body["reason"]
        # Without any_equivalent the same request waits, and says why.
        r = await _submit(client, session, w.researcher3, w.x, at(8), at(20))
        assert r.json()["status"] == "waiting" and "暂无连续 2 小时" in r.json()["reason"]

    @pytest.mark.parametrize(
        ("busy", "window_days", "preferred", "placed_on", "start", "says"),
        [
            # The requested instrument has room later that day: it wins over an equivalent free earlier.
            ({"x": [(8, 11)]}, 0, None, "x", (11, 0), None),
            # Same, with the 成都 equivalent busy too and only the 绵阳 one free early.
            ({"x": [(8, 11)], "y": [(8, 12)]}, 0, None, "x", (11, 0), None),
            # The requested one is full that day, the 成都 equivalent is not: it wins over 绵阳.
            ({"x": [(8, 16), (16, 20)], "y": [(8, 10)]}, 0, None, "y", (10, 0), "原申请的「液相色谱-质谱联用仪 甲」在时间窗内没有可用空档"),
            # Nothing in 成都 that day: 绵阳 that day rather than the requested one the next day; the reason says when
            # the requested one is free.
            ({"x": [(8, 16), (16, 20)], "y": [(8, 16), (16, 20)]}, 1, None, "z", (8, 0),
             "原申请的「液相色谱-质谱联用仪 甲」最早的可用空档是 2026-12-03 08:00–10:00"),
            # A slot in the preferred hours is not given up for the requested instrument outside them.
            ({"x": [(8, 11)]}, 0, [{"start": "08:00", "end": "10:00"}], "y", (8, 0),
             "原申请的「液相色谱-质谱联用仪 甲」最早的可用空档是 2026-12-02 11:00–13:00"),
        ],
    )
    async def test_the_requested_instrument_and_its_city_are_preferred_on_the_day(
            self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock, busy: dict[str, list[tuple[int, int]]],
            window_days: int, preferred: list[dict[str, str]] | None, placed_on: str, start: tuple[int, int],
            says: str | None) -> None:
        w = await make_world(session)
        instruments = {"x": w.x, "y": w.y, "z": w.z}
        for key, spans in busy.items():
            for day in range(window_days + 1):
                if key == "x" and day > 0:
                    continue  # the requested one is free the next day
                for a, b in spans:
                    r = await book(client, session, w.researcher2, instruments[key], at(a, day=day), at(b, day=day))
                    assert r.status_code == 201, r.text
        extra: dict[str, Any] = {"any_equivalent": True}
        if preferred:
            extra["preferred_hours"] = preferred
        r = await _submit(client, session, w.researcher, w.x, at(8), at(20, day=window_days), **extra)
        body = r.json()
        assert body["status"] == "placed", body
        assert body["placed_instrument_id"] == instruments[placed_on].id, body["reason"]
        assert datetime.fromisoformat(body["placed_start"]) == at(*start)
        if says is None:
            assert "等效仪器" not in body["reason"]
        else:
            assert says in body["reason"], body["reason"]

    async def test_waiting_request_is_placed_when_time_frees(self, client: httpx.AsyncClient,
                                                             session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        ids = []
        for a, b in ((8, 16), (16, 20)):
            r = await book(client, session, w.researcher2, w.x, at(a), at(b))
            ids.append(r.json()["id"])
        r = await _submit(client, session, w.researcher, w.x, at(8), at(20))
        request_id = r.json()["id"]
        assert r.json()["status"] == "waiting"
        r = await client.post(f"/api/v1/bookings/{ids[1]}/cancel", headers=await bearer_headers(session, w.researcher2))
        assert r.status_code == 200
        r = await client.get(f"/api/v1/requests/flexible/{request_id}", headers=await bearer_headers(session, w.researcher))
        assert r.json()["status"] == "placed" and datetime.fromisoformat(r.json()["placed_start"]) == at(16)

    async def test_job_places_and_expires(self, client: httpx.AsyncClient, session: AsyncSession,
                                          clock: Clock) -> None:
        w = await make_world(session)
        from scheduling import editor
        from scheduling.schemas import BlackoutIn
        from tests.factories import principal_for

        manager = await principal_for(session, w.manager)
        blackout = await editor.create_blackout(session, manager, w.x.id, BlackoutIn(  # type: ignore[arg-type]
            reason="维修", starts_at=at(0), ends_at=at(0, day=2)))
        placeable = (await _submit(client, session, w.researcher, w.x, at(8), at(20, day=1))).json()
        doomed = (await _submit(client, session, w.researcher2, w.x, at(8), at(20),
                                deadline=at(6).isoformat())).json()
        assert placeable["status"] == doomed["status"] == "waiting"
        await editor.delete_blackout(session, manager, w.x.id, blackout.blackout.id)  # type: ignore[arg-type]
        clock.now = at(7)
        assert await run_job_once(job("place_flexible"), clock.now) == 2
        headers = await bearer_headers(session, w.researcher)
        assert (await client.get(f"/api/v1/requests/flexible/{placeable['id']}", headers=headers)).json()["status"] \
            == "placed"
        headers2 = await bearer_headers(session, w.researcher2)
        expired = (await client.get(f"/api/v1/requests/flexible/{doomed['id']}", headers=headers2)).json()
        assert expired["status"] == "expired" and "截止时间" in expired["reason"]
        assert await run_job_once(job("place_flexible"), clock.now) == 0


class TestBadInput:
    @pytest.mark.parametrize("case,field,code", [
        ("short", "window_end", "window_too_short"),
        ("reversed", "window_end", "end_not_after_start"),
        ("past_deadline", "deadline", "in_past"),
        ("late_deadline", "deadline", "after_latest_start"),
        ("grid", "duration_minutes", "duration_not_allowed"),
        ("preferred", "preferred_hours[0]", "invalid_window"),
        ("naive", "window_start", "timezone_aware"),
    ])
    async def test_names_the_field_and_stores_nothing(self, client: httpx.AsyncClient, session: AsyncSession,
                                                      clock: Clock, case: str, field: str, code: str) -> None:
        w = await make_world(session)
        start, end, minutes, extra = at(8), at(18), 120, {}
        if case == "short":
            end = at(9)
        elif case == "reversed":
            start, end = at(18), at(8)
        elif case == "past_deadline":
            extra = {"deadline": (NOW - timedelta(hours=1)).isoformat()}
        elif case == "late_deadline":
            extra = {"deadline": at(17).isoformat()}
        elif case == "grid":
            minutes = 50
        elif case == "preferred":
            extra = {"preferred_hours": [{"start": "15:00", "end": "09:00"}]}
        before = await _count(session)
        if case == "naive":
            r = await client.post("/api/v1/requests/flexible", headers=await bearer_headers(session, w.researcher),
                                  json={"instrument_id": w.x.id, "duration_minutes": 60, "purpose": "测样",
                                        "window_start": "2026-12-02T08:00:00", "window_end": at(18).isoformat()})
        else:
            r = await _submit(client, session, w.researcher, w.x, start, end, minutes, **extra)
        assert r.status_code == 422, r.text
        assert (field, code) in {(e["field"], e["code"]) for e in r.json()["errors"]}
        assert await _count(session) == before

    async def test_an_instrument_the_user_may_never_book(self, client: httpx.AsyncClient, session: AsyncSession,
                                                         clock: Clock) -> None:
        w = await make_world(session)
        w.x.sharing_mode = "none"
        await session.flush()
        r = await _submit(client, session, w.researcher, w.x, at(8), at(18))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "instrument_id"
        assert r.json()["errors"][0]["code"] == "not_shared" and await _count(session) == 0


class TestRoundsMode:
    async def test_collected_into_the_open_round(self, client: httpx.AsyncClient, session: AsyncSession,
                                                 clock: Clock) -> None:
        w = await make_world(session)
        r = await client.patch(f"/api/v1/equivalence-groups/{w.group.id}",  # type: ignore[union-attr]
                               headers=await bearer_headers(session, w.admin),
                               json={"allocation_mode": "rounds", "round_weekday": 3, "round_time": "12:00"})
        assert r.status_code == 200
        r = await _submit(client, session, w.researcher, w.x, at(8, day=3), at(18, day=5))
        assert r.status_code == 201, r.text
        body = r.json()
        # Thursday 2026-12-03 12:00 local is the first cutoff after Tuesday 00:00.
        assert body["status"] == "collected" and body["round_id"] is not None and body["booking_id"] is None
        assert datetime.fromisoformat(body["cutoff_at"]) == at(12, day=1)
        r2 = await _submit(client, session, w.researcher2, w.y, at(8, day=3), at(18, day=5))
        assert r2.json()["round_id"] == body["round_id"]
        # A deadline before the cutoff cannot be met by a round.
        r = await _submit(client, session, w.researcher3, w.x, at(8, day=3), at(18, day=5),
                          deadline=at(8).isoformat())
        assert r.status_code == 422 and r.json()["errors"][0]["code"] == "before_cutoff"


class TestPages:
    async def test_form_rerenders_with_errors_then_shows_why(self, client: httpx.AsyncClient,
                                                             session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        await login_web(session, client, w.researcher)
        r = await client.get(f"/requests/flexible/new?instrument_id={w.x.id}")
        assert r.status_code == 200 and w.y.name in r.text and "等效仪器也可以" in r.text
        data = {"instrument_id": str(w.x.id), "duration_minutes": "120", "window_start": "2026-12-02T08:00",
                "window_end": "2026-12-02T09:00", "purpose": "测样", "any_equivalent": "on"}
        r = await client.post("/requests/flexible", data=data)
        assert r.status_code == 422 and "短于所需时长" in r.text and await _count(session) == 0
        data["window_end"] = "2026-12-02T18:00"
        data["preferred_start"], data["preferred_end"] = "16:00", "09:00"
        r = await client.post("/requests/flexible", data=data)
        # The field is named as the user reads it, not as the schema spells it.
        assert r.status_code == 422 and "偏好时段第 1 项</strong>：" in r.text and "preferred_hours" not in r.text
        data["preferred_start"], data["preferred_end"] = "13:00", "18:00"
        r = await client.post("/requests/flexible", data=data)
        assert r.status_code == 303
        page = await client.get(r.headers["location"])
        assert page.status_code == 200 and "已安排" in page.text and "偏好时段内" in page.text
        listing = await client.get("/requests/flexible")
        assert listing.status_code == 200 and w.x.name in listing.text


async def test_my_flexible_requests_are_paged(client: httpx.AsyncClient, session: AsyncSession, clock: Clock,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduling import conflict_routes

    monkeypatch.setattr(conflict_routes, "FLEXIBLE_PAGE", 1)
    w = await make_world(session)
    older = (await _submit(client, session, w.researcher, w.x, at(8), at(12))).json()["id"]
    newer = (await _submit(client, session, w.researcher, w.x, at(13), at(18))).json()["id"]
    await login_web(session, client, w.researcher)
    page = await client.get("/requests/flexible")  # newest first
    assert "共 2 个灵活预约，第 1–1 个" in page.text
    assert f"/requests/flexible/{newer}" in page.text and f"/requests/flexible/{older}\"" not in page.text
    assert "/requests/flexible?offset=1" in page.text
    page = await client.get("/requests/flexible", params={"offset": 1})
    assert f"/requests/flexible/{older}" in page.text and f"/requests/flexible/{newer}\"" not in page.text
    assert (await client.get("/requests/flexible", params={"offset": -1})).status_code == 422
