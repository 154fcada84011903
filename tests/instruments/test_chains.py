"""Industrial-chain tags: admins rename and delete them (API and the 分类与产业链 page); a deleted tag's links go
with it, the instruments stay, and the search's counts (live, kept per chain, the facet cube) stay exact."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.activity.models import ActivityEntry
from booking.core.middleware import CSRF_COOKIE
from instruments import repository as repo
from instruments.models import Chain, Instrument, InstrumentChain
from tests.factories import CSRF_VALUE, bearer_headers, login_web, make_institution, make_instrument, make_user
from tests.instruments.test_search_index import add_frequent_terms, assert_in_sync

IC = InstrumentChain.__table__  # type: ignore[attr-defined]


async def _chain(session: AsyncSession, name: str) -> Chain:
    chain = Chain(name=name)
    session.add(chain)
    await session.flush()
    return chain


async def _search(client: httpx.AsyncClient, **params: object) -> dict[str, Any]:
    r = await client.get("/api/v1/instruments", params={k: str(v) for k, v in params.items()})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _ids(page: dict[str, Any]) -> set[int]:
    return {item["id"] for item in page["items"]}


async def _links(session: AsyncSession, chain_id: int) -> int:
    return int(await session.scalar(select(func.count()).select_from(IC).where(IC.c.chain_id == chain_id)) or 0)


async def _entries(session: AsyncSession, action: str, chain_id: int) -> list[ActivityEntry]:
    return list(await session.scalars(select(ActivityEntry).where(
        ActivityEntry.action == action, ActivityEntry.target_type == "chain",
        ActivityEntry.target_id == str(chain_id))))


async def _name(session: AsyncSession, chain_id: int) -> str | None:
    return await session.scalar(select(col(Chain.name)).where(col(Chain.id) == chain_id))


async def _admin(session: AsyncSession) -> dict[str, str]:
    return await bearer_headers(session, await make_user(session, role="platform_admin"))


@pytest.fixture
async def tagged(session: AsyncSession) -> dict[str, Any]:
    """Two tags on three instruments of one institution (one instrument carries both, one neither), in two cities'
    worth of facets so the facet counts have something to differ by."""
    doomed, kept = await _chain(session, "待删除的链"), await _chain(session, "保留的链")
    institution = await make_institution(session, name="产业链测试研究院", city_code="510100")
    both = await make_instrument(session, institution, name="双标签光谱仪", chains=[doomed.name, kept.name],
                                 original_value=Decimal("2300000"), accepts_vouchers=True)
    only = await make_instrument(session, institution, name="单标签光谱仪", chains=[doomed.name],
                                 category_code="010600", status="standby")
    plain = await make_instrument(session, institution, name="无标签光谱仪", sharing_mode="internal")
    return {"doomed": doomed, "kept": kept, "institution": institution, "both": both, "only": only, "plain": plain}


class TestDeleteChainApi:
    async def test_admin_deletes_a_tag_its_links_go_and_the_instruments_stay(
        self, client: httpx.AsyncClient, session: AsyncSession, tagged: dict[str, Any]
    ) -> None:
        doomed, kept = tagged["doomed"], tagged["kept"]
        admin = await _admin(session)
        r = await client.delete(f"/api/v1/instrument-chains/{doomed.id}", headers=admin)
        assert r.status_code == 204 and r.content == b""
        assert await _name(session, doomed.id) is None
        assert await _links(session, doomed.id) == 0
        assert await _links(session, kept.id) == 1
        assert await session.scalar(select(func.count()).select_from(Instrument).where(
            Instrument.id.in_([tagged[k].id for k in ("both", "only", "plain")]))) == 3  # type: ignore[union-attr]
        assert (await client.get(f"/api/v1/instruments/{tagged['both'].id}")).json()["chains"] == [kept.name]
        assert (await client.get(f"/api/v1/instruments/{tagged['only'].id}")).json()["chains"] == []
        assert doomed.name not in [c["name"] for c in (await client.get("/api/v1/instrument-chains")).json()]
        [entry] = await _entries(session, "chain.deleted", doomed.id)
        assert entry.before == {"name": "待删除的链", "instruments": 2} and entry.after is None
        assert entry.actor_id is not None
        # Gone: a second delete is an unknown tag.
        r = await client.delete(f"/api/v1/instrument-chains/{doomed.id}", headers=admin)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")

    async def test_a_tag_nobody_carries(
        self, client: httpx.AsyncClient, session: AsyncSession, tagged: dict[str, Any]
    ) -> None:
        lonely = await _chain(session, "无人标注的链")
        r = await client.delete(f"/api/v1/instrument-chains/{lonely.id}", headers=await _admin(session))
        assert r.status_code == 204
        [entry] = await _entries(session, "chain.deleted", lonely.id)
        assert entry.before == {"name": "无人标注的链", "instruments": 0}
        await assert_in_sync(session)

    async def test_search_counts_stay_exact(
        self, client: httpx.AsyncClient, session: AsyncSession, tagged: dict[str, Any]
    ) -> None:
        doomed, kept, institution = tagged["doomed"], tagged["kept"], tagged["institution"]
        # A frequent term, so searches for it (with and without a chain) read the kept postings and counts; the
        # empty term (a chain filter alone) is kept from the start.
        await add_frequent_terms(session, "光谱")
        queries: list[dict[str, object]] = [
            {"chain": kept.id},  # kept counts of the empty term, per chain
            {"chain": kept.name, "q": "光谱"},  # kept counts of 光谱, per chain
            {"q": "光谱"},  # 光谱's marginals
            {"q": "光谱", "city": "510100"},  # 光谱's counts by cell
            {"institution": institution.id},  # counted live
            {"institution": institution.id, "chain": kept.id},  # counted live, with the chain
            {},  # the facet cube
        ]
        before = [await _search(client, **q) for q in queries]
        assert (await _search(client, chain=doomed.id))["total"] == 2
        assert (await _search(client, chain=doomed.id, q="光谱"))["total"] == 2

        r = await client.delete(f"/api/v1/instrument-chains/{doomed.id}", headers=await _admin(session))
        assert r.status_code == 204

        # Every count but the deleted tag's is what it was: no instrument came or went, only a tag.
        for query, was in zip(queries, before, strict=True):
            now = await _search(client, **query)
            assert (now["total"], now["facets"], _ids(now)) == (was["total"], was["facets"], _ids(was)), query
        kept_hits = await _search(client, chain=kept.id, q="光谱")
        assert _ids(kept_hits) == {tagged["both"].id} and kept_hits["total"] == 1
        assert _facet_total(kept_hits, "status") == 1
        # The deleted tag: by id nothing (not a stale count), by name an unknown tag.
        for q in ({"chain": doomed.id}, {"chain": doomed.id, "q": "光谱"}):
            gone = await _search(client, **q)
            assert gone["total"] == 0 and gone["items"] == [] and all(not v for v in gone["facets"].values()), q
        r = await client.get("/api/v1/instruments", params={"chain": "待删除的链"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "chain"
        # Every kept table agrees with a recount from scratch, and nothing is kept for the deleted id.
        await assert_in_sync(session)
        left = await session.scalar(text("SELECT count(*) FROM search_term_chain_counts WHERE chain_id = :id"),
                                    {"id": doomed.id})
        assert left == 0
        left = await session.scalar(text("SELECT count(*) FROM search_term_postings WHERE :id = ANY(chain_ids)"),
                                    {"id": doomed.id})
        assert left == 0

    async def test_no_stale_count_survives_for_a_later_tag(
        self, client: httpx.AsyncClient, session: AsyncSession, tagged: dict[str, Any]
    ) -> None:
        """The kept counts are keyed by chain id; a tag created again under the deleted one's id (a restore, an
        import with ids) must start from nothing, and a term made frequent later builds its counts afresh."""
        doomed = tagged["doomed"]
        await add_frequent_terms(session, "光谱")
        assert (await client.delete(f"/api/v1/instrument-chains/{doomed.id}",
                                    headers=await _admin(session))).status_code == 204
        await session.execute(insert(Chain.__table__).values(id=doomed.id, name="同号新链"))  # type: ignore[attr-defined]
        await session.execute(insert(IC).values(instrument_id=tagged["plain"].id, chain_id=doomed.id))
        for q in ({"chain": doomed.id}, {"chain": doomed.id, "q": "光谱"}):
            page = await _search(client, **q)
            assert page["total"] == 1 and _ids(page) == {tagged["plain"].id}, q
            assert _facet_total(page, "status") == 1
        await add_frequent_terms(session, "标签")
        page = await _search(client, chain=doomed.id, q="标签")
        assert page["total"] == 1 and _ids(page) == {tagged["plain"].id}
        await assert_in_sync(session)

    async def test_only_admins(self, client: httpx.AsyncClient, session: AsyncSession,
                               tagged: dict[str, Any]) -> None:
        path = f"/api/v1/instrument-chains/{tagged['doomed'].id}"
        r = await client.delete(path)
        assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
        for role in ("facility_manager", "institution_admin", None):
            headers = await bearer_headers(session, await make_user(session, role=role))
            assert (await client.delete(path, headers=headers)).status_code == 403, role
        assert await _name(session, tagged["doomed"].id) == "待删除的链"
        assert await _links(session, tagged["doomed"].id) == 2
        assert await _entries(session, "chain.deleted", tagged["doomed"].id) == []

    @pytest.mark.parametrize("chain_id", ["0", "987654321", str(2**31), str(2**63)])
    async def test_unknown_tag(self, client: httpx.AsyncClient, session: AsyncSession, chain_id: str) -> None:
        r = await client.delete(f"/api/v1/instrument-chains/{chain_id}", headers=await _admin(session))
        assert r.status_code in (404, 422) and r.headers["content-type"].startswith("application/problem+json")
        if int(chain_id) < 2**63:
            assert r.status_code == 404 and "不存在" in r.json()["detail"]


def _facet_total(page: dict[str, Any], name: str) -> int:
    return sum(v["count"] for v in page["facets"].get(name, []))


class TestRenameChainApi:
    async def test_admin_renames(self, client: httpx.AsyncClient, session: AsyncSession,
                                 tagged: dict[str, Any]) -> None:
        doomed = tagged["doomed"]
        r = await client.patch(f"/api/v1/instrument-chains/{doomed.id}", headers=await _admin(session),
                               json={"name": "  更名的链 "})
        assert r.status_code == 200 and r.json() == {"id": doomed.id, "name": "更名的链"}
        assert await _name(session, doomed.id) == "更名的链"
        # The instruments carry the tag by id: they show the new name, and search finds them by it.
        assert sorted((await client.get(f"/api/v1/instruments/{tagged['both'].id}")).json()["chains"]) == sorted(
            ["更名的链", "保留的链"])
        assert _ids(await _search(client, chain="更名的链")) == {tagged["both"].id, tagged["only"].id}
        r = await client.get("/api/v1/instruments", params={"chain": "待删除的链"})
        assert r.status_code == 422
        [entry] = await _entries(session, "chain.renamed", doomed.id)
        assert (entry.before, entry.after) == ({"name": "待删除的链"}, {"name": "更名的链"})

    async def test_same_name_changes_nothing(self, client: httpx.AsyncClient, session: AsyncSession,
                                             tagged: dict[str, Any]) -> None:
        doomed = tagged["doomed"]
        r = await client.patch(f"/api/v1/instrument-chains/{doomed.id}", headers=await _admin(session),
                               json={"name": "待删除的链"})
        assert r.status_code == 200 and r.json()["name"] == "待删除的链"
        assert await _entries(session, "chain.renamed", doomed.id) == []

    @pytest.mark.parametrize(
        ("name", "status", "code", "message"),
        [
            ("", 422, "string_too_short", "太短"),
            ("   ", 422, "string_too_short", "太短"),
            ("链", 422, "string_too_short", "太短"),
            ("链" * 51, 422, "string_too_long", "太长（最多 50 个字符）"),
            (None, 422, None, None),
            # A duplicate is a conflict with what is stored, as when adding a tag (and as for every duplicate on
            # the platform): 409, named by field like the rest.
            ("保留的链", 409, "duplicate", "已有同名产业链标签"),
        ],
    )
    async def test_bad_names_are_refused_by_field_and_nothing_is_written(
        self, client: httpx.AsyncClient, session: AsyncSession, tagged: dict[str, Any],
        name: str | None, status: int, code: str | None, message: str | None,
    ) -> None:
        doomed = tagged["doomed"]
        r = await client.patch(f"/api/v1/instrument-chains/{doomed.id}", headers=await _admin(session),
                               json={"name": name})
        assert r.status_code == status, r.text
        [error] = r.json()["errors"]
        assert error["field"] == "name"
        if code:
            assert error["code"] == code and message in error["message"]
        assert await _name(session, doomed.id) == "待删除的链"
        assert await _entries(session, "chain.renamed", doomed.id) == []

    async def test_adding_refuses_the_same_names(self, client: httpx.AsyncClient, session: AsyncSession,
                                                 tagged: dict[str, Any]) -> None:
        admin = await _admin(session)
        for name, status in (("", 422), ("链" * 51, 422), ("保留的链", 409)):
            r = await client.post("/api/v1/instrument-chains", headers=admin, json={"name": name})
            assert r.status_code == status and r.json()["errors"][0]["field"] == "name", name

    async def test_a_name_taken_meanwhile_is_a_conflict_not_an_error(
        self, client: httpx.AsyncClient, session: AsyncSession, tagged: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Two admins at once: the friendly check saw no clash, the unique constraint does."""
        async def nothing_yet(_session: AsyncSession) -> dict[str, int]:
            return {}

        monkeypatch.setattr(repo, "chain_ids_by_name", nothing_yet)
        admin = await _admin(session)
        r = await client.patch(f"/api/v1/instrument-chains/{tagged['doomed'].id}", headers=admin,
                               json={"name": "保留的链"})
        assert r.status_code == 409 and r.json()["errors"][0]["field"] == "name"
        r = await client.post("/api/v1/instrument-chains", headers=admin, json={"name": "保留的链"})
        assert r.status_code == 409 and r.json()["errors"][0]["field"] == "name"

    async def test_only_admins(self, client: httpx.AsyncClient, session: AsyncSession,
                               tagged: dict[str, Any]) -> None:
        path = f"/api/v1/instrument-chains/{tagged['doomed'].id}"
        assert (await client.patch(path, json={"name": "别的名字"})).status_code == 401
        manager = await bearer_headers(session, await make_user(session, role="facility_manager"))
        assert (await client.patch(path, headers=manager, json={"name": "别的名字"})).status_code == 403
        assert await _name(session, tagged["doomed"].id) == "待删除的链"

    @pytest.mark.parametrize("chain_id", ["987654321", str(2**31)])
    async def test_unknown_tag(self, client: httpx.AsyncClient, session: AsyncSession, chain_id: str) -> None:
        r = await client.patch(f"/api/v1/instrument-chains/{chain_id}", headers=await _admin(session),
                               json={"name": "别的名字"})
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


