"""The equivalence-group pages for a manager of many instruments: the pickers list PICK_LIMIT instruments at a time
and search the rest (a manager of a university manages hundreds), ticked instruments stay ticked across searches,
and the group list is paged."""

from __future__ import annotations

import re

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role
from scheduling import equivalence
from scheduling.conflict_routes import PICK_LIMIT
from scheduling.conflict_schemas import GroupIn
from tests.factories import login_web, make_instrument, make_user, principal_for
from tests.scheduling.conflict_world import make_world


def ids_in(html: str, *, checked: bool | None = None) -> set[int]:
    found = re.findall(r'<input type="checkbox" name="instrument_ids" value="(\d+)"( checked)?>', html)
    return {int(v) for v, c in found if checked is None or bool(c) == checked}


def options_in(html: str) -> set[int]:
    return {int(v) for v in re.findall(r'<option value="(\d+)">', html)}


async def many_instruments(session: AsyncSession, w: object, n: int) -> list[int]:
    """n more instruments of the manager's institution, in classification 010300 (the world's are 010200), named so
    that they sort after the world's own."""
    out = []
    for k in range(n):
        inst = await make_instrument(session, w.owner, name=f"紫外分光光度计 {k:03d}",  # type: ignore[attr-defined]
                                     category_code="010300", asset_number=f"UV-{k:03d}")
        out.append(inst.id)
    return out


