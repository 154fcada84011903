"""Equivalence groups (who may group what, one 小类 unless overridden) and alternatives on conflict: the 409 and
the booking form propose the nearest slots on the same instrument and on equivalents the user may book."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.reservations import hooks
from scheduling import equivalence
from scheduling.conflict_models import EquivalenceGroup, EquivalenceMember
from tests.factories import bearer_headers, login_web, make_instrument, make_user
from tests.scheduling.conflict_world import at, book, make_world


async def _groups(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(EquivalenceGroup)) or 0)


class TestCreateGroup:
    async def test_manager_groups_own_instruments(self, client: httpx.AsyncClient, session: AsyncSession,
                                                  clock: Any) -> None:
        w = await make_world(session, grouped=False)
        r = await client.post("/api/v1/equivalence-groups", headers=await bearer_headers(session, w.manager), json={
            "name": "成都 LC-MS", "capability_tags": ["ESI", " ", "ESI", "三重四极杆"],
            "instrument_ids": [w.x.id, w.y.id]})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["category_code"] == "010200" and body["capability_tags"] == ["ESI", "三重四极杆"]
        assert {m["instrument_id"] for m in body["members"]} == {w.x.id, w.y.id}
        assert body["can_manage"] is True and body["allocation_mode"] == "immediate"

    async def test_mixed_classification_needs_an_override(self, client: httpx.AsyncClient, session: AsyncSession,
                                                          clock: Any) -> None:
        w = await make_world(session, grouped=False)
        gc = await make_instrument(session, w.owner, name="气相色谱仪", category_code="010500")
        headers = await bearer_headers(session, w.manager)
        before = await _groups(session)
        r = await client.post("/api/v1/equivalence-groups", headers=headers, json={
            "name": "混合组", "instrument_ids": [w.x.id, gc.id]})
        assert r.status_code == 422, r.text
        [problem] = r.json()["errors"]
        assert problem["field"] == "override_reason" and "010200" in problem["message"] and "010500" in problem["message"]
        assert await _groups(session) == before
        r = await client.post("/api/v1/equivalence-groups", headers=headers, json={
            "name": "混合组", "instrument_ids": [w.x.id, gc.id], "override_reason": "两台仪器均可做挥发物筛查"})
        assert r.status_code == 201 and r.json()["override_reason"] == "两台仪器均可做挥发物筛查"

    async def test_other_institutions_instrument_is_403_naming_it(self, client: httpx.AsyncClient,
                                                                   session: AsyncSession, clock: Any) -> None:
        w = await make_world(session, grouped=False)
        r = await client.post("/api/v1/equivalence-groups", headers=await bearer_headers(session, w.manager),
                              json={"name": "跨单位", "instrument_ids": [w.x.id, w.z.id]})
        assert r.status_code == 403
        assert any(e["field"] == "instrument_ids[1]" and e["code"] == "not_manager" for e in r.json()["errors"])
        assert await session.scalar(select(EquivalenceMember).where(EquivalenceMember.instrument_id == w.x.id)) is None

    @pytest.mark.parametrize("ids,field,code", [
        ("one", "instrument_ids", "too_few"),
        ("missing", "instrument_ids[1]", "unknown_instrument"),
    ])
    async def test_bad_member_lists(self, client: httpx.AsyncClient, session: AsyncSession, clock: Any, ids: str,
                                    field: str, code: str) -> None:
        w = await make_world(session, grouped=False)
        members = [w.x.id] if ids == "one" else [w.x.id, 987654321]
        r = await client.post("/api/v1/equivalence-groups", headers=await bearer_headers(session, w.admin),
                              json={"name": "坏组", "instrument_ids": members})
        assert r.status_code == 422
        assert (field, code) in {(e["field"], e["code"]) for e in r.json()["errors"]}

    async def test_an_instrument_is_in_one_group(self, client: httpx.AsyncClient, session: AsyncSession,
                                                 clock: Any) -> None:
        w = await make_world(session)
        other = await make_instrument(session, w.owner, category_code="010200")
        r = await client.post("/api/v1/equivalence-groups", headers=await bearer_headers(session, w.admin),
                              json={"name": "第二组", "instrument_ids": [w.x.id, other.id]})
        assert r.status_code == 422
        assert ("instrument_ids[0]", "already_grouped") in {(e["field"], e["code"]) for e in r.json()["errors"]}


class TestEditGroup:
    async def test_only_managers_of_every_member_switch_to_rounds(self, client: httpx.AsyncClient,
                                                                  session: AsyncSession, clock: Any) -> None:
        w = await make_world(session)  # x, y in 成都 (manager), z in 绵阳 (mianyang_manager)
        assert w.group is not None
        body = {"allocation_mode": "rounds", "round_weekday": 4, "round_time": "17:00", "user_cap_hours": "8",
                "external_min_share": "0.3"}
        r = await client.patch(f"/api/v1/equivalence-groups/{w.group.id}",
                               headers=await bearer_headers(session, w.manager), json=body)
        assert r.status_code == 403
        r = await client.patch(f"/api/v1/equivalence-groups/{w.group.id}",
                               headers=await bearer_headers(session, w.admin), json=body)
        assert r.status_code == 200, r.text
        assert r.json()["allocation_mode"] == "rounds" and float(r.json()["user_cap_hours"]) == 8

    async def test_null_for_a_required_setting_is_422(self, client: httpx.AsyncClient, session: AsyncSession,
                                                      clock: Any) -> None:
        w = await make_world(session)
        r = await client.patch(f"/api/v1/equivalence-groups/{w.group.id}",  # type: ignore[union-attr]
                               headers=await bearer_headers(session, w.admin), json={"allocation_mode": None})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "allocation_mode"

    async def test_add_and_remove_members(self, client: httpx.AsyncClient, session: AsyncSession,
                                          clock: Any) -> None:
        w = await make_world(session, grouped=False)
        headers = await bearer_headers(session, w.manager)
        r = await client.post("/api/v1/equivalence-groups", headers=headers,
                              json={"name": "成都组", "instrument_ids": [w.x.id, w.y.id]})
        gid = r.json()["id"]
        extra = await make_instrument(session, w.owner, category_code="010500")
        r = await client.post(f"/api/v1/equivalence-groups/{gid}/members", headers=headers,
                              json={"instrument_id": extra.id})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "override_reason"
        r = await client.post(f"/api/v1/equivalence-groups/{gid}/members", headers=headers,
                              json={"instrument_id": extra.id, "tags": ["顶空进样"], "override_reason": "同做挥发物"})
        assert r.status_code == 201, r.text
        assert {m["instrument_id"] for m in r.json()["members"]} == {w.x.id, w.y.id, extra.id}
        r = await client.delete(f"/api/v1/equivalence-groups/{gid}/members/{extra.id}", headers=headers)
        assert r.status_code == 200 and len(r.json()["members"]) == 2


class TestAlternativesOnConflict:
    async def test_409_proposes_same_instrument_and_equivalents_ranked(self, client: httpx.AsyncClient,
                                                                       session: AsyncSession, clock: Any) -> None:
        w = await make_world(session)
        assert (await book(client, session, w.researcher2, w.x, at(10), at(11))).status_code == 201
        r = await book(client, session, w.researcher, w.x, at(10), at(11))
        assert r.status_code == 409
        alts = r.json()["alternatives"]
        assert len(alts) == 3
        assert all({"instrument_id", "start", "end", "reason"} <= set(a) for a in alts)
        # Cost = |shift| + distance penalty (60 min for the same 市州): the same time on the 成都 equivalent ties
        # with an hour's shift on the same instrument and wins on the smaller shift.
        assert alts[0]["instrument_id"] == w.y.id and alts[0]["shift_minutes"] == 0
        assert datetime.fromisoformat(alts[0]["start"]) == at(10) and datetime.fromisoformat(alts[0]["end"]) == at(11)
        assert "等效仪器" in alts[0]["reason"] and "时间相同" in alts[0]["reason"]
        assert [(a["instrument_id"], a["shift_minutes"]) for a in alts[1:]] == [(w.x.id, -60), (w.x.id, 60)]
        assert "同一仪器，提前 1 小时" in alts[1]["reason"] and "同一仪器，推迟 1 小时" in alts[2]["reason"]
        # The 绵阳 instrument at the same time costs 240 minutes: not in the top three.
        assert w.z.id not in {a["instrument_id"] for a in alts}

    async def test_other_city_after_same_city_and_preferred_cities_filter(self, client: httpx.AsyncClient,
                                                                          session: AsyncSession, clock: Any) -> None:
        w = await make_world(session)
        for inst in (w.x, w.y):
            for a, b in ((8, 16), (16, 20)):
                assert (await book(client, session, w.researcher2, inst, at(a), at(b))).status_code == 201
        r = await book(client, session, w.researcher, w.x, at(10), at(12))
        # Both 成都 instruments are full that day: the 绵阳 one at the same time beats a day's shift.
        alts = r.json()["alternatives"]
        assert [(a["instrument_id"], a["shift_minutes"]) for a in alts] == [(w.z.id, 0), (w.z.id, -30), (w.z.id, 30)]
        r = await book(client, session, w.researcher, w.x, at(10), at(12), preferred_cities=["510700"])
        assert r.status_code == 409
        alts = r.json()["alternatives"]
        assert alts[0]["instrument_id"] == w.z.id and alts[0]["city"] == "绵阳市" and alts[0]["shift_minutes"] == 0
        # The preferred 市州 filter keeps the same instrument (the user chose it) but no other city's equivalents.
        assert {a["instrument_id"] for a in alts} <= {w.x.id, w.z.id}

    async def test_equivalents_the_user_may_not_book_are_left_out(self, client: httpx.AsyncClient,
                                                                  session: AsyncSession, clock: Any) -> None:
        w = await make_world(session)
        w.y.sharing_mode = "internal"
        w.z.qualification_required = True
        await session.flush()
        assert (await book(client, session, w.researcher2, w.x, at(10), at(12))).status_code == 201
        r = await book(client, session, w.researcher, w.x, at(10), at(12))
        assert {a["instrument_id"] for a in r.json()["alternatives"]} == {w.x.id}
        # An in-house user of the owner may use the internal-only equivalent.
        insider = await make_user(session, institution=w.owner)
        r = await book(client, session, insider, w.x, at(10), at(12))
        assert w.y.id in {a["instrument_id"] for a in r.json()["alternatives"]}

    async def test_any_equivalent_books_the_same_time_elsewhere(self, client: httpx.AsyncClient,
                                                               session: AsyncSession, clock: Any) -> None:
        w = await make_world(session)
        assert (await book(client, session, w.researcher2, w.x, at(10), at(12))).status_code == 201
        r = await book(client, session, w.researcher, w.x, at(10), at(12), any_equivalent=True)
        assert r.status_code == 201, r.text
        assert r.json()["instrument_id"] == w.y.id and datetime.fromisoformat(r.json()["start"]) == at(10)
        # Without any free equivalent at that time it is an ordinary 409 with alternatives.
        r = await book(client, session, w.researcher3, w.x, at(10), at(12), any_equivalent=True)
        assert r.status_code == 201 and r.json()["instrument_id"] == w.z.id
        r = await book(client, session, w.researcher3, w.x, at(10), at(12), any_equivalent=True)
        assert r.status_code == 409 and r.json()["alternatives"]

    async def test_unknown_preferred_city_is_422(self, client: httpx.AsyncClient, session: AsyncSession,
                                                 clock: Any) -> None:
        w = await make_world(session)
        r = await book(client, session, w.researcher, w.x, at(10), at(12), preferred_cities=["999999"])
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "preferred_cities"

    async def test_alternatives_endpoint_and_booking_form(self, client: httpx.AsyncClient, session: AsyncSession,
                                                          clock: Any) -> None:
        w = await make_world(session)
        assert (await book(client, session, w.researcher2, w.x, at(10), at(12))).status_code == 201
        r = await client.get(f"/api/v1/instruments/{w.x.id}/alternatives",
                             headers=await bearer_headers(session, w.researcher),
                             params={"start": at(10).isoformat(), "end": at(12).isoformat()})
        assert r.status_code == 200 and r.json()["alternatives"][0]["instrument_id"] == w.y.id
        await login_web(session, client, w.researcher)
        form = {"date": at(10).date().isoformat(), "start_time": "10:00", "end_time": "12:00", "purpose": "测定分子量"}
        r = await client.post(f"/instruments/{w.x.id}/book/check", data=form)
        assert r.status_code == 200 and 'data-testid="check-conflict"' in r.text
        assert w.y.name in r.text and f"/instruments/{w.y.id}/book?start=" in r.text and "/waitlist/new" in r.text
        r = await client.post(f"/instruments/{w.x.id}/book", data=form)
        assert r.status_code == 409
        assert 'data-testid="alternatives"' in r.text and w.y.name in r.text and "加入候补" in r.text


class TestAlternativesCache:
    async def test_a_storm_computes_once(self, session: AsyncSession, clock: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
        w = await make_world(session)
        calls = 0

        async def slow(*args: Any) -> list[Any]:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return []

        monkeypatch.setattr(equivalence, "_compute_raw", slow)
        from booking.reservations import service as reservations

        ctx = await reservations.instrument_context(session, w.x, at(10), at(12))
        results = await asyncio.gather(*(equivalence._raw_alternatives(session, ctx, at(10), at(12), 3)
                                         for _ in range(50)))
        assert calls == 1 and all(r == [] for r in results)
        await equivalence._raw_alternatives(session, ctx, at(10), at(12), 3)
        assert calls == 1  # cached
        equivalence.clear_cache()
        await equivalence._raw_alternatives(session, ctx, at(10), at(12), 3)
        assert calls == 2

    async def test_waiters_recover_when_the_first_computation_fails(self, session: AsyncSession, clock: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
        w = await make_world(session)
        calls: list[int] = []

        async def flaky(*args: Any) -> list[Any]:
            calls.append(1)
            await asyncio.sleep(0.02)
            if len(calls) == 1:
                raise RuntimeError("database hiccup")
            return []

        monkeypatch.setattr(equivalence, "_compute_raw", flaky)
        from booking.reservations import service as reservations

        ctx = await reservations.instrument_context(session, w.x, at(10), at(12))
        results = await asyncio.gather(*(equivalence._raw_alternatives(session, ctx, at(10), at(12), 3)
                                         for _ in range(4)), return_exceptions=True)
        assert isinstance(results[0], RuntimeError) and results[1:] == [[], [], []]
        assert len(calls) == 4

    async def test_without_the_scheduler_reservations_fall_back(self, client: httpx.AsyncClient,
                                                                session: AsyncSession, clock: Any) -> None:
        w = await make_world(session)
        provider = hooks.alternatives_provider()
        hooks.set_alternatives_provider(None)
        try:
            assert (await book(client, session, w.researcher2, w.x, at(10), at(12))).status_code == 201
            r = await book(client, session, w.researcher, w.x, at(10), at(12))
            assert {a["instrument_id"] for a in r.json()["alternatives"]} == {w.x.id}
        finally:
            hooks.set_alternatives_provider(provider)


class TestEquivalentsEndpoint:
    async def test_lists_equivalents_with_bookability(self, client: httpx.AsyncClient, session: AsyncSession,
                                                      clock: Any) -> None:
        w = await make_world(session)
        w.z.sharing_mode = "internal"
        await session.flush()
        r = await client.get(f"/api/v1/instruments/{w.x.id}/equivalents",
                             headers=await bearer_headers(session, w.researcher))
        assert r.status_code == 200
        by_id = {e["instrument_id"]: e for e in r.json()["equivalents"]}
        assert by_id[w.y.id]["bookable"] is True
        assert by_id[w.z.id]["bookable"] is False and by_id[w.z.id]["problems"][0]["code"] == "internal_only"
