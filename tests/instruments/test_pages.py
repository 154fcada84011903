"""HTML pages: search (full page and htmx fragment), detail, manager forms with inline errors, retire, import."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from openpyxl import Workbook
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from instruments.models import Instrument
from tests.factories import grant_instrument_access, login_web, make_institution, make_instrument, make_user

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def scu(session: AsyncSession) -> Any:
    return await make_institution(session, name="页面测试大学", city_code="510100")


@pytest.fixture
async def manager_client(client: httpx.AsyncClient, session: AsyncSession, scu: Any) -> httpx.AsyncClient:
    user = await make_user(session, role="facility_manager", grant_institution=scu)
    return await login_web(session, client, user)


FORM = {
    "institution_id": "",
    "asset_number": "P-001",
    "name": "透射电子显微镜",
    "cat1": "010000",
    "cat2": "010100",
    "cat3": "010101",
    "original_value": "8800000",
    "sharing_mode": "external",
    "status": "normal",
    "model": "Talos F200X",
    "manufacturer": "赛默飞",
    "contact_phone": "028-85412345",
    "chains": "先进材料",
}


class TestSearchPage:
    async def test_full_page_with_filters_and_facets(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        mianyang = await make_institution(session, name="绵阳页面研究所", city_code="510700", kind="科研院所")
        await make_instrument(session, mianyang, name="页面测试质谱仪", city_code="510700")
        await make_instrument(session, scu, name="页面测试质谱仪二号")
        r = await client.get("/instruments", params={"q": "页面测试质谱", "city": "510700"})
        assert r.status_code == 200
        assert "<html" in r.text and "仪器目录" in r.text
        assert "页面测试质谱仪</a>" in r.text and "页面测试质谱仪二号" not in r.text
        assert 'data-facet="city" data-value="510100"' in r.text  # other cities stay selectable, with counts
        assert '<option value="510700" selected>绵阳市</option>' in r.text
        assert 'name="q"' in r.text and 'hx-push-url="true"' in r.text
        assert '<label for="f-q">' in r.text

    async def test_htmx_request_gets_only_the_results(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        await make_instrument(session, scu, name="片段测试核磁共振仪")
        r = await client.get("/instruments", params={"q": "核磁共振仪"}, headers={"HX-Request": "true"})
        assert r.status_code == 200
        assert "<html" not in r.text
        assert r.text.lstrip().startswith('<div id="results"')
        assert "片段测试核磁共振仪" in r.text
        assert r.headers["vary"] == "HX-Request"

    async def test_bad_parameters_are_ignored_on_the_page_and_said_so(self, client: httpx.AsyncClient) -> None:
        """A page forgives what the API refuses, but says what it left out: a shared link with a stale filter
        must not look like a search that found everything."""
        r = await client.get("/instruments", params={"city": "999999", "category": "x", "min_wan": "abc",
                                                    "status": "<b>bogus</b>", "sharing_mode": ""})
        assert r.status_code == 200
        assert ("已忽略无效的筛选条件：市州（999999）、仪器分类（x）、运行状态（&lt;b&gt;bogus&lt;/b&gt;）、原值下限（abc）"
                in r.text)
        assert "已忽略" not in (await client.get("/instruments", params={"city": "510100", "status": ""})).text
        # Digits that are not ASCII digits ("²".isdigit() is True) are ignored too, not a 500.
        r = await client.get("/instruments", params={"institution": "²", "chain": "²", "category": "²"})
        assert r.status_code == 200 and "单位（²）" in r.text and "产业链（²）" in r.text

    async def test_unknown_institution_and_category_are_reported_not_matched(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        """Well-formed but unknown ids (a stale shared link) are ignored and said so, instead of 共 0 台; known ones
        still filter."""
        await make_instrument(session, scu, name="陈旧链接测试质谱仪", category_code="010200")
        r = await client.get("/instruments", params={"q": "陈旧链接测试", "institution": "99999999", "category": "9901"})
        assert r.status_code == 200
        assert "已忽略无效的筛选条件：单位（99999999）、仪器分类（9901）" in r.text
        assert "陈旧链接测试质谱仪" in r.text
        r = await client.get("/instruments", params={"q": "陈旧链接测试", "institution": str(scu.id), "category": "0102"})
        assert "已忽略" not in r.text and "陈旧链接测试质谱仪" in r.text
        r = await client.get("/instruments", params={"q": "陈旧链接测试", "category": "0103"})  # known, nothing in it
        assert "已忽略" not in r.text and "陈旧链接测试质谱仪" not in r.text

    async def test_more_than_five_terms_are_cut_with_a_note(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        await make_instrument(session, scu, name="六词测试质谱仪")
        r = await client.get("/instruments", params={"q": "六词 测试 质谱 仪 六词测试 不存在"})
        assert r.status_code == 200
        assert "关键词最多 5 个，只按前 5 个搜索" in r.text and "六词测试质谱仪" in r.text
        r = await client.get("/instruments", params={"q": "六词 测试 质谱 仪 六词测试"})
        assert "关键词最多" not in r.text and "六词测试质谱仪" in r.text

    async def test_a_mangled_link_still_shows_the_catalogue(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        """What the API refuses with a 422 the page forgives, and says what it left out: a shared link that lost
        its shape must not end on an error page with no way back to the search."""
        await make_instrument(session, scu, name="残缺链接测试质谱仪")
        for params, note in (
            ({"q": "残缺链接测试", "offset": "-20"}, "分页位置无效，已回到第 1 页"),
            ({"q": "残缺链接测试", "offset": "abc"}, "分页位置无效，已回到第 1 页"),
            ({"q": "残缺链接测试", "offset": "999999999"}, "分页位置无效，已回到第 1 页"),
            ({"q": "残缺链接测试", "city": "<script>alert(1)</script>"}, "市州（&lt;script&gt;alert(1)&lt;/script&gt;）"),
            ({"q": "残缺链接测试" + "长" * 120}, "关键词过长，只按前 100 个字符搜索"),
            ({"q": "残缺链接测试", "institution": "99999999999"}, "单位（99999999999）"),  # beyond any id
            ({"q": "残缺链接测试", "min_wan": "1e999999"}, "原值下限（1e999999）"),  # overflows arithmetic

        ):
            r = await client.get("/instruments", params=params)
            assert r.status_code == 200, params
            assert note in r.text, params
            if "长" not in params["q"]:
                assert "残缺链接测试质谱仪" in r.text, params

    async def test_a_chain_by_name_filters_the_page_as_the_api_does(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        from instruments.models import Chain

        chain = Chain(name="页面测试产业链")
        session.add(chain)
        await session.flush()
        await make_instrument(session, scu, name="链名测试核磁共振仪", chains=["页面测试产业链"])
        await make_instrument(session, scu, name="链名测试质谱仪")
        r = await client.get("/instruments", params={"q": "链名测试", "chain": "页面测试产业链"})
        assert r.status_code == 200 and "已忽略" not in r.text
        assert "链名测试核磁共振仪" in r.text and "链名测试质谱仪" not in r.text

    async def test_reversed_value_bounds_are_ignored_and_said_so(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        await make_instrument(session, scu, name="区间测试核磁共振仪", original_value=3_000_000)
        r = await client.get("/instruments", params={"q": "区间测试", "min_wan": "500", "max_wan": "100"},
                             headers={"HX-Request": "true"})
        assert r.status_code == 200 and "原值下限大于上限，已忽略原值条件" in r.text
        assert "区间测试核磁共振仪" in r.text  # the keyword still applies; the bounds do not
        r = await client.get("/instruments", params={"q": "区间测试", "min_wan": "100", "max_wan": "200"})
        assert "已忽略原值条件" not in r.text and "区间测试核磁共振仪" not in r.text

    async def test_page_past_the_end_links_back(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        await make_instrument(session, scu, name="翻页测试核磁共振仪")
        r = await client.get("/instruments", params={"q": "翻页测试", "offset": "99999"})
        assert r.status_code == 200 and "回到最后一页（第 1 页）" in r.text and "第 5000 /" not in r.text
        assert "/instruments?q=%E7%BF%BB%E9%A1%B5%E6%B5%8B%E8%AF%95&amp;offset=0" in r.text

    async def test_nav_entries(self, client: httpx.AsyncClient, manager_client: httpx.AsyncClient) -> None:
        r = await manager_client.get("/instruments")
        assert 'data-nav="instruments"' in r.text and 'data-nav="instrument-import"' in r.text


class TestDetailPage:
    async def test_contact_only_when_signed_in(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        inst = await make_instrument(session, scu, contact_phone="13912345678", specs="分辨率 0.1 nm")
        anonymous = await client.get(f"/instruments/{inst.id}")
        assert anonymous.status_code == 200
        assert "13912345678" not in anonymous.text and "登录</a>后可见" in anonymous.text
        assert "分辨率 0.1 nm" in anonymous.text and "预约服务网址" in anonymous.text
        # The week calendar of the booking issue loads into the page (htmx) with a plain link as fallback.
        assert f'hx-get="/instruments/{inst.id}/week"' in anonymous.text
        # Its occupancy feed (public, no personal data) is linked from the page.
        assert f'href="/calendar/instruments/{inst.id}.ics"' in anonymous.text
        feed = await client.get(f"/calendar/instruments/{inst.id}.ics")
        assert feed.status_code == 200 and feed.text.startswith("BEGIN:VCALENDAR")
        await login_web(session, client, await make_user(session))
        assert "13912345678" in (await client.get(f"/instruments/{inst.id}")).text

    async def test_restricted_is_404_page(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        inst = await make_instrument(session, scu, restricted=True)
        r = await client.get(f"/instruments/{inst.id}")
        assert (r.status_code == 404 and "页面不存在" in r.text) or "未找到" in r.text
        # An authorised user sees it, but not a link to the anonymous occupancy feed (which does not serve it).
        user = await make_user(session)
        await grant_instrument_access(session, inst, user)
        await login_web(session, client, user)
        page = await client.get(f"/instruments/{inst.id}")
        assert page.status_code == 200 and 'data-testid="ics-link"' not in page.text


class TestManagerForms:
    async def test_create_redirects_to_detail(
        self, manager_client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        form = {**FORM, "institution_id": str(scu.id)}
        r = await manager_client.post("/instruments/new", data=form)
        assert r.status_code == 303, r.text
        inst = (await session.scalars(select(Instrument).where(Instrument.asset_number == "P-001"))).one()
        assert r.headers["location"] == f"/instruments/{inst.id}?created=1"
        assert inst.category_code == "010101" and inst.institution_id == scu.id

    async def test_invalid_form_rerenders_with_field_errors(
        self, manager_client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        form = {
            **FORM,
            "institution_id": str(scu.id),
            "original_value": "-5",
            "specs": "指" * 501,
            "name": "<b>坏</b>",
            "start_date": "2999-01-01",
            "contact_phone": "abc",
            "fee_internal": "100",
        }
        r = await manager_client.post("/instruments/new", data=form)
        assert r.status_code == 422
        assert 'id="e-original_value"' in r.text and 'id="e-specs"' in r.text
        # The record's own checks a user is likely to hit alongside a typo come with the others, not after them.
        assert 'id="e-start_date"' in r.text and 'id="e-contact_phone"' in r.text and 'id="e-fee_unit"' in r.text
        assert 'value="&lt;b&gt;坏&lt;/b&gt;"' in r.text  # the typed value comes back, escaped
        form = {**FORM, "institution_id": str(scu.id), "cat1": "", "cat2": "", "cat3": ""}
        r = await manager_client.post("/instruments/new", data=form)
        assert r.status_code == 422 and 'id="e-category_code"' in r.text
        form = {**FORM, "institution_id": str(scu.id), "contact_phone": "abc", "start_date": "2999-01-01"}
        r = await manager_client.post("/instruments/new", data=form)
        assert r.status_code == 422
        assert 'id="e-contact_phone"' in r.text and 'id="e-start_date"' in r.text
        assert (
            await session.scalar(
                select(func.count()).select_from(Instrument).where(Instrument.institution_id == scu.id)
            )
            == 0
        )

    async def test_new_form_requires_manager(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        await login_web(session, client, await make_user(session))
        assert (await client.get("/instruments/new")).status_code == 403

    async def test_edit_and_retire(
        self, manager_client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        inst = await make_instrument(session, scu, category_code="010200")
        page = await manager_client.get(f"/instruments/{inst.id}/edit")
        assert page.status_code == 200 and 'value="010200" selected' in page.text
        form = {
            **FORM,
            "institution_id": str(scu.id),
            "asset_number": inst.asset_number,
            "name": "改过的名字",
            "cat1": "010000",
            "cat2": "010200",
            "cat3": "",
        }
        r = await manager_client.post(f"/instruments/{inst.id}/edit", data=form)
        assert r.status_code == 303, r.text
        saved = (await manager_client.get(r.headers["location"])).text
        assert "修改已保存" in saved and ">外部共享</span>" in saved
        await session.refresh(inst)
        assert inst.name == "改过的名字" and inst.category_code == "010200"
        # Every problem at once: a cleared required field beside a bad value, not one after the other.
        r = await manager_client.post(f"/instruments/{inst.id}/edit",
                                      data={**form, "name": "", "original_value": "-1"})
        assert r.status_code == 422 and 'id="e-name"' in r.text and 'id="e-original_value"' in r.text
        bad = await manager_client.post(f"/instruments/{inst.id}/retire", data={"reason": ""})
        assert bad.status_code == 422 and 'id="e-reason"' in bad.text
        ok = await manager_client.post(f"/instruments/{inst.id}/retire", data={"reason": "报废处置"})
        assert ok.status_code == 303
        page = await manager_client.get(ok.headers["location"])
        assert "仪器已退役，不再接受预约" in page.text and "已退役：报废处置" in page.text
        assert ">外部共享</span>" not in page.text  # no longer shown as shared
        await session.refresh(inst)
        assert inst.retired_reason == "报废处置"

    async def test_csrf_required(self, client: httpx.AsyncClient, session: AsyncSession, scu: Any) -> None:
        user = await make_user(session, role="facility_manager", grant_institution=scu)
        await login_web(session, client, user)
        del client.headers["X-CSRF-Token"]
        r = await client.post("/instruments/new", data={**FORM, "institution_id": str(scu.id)})
        assert r.status_code == 403

    async def test_category_picker_fragment(self, client: httpx.AsyncClient) -> None:
        r = await client.get(
            "/instruments/category-picker", params={"cat1": "010000"}, headers={"HX-Request": "true"}
        )
        assert r.status_code == 200
        assert 'value="010200"' in r.text and "质谱仪器" in r.text


class TestAccessPage:
    async def test_grant_by_email_then_revoke(
        self, manager_client: httpx.AsyncClient, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        from booking.notify.models import Notification
        from instruments.models import InstrumentAccess

        inst = await make_instrument(session, scu, restricted=True, name="军民融合测试仪")
        user = await make_user(session, email="shouquan@example.cn", name="被授权人")
        detail = await manager_client.get(f"/instruments/{inst.id}")
        assert f'href="/instruments/{inst.id}/access"' in detail.text
        empty = await manager_client.get(f"/instruments/{inst.id}/access")
        assert empty.status_code == 200 and "尚未授权任何用户" in empty.text

        for who in ("13800138000", "²", "0"):
            odd = await manager_client.post(f"/instruments/{inst.id}/access", data={"user": who})
            assert odd.status_code == 422 and 'id="e-user"' in odd.text, who
        unknown = await manager_client.post(f"/instruments/{inst.id}/access", data={"user": "nobody@example.cn"})
        assert unknown.status_code == 422 and 'id="e-user"' in unknown.text and "nobody@example.cn" in unknown.text
        blank = await manager_client.post(f"/instruments/{inst.id}/access", data={"user": " "})
        assert blank.status_code == 422 and "请填写用户邮箱或编号" in blank.text
        # Through a boosted form the address bar stays on the page (reloading the POST URL would fail).
        page_url = f"http://testserver/instruments/{inst.id}/access"
        boosted = await manager_client.post(f"/instruments/{inst.id}/access", data={"user": " "}, headers={
            "HX-Request": "true", "HX-Boosted": "true", "HX-Current-URL": page_url})
        assert boosted.headers.get("HX-Replace-Url") == page_url

        ok = await manager_client.post(f"/instruments/{inst.id}/access", data={"user": "ShouQuan@example.cn"})
        assert ok.status_code == 200 and "已授权 被授权人" in ok.text and "shouquan@example.cn" in ok.text
        again = await manager_client.post(f"/instruments/{inst.id}/access", data={"user": str(user.id)})
        assert again.status_code == 200
        grants = list(await session.scalars(select(InstrumentAccess).where(InstrumentAccess.instrument_id == inst.id)))
        assert [g.user_id for g in grants] == [user.id]
        note = (await session.scalars(select(Notification).where(Notification.user_id == user.id))).one()
        assert "军民融合测试仪" in note.title

        revoked = await manager_client.post(f"/instruments/{inst.id}/access/{user.id}/revoke")
        assert revoked.status_code == 303 and revoked.headers["location"].endswith(f"/instruments/{inst.id}/access")
        assert await session.scalar(select(func.count()).select_from(InstrumentAccess)
                                    .where(InstrumentAccess.instrument_id == inst.id)) == 0

    async def test_other_institutions_manager_forbidden(
        self, client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        inst = await make_instrument(session, scu, restricted=False)
        hidden = await make_instrument(session, scu, restricted=True)
        other = await make_institution(session, name="别的大学")
        await login_web(session, client, await make_user(session, role="facility_manager", grant_institution=other))
        assert (await client.get(f"/instruments/{inst.id}/access")).status_code == 403
        r = await client.post(f"/instruments/{inst.id}/access", data={"user": "1"})
        assert r.status_code == 403
        # A restricted instrument of another institution does not exist for them.
        assert (await client.get(f"/instruments/{hidden.id}/access")).status_code == 404
        assert (await client.post(f"/instruments/{hidden.id}/access", data={"user": "1"})).status_code == 404


class TestImportPage:
    async def test_error_table_then_counts(
        self, manager_client: httpx.AsyncClient, session: AsyncSession, scu: Any
    ) -> None:
        wb = Workbook()
        ws = wb.active
        assert ws is not None
        ws.append(["所在单位仪器内部编码", "中文名称", "设备分类编码", "原值（万元）", "共享模式"])
        ws.append(["W-1", "页面导入仪", "010200", 60, "外部共享"])
        ws.append(["W-2", "页面导入仪二", "010200", "六十", "外部共享"])
        buffer = io.BytesIO()
        wb.save(buffer)
        r = await manager_client.post(
            "/instruments/import",
            files={"file": ("a.xlsx", buffer.getvalue())},
            data={"institution_id": str(scu.id)},
        )
        assert r.status_code == 422
        assert 'id="import-errors"' in r.text and '<td class="num">3</td><td>原值（万元）</td>' in r.text
        ws.cell(row=3, column=4).value = 61
        buffer = io.BytesIO()
        wb.save(buffer)
        r = await manager_client.post(
            "/instruments/import",
            files={"file": ("a.xlsx", buffer.getvalue())},
            data={"institution_id": str(scu.id)},
        )
        assert r.status_code == 200
        assert '<dd data-count="created">2</dd>' in r.text
