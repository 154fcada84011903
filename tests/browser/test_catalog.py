"""A new user searches 质谱, narrows to 绵阳市 and opens an instrument, in a real Chromium against a live server."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot

pytestmark = pytest.mark.browser


def test_search_narrow_open(page) -> None:  # type: ignore[no-untyped-def]
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