class TestCodesPage:
    async def test_each_tag_has_a_rename_form_and_a_delete_button_that_asks(
        self, client: httpx.AsyncClient, session: AsyncSession, tagged: dict[str, Any]
    ) -> None:
        doomed = tagged["doomed"]
        lonely = await _chain(session, "无人标注的链")
        await login_web(session, client, await make_user(session, role="platform_admin"))
        page = (await client.get("/instruments/codes")).text
        row = page[page.index(f'<tr id="chain-{doomed.id}"'):]
        row = row[:row.index("</tr>")]
        assert f'action="/instruments/codes/chains/{doomed.id}"' in row
        assert 'name="name" value="待删除的链"' in row
        assert f'action="/instruments/codes/chains/{doomed.id}/delete"' in row
        assert row.count(f'name="csrf_token" value="{CSRF_VALUE}"') == 2  # both forms, like the page's others
        # The confirmation says how many instruments carry the tag.
        assert 'hx-confirm="有 2 台仪器标注了「待删除的链」，删除后这些仪器将不再带有该标签。' in row
        assert f'<a href="/instruments?chain={doomed.id}">2</a>' in row
        assert "没有仪器标注「无人标注的链」" in page[page.index(f'<tr id="chain-{lonely.id}"'):]

    async def test_rename(self, client: httpx.AsyncClient, session: AsyncSession, tagged: dict[str, Any]) -> None:
        doomed = tagged["doomed"]
        await login_web(session, client, await make_user(session, role="platform_admin"))
        r = await client.post(f"/instruments/codes/chains/{doomed.id}", data={"name": "  改名后的链 "})
        assert r.status_code == 303
        assert r.headers["location"] == f"/instruments/codes?did=chain_renamed&chain={doomed.id}#chain-{doomed.id}"
        page = (await client.get(r.headers["location"])).text
        assert "已将产业链标签重命名为「改名后的链」" in page and 'value="改名后的链"' in page
        assert await _name(session, doomed.id) == "改名后的链"
        [entry] = await _entries(session, "chain.renamed", doomed.id)
        assert (entry.before, entry.after) == ({"name": "待删除的链"}, {"name": "改名后的链"})

    async def test_rename_to_the_same_name_says_nothing_changed(
        self, client: httpx.AsyncClient, session: AsyncSession, tagged: dict[str, Any]
    ) -> None:
        kept = tagged["kept"]
        await login_web(session, client, await make_user(session, role="platform_admin"))
        r = await client.post(f"/instruments/codes/chains/{kept.id}", data={"name": "保留的链"})
        assert r.status_code == 303
        assert r.headers["location"] == f"/instruments/codes?did=chain_unchanged&chain={kept.id}#chain-{kept.id}"
        page = (await client.get(r.headers["location"])).text
        assert "名称未改变，产业链标签「保留的链」保持原样" in page and "重命名为" not in page
        assert await _entries(session, "chain.renamed", kept.id) == []

    @pytest.mark.parametrize(
        ("name", "status", "error"),
        [
            ("", 422, "标签名称：必填"),
            ("链", 422, "标签名称：太短（至少 2 个字符）"),
            ("链" * 51, 422, "标签名称：太长（最多 50 个字符）"),
            ("保留的链", 409, "标签名称：已有同名产业链标签"),
            ("1234", 422, "标签名称：产业链名称不能全是数字（会与标签编号混淆）"),  # chain=1234 reads as an id
        ],
    )
    async def test_rename_refused(self, client: httpx.AsyncClient, session: AsyncSession, tagged: dict[str, Any],
                                  name: str, status: int, error: str) -> None:
        doomed = tagged["doomed"]
        await login_web(session, client, await make_user(session, role="platform_admin"))
        r = await client.post(f"/instruments/codes/chains/{doomed.id}", data={"name": name})
        assert r.status_code == status
        # The flash names the tag and the field; the row shows the problem under what was typed.
        assert f"未能重命名产业链标签「待删除的链」。{error}" in r.text
        row = r.text[r.text.index(f'<tr id="chain-{doomed.id}"'):]
        row = row[:row.index("</tr>")]
        assert f'<div class="field-error" id="e-chain-{doomed.id}">{error}</div>' in row
        assert f'value="{name}"' in row and 'aria-invalid="true"' in row
        assert await _name(session, doomed.id) == "待删除的链"
        assert await _entries(session, "chain.renamed", doomed.id) == []

    async def test_delete(self, client: httpx.AsyncClient, session: AsyncSession, tagged: dict[str, Any]) -> None:
        doomed, kept = tagged["doomed"], tagged["kept"]
        await login_web(session, client, await make_user(session, role="platform_admin"))
        r = await client.post(f"/instruments/codes/chains/{doomed.id}/delete")
        assert r.status_code == 303 and r.headers["location"] == "/instruments/codes?did=chain_deleted&n=2#chains"
        page = (await client.get(r.headers["location"])).text
        assert "已删除产业链标签，2 台仪器上的该标签已一并移除" in page
        assert "待删除的链" not in page and f'<tr id="chain-{kept.id}"' in page
        assert await _name(session, doomed.id) is None and await _links(session, doomed.id) == 0
        assert len(await _entries(session, "chain.deleted", doomed.id)) == 1
        await assert_in_sync(session)
        assert (await client.post(f"/instruments/codes/chains/{doomed.id}/delete")).status_code == 404
        assert (await client.post(f"/instruments/codes/chains/{doomed.id}", data={"name": "复活"})).status_code == 404

    async def test_delete_from_htmx(self, client: httpx.AsyncClient, session: AsyncSession,
                                    tagged: dict[str, Any]) -> None:
        """The boosted form (the one hx-confirm guards) is redirected the htmx way."""
        await login_web(session, client, await make_user(session, role="platform_admin"))
        lonely = await _chain(session, "无人标注的链")
        r = await client.post(f"/instruments/codes/chains/{lonely.id}/delete",
                              headers={"HX-Request": "true", "HX-Boosted": "true"})
        assert r.status_code == 204 and r.headers["HX-Redirect"] == "/instruments/codes?did=chain_deleted&n=0#chains"
        assert "已删除产业链标签（没有仪器标注它）" in (await client.get(r.headers["HX-Redirect"])).text

    async def test_without_csrf_nothing_changes(self, client: httpx.AsyncClient, session: AsyncSession,
                                                tagged: dict[str, Any]) -> None:
        doomed = tagged["doomed"]
        await login_web(session, client, await make_user(session, role="platform_admin"))
        del client.headers["X-CSRF-Token"]
        assert (await client.post(f"/instruments/codes/chains/{doomed.id}/delete")).status_code == 403
        r = await client.post(f"/instruments/codes/chains/{doomed.id}", data={"name": "改名后的链"})
        assert r.status_code == 403
        r = await client.post(f"/instruments/codes/chains/{doomed.id}",
                              data={"name": "改名后的链", "csrf_token": CSRF_VALUE})
        assert r.status_code == 303  # the form's own token is enough, as on the page
        assert await _links(session, doomed.id) == 2

    async def test_only_admins(self, client: httpx.AsyncClient, session: AsyncSession,
                               tagged: dict[str, Any]) -> None:
        doomed = tagged["doomed"]
        client.cookies.set(CSRF_COOKIE, CSRF_VALUE)
        anonymous = await client.post(f"/instruments/codes/chains/{doomed.id}/delete",
                                      headers={"X-CSRF-Token": CSRF_VALUE})
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
        await login_web(session, client, await make_user(session, role="facility_manager"))
        assert (await client.get("/instruments/codes")).status_code == 403
        assert (await client.post(f"/instruments/codes/chains/{doomed.id}/delete")).status_code == 403
        assert (await client.post(f"/instruments/codes/chains/{doomed.id}", data={"name": "改名"})).status_code == 403
        assert await _name(session, doomed.id) == "待删除的链" and await _links(session, doomed.id) == 2

    async def test_flash_takes_no_text_from_the_address(self, client: httpx.AsyncClient, session: AsyncSession,
                                                        tagged: dict[str, Any]) -> None:
        await login_web(session, client, await make_user(session, role="platform_admin"))
        page = (await client.get("/instruments/codes", params={"did": "chain_renamed", "chain": "987654321"})).text
        assert "已重命名产业链标签" in page
        # Only a number can come through: text, or a number the column cannot hold, is refused.
        assert (await client.get("/instruments/codes", params={"did": "chain_added", "chain": "伪造"})).status_code == 422
        assert (await client.get("/instruments/codes", params={"did": "chain_deleted", "n": "-1"})).status_code == 422
        assert (await client.get("/instruments/codes", params={"did": "伪造的消息"})).status_code == 422

    async def test_markup_in_a_name_is_text(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        chain = await _chain(session, "<script>alert(1)</script>")
        await login_web(session, client, await make_user(session, role="platform_admin"))
        page = (await client.get("/instruments/codes")).text
        assert "<script>alert(1)</script>" not in page
        assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in page
        assert "没有仪器标注「&lt;script&gt;alert(1)&lt;/script&gt;」" in page  # inside the confirmation too
        # And it can now be deleted from the page.
        r = await client.post(f"/instruments/codes/chains/{chain.id}/delete")
        assert r.status_code == 303 and await _name(session, chain.id) is None
