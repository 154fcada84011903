"""Explain (the rules and bookings that block a slot) and simulate (what a rule change would do to the coming
weeks' bookings, nothing saved)."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from scheduling import editor
from scheduling.models import InstrumentRules, OpeningWindow
from scheduling.schemas import BlackoutIn
from tests.factories import bearer_headers, login_web, principal_for
from tests.ops_helpers import Clock
from tests.scheduling.conflict_world import at, book, make_world

RULES = {"granularity_min": 30, "min_duration_min": 30, "max_duration_min": 480, "min_lead_min": 0,
         "max_horizon_days": 90, "approval_required": False, "follow_holidays": False, "cancellation_deadline_h": 0}


class TestExplain:
    async def test_lists_bookings_closures_and_rules(self, client: httpx.AsyncClient, session: AsyncSession,
                                                     clock: Clock) -> None:
        w = await make_world(session, buffer_after_min=30)
        taken = (await book(client, session, w.researcher2, w.x, at(9), at(10))).json()["id"]
        await editor.create_blackout(session, await principal_for(session, w.manager), w.x.id,  # type: ignore[arg-type]
                                     BlackoutIn(reason="年度校准", starts_at=at(11), ends_at=at(12)))
        params = {"start": at(10).isoformat(), "end": at(12).isoformat()}
        r = await client.get(f"/api/v1/instruments/{w.x.id}/explain", params=params,
                             headers=await bearer_headers(session, w.researcher))
        assert r.status_code == 200, r.text
        x = r.json()
        assert x["bookable"] is False
        # The 09:00-10:00 booking blocks 10:00 through its 30-minute cool-down; its owner stays anonymous here.
        [b] = x["bookings"]
        assert (b["booking_id"], b["user_name"], b["mine"]) == (None, None, False)
        assert b["blocked_end"] > b["end"]
        assert [c["reason"] for c in x["closures"]] == ["年度校准"]
        assert "outside_opening_hours" in {p["code"] for p in x["rule_problems"]}
        assert "冲突" in x["summary"] and "年度校准" in x["summary"]
        # The instrument's manager sees whose booking it is.
        r = await client.get(f"/api/v1/instruments/{w.x.id}/explain", params=params,
                             headers=await bearer_headers(session, w.manager))
        assert r.json()["bookings"][0]["booking_id"] == taken and r.json()["bookings"][0]["user_name"] == "研究员乙"

    async def test_free_slot_and_bad_range(self, client: httpx.AsyncClient, session: AsyncSession,
                                           clock: Clock) -> None:
        w = await make_world(session)
        r = await client.get(f"/api/v1/instruments/{w.x.id}/explain",
                             params={"start": at(14).isoformat(), "end": at(15).isoformat()})
        assert r.status_code == 200 and r.json()["bookable"] is True and r.json()["summary"] == "该时段可以预约"
        r = await client.get(f"/api/v1/instruments/{w.x.id}/explain",
                             params={"start": at(15).isoformat(), "end": at(14).isoformat()})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "end"

    async def test_fragment_in_the_booking_form(self, client: httpx.AsyncClient, session: AsyncSession,
                                                clock: Clock) -> None:
        w = await make_world(session)
        await book(client, session, w.researcher2, w.x, at(10), at(11))
        await login_web(session, client, w.researcher)
        r = await client.get(f"/instruments/{w.x.id}/explain", params={"start": at(10).isoformat(),
                                                                       "end": at(11).isoformat()},
                             headers={"HX-Request": "true"})
        assert r.status_code == 200 and 'data-testid="explain"' in r.text and "<html" not in r.text
        assert "与 1 个预约" in r.text


class TestSimulate:
    async def test_lists_affected_bookings_and_saves_nothing(self, client: httpx.AsyncClient,
                                                             session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        early = (await book(client, session, w.researcher, w.x, at(8), at(9))).json()["id"]
        long = (await book(client, session, w.researcher2, w.x, at(13), at(18))).json()["id"]
        near = (await book(client, session, w.researcher3, w.x, at(18), at(19))).json()["id"]
        fine = (await book(client, session, w.researcher, w.x, at(10), at(11))).json()["id"]
        headers = await bearer_headers(session, w.manager)
        r = await client.post(f"/api/v1/instruments/{w.x.id}/schedule/simulate", headers=headers, json={
            "windows": [{"weekday": d, "start": "09:00", "end": "20:00"} for d in range(7)],
            "rules": {**RULES, "max_duration_min": 240, "buffer_after_min": 15}, "days": 31})
        assert r.status_code == 200, r.text
        affected = {a["booking_id"]: a["reasons"] for a in r.json()["affected"]}
        assert r.json()["checked"] == 4 and fine not in affected
        assert affected[early] == ["不在调整后的开放时间内"]
        assert any("超过新的最长时长" in x for x in affected[long])
        assert any("准备/冷却时间" in x for x in affected[long]) and any("准备/冷却时间" in x for x in affected[near])
        # Nothing was saved.
        windows = list(await session.scalars(select(OpeningWindow).where(OpeningWindow.instrument_id == w.x.id)))
        assert {wd.start_time.hour for wd in windows} == {8}
        rules = await session.get(InstrumentRules, w.x.id)
        assert rules is not None and rules.max_duration_min == 480 and rules.buffer_after_min == 0

    async def test_bad_input_and_access(self, client: httpx.AsyncClient, session: AsyncSession,
                                        clock: Clock) -> None:
        w = await make_world(session)
        url = f"/api/v1/instruments/{w.x.id}/schedule/simulate"
        r = await client.post(url, headers=await bearer_headers(session, w.manager),
                              json={"windows": [{"weekday": 0, "start": "12:00", "end": "09:00"}]})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "windows[0].end"
        r = await client.post(url, headers=await bearer_headers(session, w.manager), json={})
        assert r.status_code == 422 and r.json()["errors"][0]["code"] == "nothing_to_simulate"
        r = await client.post(url, headers=await bearer_headers(session, w.mianyang_manager),
                              json={"rules": RULES})
        assert r.status_code == 403

    async def test_page(self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session)
        early = (await book(client, session, w.researcher, w.x, at(8), at(9))).json()["id"]
        await login_web(session, client, w.manager)
        r = await client.get(f"/instruments/{w.x.id}/simulate")
        assert r.status_code == 200 and "周一 08:00-20:00" in r.text
        form: dict[str, Any] = {**{k: str(v) for k, v in RULES.items() if not isinstance(v, bool)},
                                "no_show_grace_min": "60", "days": "31",
                                "windows": "\n".join(f"{d} 09:00-20:00" for d in ["周一", "周二", "周三", "周四", "周五", "周六", "周日"])}
        r = await client.post(f"/instruments/{w.x.id}/simulate", data=form)
        assert r.status_code == 200, r.text
        assert 'data-testid="simulation"' in r.text and f"#{early}" in r.text and "不在调整后的开放时间内" in r.text
        r = await client.post(f"/instruments/{w.x.id}/simulate", data={**form, "windows": "周八 09:00-20:00"})
        assert r.status_code == 422 and "格式应为" in r.text
        r = await client.get(f"/instruments/{w.x.id}/schedule")
        assert f"/instruments/{w.x.id}/simulate" in r.text


class TestGroupPages:
    async def test_create_group_form(self, client: httpx.AsyncClient, session: AsyncSession, clock: Clock) -> None:
        w = await make_world(session, grouped=False)
        await login_web(session, client, w.manager)
        r = await client.get("/equivalence")
        assert r.status_code == 200 and w.x.name in r.text
        r = await client.post("/equivalence", data={"name": "成都质谱", "instrument_ids": [str(w.x.id)]})
        assert r.status_code == 422 and "至少需要两台" in r.text
        r = await client.post("/equivalence", data={"name": "成都质谱", "capability_tags": "ESI，三重四极杆",
                                                    "instrument_ids": [str(w.x.id), str(w.y.id)]})
        assert r.status_code == 303
        page = await client.get(r.headers["location"])
        assert page.status_code == 200 and "ESI、三重四极杆" in page.text and w.y.name in page.text
        gid = r.headers["location"].rsplit("/", 1)[1]
        r = await client.post(f"/equivalence/{gid}", data={"name": "成都质谱", "allocation_mode": "rounds",
                                                          "round_weekday": "4", "round_time": "17:00",
                                                          "external_min_share": "1.5", "capability_tags": "ESI"})
        assert r.status_code == 422 and "外部用户最低占比" in r.text
        r = await client.post(f"/equivalence/{gid}", data={"name": "成都质谱", "allocation_mode": "rounds",
                                                          "round_weekday": "4", "round_time": "17:00",
                                                          "external_min_share": "0.3", "capability_tags": "ESI"})
        assert r.status_code == 200 and "已保存" in r.text
