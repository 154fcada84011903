"""The demo manager adds a blackout on an instrument's schedule page and sees the bookings it collides with.

The instrument, its opening hours and the colliding booking are set up through the API first (as the manager
and the demo researcher), so the test does not depend on what the demo seeds."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.browser.conftest import login, screenshot

pytestmark = pytest.mark.browser

SHANGHAI = ZoneInfo("Asia/Shanghai")
PASSWORD = "demo-pass-2027"


def _token(base: str, email: str) -> dict[str, str]:
    r = httpx.post(f"{base}/api/v1/auth/token", data={"username": email, "password": PASSWORD}, timeout=10)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _setup(base: str) -> dict[str, Any]:
    manager = _token(base, "manager@demo.local")
    researcher = _token(base, "researcher@demo.local")
    name = f"场发射透射电镜（排期测试 {secrets.token_hex(2)}）"
    r = httpx.post(f"{base}/api/v1/instruments", headers=manager, timeout=10, json={
        "asset_number": f"SCHED-{secrets.token_hex(4)}", "name": name, "category_code": "010200",
        "original_value": "3200000.00", "sharing_mode": "external", "model": "Talos F200X"})
    assert r.status_code == 201, r.text
    inst_id = r.json()["id"]
    r = httpx.put(f"{base}/api/v1/instruments/{inst_id}/schedule/windows", headers=manager, timeout=10,
                  json={"windows": [{"weekday": d, "start": "08:00", "end": "20:00"} for d in range(7)]})
    assert r.status_code == 200, r.text
    r = httpx.put(f"{base}/api/v1/instruments/{inst_id}/rules", headers=manager, timeout=10, json={
        "granularity_min": 30, "min_duration_min": 30, "max_duration_min": 240, "min_lead_min": 0,
        "approval_required": False, "follow_holidays": False, "cancellation_deadline_h": 0})
    assert r.status_code == 200, r.text
    day = (datetime.now(SHANGHAI) + timedelta(days=2)).date()
    start = datetime(day.year, day.month, day.day, 10, 0, tzinfo=SHANGHAI)
    r = httpx.post(f"{base}/api/v1/bookings", headers=researcher, timeout=10, json={
        "instrument_id": inst_id, "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(),
        "purpose": "观察催化剂颗粒形貌"})
    assert r.status_code == 201, r.text
    return {"inst_id": inst_id, "name": name, "day": day, "booking_id": r.json()["id"]}


def test_blackout_lists_colliding_bookings(page, live_server: str) -> None:  # type: ignore[no-untyped-def]
    world = _setup(live_server)
    login(page, "manager@demo.local")
    # Links are hx-boosted: wait for the URL, not for a page load.
    page.locator("nav[aria-label='主导航'] a[data-nav='schedule']").click()
    page.wait_for_url("**/schedule")
    # 四川大学 has hundreds of instruments: find this one (the list narrows as you type).
    page.get_by_label("仪器名称、型号或内部编码").fill(str(world["name"]))
    page.get_by_role("row", name=world["name"]).get_by_role("link", name="编辑排期").click()
    page.wait_for_url(f"**/instruments/{world['inst_id']}/schedule")
    assert page.get_by_role("heading", level=1).inner_text().startswith(world["name"])
    day = world["day"].isoformat()
    page.locator("#f-blackout-starts_at").fill(f"{day}T09:00")
    page.locator("#f-blackout-ends_at").fill(f"{day}T12:00")
    page.locator("#f-blackout-reason").fill("年度校准与真空系统维护")
    page.get_by_role("button", name="添加停机时段").click()
    table = page.get_by_test_id("colliding-bookings")
    table.wait_for()
    text = table.inner_text()
    assert f"#{world['booking_id']}" in text and "电子科大研究员" in text and "年度校准与真空系统维护" in text
    assert "已通知相关用户" in page.locator("#flash").inner_text()
    page.get_by_test_id("blackouts").scroll_into_view_if_needed()
    page.get_by_test_id("colliding-bookings").scroll_into_view_if_needed()
    screenshot(page, "schedule-blackout-colliding")