class TestNewGroupPicker:
    async def test_lists_a_page_and_searches_the_rest(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await make_world(session, grouped=False)
        extra = await many_instruments(session, w, PICK_LIMIT + 10)
        await login_web(session, client, w.manager)
        r = await client.get("/equivalence")
        assert r.status_code == 200
        shown = ids_in(r.text)
        assert len(shown) == PICK_LIMIT and shown <= {w.x.id, w.y.id, *extra}
        # By classification code first: the world's two 010200 instruments come before the 010300 ones.
        assert {w.x.id, w.y.id} <= shown
        assert f"符合条件 {PICK_LIMIT + 12} 台，按分类编码列出前 {PICK_LIMIT} 台" in r.text
        assert w.z.id not in shown  # another institution's

        # The last instrument by name is beyond the first page; a search finds it.
        last = extra[-1]
        assert last not in shown
        r = await client.get("/equivalence/pick", params={"q": f"紫外分光光度计 {PICK_LIMIT + 9:03d}"},
                             headers={"HX-Request": "true"})
        assert r.status_code == 200 and "<html" not in r.text
        assert ids_in(r.text) == {last} and "符合条件 1 台" in r.text

        # Ticked instruments stay ticked (and first) whatever the search; another institution's id is ignored.
        r = await client.get("/equivalence/pick", params=[("q", "紫外"), ("instrument_ids", str(w.x.id)),
                                                          ("instrument_ids", str(last)),
                                                          ("instrument_ids", str(w.z.id))],
                             headers={"HX-Request": "true"})
        assert ids_in(r.text, checked=True) == {w.x.id, last}
        unticked = ids_in(r.text, checked=False)
        assert last not in unticked and w.z.id not in unticked and len(unticked) == PICK_LIMIT
        assert r.text.index(f'value="{w.x.id}" checked') < r.text.index('data-testid="pick-count"')
        assert f"符合条件 {PICK_LIMIT + 9} 台" in r.text  # 紫外 matches the 60 extra ones, less the ticked one

        # The classification code narrows by prefix.
        r = await client.get("/equivalence/pick", params={"category": "0102"}, headers={"HX-Request": "true"})
        assert ids_in(r.text) == {w.x.id, w.y.id}
        r = await client.get("/equivalence/pick", params={"category": "0102", "q": "紫外"},
                             headers={"HX-Request": "true"})
        assert ids_in(r.text) == set() and "没有符合条件的仪器" in r.text

    async def test_opened_as_a_page_goes_to_the_page(self, client: httpx.AsyncClient,
                                                     session: AsyncSession) -> None:
        w = await make_world(session, grouped=False)
        await login_web(session, client, w.manager)
        r = await client.get("/equivalence/pick", params={"q": "x"})  # no HX-Request: a new tab, history
        assert r.status_code == 303 and r.headers["location"] == "/equivalence"
        view = await equivalence.create_group(session, await principal_for(session, w.manager), GroupIn(
            name="LC-MS", instrument_ids=[w.x.id, w.y.id]))
        r = await client.get(f"/equivalence/{view.group.id}/candidates")
        assert r.status_code == 303 and r.headers["location"] == f"/equivalence/{view.group.id}"

    async def test_bad_filters_are_422_naming_the_field(self, client: httpx.AsyncClient,
                                                         session: AsyncSession) -> None:
        w = await make_world(session, grouped=False)
        await login_web(session, client, w.manager)
        for params, field in (({"category": "01a"}, "分类：格式不正确"), ({"q": "长" * 51}, "关键词："),
                              ({"instrument_ids": "x"}, "仪器第 1 项：应为整数")):
            r = await client.get("/equivalence/pick", params=params, headers={"HX-Request": "true"})
            assert r.status_code == 422, (params, r.text)
            assert field in r.text

    async def test_create_with_an_instrument_found_by_search(self, client: httpx.AsyncClient,
                                                             session: AsyncSession) -> None:
        w = await make_world(session, grouped=False)
        extra = await many_instruments(session, w, PICK_LIMIT + 5)
        await login_web(session, client, w.manager)
        a, b = extra[-1], extra[-2]  # neither on the first page
        r = await client.post("/equivalence", data={"name": "紫外组", "instrument_ids": [str(a)], "q": "紫外 05"})
        # Refused (one instrument), the form comes back with the search and the ticked instrument kept.
        assert r.status_code == 422 and "至少需要两台" in r.text
        assert ids_in(r.text, checked=True) == {a} and 'value="紫外 05"' in r.text
        r = await client.post("/equivalence", data={"name": "紫外组", "instrument_ids": [str(a), str(b)]})
        assert r.status_code == 303
        page = await client.get(r.headers["location"])
        assert "紫外分光光度计 054" in page.text and "紫外分光光度计 053" in page.text

    async def test_a_manager_with_no_instruments(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await make_world(session, grouped=False)
        nobody = await make_user(session, role=Role.facility_manager, grant_institution=w.guest)
        await login_web(session, client, nobody)
        r = await client.get("/equivalence")
        assert r.status_code == 200 and "您没有可管理的仪器" in r.text and 'id="pick-list"' not in r.text


class TestAddMemberPicker:
    async def test_defaults_to_the_group_classification_and_searches(self, client: httpx.AsyncClient,
                                                                   session: AsyncSession) -> None:
        w = await make_world(session, grouped=False)
        extra = await many_instruments(session, w, PICK_LIMIT + 3)
        same = await make_instrument(session, w.owner, name="液相色谱-质谱联用仪 丁", category_code="010200")
        view = await equivalence.create_group(session, await principal_for(session, w.manager), GroupIn(
            name="LC-MS", instrument_ids=[w.x.id, w.y.id]))
        gid = view.group.id
        await login_web(session, client, w.manager)
        r = await client.get(f"/equivalence/{gid}")
        assert r.status_code == 200
        # The group's classification by default: the one other 010200 instrument, not the members.
        assert options_in(r.text) == {same.id} and 'value="010200"' in r.text

        # Cleared classification: the first PICK_LIMIT of everything else managed, and a count.
        r = await client.get(f"/equivalence/{gid}/candidates", params={"category": ""},
                             headers={"HX-Request": "true"})
        assert r.status_code == 200 and "<html" not in r.text
        assert len(options_in(r.text)) == PICK_LIMIT and not options_in(r.text) & {w.x.id, w.y.id}
        assert f"符合条件 {PICK_LIMIT + 4} 台，列出前 {PICK_LIMIT} 台" in r.text
        r = await client.get(f"/equivalence/{gid}/candidates", params={"category": "", "q": "UV-052"},
                             headers={"HX-Request": "true"})
        assert options_in(r.text) == {extra[52]}

        # Adding the one found (another classification needs a reason) works as before.
        r = await client.post(f"/equivalence/{gid}/members",
                              data={"instrument_id": str(extra[52]), "override_reason": "同样测定紫外吸收"})
        assert r.status_code == 200 and "已加入仪器" in r.text

    async def test_only_for_managers_of_the_whole_group(self, client: httpx.AsyncClient,
                                                       session: AsyncSession) -> None:
        w = await make_world(session)  # x, y (owner) and z (绵阳): the owner's manager does not manage z
        await login_web(session, client, w.manager)
        r = await client.get(f"/equivalence/{w.group.id}/candidates", headers={"HX-Request": "true"})  # type: ignore[union-attr]
        assert r.status_code == 403
        page = await client.get(f"/equivalence/{w.group.id}")  # type: ignore[union-attr]
        assert page.status_code == 200 and 'id="candidates"' not in page.text


class TestGroupList:
    async def test_paged(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        w = await make_world(session, grouped=False)
        extra = await many_instruments(session, w, 2 * (PICK_LIMIT + 1))
        actor = await principal_for(session, w.manager)
        for k in range(PICK_LIMIT + 1):
            await equivalence.create_group(session, actor, GroupIn(
                name=f"组 {k:03d}", instrument_ids=[extra[2 * k], extra[2 * k + 1]]))
        await login_web(session, client, w.manager)
        r = await client.get("/equivalence")
        assert r.status_code == 200 and "组 000" in r.text and f"组 {PICK_LIMIT:03d}" not in r.text
        assert f"第 1–{PICK_LIMIT} 个" in r.text and f"/equivalence?offset={PICK_LIMIT}" in r.text
        r = await client.get("/equivalence", params={"offset": PICK_LIMIT})
        assert f"组 {PICK_LIMIT:03d}" in r.text and "组 000" not in r.text
        r = await client.get("/equivalence", params={"offset": -1})
        assert r.status_code == 422
