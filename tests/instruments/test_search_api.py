"""GET /api/v1/instruments: each filter, the facets, visibility of restricted instruments, and bad parameters."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import (
    bearer_headers,
    grant_instrument_access,
    make_facility,
    make_institution,
    make_instrument,
    make_user,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def province(session: AsyncSession) -> dict[str, object]:
    """A small province: two institutions in two cities, instruments that differ in every filtered field."""
    uni = await make_institution(session, name="搜索测试大学", kind="高校", city_code="510100")
    corp = await make_institution(session, name="绵阳搜索测试公司", kind="企业", city_code="510700")
    ms1 = await make_instrument(
        session,
        uni,
        name="液相色谱-质谱联用仪",
        manufacturer="安捷伦",
        category_code="010200",
        original_value=Decimal("2300000"),
        sharing_mode="external",
        accepts_vouchers=True,
        chains=["医药健康"],
    )
    ms2 = await make_instrument(
        session,
        corp,
        name="气相色谱质谱联用仪",
        manufacturer="岛津",
        city_code="510700",
        category_code="010200",
        original_value=Decimal("880000"),
        sharing_mode="internal",
        status="standby",
    )
    nmr = await make_instrument(
        session,
        corp,
        name="核磁共振波谱仪",
        manufacturer="布鲁克",
        city_code="510700",
        category_code="010600",
        original_value=Decimal("4500000"),
        sharing_mode="external",
        chains=["先进材料"],
    )
    sem = await make_instrument(
        session,
        uni,
        name="场发射扫描电子显微镜",
        manufacturer="蔡司",
        category_code="010102",
        original_value=Decimal("300000"),
        sharing_mode="none",
        status="awaiting_repair",
    )
    laser = await make_instrument(
        session,
        uni,
        name="飞秒激光器",
        manufacturer="相干",
        category_code="140000",
        original_value=Decimal("1200000"),
        sharing_mode="external",
        functions="超快光谱与质谱电离源研究",
    )
    secret = await make_instrument(
        session,
        corp,
        name="军工质谱分析系统",
        city_code="510700",
        category_code="010200",
        original_value=Decimal("5000000"),
        restricted=True,
    )
    retired = await make_instrument(session, uni, name="退役质谱仪", category_code="010200")
    from booking.core.clock import utcnow

    retired.retired_at = utcnow()
    retired.retired_reason = "报废"
    await session.flush()
    return {
        "uni": uni,
        "corp": corp,
        "ms1": ms1,
        "ms2": ms2,
        "nmr": nmr,
        "sem": sem,
        "laser": laser,
        "secret": secret,
        "retired": retired,
    }


def ids(body: dict) -> set[int]:  # type: ignore[type-arg]
    return {item["id"] for item in body["items"]}


async def search(client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: object) -> dict:  # type: ignore[type-arg]
    r = await client.get(
        "/api/v1/instruments", params={k: str(v) for k, v in params.items()}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


class TestFilters:
    async def test_two_character_chinese_term(self, client: httpx.AsyncClient, province: dict) -> None:  # type: ignore[type-arg]
        body = await search(client, q="质谱")
        # names and functions both count; restricted and retired never appear
        assert ids(body) == {province["ms1"].id, province["ms2"].id, province["laser"].id}  # type: ignore[attr-defined]
        assert body["total"] == 3

    async def test_terms_are_anded_and_match_manufacturer(
        self, client: httpx.AsyncClient, province: dict
    ) -> None:  # type: ignore[type-arg]
        assert ids(await search(client, q="质谱 安捷伦")) == {province["ms1"].id}  # type: ignore[attr-defined]

    async def test_term_matches_institution_name(self, client: httpx.AsyncClient, province: dict) -> None:  # type: ignore[type-arg]
        assert ids(await search(client, q="绵阳搜索")) == {province["ms2"].id, province["nmr"].id}  # type: ignore[attr-defined]

    async def test_single_character_and_latin_terms(self, client: httpx.AsyncClient, province: dict) -> None:  # type: ignore[type-arg]
        assert province["nmr"].id in ids(await search(client, q="磁", limit=200))  # type: ignore[attr-defined]
        body = await search(client, q="M-", limit=200)
        assert province["ms1"].id in ids(body)  # type: ignore[attr-defined]

    async def test_like_wildcards_are_literal(self, client: httpx.AsyncClient, province: dict) -> None:  # type: ignore[type-arg]
        assert (await search(client, q="质%谱"))["total"] == 0
        assert (await search(client, q="__"))["total"] == 0

    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({"city": "510700"}, {"ms2", "nmr"}),
            ({"institution_kind": "企业"}, {"ms2", "nmr"}),
            ({"category": "01"}, {"ms1", "ms2", "nmr", "sem"}),
            ({"category": "010000"}, {"ms1", "ms2", "nmr", "sem"}),
            ({"category": "0102"}, {"ms1", "ms2"}),
            ({"category": "010200"}, {"ms1", "ms2"}),
            ({"category": "010102"}, {"sem"}),
            ({"category": "14"}, {"laser"}),
            ({"sharing_mode": "internal"}, {"ms2"}),
            ({"status": "standby"}, {"ms2"}),
            ({"chain": "医药健康"}, {"ms1"}),
            ({"min_value": "1000000"}, {"ms1", "nmr", "laser"}),
            ({"max_value": "880000"}, {"ms2", "sem"}),
            ({"min_value": "800000", "max_value": "1500000"}, {"ms2", "laser"}),
            ({"large": "true"}, {"ms1", "ms2", "nmr", "laser"}),
            ({"large": "false"}, {"sem"}),
            ({"vouchers": "true"}, {"ms1"}),
            ({"city": "510700", "sharing_mode": "external", "q": "核磁"}, {"nmr"}),
        ],
    )
    async def test_filter(
        self, client: httpx.AsyncClient, province: dict, params: dict, expected: set
    ) -> None:  # type: ignore[type-arg]
        # Confine to the fixture's two institutions so other tests' rows never interfere.
        found: set[int] = set()
        for inst in (province["uni"], province["corp"]):
            found |= ids(await search(client, institution=inst.id, limit=200, **params))  # type: ignore[attr-defined]
        assert found == {province[name].id for name in expected}  # type: ignore[attr-defined]

    async def test_chain_by_id(self, client: httpx.AsyncClient, province: dict) -> None:  # type: ignore[type-arg]
        chains = (await client.get("/api/v1/instrument-chains")).json()
        chain_id = next(c["id"] for c in chains if c["name"] == "先进材料")
        assert ids(await search(client, chain=chain_id, institution=province["corp"].id)) == {
            province["nmr"].id
        }  # type: ignore[attr-defined]

    async def test_institution(self, client: httpx.AsyncClient, province: dict) -> None:  # type: ignore[type-arg]
        body = await search(client, institution=province["uni"].id)  # type: ignore[attr-defined]
        assert ids(body) == {province[n].id for n in ("ms1", "sem", "laser")}  # type: ignore[attr-defined]


class TestItems:
    async def test_item_shape(self, client: httpx.AsyncClient, province: dict) -> None:  # type: ignore[type-arg]
        body = await search(client, q="安捷伦")
        assert {"items", "total", "limit", "offset", "facets"} <= set(body)
        item = body["items"][0]
        assert item["id"] == province["ms1"].id  # type: ignore[attr-defined]
        assert item["institution"] == {"id": province["uni"].id, "name": "搜索测试大学", "kind": "高校"}  # type: ignore[attr-defined]
        assert item["city_code"] == "510100" and item["category_code"] == "010200"
        assert item["sharing_mode"] == "external" and item["status"] == "normal"
        assert Decimal(item["original_value"]) == Decimal("2300000")
        assert item["large"] is True
        assert item["url"] == f"http://127.0.0.1:8000/instruments/{province['ms1'].id}"  # type: ignore[attr-defined]
        for key in ("name", "name_en", "model", "manufacturer"):
            assert key in item
        assert "contact_phone" not in item

    async def test_body_is_exactly_the_documented_model(self, client: httpx.AsyncClient, province: dict) -> None:  # type: ignore[type-arg]
        """The route writes its JSON without FastAPI's response-model pass: the body must still be what
        SearchResult documents, field for field, with nothing extra and nothing the model would convert."""
        from instruments.schemas import SearchResult

        for params in ({}, {"q": "色谱"}, {"facets": "false"}):
            r = await client.get("/api/v1/instruments", params=params)
            assert r.headers["content-type"] == "application/json"
            body = r.json()
            assert body["total"] > 0
            assert SearchResult.model_validate(body).model_dump(mode="json") == body

    @pytest.mark.parametrize(
        ("sort", "first", "last"),
        [
            ("value_desc", "nmr", "sem"),
            ("value_asc", "sem", "nmr"),
        ],
    )
    async def test_sort(
        self, client: httpx.AsyncClient, province: dict, sort: str, first: str, last: str
    ) -> None:  # type: ignore[type-arg]
        body = await search(client, q="搜索测试", sort=sort)
        body2 = await search(client, q="绵阳搜索", sort=sort)
        both = [*body["items"], *body2["items"]]
        values = sorted(both, key=lambda i: Decimal(i["original_value"]), reverse=sort == "value_desc")
        assert values[0]["id"] == province[first].id and values[-1]["id"] == province[last].id  # type: ignore[attr-defined]
        own = [Decimal(i["original_value"]) for i in body["items"]]
        assert own == sorted(own, reverse=sort == "value_desc")

    async def test_pagination(self, client: httpx.AsyncClient, province: dict) -> None:  # type: ignore[type-arg]
        page1 = await search(client, institution=province["uni"].id, limit=2, offset=0, sort="newest")  # type: ignore[attr-defined]
        page2 = await search(client, institution=province["uni"].id, limit=2, offset=2, sort="newest")  # type: ignore[attr-defined]
        assert page1["total"] == page2["total"] == 3
        assert len(page1["items"]) == 2 and len(page2["items"]) == 1
        assert not ids(page1) & ids(page2)


class TestFacets:
    async def test_counts_respect_other_filters_not_their_own(
        self, client: httpx.AsyncClient, province: dict
    ) -> None:  # type: ignore[type-arg]
        body = await search(client, q="质谱", city="510700")
        facets = body["facets"]
        assert body["total"] == 1  # only ms2 is in 绵阳
        city = {f["value"]: f["count"] for f in facets["city"]}
        assert city == {"510100": 2, "510700": 1}  # the city facet ignores the city filter
        assert {f["value"]: f["label"] for f in facets["city"]}["510700"] == "绵阳市"
        mode = {f["value"]: f["count"] for f in facets["sharing_mode"]}
        assert mode == {"internal": 1}  # other facets apply the city filter
        assert {f["value"]: f["label"] for f in facets["sharing_mode"]} == {"internal": "内部共享"}
        assert {f["value"]: f["count"] for f in facets["institution_kind"]} == {"企业": 1}
        assert {f["value"]: (f["label"], f["count"]) for f in facets["category"]} == {"01": ("分析仪器", 1)}
        assert {f["value"]: (f["label"], f["count"]) for f in facets["status"]} == {"standby": ("待机", 1)}

    async def test_facets_can_be_skipped(self, client: httpx.AsyncClient, province: dict) -> None:  # type: ignore[type-arg]
        body = await search(client, q="质谱", facets="false")
        assert body["total"] == 3
        assert body["facets"] == {}


class TestRestricted:
    async def _seen(self, client: httpx.AsyncClient, province: dict, headers: dict[str, str] | None) -> bool:  # type: ignore[type-arg]
        body = await search(client, headers, q="军工质谱")
        in_search = province["secret"].id in ids(body)  # type: ignore[attr-defined]
        counted = sum(f["count"] for f in body["facets"]["city"])
        detail = await client.get(f"/api/v1/instruments/{province['secret'].id}", headers=headers)  # type: ignore[attr-defined]
        export = await client.get(
            "/api/v1/instruments/export.json", params={"q": "军工质谱"}, headers=headers
        )
        assert (
            in_search
            == (body["total"] == 1)
            == (counted == 1)
            == (detail.status_code == 200)
            == (len(export.json()) == 1)
        )
        if not in_search:
            assert detail.status_code == 404
        return in_search

    async def test_anonymous_cannot_see(self, client: httpx.AsyncClient, province: dict) -> None:  # type: ignore[type-arg]
        assert not await self._seen(client, province, None)

    async def test_researcher_cannot_see(
        self, client: httpx.AsyncClient, session: AsyncSession, province: dict
    ) -> None:  # type: ignore[type-arg]
        user = await make_user(session)
        assert not await self._seen(client, province, await bearer_headers(session, user))

    async def test_manager_of_other_institution_cannot_see(
        self, client: httpx.AsyncClient, session: AsyncSession, province: dict
    ) -> None:  # type: ignore[type-arg]
        user = await make_user(session, role="facility_manager", grant_institution=province["uni"])  # type: ignore[arg-type]
        assert not await self._seen(client, province, await bearer_headers(session, user))

    async def test_owner_manager_sees(
        self, client: httpx.AsyncClient, session: AsyncSession, province: dict
    ) -> None:  # type: ignore[type-arg]
        facility = await make_facility(session, province["corp"])  # type: ignore[arg-type]
        user = await make_user(
            session,
            role="facility_manager",
            grant_institution=province["corp"],  # type: ignore[arg-type]
            facility=facility,
        )
        assert await self._seen(client, province, await bearer_headers(session, user))

    async def test_admin_sees(self, client: httpx.AsyncClient, session: AsyncSession, province: dict) -> None:  # type: ignore[type-arg]
        admin = await make_user(session, role="platform_admin")
        assert await self._seen(client, province, await bearer_headers(session, admin))

    async def test_authorised_user_sees(
        self, client: httpx.AsyncClient, session: AsyncSession, province: dict
    ) -> None:  # type: ignore[type-arg]
        user = await make_user(session)
        await grant_instrument_access(session, province["secret"], user)  # type: ignore[arg-type]
        assert await self._seen(client, province, await bearer_headers(session, user))

    async def test_a_bad_token_is_refused_not_taken_as_anonymous(
        self, client: httpx.AsyncClient, province: dict  # type: ignore[type-arg]
    ) -> None:
        r = await client.get("/api/v1/instruments", headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401, r.text
        assert r.headers["content-type"].startswith("application/problem+json")

    async def test_the_token_is_checked_before_the_parameters(
        self, client: httpx.AsyncClient, province: dict  # type: ignore[type-arg]
    ) -> None:
        r = await client.get("/api/v1/instruments", params={"limit": "0"},
                             headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401, r.text

    async def test_a_chain_by_name_with_a_token(
        self, client: httpx.AsyncClient, session: AsyncSession, province: dict  # type: ignore[type-arg]
    ) -> None:
        """A signed-in search reads through its session (the anonymous one through a pooled connection): the
        chain's name is looked up either way."""
        user = await make_user(session)
        headers = await bearer_headers(session, user)
        anonymous = await client.get("/api/v1/instruments", params={"chain": "医药健康"})
        signed_in = await client.get("/api/v1/instruments", params={"chain": "医药健康"}, headers=headers)
        assert anonymous.status_code == signed_in.status_code == 200
        assert anonymous.json()["total"] == signed_in.json()["total"] >= 1


