"""The booking walk-through of issue 4: a researcher finds an instrument, picks a free slot in the week view, books
it and sees it pending; the manager approves it; the researcher downloads the .ics, checks in and out, and the
service record shows hours and amount."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, logout, query, screenshot

pytestmark = pytest.mark.browser
SHANGHAI = ZoneInfo("Asia/Shanghai")


def _instrument(url: str) -> dict[str, object]:
    # 四川大学's approval-required instrument open every day 08:00-22:00 (see booking/reservations/seed.py).
    rows = query(url, """
        SELECT i.id, i.name FROM instruments i JOIN institutions s ON s.id = i.institution_id
        JOIN booking_rules r ON r.instrument_id = i.id
        WHERE s.name = '四川大学' AND i.sharing_mode = 'external' AND i.status = 'normal' AND i.retired_at IS NULL
          AND NOT i.qualification_required AND NOT i.restricted AND i.fee_unit = 'hour' AND i.id % 4 = 3
          AND r.approval_required ORDER BY i.id LIMIT 1""")
    assert rows, "the demo should have an approval-required instrument at 四川大学"
    return rows[0]


def test_book_approve_ics_check_in_out(page, live: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    _, url = live
    inst = _instrument(url)
    tomorrow = (datetime.now(SHANGHAI) + timedelta(days=1)).date()
    slot_start = datetime.combine(tomorrow, datetime.min.time(), SHANGHAI).replace(hour=19)

    # The researcher finds the instrument through the catalogue search and opens it.
    login(page, "researcher@demo.local")
    page.goto("/instruments")
    page.get_by_label("关键词").fill(str(inst["name"]))
    page.locator(f"ol.results a[href='/instruments/{inst['id']}']").first.click()
    expect(page.locator("#instrument-name")).to_contain_text(str(inst["name"]))

    # The week calendar loads on the instrument page; pick tomorrow 19:00.
    cell = page.locator(f"td.cell.free a[data-start='{slot_start.astimezone(ZoneInfo('UTC')).isoformat()}']")
    page.locator("#week table").wait_for()
    if cell.count() == 0:  # tomorrow is in next week
        page.get_by_role("link", name="下一周").click()
    screenshot(page, "booking-week")
    cell.click()
    expect(page.get_by_role("heading", name=f"预约：{inst['name']}")).to_be_visible()
    # Live check while picking: an hour too late is outside opening hours, then the right end time is fine.
    page.get_by_label("结束").fill("23:00")
    page.get_by_label("结束").dispatch_event("change")
    expect(page.get_by_test_id("check-problems")).to_contain_text("开放时间")
    page.get_by_label("结束").fill("20:00")
    page.get_by_label("结束").dispatch_event("change")
    expect(page.get_by_test_id("check-ok")).to_be_visible()
    page.get_by_label("用途 *").fill("浏览器测试：测定样品分子量")
    page.get_by_role("button", name="提交预约").click()
    expect(page.get_by_test_id("booking-status")).to_have_text("待审批")
    booking_url = page.url.split("?")[0]
    screenshot(page, "booking-pending")

    # The manager approves it from the queue.
    logout(page)
    login(page, "manager@demo.local")
    page.goto("/manage/bookings")
    booking_id = booking_url.rsplit("/", 1)[1]
    page.locator(f"#sel-{booking_id}").check()
    page.get_by_role("button", name="批准所选").click()
    expect(page.locator(f"#sel-{booking_id}")).to_have_count(0)

    # The researcher downloads the calendar file, checks in and out, and sees the service record.
    logout(page)
    login(page, "researcher@demo.local")
    page.goto(booking_url)
    expect(page.get_by_test_id("booking-status")).to_have_text("已确认")
    with page.expect_download() as download:
        page.get_by_role("link", name="下载日历文件 (.ics)").click()
    cal = icalendar.Calendar.from_ical(Path(download.value.path()).read_bytes())
    [event] = [c for c in cal.walk("VEVENT")]
    assert str(event["STATUS"]) == "CONFIRMED"
    assert event.decoded("DTSTART") == slot_start
    assert str(inst["name"]) in str(event["SUMMARY"])
    page.get_by_role("button", name="签到上机").click()
    expect(page.get_by_test_id("booking-status")).to_have_text("使用中")
    page.get_by_role("button", name="签退").click()
    expect(page.get_by_test_id("booking-status")).to_have_text("已完成")
    record = page.get_by_test_id("service-record")
    expect(record).to_contain_text("小时")
    expect(record).to_contain_text("元")
    expect(record).to_contain_text("外部用户")
    screenshot(page, "booking-service-record")
