"""Industrial-chain tags: admins rename and delete them (API and the 分类与产业链 page); a deleted tag leaves the
instruments and the search counts exact."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.activity.models import ActivityEntry
from instruments.models import Chain
from tests.factories import bearer_headers, login_web, make_institution, make_instrument, make_user


async def _chain(session: AsyncSession, name: str) -> Chain:
    chain = Chain(name=name)
    session.add(chain)
    await session.flush()
    return chain


async def _search(client: httpx.AsyncClient, **params: object) -> dict:  # type: ignore[type-arg]
    r = await client.get("/api/v1/instruments", params={k: str(v) for k, v in params.items()})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture
async def tagged(session: AsyncSession) -> dict[str, object]:
    doomed, kept = await _chain(session, "待删除的链"), await _chain(session, "保留的链")
    institution = await make_institution(session, name="产业链测试研究院")
    both = await make_instrument(session, institution, name="双标签光谱仪", chains=[doomed.name, kept.name])
    only = await make_instrument(session, institution, name="单标签光谱仪", chains=[doomed.name])
    plain = await make_instrument(session, institution, name="无标签光谱仪")
    return {"doomed": doomed, "kept": kept, "institution": institution, "both": both, "only": only, "plain": plain}


class TestApi:
    async def test_admin_deletes_a_tag_and_the_counts_stay_exact(
            self, client: httpx.AsyncClient, session: AsyncSession, tagged: dict) -> None:  # type: ignore[type-arg]
        doomed, kept, institution = tagged["doomed"], tagged["kept"], tagged["institution"]
        before_all = await _search(client, institution=institution.id)
        assert (await _search(client, chain=doomed.id))["total"] == 2
        admin = await bearer_headers(session, await make_user(session, role="platform_admin"))
        r = await client.delete(f"/api/v1/instrument-chains/{doomed.id}", headers=admin)
        assert r.status_code == 204
        assert await session.get(Chain, doomed.id, populate_existing=True) is None
        # The instruments stay; only the tag's links went.
        after_all = await _search(client, institution=institution.id)
        assert after_all["total"] == before_all["total"] == 3
        assert after_all["facets"] == before_all["facets"]
        assert (await _search(client, chain=doomed.id))["total"] == 0
        kept_hits = await _search(client, chain=kept.id)
        assert {i["id"] for i in kept_hits["items"]} == {tagged["both"].id} and kept_hits["total"] == 1
        # No kept count is left behind for the tag (the frequent terms' per-chain counts).
        left = await session.scalar(text("SELECT coalesce(sum(n), 0) FROM search_term_chain_counts"
                                         " WHERE chain_id = :id"), {"id": doomed.id})
        assert left == 0
        entry = (await session.scalars(select(ActivityEntry).where(ActivityEntry.action == "chain.deleted"))).one()
        assert entry.before == {"name": "待删除的链", "instruments": 2}
        assert (await client.delete(f"/api/v1/instrument-chains/{doomed.id}", headers=admin)).status_code == 404

    async def test_only_admins(self, client: httpx.AsyncClient, session: AsyncSession,
                               tagged: dict) -> None:  # type: ignore[type-arg]
        path = f"/api/v1/instrument-chains/{tagged['doomed'].id}"
        assert (await client.delete(path)).status_code == 401
        manager = await bearer_headers(session, await make_user(session, role="facility_manager"))
        assert (await client.delete(path, headers=manager)).status_code == 403
        assert await session.scalar(select(func.count()).select_from(Chain).where(
            Chain.id == tagged["doomed"].id)) == 1  # type: ignore[arg-type]


class TestPage:
    async def test_rename_and_delete_on_the_page(self, client: httpx.AsyncClient, session: AsyncSession,
                                                 tagged: dict) -> None:  # type: ignore[type-arg]
        doomed, kept = tagged["doomed"], tagged["kept"]
        await login_web(session, client, await make_user(session, role="platform_admin"))
        page = await client.get("/instruments/codes")
        assert f'action="/instruments/codes/chains/{doomed.id}/delete"' in page.text
        assert "有 2 台仪器标注了「待删除的链」" in page.text  # the confirmation says what goes with it
        # Rename: blank, too long and duplicate names are refused by field, nothing written.
        for name, message in (("", "必填"), ("链" * 51, "太长"), (kept.name, "已有同名产业链标签")):
            r = await client.post(f"/instruments/codes/chains/{doomed.id}", data={"name": name})
            assert r.status_code in (409, 422) and message in r.text, (name, r.status_code)
            await session.refresh(doomed)
            assert doomed.name == "待删除的链"
        r = await client.post(f"/instruments/codes/chains/{doomed.id}", data={"name": "  改名后的链 "})
        assert r.status_code == 303 and "did=chain_renamed" in r.headers["location"]
        assert "已重命名产业链标签" in (await client.get(r.headers["location"])).text
        await session.refresh(doomed)
        assert doomed.name == "改名后的链"
        r = await client.post(f"/instruments/codes/chains/{doomed.id}/delete")
        assert r.status_code == 303
        page = await client.get(r.headers["location"])
        assert "已删除产业链标签" in page.text and "改名后的链" not in page.text
        assert (await client.post(f"/instruments/codes/chains/{doomed.id}/delete")).status_code == 404

    async def test_markup_in_a_name_is_text(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        await _chain(session, "<script>alert(1)</script>")
        await login_web(session, client, await make_user(session, role="platform_admin"))
        page = await client.get("/instruments/codes")
        assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