class TestBadParameters:
    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"city": "999999"}, "city"),
            ({"city": "5101"}, "city"),
            ({"category": "0"}, "category"),
            ({"category": "01020"}, "category"),
            ({"institution_kind": "外星机构"}, "institution_kind"),
            ({"sharing_mode": "public"}, "sharing_mode"),
            ({"status": "broken"}, "status"),
            ({"chain": "不存在的链"}, "chain"),
            ({"chain": "3000000000"}, "chain"),
            ({"chain": "0"}, "chain"),
            ({"chain": "²"}, "chain"),
            ({"min_value": "-1"}, "min_value"),
            ({"min_value": "10", "max_value": "5"}, "min_value"),
            ({"limit": "500"}, "limit"),
            ({"sort": "random"}, "sort"),
            ({"limit": "abc"}, "limit"),
            ({"large": "maybe"}, "large"),
            ({"q": "质" * 101}, "q"),
            ({"q": "GPU G G G G 不存在的词"}, "q"),  # six terms: refused, not cut to five silently
        ],
    )
    async def test_rejected_naming_the_parameter(
        self, client: httpx.AsyncClient, params: dict, field: str
    ) -> None:  # type: ignore[type-arg]
        r = await client.get("/api/v1/instruments", params=params)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert field in {e["field"] for e in r.json()["errors"]}


