"""A platform admin keeps the classification codes and industrial-chain tags on the 分类与产业链 page: adds a code,
adds, renames and deletes a tag (with the confirmation naming the instruments that carry it), and sees each
refusal beside the field it concerns."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, query, screenshot

pytestmark = pytest.mark.browser


def test_admin_keeps_codes_and_chain_tags(page, live: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    db = live[1]
    login(page, "admin@demo.local")
    page.locator("nav[aria-label='主导航'] summary", has_text="系统管理").click()
    page.get_by_role("link", name="分类与产业链").click()
    expect(page.get_by_role("heading", name="分类编码与产业链标签", level=1)).to_be_visible()

    # A code whose parent does not exist is refused beside the field; a good one is added and listed.
    categories = page.locator("#categories")
    categories.get_by_label("编码").fill("015501")
    categories.get_by_label("名称").fill("浏览器测试小类")
    categories.get_by_role("button", name="添加分类").click()
    expect(categories.locator(".field-error").first).to_be_visible()
    assert categories.get_by_label("编码").input_value() == "015501"  # what was typed comes back
    categories.get_by_label("编码").fill("010198")
    categories.get_by_role("button", name="添加分类").click()
    expect(page.get_by_role("status").filter(has_text="已添加分类")).to_be_visible()
    expect(page.locator("#categories tr", has_text="010198")).to_contain_text("浏览器测试小类")

    # A new tag; the same name again is refused beside the field.
    chains = page.locator("#chains")
    chains.get_by_label("新标签名称").fill("浏览器测试链")
    chains.get_by_role("button", name="添加标签").click()
    expect(page.get_by_text("已添加产业链标签「浏览器测试链」")).to_be_visible()
    chains.get_by_label("新标签名称").fill("浏览器测试链")
    chains.get_by_role("button", name="添加标签").click()
    expect(chains.get_by_text("已有同名产业链标签").first).to_be_visible()

    # Rename it; then try a name another tag has, and the row says why.
    [row] = query(db, "SELECT id FROM chains WHERE name = '浏览器测试链'")
    chain_id = row["id"]
    page.get_by_label("产业链标签「浏览器测试链」的新名称").fill("浏览器改名链")
    page.get_by_role("button", name="重命名产业链标签「浏览器测试链」").click()
    expect(page.get_by_text("已将产业链标签重命名为「浏览器改名链」")).to_be_visible()
    [other] = query(db, "SELECT name FROM chains WHERE id <> $1 ORDER BY id LIMIT 1", chain_id)
    page.get_by_label("产业链标签「浏览器改名链」的新名称").fill(str(other["name"]))
    page.get_by_role("button", name="重命名产业链标签「浏览器改名链」").click()
    expect(page.locator(f"#chain-{chain_id} .field-error")).to_contain_text("标签名称：已有同名产业链标签")
    screenshot(page, "codes-rename-refused")

    # Two instruments carry it: the confirmation says so; dismissing it deletes nothing, accepting it deletes the
    # tag and only the tag.
    tagged = query(db, "SELECT id FROM instruments WHERE retired_at IS NULL ORDER BY id LIMIT 2")
    for inst in tagged:
        query(db, "INSERT INTO instrument_chains (instrument_id, chain_id) VALUES ($1, $2)", inst["id"], chain_id)
    page.reload()
    expect(page.locator(f"#chain-{chain_id} td.num")).to_have_text("2")
    asked: list[str] = []

    def dismiss(dialog):  # type: ignore[no-untyped-def]
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.get_by_role("button", name="删除产业链标签「浏览器改名链」").click()
    expect(page.locator(f"#chain-{chain_id}")).to_be_visible()
    assert asked and "有 2 台仪器标注了「浏览器改名链」" in asked[0] and "此操作不能撤销" in asked[0]
    assert query(db, "SELECT 1 FROM chains WHERE id = $1", chain_id)

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="删除产业链标签「浏览器改名链」").click()
    expect(page.get_by_text("已删除产业链标签，2 台仪器上的该标签已一并移除")).to_be_visible()
    expect(page).to_have_url(re.compile(r"did=chain_deleted"))
    expect(page.locator(f"#chain-{chain_id}")).to_have_count(0)
    assert not query(db, "SELECT 1 FROM chains WHERE id = $1", chain_id)
    ids = [inst["id"] for inst in tagged]
    assert len(query(db, "SELECT id FROM instruments WHERE id = ANY($1::int[])", ids)) == 2
    screenshot(page, "codes-deleted")
