"""A manager records that a service was paid on the booking page; the researcher sees it there and in the
notification; the demo has services both paid and still to pay."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, logout, query, screenshot

pytestmark = pytest.mark.browser


def test_manager_records_a_payment_the_researcher_sees_it(page, live: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    db = live[1]
    states = {r["payment_status"] for r in query(db, "SELECT DISTINCT payment_status FROM service_records")}
    assert {"paid", "unpaid"} <= states
    [due] = query(db, """
        SELECT r.id, r.booking_id, r.amount FROM service_records r
        JOIN instruments i ON i.id = r.instrument_id JOIN users u ON u.id = r.user_id
        WHERE u.email = 'researcher@demo.local' AND r.payment_status = 'unpaid' AND r.amount > 0
          AND r.booking_id IS NOT NULL
          AND EXISTS (SELECT 1 FROM role_grants g JOIN users m ON m.id = g.user_id
                      WHERE m.email = 'manager@demo.local' AND g.role IN ('facility_manager', 'institution_admin')
                        AND g.institution_id = i.institution_id
                        AND (g.facility_id IS NULL OR g.facility_id = i.facility_id))
        ORDER BY r.id LIMIT 1""")

    login(page, "researcher@demo.local")
    page.goto(f"/bookings/{due['booking_id']}")
    expect(page.get_by_test_id("payment-status")).to_contain_text("待付款")
    expect(page.get_by_role("button", name="登记付款")).to_have_count(0)
    logout(page)

    # The manager finds it among the services still to pay.
    login(page, "manager@demo.local")
    page.get_by_role("link", name="预约管理").click()
    page.get_by_role("link", name="待收款").click()
    expect(page).to_have_url(re.compile(r"view=unpaid"))
    expect(page.get_by_role("link", name="待收款")).to_have_attribute("aria-current", "page")
    expect(page.locator("#queue")).to_contain_text("待收款")
    screenshot(page, "payment-unpaid-list")
    page.locator(f'a[href="/bookings/{due["booking_id"]}#payment"]').click()
    expect(page.get_by_role("heading", name=f"登记付款（应收 {due['amount']} 元）")).to_be_visible()
    screenshot(page, "payment-form")
    page.get_by_label("发票号").fill("FP-BROWSER-0001")
    page.get_by_role("button", name="登记付款").click()  # no method chosen: the browser asks for it first
    expect(page).to_have_url(re.compile(rf"/bookings/{due['booking_id']}(#payment)?$"))
    page.get_by_label("付款方式").select_option(label="银行转账")
    page.get_by_role("button", name="登记付款").click()
    expect(page.get_by_role("status").filter(has_text="已登记付款")).to_be_visible()
    expect(page.get_by_test_id("payment-status")).to_contain_text("已付款")
    expect(page.get_by_test_id("payment-status")).to_contain_text("发票号 FP-BROWSER-0001")
    screenshot(page, "payment-recorded")
    logout(page)

    login(page, "researcher@demo.local")
    page.goto(f"/bookings/{due['booking_id']}")
    expect(page.get_by_test_id("payment-status")).to_contain_text("银行转账")
    [note] = query(db, """SELECT n.title FROM notifications n JOIN users u ON u.id = n.user_id
                          WHERE u.email = 'researcher@demo.local' AND n.kind = 'service_record.paid'
                          ORDER BY n.id DESC LIMIT 1""")
    assert str(note["title"]).startswith("付款已确认")
