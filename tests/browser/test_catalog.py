"""A new user searches 质谱, narrows to 绵阳市 and opens an instrument, in a real Chromium against a live server."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from openpyxl import load_workbook
from playwright.sync_api import expect

from tests.browser.conftest import login, logout, query, screenshot

pytestmark = pytest.mark.browser


def test_search_narrow_open(page, live: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    # 质谱 is common enough in this catalogue to be searched through its kept postings and counts.
    assert query(live[1], "SELECT id FROM search_frequent_terms WHERE term = '质谱'")
    page.goto("/")
    page.get_by_role("link", name="仪器目录").click()
    expect(page.get_by_role("heading", name="仪器目录", level=1)).to_be_visible()
    before = page.locator("#result-count strong").inner_text()

    # Typing updates the results in place (htmx) and the URL carries the filter.
    page.get_by_label("关键词").fill("质谱")
    expect(page).to_have_url(re.compile(r"q=%E8%B4%A8%E8%B0%B1"), timeout=10_000)
    expect(page.locator("#result-count strong")).not_to_have_text(before)
    first = page.locator("ol.results li.result h3 a").first
    expect(first).to_contain_text("质谱")

    page.get_by_role("combobox", name="市州").select_option(label="绵阳市")
    expect(page).to_have_url(re.compile(r"city=510700"), timeout=10_000)
    # The address carries the filters in use only, ready to share.
    assert "=&" not in page.url and not page.url.endswith("="), page.url
    expect(page.locator(".facet-on").first).to_contain_text("绵阳市")
    results = page.locator("ol.results li.result")
    assert results.count() > 0
    for text in results.all_inner_texts():
        assert "绵阳市" in text
    screenshot(page, "catalog-search")

    name = first.inner_text()
    first.click()
    expect(page.locator("#instrument-name")).to_contain_text(name.strip())
    expect(page.get_by_text("预约服务网址")).to_be_visible()
    screenshot(page, "catalog-detail")

    # Back: the filters are still in the form (htmx restores its snapshot of the page), so the next change keeps
    # them instead of starting over from the whole catalogue.
    page.go_back()
    expect(page).to_have_url(re.compile(r"city=510700"))
    expect(page.get_by_label("关键词")).to_have_value("质谱")
    expect(page.get_by_role("combobox", name="市州")).to_have_value("510700")
    count = page.locator("#result-count strong").inner_text()
    page.get_by_role("combobox", name="排序").select_option("newest")
    expect(page).to_have_url(re.compile(r"sort=newest"), timeout=10_000)
    expect(page).to_have_url(re.compile(r"city=510700"))
    expect(page.locator("#result-count strong")).to_have_text(count)
    # Back within the catalogue: each step shows the filters of its own address (htmx's snapshot is taken when
    # the form already holds the next search).
    page.go_back()
    expect(page).not_to_have_url(re.compile(r"sort=newest"))
    expect(page.get_by_role("combobox", name="排序")).not_to_have_value("newest")
    expect(page.get_by_label("关键词")).to_have_value("质谱")
    page.goto("/instruments")
    page.get_by_label("关键词").fill("核磁")
    expect(page).to_have_url(re.compile(r"q=%E6%A0%B8%E7%A3%81"), timeout=10_000)
    page.go_back()
    expect(page).not_to_have_url(re.compile(r"q="))
    expect(page.get_by_label("关键词")).to_have_value("")

    # Keyboard: a facet or page link chosen with Enter leaves focus on the result count (which reads it out),
    # not on <body>, so the next Tab goes on from the results instead of from the top of the page.
    page.goto("/instruments?q=%E8%B4%A8%E8%B0%B1")
    facet = page.locator("aside.facets a").first
    facet.focus()
    facet.press("Enter")
    expect(page).to_have_url(re.compile(r"q=%E8%B4%A8%E8%B0%B1&"), timeout=10_000)
    expect(page.locator("#result-count")).to_be_focused()
    page.locator("nav.pager a[rel=next]").press("Enter")
    expect(page).to_have_url(re.compile(r"offset=20"), timeout=10_000)
    expect(page.locator("#result-count")).to_be_focused()
    # Typing in the search box keeps focus there.
    page.get_by_label("关键词").fill("质谱仪")
    expect(page).to_have_url(re.compile(r"q=%E8%B4%A8%E8%B0%B1%E4%BB%AA"), timeout=10_000)
    expect(page.get_by_label("关键词")).to_be_focused()

    # On a phone the results come before the facets.
    page.set_viewport_size({"width": 390, "height": 844})
    first_result = page.locator("ol.results li.result").first.bounding_box()
    facets = page.locator("aside.facets").bounding_box()
    assert first_result and facets and first_result["y"] < facets["y"]
    screenshot(page, "catalog-phone")


def test_filters_without_text(page, live: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    # Vouchers and a 原值 bound without any text: filters the facet cube does not hold, read from kept rows.
    page.goto("/instruments")
    page.get_by_label("接受创新券").check()
    expect(page).to_have_url(re.compile(r"vouchers=1"), timeout=10_000)
    page.get_by_label("原值下限（万元）").fill("100")
    expect(page).to_have_url(re.compile(r"min_wan=100"), timeout=10_000)
    [row] = query(
        live[1],
        "SELECT count(*) AS n FROM instruments WHERE retired_at IS NULL AND NOT restricted AND accepts_vouchers"
        " AND original_value >= 1000000",
    )
    assert row["n"] > 0
    expect(page.locator("#result-count strong")).to_have_text(str(row["n"]), timeout=10_000)
    results = page.locator("ol.results li.result")
    assert results.count() > 0
    for text in results.all_inner_texts():
        assert "创新券" in text
    screenshot(page, "catalog-vouchers")

    # The export carries the same filters: one row per result, in the import layout.
    with page.expect_download() as info:
        page.get_by_role("link", name="XLSX").click()
    download = info.value
    assert download.suggested_filename == "仪器目录.xlsx"
    sheet = load_workbook(io.BytesIO(Path(download.path()).read_bytes())).active
    assert sheet is not None and sheet.max_row == row["n"] + 1
    expect(page.locator("[data-download-status]")).to_contain_text("已生成 仪器目录.xlsx")

    # A negative bound is refused by the field itself, so no search is sent: the page says why beside it, keeps
    # the results and the address, and the note goes once the value is usable again.
    low = page.get_by_label("原值下限（万元）")
    low.fill("-5")
    note = page.locator("#e-f-min")
    expect(note).to_have_text("请输入不小于 0 的数（万元）", timeout=10_000)
    expect(low).to_have_attribute("aria-invalid", "true")
    expect(page).to_have_url(re.compile(r"min_wan=100"))
    expect(page.locator("#result-count strong")).to_have_text(str(row["n"]))
    screenshot(page, "catalog-negative-value")
    low.fill("200")
    expect(page).to_have_url(re.compile(r"min_wan=200"), timeout=10_000)
    expect(note).to_have_count(0)
    expect(low).not_to_have_attribute("aria-invalid", "true")


def test_restricted_instrument_access_granted_by_manager(page, live: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    _, url = live
    [inst] = query(url, """
        SELECT i.id, i.name FROM instruments i JOIN institutions s ON s.id = i.institution_id
        WHERE s.name = '四川大学' AND NOT i.restricted AND i.retired_at IS NULL AND i.id % 4 = 1
        ORDER BY i.id DESC LIMIT 1""")
    path = f"/instruments/{inst['id']}"

    # The manager marks the instrument restricted in the edit form.
    login(page, "manager@demo.local")
    page.goto(f"{path}/edit")
    page.get_by_label("限制公开（军民融合）").check()
    page.get_by_role("button", name="保存修改").click()
    expect(page.locator("#instrument-name")).to_contain_text(str(inst["name"]))
    logout(page)

    # A researcher of another institution cannot see it at all.
    login(page, "researcher@demo.local")
    page.goto(path)
    expect(page.get_by_text("您要找的页面不存在").first).to_be_visible()
    logout(page)

    # The manager authorises the researcher by email from the instrument page.
    login(page, "manager@demo.local")
    page.goto(path)
    page.get_by_role("link", name="授权可见用户").click()
    expect(page.get_by_role("heading", name="授权可见用户", level=1)).to_be_visible()
    page.get_by_label("用户邮箱或编号").fill("nobody@demo.local")
    page.get_by_role("button", name="授权查看").click()
    expect(page.locator("#e-user")).to_contain_text("nobody@demo.local")
    page.get_by_label("用户邮箱或编号").fill("researcher@demo.local")
    page.get_by_role("button", name="授权查看").click()
    expect(page.get_by_test_id("access-table")).to_contain_text("电子科大研究员")
    screenshot(page, "catalog-access")
    logout(page)

    # Now the researcher sees it, and was notified.
    login(page, "researcher@demo.local")
    page.goto(path)
    expect(page.locator("#instrument-name")).to_contain_text(str(inst["name"]))
    page.goto("/notifications")
    expect(page.get_by_text(f"已获授权查看仪器：{inst['name']}").first).to_be_visible()
    # The demo database is shared by the session's browser tests: put the instrument back as it was.
    query(url, "UPDATE instruments SET restricted = false WHERE id = $1", inst["id"])
