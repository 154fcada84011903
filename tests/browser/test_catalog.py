"""A new user searches 质谱, narrows to 绵阳市 and opens an instrument, in a real Chromium against a live server."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import LAUNCH_ARGS
from tests.db import REPO

ARTIFACTS = REPO / "test-artifacts"


@pytest.mark.browser
async def test_search_narrow_open(live_server: str) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=LAUNCH_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000}, locale="zh-CN")
            await page.goto(f"{live_server}/")
            await page.get_by_role("link", name="仪器目录").click()
            await expect(page.get_by_role("heading", name="仪器目录", level=1)).to_be_visible()
            before = await page.locator("#result-count strong").inner_text()

            # Typing updates the results in place (htmx) and the URL carries the filter.
            await page.get_by_label("关键词").fill("质谱")
            await expect(page).to_have_url(re.compile(r"q=%E8%B4%A8%E8%B0%B1"), timeout=10_000)
            await expect(page.locator("#result-count strong")).not_to_have_text(before)
            first = page.locator("ol.results li.result h3 a").first
            await expect(first).to_contain_text("质谱")

            await page.get_by_role("combobox", name="市州").select_option(label="绵阳市")
            await expect(page).to_have_url(re.compile(r"city=510700"), timeout=10_000)
            await expect(page.locator(".facet-on").first).to_contain_text("绵阳市")
            results = page.locator("ol.results li.result")
            assert await results.count() > 0
            for text in await results.all_inner_texts():
                assert "绵阳市" in text
            await page.screenshot(path=str(ARTIFACTS / "catalog-search.png"), full_page=False)

            name = await first.inner_text()
            await first.click()
            await expect(page.locator("#instrument-name")).to_contain_text(name.strip())
            await expect(page.get_by_text("预约服务网址")).to_be_visible()
            await expect(page.get_by_text("登录").first).to_be_visible()
            await page.screenshot(path=str(ARTIFACTS / "catalog-detail.png"), full_page=False)
        finally:
            await browser.close()
    assert (ARTIFACTS / "catalog-detail.png").exists()
