"""The 科技厅 auditor's walk through the audit: target progress with its definitions, drill-down from 绵阳市 to an
institution, an instrument and its service records, and the XLSX export read back."""

from __future__ import annotations

import re

import pytest
from openpyxl import load_workbook
from playwright.sync_api import expect

from tests.browser.conftest import ARTIFACTS, login, screenshot

pytestmark = pytest.mark.browser


def _int(text: str) -> int:
    return int(text.replace(",", "").strip())


def test_auditor_dashboard_drill_down_and_export(page) -> None:  # type: ignore[no-untyped-def]
    login(page, "auditor@demo.local")
    page.locator("nav[aria-label='主导航'] a[data-nav='stats']").click()
    page.wait_for_url(re.compile(r".*/audit$"))
    page.wait_for_load_state("networkidle")
    # Boosted navigation may change the URL before the new page is in: wait for its heading, not just the URL.
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^大型科研仪器开放共享统计"))
    registered = _int(page.get_by_test_id("registered").inner_text())
    open_ = _int(page.get_by_test_id("open").inner_text())
    shared = _int(page.get_by_test_id("shared").inner_text())
    assert registered > 0 and shared > 0 and open_ > 0
    assert _int(page.get_by_test_id("target").inner_text()) == 10000
    assert re.fullmatch(r"\d+\.\d\d%", page.get_by_test_id("gauge-percent").text_content() or "")
    definitions = page.locator("[data-def='open']").first.inner_text()
    assert "外部共享" in definitions and "30 天" in definitions
    assert "12 个月" in page.locator("[data-def='shared']").first.inner_text()
    assert page.locator("svg").count() >= 3
    as_of = page.locator("#f-as_of").input_value()
    screenshot(page, "audit-dashboard")

    mianyang_row = page.locator("table[data-testid='by-city'] tr[data-key='510700']")
    mianyang = {k: _int(mianyang_row.locator(f"td[data-col='{k}']").inner_text())
                for k in ("registered", "open", "shared")}
    assert mianyang["registered"] > 0
    mianyang_row.get_by_role("link", name="绵阳市").click()
    page.wait_for_url(re.compile(r".*/audit/cities/510700.*"))
    assert "/audit/cities/510700" in page.url
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^绵阳市"))
    assert _int(page.get_by_test_id("registered").inner_text()) == mianyang["registered"]
    screenshot(page, "audit-city-mianyang")

    page.locator("table[data-testid='city-institutions'] tbody tr").first.locator("td").first.get_by_role(
        "link").click()
    page.wait_for_url(re.compile(r".*/audit/institutions/\d+.*"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("开放共享自评")
    screenshot(page, "audit-institution")

    page.locator("table[data-testid='institution-instruments'] tbody tr").first.locator("td").first.get_by_role(
        "link").click()
    page.wait_for_url(re.compile(r".*/audit/instruments/\d+\?.*"))
    expect(page.get_by_test_id("flags")).to_contain_text("已登记大型仪器")
    screenshot(page, "audit-instrument")

    page.get_by_test_id("records-link").click()
    page.wait_for_url(re.compile(r".*/records.*"))
    total = _int(re.search(r"共 ([\d,]+) 条", page.get_by_test_id("records-total").inner_text()).group(1))  # type: ignore[union-attr]
    assert total > 0
    assert page.locator("table[data-testid='records'] tbody tr").count() == min(total, 50)
    screenshot(page, "audit-records")

    page.goto(f"/audit?as_of={as_of}")
    # The report takes seconds to build: the page says so while it does, then how long it took.
    with page.expect_download() as info:
        page.get_by_test_id("export-xlsx").click()
        expect(page.get_by_test_id("export-status")).to_contain_text("正在生成文件")
    download = info.value
    assert download.suggested_filename == f"共享统计-{as_of}.xlsx"
    expect(page.get_by_test_id("export-status")).to_contain_text(f"已生成 共享统计-{as_of}.xlsx")
    path = ARTIFACTS / "audit-export.xlsx"
    download.save_as(str(path))
    wb = load_workbook(path)
    assert wb.sheetnames[0] == "口径说明"
    summary = dict(zip([c.value for c in wb["总体"][1]], [c.value for c in wb["总体"][2]], strict=True))
    assert summary["统计日"] == as_of
    assert (summary["已登记大型仪器（台套）"], summary["开放共享（台套）"], summary["实际共享（台套）"]) == \
        (registered, open_, shared)
    rows = {r[0]: r for r in wb["按市州"].iter_rows(min_row=2, values_only=True)}
    assert (rows["绵阳市"][1], rows["绵阳市"][2], rows["绵阳市"][3]) == \
        (mianyang["registered"], mianyang["open"], mianyang["shared"])
    assert len(rows) == 21
