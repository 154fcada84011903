"""The conflict-resolving scheduler in a real Chromium against `booking demo`:

1. a researcher whose slot is taken gets alternatives on two instruments and books one;
2. a second researcher waits for that slot, the first cancels, the second receives a held offer (with a
   countdown) and accepts it;
3. the demo manager switches a group of 3 instruments to rounds, and previews and publishes a round of 20 requests.

Instruments, opening hours, the group and the competing users are set up through the API first, so the test does
not depend on what the demo seeds; everything the issue asks to see happens in the browser."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot

pytestmark = pytest.mark.browser

SHANGHAI = ZoneInfo("Asia/Shanghai")
PASSWORD = "demo-pass-2027"


def _token(base: str, email: str) -> dict[str, str]:
    r = httpx.post(f"{base}/api/v1/auth/token", data={"username": email, "password": PASSWORD}, timeout=10)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _instrument(base: str, manager: dict[str, str], name: str) -> int:
    r = httpx.post(f"{base}/api/v1/instruments", headers=manager, timeout=10, json={
        "asset_number": f"SCH-{secrets.token_hex(4)}", "name": name, "category_code": "010200",
        "original_value": "2800000.00", "sharing_mode": "external", "model": "Xevo TQ-XS"})
    assert r.status_code == 201, r.text
    inst_id = int(r.json()["id"])
    r = httpx.put(f"{base}/api/v1/instruments/{inst_id}/schedule/windows", headers=manager, timeout=10,
                  json={"windows": [{"weekday": d, "start": "08:00", "end": "20:00"} for d in range(7)]})
    assert r.status_code == 200, r.text
    r = httpx.put(f"{base}/api/v1/instruments/{inst_id}/rules", headers=manager, timeout=10, json={
        "granularity_min": 30, "min_duration_min": 30, "max_duration_min": 240, "min_lead_min": 0,
        "approval_required": False, "follow_holidays": False, "cancellation_deadline_h": 0})
    assert r.status_code == 200, r.text
    return inst_id


def _researcher(base: str, name: str) -> tuple[str, dict[str, str]]:
    institutions = httpx.get(f"{base}/api/v1/institutions", params={"q": "电子科技大学"}, timeout=10).json()
    email = f"r{secrets.token_hex(4)}@example.cn"
    r = httpx.post(f"{base}/api/v1/auth/register", timeout=10, json={
        "email": email, "password": PASSWORD, "name": name, "institution_id": institutions["items"][0]["id"]})
    assert r.status_code == 201, r.text
    return email, _token(base, email)


def _local(day: int, hour: int) -> datetime:
    date = (datetime.now(SHANGHAI) + timedelta(days=day)).date()
    return datetime(date.year, date.month, date.day, hour, tzinfo=SHANGHAI)


def _setup(base: str) -> dict[str, Any]:
    manager = _token(base, "manager@demo.local")
    tag = secrets.token_hex(2)
    a = _instrument(base, manager, f"液相色谱-质谱联用仪 甲（调度测试 {tag}）")
    b = _instrument(base, manager, f"液相色谱-质谱联用仪 乙（调度测试 {tag}）")
    r = httpx.post(f"{base}/api/v1/equivalence-groups", headers=manager, timeout=10, json={
        "name": f"三重四极杆 LC-MS（调度测试 {tag}）", "capability_tags": ["ESI", "三重四极杆"],
        "instrument_ids": [a, b]})
    assert r.status_code == 201, r.text
    start = _local(2, 10)
    _, taker = _researcher(base, "抢先的研究员")
    r = httpx.post(f"{base}/api/v1/bookings", headers=taker, timeout=10, json={
        "instrument_id": a, "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(),
        "purpose": "测定代谢物"})
    assert r.status_code == 201, r.text
    return {"a": a, "b": b, "start": start, "tag": tag, "manager": manager}


def _round_setup(base: str, manager: dict[str, str], tag: str) -> dict[str, Any]:
    ids = [_instrument(base, manager, f"电感耦合等离子体质谱仪 {n}（轮次测试 {tag}）") for n in "一二三"]
    r = httpx.post(f"{base}/api/v1/equivalence-groups", headers=manager, timeout=10, json={
        "name": f"ICP-MS 轮次组（{tag}）", "capability_tags": ["痕量元素"], "instrument_ids": ids})
    assert r.status_code == 201, r.text
    return {"group": r.json()["id"], "ids": ids, "name": r.json()["name"]}


def _round_requests(base: str, ids: list[int]) -> int:
    """20 flexible requests from 5 researchers for one day eight days ahead (after any weekly cutoff): about
    50 hours asked of 36 open."""
    users = [_researcher(base, f"轮次申请人{n}")[1] for n in range(5)]
    round_id = None
    day_start, day_end = _local(8, 8), _local(8, 20)
    for n in range(20):
        r = httpx.post(f"{base}/api/v1/requests/flexible", headers=users[n % 5], timeout=30, json={
            "instrument_id": ids[n % 3], "any_equivalent": n % 4 != 0, "duration_minutes": (120, 150, 180)[n % 3],
            "window_start": day_start.isoformat(), "window_end": day_end.isoformat(), "purpose": f"样品批次 {n + 1}"})
        assert r.status_code == 201 and r.json()["status"] == "collected", r.text
        round_id = round_id or r.json()["round_id"]
        assert r.json()["round_id"] == round_id
    assert round_id is not None
    return int(round_id)


def test_alternatives_waitlist_and_round(live_server: str, browser, page) -> None:  # type: ignore[no-untyped-def]
    world = _setup(live_server)
    start = world["start"]
    booking_url = (f"/instruments/{world['a']}/book?start={start.isoformat()}"
                   f"&end={(start + timedelta(hours=1)).isoformat()}").replace("+", "%2B")

    # 1. The slot is taken: alternatives on two instruments; book the equivalent at the same time.
    login(page, "researcher@demo.local")
    page.goto(booking_url)
    expect(page.get_by_test_id("check-conflict")).to_be_visible(timeout=10_000)
    expect(page.get_by_test_id("explain")).to_contain_text("冲突")
    page.locator("#f-purpose").fill("测定代谢物")
    page.get_by_role("button", name="提交预约").click()
    alternatives = page.get_by_test_id("alternatives")
    expect(alternatives).to_be_visible()
    page.wait_for_load_state("networkidle")
    expect(page.get_by_test_id("check-conflict")).to_have_count(0)  # said once, above the form, not again below
    offered = {int(x) for x in alternatives.get_by_test_id("alternative").evaluate_all(
        "els => els.map(e => e.dataset.instrument)")}
    assert offered == {world["a"], world["b"]}
    screenshot(page, "scheduler-alternatives")
    alternatives.locator(f"li[data-instrument='{world['b']}'] a").first.click()
    page.wait_for_url(f"**/instruments/{world['b']}/book?**")
    page.locator("#f-purpose").fill("测定代谢物")
    expect(page.get_by_test_id("check-ok")).to_be_visible(timeout=10_000)
    page.get_by_role("button", name="提交预约").click()
    page.wait_for_url("**/bookings/*?created=1")
    expect(page.get_by_test_id("booking-status")).to_have_text("已确认")
    expect(page.get_by_role("heading", level=1)).to_contain_text("乙")
    first_booking_url = page.url.split("?")[0]
    screenshot(page, "scheduler-booked-equivalent")

    # 2. A second researcher wants that slot on 乙: joins the waitlist.
    second_email, _ = _researcher(live_server, "候补的研究员")
    second = browser.new_context(base_url=live_server, locale="zh-CN", viewport={"width": 1280, "height": 900})
    other = second.new_page()
    try:
        login(other, second_email)
        other.goto(booking_url.replace(f"/instruments/{world['a']}/", f"/instruments/{world['b']}/"))
        expect(other.get_by_test_id("check-conflict")).to_be_visible(timeout=10_000)
        other.locator("#f-purpose").fill("测定代谢物")
        other.get_by_role("button", name="提交预约").click()
        other.get_by_test_id("join-waitlist").click()
        other.wait_for_url("**/waitlist/new?**")
        other.locator("#f-purpose").fill("等候测定代谢物")
        other.get_by_role("button", name="加入候补").click()
        other.wait_for_url("**/waitlist?joined=1")
        expect(other.get_by_test_id("waitlist-status").first).to_have_text("排队中")
        screenshot(other, "scheduler-waitlist-waiting")

        # The first researcher cancels; the slot is held for the second at once.
        page.goto(first_booking_url)
        page.once("dialog", lambda dialog: dialog.accept())  # 确定取消该预约？
        page.get_by_role("button", name="取消预约").click()
        expect(page.get_by_test_id("booking-status")).to_have_text("已取消")

        other.goto("/waitlist")
        offers = other.get_by_test_id("offers")
        expect(offers).to_be_visible()
        expect(offers).to_contain_text("乙")
        expect(other.get_by_test_id("countdown")).to_contain_text("秒")  # the live countdown ticks
        screenshot(other, "scheduler-offer-countdown")
        other.get_by_role("button", name="接受并预约").click()
        other.wait_for_url("**/waitlist?accepted=*")
        expect(other.locator("#flash")).to_contain_text("已接受")
        expect(other.get_by_test_id("waitlist-status").first).to_have_text("已预约")
        other.goto("/bookings")
        expect(other.locator("table")).to_contain_text("已确认")
    finally:
        second.close()

    # 3. The manager switches a 3-instrument group to rounds; 20 requests come in; preview, then publish.
    group = _round_setup(live_server, world["manager"], world["tag"])
    manager = browser.new_context(base_url=live_server, locale="zh-CN", viewport={"width": 1280, "height": 900})
    mpage = manager.new_page()
    try:
        login(mpage, "manager@demo.local")
        mpage.locator("nav[aria-label='主导航'] summary", has_text="管理工具").click()
        mpage.locator("nav[aria-label='主导航'] a[data-nav='equivalence']").click()
        mpage.wait_for_url("**/equivalence")
        mpage.get_by_role("link", name=group["name"]).click()
        mpage.wait_for_url(f"**/equivalence/{group['group']}")
        mpage.locator("#f-settings-allocation_mode").select_option("rounds")
        mpage.locator("#f-settings-user_cap_hours").fill("6")
        mpage.locator("#f-settings-external_min_share").fill("0.3")
        mpage.get_by_role("button", name="保存").click()
        expect(mpage.locator("#flash")).to_contain_text("已保存")

        round_id = _round_requests(live_server, group["ids"])
        mpage.locator("nav[aria-label='主导航'] summary", has_text="管理工具").click()
        mpage.locator("nav[aria-label='主导航'] a[data-nav='rounds']").click()
        mpage.wait_for_url("**/rounds")
        mpage.get_by_role("link", name=f"#{round_id}").click()
        mpage.wait_for_url(f"**/rounds/{round_id}")
        expect(mpage.get_by_test_id("round-row")).to_have_count(20)
        mpage.get_by_role("button", name="立即截止").click()
        expect(mpage.locator("#flash")).to_contain_text("本轮已截止")
        mpage.get_by_role("button", name="预览分配").click()
        figures = mpage.get_by_test_id("round-figures")
        expect(figures).to_contain_text("预览（尚未预约）")
        expect(mpage.get_by_test_id("round-row")).to_have_count(20)
        granted = mpage.locator("[data-testid=round-row] .badge.ok").count()
        refused = mpage.locator("[data-testid=round-row] .badge.bad").count()
        # Every request has a decision, and the round is oversubscribed: some are refused, with a reason.
        assert granted + refused == 20 and 0 < granted < 20
        screenshot(mpage, "scheduler-round-preview")
        mpage.get_by_role("button", name="发布并预约").click()
        expect(mpage.locator("#flash")).to_contain_text("已发布")
        expect(mpage.get_by_test_id("round-status")).to_have_text("已发布")
        expect(figures).to_contain_text(f"{granted} 条；未获批 {refused} 条")
        expect(mpage.locator("[data-testid=round-row] .fx-granted")).to_have_count(granted)
        screenshot(mpage, "scheduler-round-published")
    finally:
        manager.close()


def test_flexible_request_and_simulation_pages(live_server: str, browser, page) -> None:  # type: ignore[no-untyped-def]
    """A researcher's flexible request is placed and says why; the manager simulates a rule change first."""
    manager = _token(live_server, "manager@demo.local")
    tag = secrets.token_hex(2)
    inst = _instrument(live_server, manager, f"气相色谱-质谱联用仪（灵活测试 {tag}）")
    _instrument(live_server, manager, f"气相色谱-质谱联用仪 乙（灵活测试 {tag}）")  # its equivalent, below
    day = _local(3, 8).date().isoformat()
    login(page, "researcher@demo.local")
    page.goto(f"/requests/flexible/new?instrument_id={inst}")
    form = page.get_by_test_id("flexible-form")
    page.locator("#f-duration_minutes").fill("90")
    page.locator("#f-window_start").fill(f"{day}T08:00")
    page.locator("#f-window_end").fill(f"{day}T08:30")
    page.locator("#f-purpose").fill("挥发性有机物筛查")
    form.get_by_role("button", name="提交灵活预约").click()
    expect(page.locator(".field-error").first).to_contain_text("短于所需时长")
    screenshot(page, "scheduler-flexible-error")
    page.locator("#f-window_end").fill(f"{day}T18:00")
    page.locator("#f-preferred_start").fill("14:00")
    page.locator("#f-preferred_end").fill("17:00")
    form.get_by_role("button", name="提交灵活预约").click()
    page.wait_for_url("**/requests/flexible/*")
    expect(page.get_by_test_id("flexible-status")).to_have_text("已安排")
    expect(page.get_by_test_id("flexible-reason")).to_contain_text("偏好时段内")
    expect(page.get_by_test_id("placement")).to_contain_text(f"{day} 14:00")
    screenshot(page, "scheduler-flexible-placed")

    mcontext = browser.new_context(base_url=live_server, locale="zh-CN", viewport={"width": 1280, "height": 900})
    mpage = mcontext.new_page()
    try:
        login(mpage, "manager@demo.local")
        mpage.goto(f"/instruments/{inst}/schedule")
        mpage.get_by_test_id("simulate-link").click()
        mpage.wait_for_url(f"**/instruments/{inst}/simulate")
        mpage.locator("#f-windows").fill("\n".join(f"{d} 08:00-12:00" for d in ("周一", "周二", "周三", "周四", "周五", "周六", "周日")))
        mpage.get_by_role("button", name="模拟影响").click()
        result = mpage.get_by_test_id("simulation")
        expect(result).to_contain_text("受影响的预约：1 个")
        expect(result).to_contain_text("不在调整后的开放时间内")
        screenshot(mpage, "scheduler-simulate")
        mpage.goto("/equivalence")
        expect(mpage.get_by_test_id("groups")).to_contain_text("液相色谱-质谱联用（三重四极杆）")
        screenshot(mpage, "scheduler-groups")

        # The demo manager manages hundreds of instruments: the picker lists a page and searches the rest; what is
        # ticked stays ticked across searches, and Enter in the search box does not submit the form.
        expect(mpage.get_by_test_id("pick-count")).to_contain_text("请输入关键词或分类编码缩小范围")
        mpage.locator("#f-name").fill(f"GC-MS {tag}")
        mpage.locator("#f-pick-q").fill(f"灵活测试 {tag}")
        picks = mpage.locator("#pick-list input[name='instrument_ids']")
        expect(picks).to_have_count(2)
        picks.nth(0).check()
        picks.nth(1).check()
        mpage.locator("#f-pick-q").fill("色谱")
        expect(mpage.locator("#pick-list")).to_contain_text("已选 2 台")
        expect(mpage.locator("#pick-list input[name='instrument_ids']:checked")).to_have_count(2)
        mpage.locator("#f-pick-q").press("Enter")
        mpage.wait_for_timeout(300)
        expect(mpage).to_have_url(re.compile(r".*/equivalence$"))
        expect(mpage.locator("#pick-list")).to_contain_text("已选 2 台")
        screenshot(mpage, "scheduler-group-picker")
        # A full-page screenshot leaves Chromium's scroll offset stale, and the next click lands beside the button.
        mpage.evaluate("window.scrollTo(0, 0)")
        mpage.get_by_role("button", name="创建").click()
        mpage.wait_for_url(re.compile(r".*/equivalence/\d+$"))
        members = mpage.get_by_test_id("members")
        expect(members).to_contain_text(f"气相色谱-质谱联用仪（灵活测试 {tag}）")
        expect(members).to_contain_text(f"气相色谱-质谱联用仪 乙（灵活测试 {tag}）")
        # Adding a member: the group's classification by default, searchable; members are not offered again.
        expect(mpage.locator("#f-cand-category")).to_have_value("010200")
        expect(mpage.get_by_test_id("candidate-count")).to_contain_text("符合条件")
        mpage.locator("#f-cand-q").fill(f"灵活测试 {tag}")
        expect(mpage.get_by_test_id("candidate-count")).to_have_text("没有符合条件、可加入本组的仪器。")
    finally:
        mcontext.close()