async def test_empty_parameters_count_as_not_given(client: httpx.AsyncClient, province: dict) -> None:  # type: ignore[type-arg]
    """An HTML form sends its unused fields empty: every parameter alike is then left out, none is a 422."""
    empty = {name: "" for name in ("q", "city", "institution_kind", "institution", "category", "sharing_mode",
                                   "status", "chain", "min_value", "max_value", "large", "vouchers", "sort",
                                   "limit", "offset")}
    assert await search(client, **empty) == await search(client)
    assert ids(await search(client, **{**empty, "q": "质谱"})) == ids(await search(client, q="质谱"))


async def test_openapi_declares_every_search_parameter(client: httpx.AsyncClient) -> None:
    """The search parses its query string itself (instruments.api.search_params), so the parameters the docs show
    come from the same model: every field, with its constraints."""
    from instruments.api import SearchParams

    spec = (await client.get("/openapi.json")).json()
    for path in ("/api/v1/instruments", "/api/v1/instruments/export.{fmt}"):
        declared = {p["name"]: p for p in spec["paths"][path]["get"]["parameters"] if p["in"] == "query"}
        assert set(declared) == set(SearchParams.model_fields), path
        assert spec["paths"][path]["get"]["security"] == [{"OAuth2PasswordBearer": []}], path
    ok = spec["paths"]["/api/v1/instruments"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/SearchResult"}
    city = declared["city"]
    assert city["description"] == "市州代码"
    assert {"pattern": r"^\d{6}$", "type": "string"} in city["schema"]["anyOf"]


@pytest.fixture(scope="module")
def routed_app(app):  # type: ignore[no-untyped-def]
    """The app without its direct routes (booking.core.direct_routes.DirectRoutes): every request through the
    router."""
    from booking.app import create_app
    from booking.core.direct_routes import DirectRoutes

    app = create_app()
    app.user_middleware = [m for m in app.user_middleware if m.cls is not DirectRoutes]
    return app


@pytest.mark.parametrize(
    ("params", "signed_in"),
    [
        ({"q": "质谱"}, False),
        ({"q": "质谱"}, True),  # the session path, with the restricted instrument granted
        ({"city": "510700", "sort": "value_desc", "limit": "2"}, False),
        ({"limit": "0"}, False),  # 422 naming limit
        ({"city": "999999"}, False),  # 422: well-formed, unknown
        ({"q": "质谱"}, "bad token"),  # 401
    ],
)
async def test_served_directly_as_through_the_router(
    app, routed_app, session: AsyncSession, province: dict, params: dict, signed_in: object,  # type: ignore[no-untyped-def, type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The search is served ahead of the app's routing (DirectRoutes): the same answers, errors included, as the
    router's path gives, and the route path in the metrics."""
    from booking.core.middleware import REQUESTS
    from instruments.api import search_route

    async def not_routed(*args: object) -> None:
        raise AssertionError("the app's router answered the search")

    def counted(status: int) -> float:
        return REQUESTS.labels("GET", "/api/v1/instruments", str(status))._value.get()  # type: ignore[no-any-return]

    before = {status: counted(status) for status in (200, 401, 422)}
    headers = {"X-Request-ID": "same-request-0001"}  # problem details carry it
    if signed_in is True:
        user = await make_user(session, roles=["researcher"])
        await grant_instrument_access(session, province["secret"], user)
        headers |= await bearer_headers(session, user)
    elif signed_in:
        headers |= {"Authorization": "Bearer not-a-token"}
    answers = []
    for which in (app, routed_app):
        transport = httpx.ASGITransport(app=which, raise_app_exceptions=False)
        with monkeypatch.context() as patched:
            if which is app:  # the direct path calls the endpoint, never the route's handle
                patched.setattr(search_route, "handle", not_routed)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                r = await c.get("/api/v1/instruments", params=params, headers=headers)
        answers.append((r.status_code, dict(r.headers), r.json()))
    assert answers[0] == answers[1]
    status = answers[0][0]
    assert status in (200, 401, 422)
    if signed_in is True:
        assert province["secret"].id in ids(answers[0][2])  # type: ignore[attr-defined]
    assert counted(status) - before[status] == 2  # both labelled with the route path, not "unmatched"
