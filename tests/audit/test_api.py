"""The stats API against the fixed data set: headline, breakdowns, usage, drill-down lists, bad input."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from booking.audit import service
from booking.core.regions import CITIES
from tests.audit import world as w
from tests.factories import bearer_headers


@pytest.fixture
async def data(session: AsyncSession) -> w.World:
    world = await w.build(session)
    await service.snapshot(session, date(2026, 6, 14))
    return world


@pytest.fixture
async def headers(session: AsyncSession, data: w.World) -> dict[str, str]:
    return await bearer_headers(session, await w.auditor(session))


class TestHeadline:
    async def test_counts_and_definitions(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        r = await client.get("/api/v1/stats/sharing", params={"as_of": "2026-06-14"}, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert {k: body[k] for k in ("registered", "open", "shared")} == w.EXPECTED_HEADLINE
        assert body["target"] == 10000
        assert body["progress"] == pytest.approx(2 / 10000)
        assert body["as_of"] == "2026-06-14"
        assert "外部共享" in body["definitions"]["texts"]["open"]
        assert body["definitions"]["open_lookahead_days"] == 30

    async def test_trend_is_monthly_and_ends_at_d(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        body = (await client.get("/api/v1/stats/sharing", params={"as_of": "2026-06-14"}, headers=headers)).json()
        months = [p["month"] for p in body["trend"]]
        assert months[0] == "2025-01" and months[-2] == "2026-05" and months[-1] == "2026-06"
        assert len(months) == 18
        # February's end: A1 (shared since its external service on 2026-02-10) and B1's 2025-05 record counts
        # (within 12 months); A4 was still registered then. Nothing was open: availability was first recorded
        # as published on 2026-06-14 (the snapshot job's first run).
        feb = next(p for p in body["trend"] if p["month"] == "2026-02")
        assert feb == {"month": "2026-02", "as_of": "2026-02-28", "registered": 5, "open": 0, "shared": 2}
        assert body["projection"]["date"] == "2027-12-31"
        assert isinstance(body["projection"]["shared"], int)
        assert "最小二乘" in body["projection"]["method"]

    async def test_today_uses_live_availability(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        body = (await client.get("/api/v1/stats/sharing", headers=headers)).json()
        assert body["as_of"] == "2026-06-15"
        assert body["open"] == 1  # A1's Monday window; B1 internal, B2 awaiting repair

    async def test_late_record_counts_once_known(self, client: httpx.AsyncClient, session: AsyncSession,
                                                 data: w.World) -> None:
        from booking.core.clock import set_clock

        set_clock(lambda: w.local(2026, 6, 20))
        headers = await bearer_headers(session, await w.auditor(session))
        body = (await client.get("/api/v1/stats/usage", params={"as_of": "2026-06-14", "group": "city"},
                                 headers=headers)).json()
        assert next(i for i in body["items"] if i["city_code"] == "510700")["hours"] == 45.5
        body = (await client.get("/api/v1/stats/usage", params={"as_of": "2026-06-19", "group": "city"},
                                 headers=headers)).json()
        assert next(i for i in body["items"] if i["city_code"] == "510700")["hours"] == 49.5


class TestBreakdowns:
    async def test_by_city_has_all_21_with_zeros(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        r = await client.get("/api/v1/stats/sharing/by-city", params={"as_of": "2026-06-14"}, headers=headers)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [i["key"] for i in items] == list(CITIES)
        for i in items:
            expected = w.EXPECTED_BY_CITY.get(i["key"], {"registered": 0, "open": 0, "shared": 0})
            assert {k: i[k] for k in expected} == expected, i["key"]
            assert i["links"]["shared"].startswith("/audit/list?")
        totals = r.json()["totals"]
        assert totals["shared_rate"] == pytest.approx(totals["shared"] / totals["registered"])
        assert totals["open_rate"] == pytest.approx(totals["open"] / totals["registered"])

    @pytest.mark.parametrize(("dim", "key", "expected"), [
        ("kind", "高校", {"registered": 2, "open": 1, "shared": 1}),
        ("kind", "企业", {"registered": 2, "open": 0, "shared": 1}),
        ("kind", "医疗机构", {"registered": 0, "open": 0, "shared": 0}),
        ("category", "010000", {"registered": 3, "open": 1, "shared": 2}),
        ("category", "020000", {"registered": 1, "open": 0, "shared": 0}),
        ("band", "b0", {"registered": 2, "open": 1, "shared": 2}),  # 50–100 万: A1, B2
        ("band", "b1", {"registered": 1, "open": 0, "shared": 0}),  # 100–200 万: B1
        ("band", "b2", {"registered": 1, "open": 0, "shared": 0}),  # 200–500 万: A2
        ("chain", "0", {"registered": 4, "open": 1, "shared": 2}),
    ])
    async def test_dimensions(self, client: httpx.AsyncClient, headers: dict[str, str], dim: str, key: str,
                              expected: dict[str, int]) -> None:
        r = await client.get(f"/api/v1/stats/sharing/by-{dim}", params={"as_of": "2026-06-14"}, headers=headers)
        assert r.status_code == 200, r.text
        row = next(i for i in r.json()["items"] if i["key"] == key)
        assert {k: row[k] for k in expected} == expected

    async def test_by_institution_and_sort(self, client: httpx.AsyncClient, headers: dict[str, str],
                                           data: w.World) -> None:
        r = await client.get("/api/v1/stats/sharing/by-institution",
                             params={"as_of": "2026-06-14", "sort": "open", "order": "desc"}, headers=headers)
        items = r.json()["items"]
        assert [i["key"] for i in items] == [str(data.a.id), str(data.b.id)]
        assert items[0]["open"] == 1 and items[0]["page"].startswith(f"/audit/institutions/{data.a.id}")

    async def test_links_lead_to_the_counted_instruments(self, client: httpx.AsyncClient, headers: dict[str, str],
                                                         data: w.World) -> None:
        r = await client.get("/api/v1/stats/instruments",
                             params={"as_of": "2026-06-14", "measure": "shared", "city": "510100"}, headers=headers)
        assert r.status_code == 200, r.text
        assert [i["id"] for i in r.json()["items"]] == [data.ids["B2"]]
        r = await client.get("/api/v1/stats/instruments", params={"as_of": "2026-06-14", "measure": "registered"},
                             headers=headers)
        assert {i["id"] for i in r.json()["items"]} == {data.ids[k] for k in ("A1", "A2", "B1", "B2")}
        assert r.json()["total"] == 4


class TestUsage:
    async def test_by_city_matches_hand_computed(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        r = await client.get("/api/v1/stats/usage", params={"as_of": "2026-06-14", "group": "city"}, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["year"] == 2026
        rows = {i["city_code"]: i for i in body["items"]}
        for code, expected in w.EXPECTED_USAGE_CITY.items():
            assert {k: rows[code][k] for k in expected} == expected, code
        assert {k: body["totals"][k] for k in w.EXPECTED_USAGE_TOTAL} == w.EXPECTED_USAGE_TOTAL

    async def test_share_rate_null_without_hours(self, client: httpx.AsyncClient, headers: dict[str, str],
                                                 data: w.World) -> None:
        r = await client.get("/api/v1/stats/usage", params={"as_of": "2026-06-14", "group": "instrument",
                                                             "sort": "name", "order": "asc"}, headers=headers)
        rows = {i["instrument_id"]: i for i in r.json()["items"]}
        assert rows[data.ids["B1"]]["hours"] == 0 and rows[data.ids["B1"]]["share_rate"] is None
        assert rows[data.ids["A1"]]["ratings"] == {"5": 1, "4": 1, "3": 0, "2": 0, "1": 0}

    async def test_idle_saturated_evaluation(self, client: httpx.AsyncClient, headers: dict[str, str],
                                             data: w.World) -> None:
        idle = (await client.get("/api/v1/stats/usage", params={"as_of": "2026-06-14", "group": "instrument",
                                                                 "only": "idle"}, headers=headers)).json()
        # Everything is far below 10% of the pro-rated quota except A2 (30 h of 361.7 h = 8.3%: also idle).
        assert {i["instrument_id"] for i in idle["items"]} == {data.ids[k] for k in ("A1", "A2", "B1", "B2")}
        sat = (await client.get("/api/v1/stats/usage", params={"as_of": "2026-06-14", "group": "instrument",
                                                                "only": "saturated"}, headers=headers)).json()
        assert sat["items"] == []
        ev = (await client.get("/api/v1/stats/usage", params={"as_of": "2026-06-14", "group": "institution",
                                                               "only": "evaluation"}, headers=headers)).json()
        assert ev["items"] == []  # nobody has 5 large instruments

    async def test_year_2025(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        body = (await client.get("/api/v1/stats/usage", params={"as_of": "2026-06-14", "year": 2025},
                                 headers=headers)).json()
        rows = {i["city_code"]: i for i in body["items"]}
        assert rows["510700"]["hours"] == 20.0 and rows["510100"]["hours"] == 2.0
        assert rows["510100"]["share_rate"] == 1.0


class TestDrillDown:
    async def test_institution_instrument_records(self, client: httpx.AsyncClient, headers: dict[str, str],
                                                  data: w.World) -> None:
        r = await client.get(f"/api/v1/stats/institutions/{data.a.id}", params={"as_of": "2026-06-14"},
                             headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["registered"], body["open"], body["shared"]) == (2, 1, 1)
        assert body["usage"]["hours"] == 45.5
        r = await client.get(f"/api/v1/stats/instruments/{data.ids['A1']}", params={"as_of": "2026-06-14"},
                             headers=headers)
        body = r.json()
        assert (body["registered"], body["open"], body["shared"]) == (True, True, True)
        assert body["years"][0]["year"] == 2026 and body["years"][0]["hours"] == 15.5
        r = await client.get(f"/api/v1/stats/instruments/{data.ids['A1']}/service-records",
                             params={"as_of": "2026-06-14", "limit": 1}, headers=headers)
        body = r.json()
        assert body["total"] == 2 and len(body["items"]) == 1
        assert body["items"][0]["hours"] == "5.50"


class TestBadInput:
    @pytest.mark.parametrize(("path", "params", "field"), [
        ("/api/v1/stats/sharing", {"as_of": "2026-13-01"}, "as_of"),
        ("/api/v1/stats/sharing", {"as_of": "yesterday"}, "as_of"),
        ("/api/v1/stats/sharing", {"as_of": "2024-12-31"}, "as_of"),
        ("/api/v1/stats/sharing", {"as_of": "2026-06-16"}, "as_of"),
        ("/api/v1/stats/sharing", {"city": "519999"}, "city"),
        ("/api/v1/stats/sharing", {"city": "abc"}, "city"),
        ("/api/v1/stats/sharing/by-city", {"sort": "nonsense"}, "sort"),
        ("/api/v1/stats/usage", {"year": 2027}, "year"),
        ("/api/v1/stats/usage", {"year": 2024}, "year"),
        ("/api/v1/stats/usage", {"group": "planet"}, "group"),
        ("/api/v1/stats/usage", {"only": "idle", "group": "city"}, "group"),
        ("/api/v1/stats/instruments", {"measure": "open", "kind": "外星机构"}, "kind"),
        ("/api/v1/stats/instruments", {"band": "b99"}, "band"),
        ("/api/v1/stats/instruments", {"category": "77"}, "category"),
        ("/api/v1/stats/instruments", {"chain": 999999}, "chain"),
        ("/api/v1/stats/export.csv", {"sheet": "nope"}, "sheet"),
    ])
    async def test_422_names_the_field(self, client: httpx.AsyncClient, headers: dict[str, str], path: str,
                                       params: dict[str, object], field: str) -> None:
        r = await client.get(path, params=params, headers=headers)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert field in [e["field"] for e in r.json()["errors"]], r.json()

    async def test_unknown_ids_are_404(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        assert (await client.get("/api/v1/stats/institutions/999999", headers=headers)).status_code == 404
        assert (await client.get("/api/v1/stats/instruments/999999", headers=headers)).status_code == 404

    async def test_unknown_sharing_dimension(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        r = await client.get("/api/v1/stats/sharing/by-planet", headers=headers)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "dim"


class TestRestricted:
    async def test_counted_but_named_only_for_admins_and_owners(self, client: httpx.AsyncClient,
                                                               session: AsyncSession, data: w.World) -> None:
        from sqlalchemy import text

        from booking.accounts.models import Role
        from tests.factories import make_user

        await session.execute(text("UPDATE instruments SET restricted = true WHERE id = :i"), {"i": data.ids["A2"]})
        params = {"as_of": "2026-06-14", "measure": "registered", "sort": "id"}
        viewers = {"auditor": await w.auditor(session),
                   "admin": await make_user(session, role=Role.platform_admin, institution_id=None),
                   "owner": await make_user(session, role=Role.institution_admin, grant_institution=data.a)}
        names = {}
        for who, user in viewers.items():
            headers = await bearer_headers(session, user)
            query = params if who != "owner" else {**params, "institution": data.a.id}
            body = (await client.get("/api/v1/stats/instruments", params=query, headers=headers)).json()
            names[who] = {i["id"]: i["name"] for i in body["items"]}
            one = (await client.get(f"/api/v1/stats/instruments/{data.ids['A2']}",
                                    params={"as_of": "2026-06-14"}, headers=headers)).json()
            assert one["registered"] is True and one["years"][0]["hours"] == 30.0  # figures are never hidden
            records = (await client.get(f"/api/v1/stats/instruments/{data.ids['A2']}/service-records",
                                        params={"as_of": "2026-06-14"}, headers=headers)).json()
            assert {r["instrument_name"] for r in records["items"]} == {names[who][data.ids["A2"]]}
        assert names["auditor"][data.ids["A2"]] == "受限仪器"
        assert names["admin"][data.ids["A2"]] == "专用测试系统A2" == names["owner"][data.ids["A2"]]
        assert names["auditor"][data.ids["A1"]] == "扫描电子显微镜A1"
        headers = await bearer_headers(session, viewers["auditor"])
        csv_text = (await client.get("/api/v1/stats/service-records.csv", params={"as_of": "2026-06-14"},
                                     headers=headers)).content.decode("utf-8-sig")
        assert "专用测试系统A2" not in csv_text and "受限仪器" in csv_text
