"""Create, update, retire and read one instrument through the API: permissions, bad input, activity, history."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.activity.models import ActivityEntry
from booking.core.clock import to_local, utcnow
from instruments.models import Instrument, InstrumentHistory
from tests.factories import bearer_headers, make_facility, make_institution, make_instrument, make_user

pytestmark = pytest.mark.asyncio


def payload(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "asset_number": "SCU-2024-0001",
        "name": "高分辨液质联用仪",
        "name_en": "High-resolution LC-MS",
        "category_code": "010200",
        "original_value": "3250000.50",
        "sharing_mode": "external",
        "model": "Orbitrap Exploris 480",
        "manufacturer": "赛默飞世尔",
        "country_code": "US",
        "start_date": "2021-09-01",
        "specs": "分辨率 480,000",
        "functions": "小分子与蛋白组学定性定量",
        "subjects": ["150", "18010"],
        "service_content": "委托测试",
        "contact_name": "张老师",
        "contact_phone": "028-85412345",
        "contact_email": "MS@scu.edu.cn",
        "fee_unit": "hour",
        "fee_internal": "300",
        "fee_external": "600",
        "fee_minimum": "200",
        "fee_text": "校内 300 元/小时",
        "accepts_vouchers": True,
        "chains": ["医药健康"],
    }
    body.update(overrides)
    return body


@pytest.fixture
async def scu(session: AsyncSession) -> Any:
    return await make_institution(session, name="写入测试大学", city_code="510100")


@pytest.fixture
async def manager_headers(session: AsyncSession, scu: Any) -> dict[str, str]:
    user = await make_user(session, role="facility_manager", grant_institution=scu)
    return await bearer_headers(session, user)


async def activity(session: AsyncSession, action: str, target_id: int) -> list[ActivityEntry]:
    rows = await session.scalars(
        select(ActivityEntry).where(ActivityEntry.action == action, ActivityEntry.target_id == str(target_id))
    )
    return list(rows)


class TestCreate:
    async def test_manager_creates(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any, manager_headers: dict[str, str]
    ) -> None:
        r = await client.post("/api/v1/instruments", json=payload(), headers=manager_headers)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["institution"]["id"] == scu.id  # the manager's only institution is the default
        assert body["city_code"] == "510100"  # from the institution
        assert Decimal(body["original_value"]) == Decimal("3250000.50")
        assert body["large"] is True
        assert body["contact"]["email"] == "ms@scu.edu.cn"
        assert body["chains"] == ["医药健康"]
        assert body["fees"] == {
            "unit": "hour",
            "internal": "300.00",
            "external": "600.00",
            "minimum": "200.00",
            "text": "校内 300 元/小时",
        }
        assert [c["code"] for c in body["category_path"]] == ["010000", "010200"]
        assert body["url"].endswith(f"/instruments/{body['id']}")
        entries = await activity(session, "instrument.created", body["id"])
        assert len(entries) == 1 and entries[0].after["name"] == "高分辨液质联用仪"  # type: ignore[index]
        history = list(
            await session.scalars(
                select(InstrumentHistory).where(InstrumentHistory.instrument_id == body["id"])
            )
        )
        assert len(history) == 1 and history[0].valid_to is None and history[0].sharing_mode == "external"

    async def test_anonymous_401(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/api/v1/instruments", json=payload())
        assert r.status_code == 401

    async def test_researcher_403(self, client: httpx.AsyncClient, session: AsyncSession, scu: Any) -> None:
        user = await make_user(session, institution=scu)
        r = await client.post(
            "/api/v1/instruments",
            json=payload(institution_id=scu.id),
            headers=await bearer_headers(session, user),
        )
        assert r.status_code == 403

    async def test_manager_of_other_institution_403(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        other = await make_institution(session)
        user = await make_user(session, role="facility_manager", grant_institution=other)
        r = await client.post(
            "/api/v1/instruments",
            json=payload(institution_id=scu.id),
            headers=await bearer_headers(session, user),
        )
        assert r.status_code == 403
        assert (
            await session.scalar(
                select(func.count()).select_from(Instrument).where(Instrument.institution_id == scu.id)
            )
            == 0
        )

    async def test_facility_manager_limited_to_own_facility(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        mine = await make_facility(session, scu)
        theirs = await make_facility(session, scu)
        user = await make_user(session, role="facility_manager", grant_institution=scu, facility=mine)
        headers = await bearer_headers(session, user)
        r = await client.post("/api/v1/instruments", json=payload(facility_id=theirs.id), headers=headers)
        assert r.status_code == 403
        r = await client.post("/api/v1/instruments", json=payload(facility_id=mine.id), headers=headers)
        assert r.status_code == 201, r.text

    async def test_admin_creates_for_any_institution(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        admin = await make_user(session, role="platform_admin")
        r = await client.post(
            "/api/v1/instruments",
            json=payload(institution_id=scu.id, city_code="510700"),
            headers=await bearer_headers(session, admin),
        )
        assert r.status_code == 201, r.text
        assert r.json()["city_code"] == "510700"

    async def test_duplicate_asset_number_409(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any, manager_headers: dict[str, str]
    ) -> None:
        await make_instrument(session, scu, asset_number="SCU-2024-0001")
        r = await client.post("/api/v1/instruments", json=payload(), headers=manager_headers)
        assert r.status_code == 409
        assert [e["field"] for e in r.json()["errors"]] == ["asset_number"]

    async def test_same_asset_number_in_another_institution_is_fine(
        self, client: httpx.AsyncClient, session: AsyncSession, manager_headers: dict[str, str]
    ) -> None:
        await make_instrument(session, asset_number="SCU-2024-0001")
        r = await client.post("/api/v1/instruments", json=payload(), headers=manager_headers)
        assert r.status_code == 201


TOMORROW = (to_local(utcnow()) + timedelta(days=1)).date().isoformat()


class TestBadInput:
    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"category_code": "123456"}, "category_code"),
            ({"category_code": "0102"}, "category_code"),
            ({"city_code": "110100"}, "city_code"),
            ({"county_code": "510703"}, "county_code"),  # a 绵阳 county under 成都
            ({"original_value": "-1"}, "original_value"),
            ({"original_value": "10000000000.01"}, "original_value"),
            ({"original_value": "12.345"}, "original_value"),
            ({"start_date": TOMORROW}, "start_date"),
            ({"specs": "指" * 501}, "specs"),
            ({"functions": "功" * 301}, "functions"),
            ({"service_content": "服" * 201}, "service_content"),
            ({"sharing_rules": "规" * 501}, "sharing_rules"),
            ({"sharing_mode": "public"}, "sharing_mode"),
            ({"status": "broken"}, "status"),
            ({"country_code": "XX"}, "country_code"),
            ({"subjects": ["150", "140", "180", "310", "350"]}, "subjects"),
            ({"subjects": ["15"]}, "subjects.0"),
            ({"contact_phone": "12345"}, "contact_phone"),
            ({"contact_email": "not-an-email"}, "contact_email"),
            ({"fee_internal": "-5"}, "fee_internal"),
            ({"fee_unit": None}, "fee_unit"),
            ({"accepts_vouchers": True, "sharing_mode": "internal"}, "accepts_vouchers"),
            ({"chains": ["不存在的链"]}, "chains"),
            ({"photo_url": "javascript:alert(1)"}, "photo_url"),
            ({"name": ""}, "name"),
            ({"unknown_field": 1}, "unknown_field"),
        ],
    )
    async def test_rejected_naming_the_field(
        self,
        client: httpx.AsyncClient,
        session: AsyncSession,
        scu: Any,
        manager_headers: dict[str, str],
        overrides: dict[str, Any],
        field: str,
    ) -> None:
        r = await client.post("/api/v1/instruments", json=payload(**overrides), headers=manager_headers)
        assert r.status_code == 422, r.text
        assert field in [e["field"] for e in r.json()["errors"]]
        assert (
            await session.scalar(
                select(func.count()).select_from(Instrument).where(Instrument.institution_id == scu.id)
            )
            == 0
        )

    async def test_all_problems_reported_at_once(
        self, client: httpx.AsyncClient, manager_headers: dict[str, str]
    ) -> None:
        r = await client.post(
            "/api/v1/instruments",
            headers=manager_headers,
            json=payload(category_code="999999", start_date=TOMORROW, contact_phone="1", chains=["无"]),
        )
        assert r.status_code == 422
        assert {"category_code", "start_date", "contact_phone", "chains"} <= {
            e["field"] for e in r.json()["errors"]
        }

    async def test_html_is_stored_as_text_and_escaped_on_pages(
        self, client: httpx.AsyncClient, manager_headers: dict[str, str]
    ) -> None:
        r = await client.post(
            "/api/v1/instruments", headers=manager_headers, json=payload(name="<script>alert(1)</script>质谱")
        )
        assert r.status_code == 201
        assert r.json()["name"] == "<script>alert(1)</script>质谱"
        page = await client.get(f"/instruments/{r.json()['id']}")
        assert "<script>alert(1)</script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;质谱" in page.text


class TestRead:
    async def test_contact_only_for_signed_in(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        inst = await make_instrument(
            session, contact_name="李工", contact_phone="13800000000", contact_email="li@example.cn"
        )
        anonymous = await client.get(f"/api/v1/instruments/{inst.id}")
        assert anonymous.status_code == 200
        assert anonymous.json()["contact"] is None
        assert "13800000000" not in anonymous.text
        user = await make_user(session)
        signed_in = await client.get(
            f"/api/v1/instruments/{inst.id}", headers=await bearer_headers(session, user)
        )
        assert signed_in.json()["contact"] == {
            "name": "李工",
            "phone": "13800000000",
            "email": "li@example.cn",
        }

    async def test_unknown_404(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/api/v1/instruments/999999999")).status_code == 404


class TestUpdate:
    async def test_manager_updates_with_activity_and_history(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any, manager_headers: dict[str, str]
    ) -> None:
        inst = await make_instrument(session, scu, sharing_mode="internal")
        old_model = inst.model
        r = await client.patch(
            f"/api/v1/instruments/{inst.id}",
            headers=manager_headers,
            json={"sharing_mode": "external", "model": "新型号", "chains": ["先进材料"]},
        )
        assert r.status_code == 200, r.text
        assert r.json()["sharing_mode"] == "external" and r.json()["chains"] == ["先进材料"]
        [entry] = await activity(session, "instrument.updated", inst.id)  # type: ignore[arg-type]
        assert entry.before == {"sharing_mode": "internal", "model": old_model, "chains": []}
        assert entry.after == {"sharing_mode": "external", "model": "新型号", "chains": ["先进材料"]}
        history = list(
            await session.scalars(
                select(InstrumentHistory)
                .where(InstrumentHistory.instrument_id == inst.id)
                .order_by(InstrumentHistory.valid_from)
            )
        )  # type: ignore[arg-type]
        assert [(h.sharing_mode, h.valid_to is None) for h in history] == [
            ("internal", False),
            ("external", True),
        ]
        assert history[0].valid_to == history[1].valid_from

    async def test_change_outside_history_fields_keeps_one_row(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any, manager_headers: dict[str, str]
    ) -> None:
        inst = await make_instrument(session, scu)
        r = await client.patch(
            f"/api/v1/instruments/{inst.id}", headers=manager_headers, json={"specs": "新指标"}
        )
        assert r.status_code == 200
        count = await session.scalar(
            select(func.count())
            .select_from(InstrumentHistory)
            .where(InstrumentHistory.instrument_id == inst.id)
        )
        assert count == 1

    async def test_no_change_records_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any, manager_headers: dict[str, str]
    ) -> None:
        inst = await make_instrument(session, scu)
        r = await client.patch(
            f"/api/v1/instruments/{inst.id}", headers=manager_headers, json={"name": inst.name}
        )
        assert r.status_code == 200
        assert await activity(session, "instrument.updated", inst.id) == []  # type: ignore[arg-type]

    @pytest.mark.parametrize("who", ["anonymous", "researcher", "other_manager"])
    async def test_forbidden(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any, who: str
    ) -> None:
        inst = await make_instrument(session, scu)
        headers: dict[str, str] = {}
        if who == "researcher":
            headers = await bearer_headers(session, await make_user(session, institution=scu))
        elif who == "other_manager":
            headers = await bearer_headers(session, await make_user(session, role="facility_manager"))
        r = await client.patch(f"/api/v1/instruments/{inst.id}", headers=headers, json={"name": "改名"})
        assert r.status_code == {"anonymous": 401, "researcher": 403, "other_manager": 403}[who]
        await session.refresh(inst)
        assert inst.name != "改名"

    async def test_required_field_cannot_be_cleared(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any, manager_headers: dict[str, str]
    ) -> None:
        inst = await make_instrument(session, scu)
        r = await client.patch(f"/api/v1/instruments/{inst.id}", headers=manager_headers, json={"name": None})
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "name"

    async def test_duplicate_asset_number_on_update(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any, manager_headers: dict[str, str]
    ) -> None:
        await make_instrument(session, scu, asset_number="X-1")
        inst = await make_instrument(session, scu, asset_number="X-2")
        r = await client.patch(
            f"/api/v1/instruments/{inst.id}", headers=manager_headers, json={"asset_number": "X-1"}
        )
        assert r.status_code == 409
        assert r.json()["errors"][0]["field"] == "asset_number"

    async def test_renaming_institution_refreshes_search(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        inst = await make_instrument(session, scu, name="某某仪器")
        scu.name = "改名后的理工大学"
        await session.flush()
        body = (await client.get("/api/v1/instruments", params={"q": "理工大学"})).json()
        assert inst.id in {i["id"] for i in body["items"]}


class TestRetire:
    async def test_retire_hides_and_records(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any, manager_headers: dict[str, str]
    ) -> None:
        inst = await make_instrument(session, scu, name="待退役的独特仪器")
        r = await client.post(
            f"/api/v1/instruments/{inst.id}/retire", headers=manager_headers, json={"reason": "设备老化报废"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["retired_reason"] == "设备老化报废"
        [entry] = await activity(session, "instrument.retired", inst.id)  # type: ignore[arg-type]
        assert entry.after["retired_reason"] == "设备老化报废"  # type: ignore[index]
        history = list(
            await session.scalars(select(InstrumentHistory).where(InstrumentHistory.instrument_id == inst.id))
        )
        assert all(h.valid_to is not None for h in history)
        assert (await client.get("/api/v1/instruments", params={"q": "独特仪器"})).json()["total"] == 0
        assert (await client.get(f"/api/v1/instruments/{inst.id}")).status_code == 404
        again = await client.post(
            f"/api/v1/instruments/{inst.id}/retire", headers=manager_headers, json={"reason": "再次"}
        )
        assert again.status_code == 409

    async def test_reason_required(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any, manager_headers: dict[str, str]
    ) -> None:
        inst = await make_instrument(session, scu)
        r = await client.post(
            f"/api/v1/instruments/{inst.id}/retire", headers=manager_headers, json={"reason": ""}
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "reason"

    async def test_researcher_cannot_retire(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        inst = await make_instrument(session)
        user = await make_user(session)
        r = await client.post(
            f"/api/v1/instruments/{inst.id}/retire",
            headers=await bearer_headers(session, user),
            json={"reason": "不要了"},
        )
        assert r.status_code == 403


class TestAccessGrants:
    async def test_grant_then_revoke(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any, manager_headers: dict[str, str]
    ) -> None:
        inst = await make_instrument(session, scu, restricted=True)
        user = await make_user(session)
        user_headers = await bearer_headers(session, user)
        assert (await client.get(f"/api/v1/instruments/{inst.id}", headers=user_headers)).status_code == 404
        r = await client.post(
            f"/api/v1/instruments/{inst.id}/access", headers=manager_headers, json={"user_id": user.id}
        )
        assert r.status_code == 204
        assert (await client.get(f"/api/v1/instruments/{inst.id}", headers=user_headers)).status_code == 200
        listed = await client.get(f"/api/v1/instruments/{inst.id}/access", headers=manager_headers)
        assert listed.json() == {"user_ids": [user.id]}
        r = await client.delete(f"/api/v1/instruments/{inst.id}/access/{user.id}", headers=manager_headers)
        assert r.status_code == 204
        assert (await client.get(f"/api/v1/instruments/{inst.id}", headers=user_headers)).status_code == 404
        assert len(await activity(session, "instrument.access_granted", inst.id)) == 1  # type: ignore[arg-type]

    @pytest.mark.parametrize("body,field", [({}, None), ({"user_id": 1, "email": "a@b.cn"}, None),
                                            ({"email": "missing@example.cn"}, "email"),
                                            ({"user_id": 987654}, "user_id"),
                                            ({"user_id": 13800138000}, "user_id")])
    async def test_bad_grant_names_the_field(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any, manager_headers: dict[str, str],
        body: dict[str, Any], field: str | None,
    ) -> None:
        inst = await make_instrument(session, scu, restricted=True)
        r = await client.post(f"/api/v1/instruments/{inst.id}/access", headers=manager_headers, json=body)
        assert r.status_code == 422, r.text
        if field:
            assert r.json()["errors"][0]["field"] == field

    async def test_grant_by_email(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any, manager_headers: dict[str, str]
    ) -> None:
        inst = await make_instrument(session, scu, restricted=True)
        user = await make_user(session)
        r = await client.post(f"/api/v1/instruments/{inst.id}/access", headers=manager_headers,
                              json={"email": user.email})
        assert r.status_code == 204
        listed = await client.get(f"/api/v1/instruments/{inst.id}/access", headers=manager_headers)
        assert listed.json() == {"user_ids": [user.id]}


class TestCategoriesAndChains:
    async def test_admin_adds_category(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        headers = await bearer_headers(session, await make_user(session, role="platform_admin"))
        r = await client.post(
            "/api/v1/instrument-categories", headers=headers, json={"code": "010201", "name": "有机质谱"}
        )
        assert r.status_code == 201, r.text
        assert r.json() == {"code": "010201", "name": "有机质谱", "level": 3, "parent_code": "010200"}
        children = (await client.get("/api/v1/instrument-categories", params={"parent": "010200"})).json()
        assert [c["code"] for c in children] == ["010201"]
        roots = (await client.get("/api/v1/instrument-categories", params={"parent": "root"})).json()
        assert len(roots) == 15

    @pytest.mark.parametrize(
        ("code", "problem"),
        [
            ("010200", "duplicate"),
            ("020101", "unknown_parent"),
            ("01", None),
            ("000100", "invalid_format"),
        ],
    )
    async def test_bad_category(
        self, client: httpx.AsyncClient, session: AsyncSession, code: str, problem: str | None
    ) -> None:
        headers = await bearer_headers(session, await make_user(session, role="platform_admin"))
        r = await client.post(
            "/api/v1/instrument-categories", headers=headers, json={"code": code, "name": "某类"}
        )
        assert r.status_code in (409, 422)
        errors = r.json()["errors"]
        assert errors[0]["field"] == "code"
        if problem:
            assert problem in {e["code"] for e in errors}

    async def test_manager_cannot_add_category(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        headers = await bearer_headers(session, await make_user(session, role="facility_manager"))
        r = await client.post(
            "/api/v1/instrument-categories", headers=headers, json={"code": "010299", "name": "x类"}
        )
        assert r.status_code == 403

    async def test_admin_adds_and_renames_chain(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        headers = await bearer_headers(session, await make_user(session, role="platform_admin"))
        r = await client.post("/api/v1/instrument-chains", headers=headers, json={"name": "航空航天"})
        assert r.status_code == 201
        chain_id = r.json()["id"]
        assert (
            await client.post("/api/v1/instrument-chains", headers=headers, json={"name": "航空航天"})
        ).status_code == 409
        r = await client.patch(
            f"/api/v1/instrument-chains/{chain_id}", headers=headers, json={"name": "航空与燃机"}
        )
        assert r.json()["name"] == "航空与燃机"
        names = [c["name"] for c in (await client.get("/api/v1/instrument-chains")).json()]
        assert "航空与燃机" in names and "电子信息" in names
