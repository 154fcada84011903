"""Each demo role logs in through the real login page and sees its own navigation."""

from __future__ import annotations

import pytest

from tests.browser.conftest import login, query, screenshot

pytestmark = pytest.mark.browser

EXPECTED = {
    "researcher@demo.local": ({"home", "institutions", "profile"},
                              {"role-requests", "users", "activity", "my-institution"}, "研究人员"),
    "manager@demo.local": ({"home", "institutions", "profile", "my-institution"},
                           {"role-requests", "users", "activity"}, "仪器管理员"),
    "auditor@demo.local": ({"home", "institutions", "profile", "activity"},
                           {"role-requests", "users", "my-institution"}, "省级审计"),
    "admin@demo.local": ({"home", "institutions", "profile", "role-requests", "users", "activity"},
                         set(), "平台管理员"),
}


@pytest.mark.parametrize("email", list(EXPECTED))
def test_role_navigation(page, email: str) -> None:  # type: ignore[no-untyped-def]
    must, must_not, badge = EXPECTED[email]
    login(page, email)
    assert page.url.endswith("/")
    keys = set(page.locator("nav[aria-label='主导航'] a").evaluate_all("els => els.map(e => e.dataset.nav)"))
    assert must <= keys, keys
    assert not (must_not & keys), keys
    assert badge in page.get_by_test_id("role-badge").inner_text()
    screenshot(page, f"nav-{email.split('@')[0]}")


@pytest.mark.parametrize("email", list(EXPECTED))
def test_header_is_one_line_at_laptop_width(page, email: str) -> None:  # type: ignore[no-untyped-def]
    """At 1280 px the brand and the user sit on one line and every entry of the bar on the next: pages used less
    than daily are in menus (booking.nav groups)."""
    login(page, email)
    nav = page.locator("nav[aria-label='主导航']")
    tops = nav.locator(":scope > ul > li").evaluate_all("els => els.map(e => Math.round(e.getBoundingClientRect().top))")
    assert len(set(tops)) == 1, tops
    brand_top = page.locator("header.site .brand").bounding_box()["y"]
    user_box = page.locator("header.site .user").bounding_box()
    assert abs(user_box["y"] - brand_top) < 12, (user_box, brand_top)
    assert page.locator("header.site").bounding_box()["height"] < 110


def test_header_menus_open_close_and_navigate(page) -> None:  # type: ignore[no-untyped-def]
    login(page, "admin@demo.local")
    system = page.locator("nav[aria-label='主导航'] details", has=page.locator("summary", has_text="系统管理"))
    users_link = system.get_by_role("link", name="用户", exact=True)
    assert not users_link.is_visible()
    system.locator("summary").click()
    assert users_link.is_visible()
    screenshot(page, "nav-admin-menu")
    # One menu at a time; a click elsewhere or Escape closes it.
    account = page.locator("nav[aria-label='主导航'] details", has=page.locator("summary", has_text="我的账户"))
    account.locator("summary").click()
    assert account.get_attribute("open") is not None and system.get_attribute("open") is None
    page.locator("main h1").click()
    assert account.get_attribute("open") is None
    system.locator("summary").click()
    page.keyboard.press("Escape")
    assert system.get_attribute("open") is None
    assert page.evaluate("document.activeElement.textContent").strip() == "系统管理"
    # A page of a menu marks the menu as where the user is.
    system.locator("summary").click()
    users_link.click()
    page.wait_for_url("**/admin/users")
    assert "current" in (system.locator("summary").get_attribute("class") or "")
    assert system.locator("a[aria-current='page']").get_attribute("data-nav") == "users"


def test_back_never_brings_a_menu_back_open(page) -> None:  # type: ignore[no-untyped-def]
    """The page htmx keeps for the Back button is taken as the user leaves it: with the menu they left through
    closed."""
    login(page, "admin@demo.local")
    page.goto("/admin/users")
    page.locator("nav[aria-label='主导航'] summary", has_text="管理工具").click()
    page.locator("nav[aria-label='主导航'] a[data-nav='rounds']").click()
    page.wait_for_url("**/rounds")
    page.go_back()
    page.wait_for_url("**/admin/users")
    assert page.locator("nav[aria-label='主导航'] details[open]").count() == 0


@pytest.mark.parametrize("email", list(EXPECTED))
def test_header_menus_fit_a_phone(page, email: str) -> None:  # type: ignore[no-untyped-def]
    """Wherever the bar wraps on a narrow screen, every menu opens within it; focus leaving a menu closes it."""
    page.set_viewport_size({"width": 390, "height": 844})
    login(page, email)
    menus = page.locator("nav[aria-label='主导航'] details").all()
    for menu in menus:
        menu.locator("summary").click()
        box = menu.locator("ul").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (email, box)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, f"phone-menu-{email.split('@')[0]}")
        page.keyboard.press("Escape")
    if menus:
        menus[0].locator("summary").click()
        page.locator("main a").first.focus()
        assert page.locator("nav[aria-label='主导航'] details[open]").count() == 0


def test_the_unread_badge_never_shows_unstyled(page) -> None:  # type: ignore[no-untyped-def]
    """The count is loaded after the page (htmx): every state the badge passes through is the styled badge or
    hidden, never bare text beside 通知."""
    page.add_init_script("""
        window.badgeStates = [];
        new MutationObserver(() => {
            const badge = document.getElementById("nav-badge-notifications");
            if (badge) window.badgeStates.push([badge.className, badge.hidden, badge.textContent.trim()]);
        }).observe(document, {subtree: true, childList: true, attributes: true});
    """)
    login(page, "researcher@demo.local")
    page.goto("/instruments")
    page.wait_for_load_state("networkidle")
    states = page.evaluate("window.badgeStates")
    assert states, "the badge was never seen"
    assert all("nav-badge" in cls or hidden for cls, hidden, _ in states), states


def test_login_page_heading_and_error(page) -> None:  # type: ignore[no-untyped-def]
    page.goto("/login")
    assert page.get_by_role("heading", level=1).inner_text() == "登录"
    page.get_by_label("邮箱").fill("researcher@demo.local")
    page.get_by_label("密码").fill("wrong-password-here")
    page.get_by_role("button", name="登录").click()
    assert "邮箱或密码不正确" in page.locator("#login-error").inner_text()
    screenshot(page, "login-error")


def test_keyboard_skip_link_and_focus(page) -> None:  # type: ignore[no-untyped-def]
    page.goto("/login")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert "跳到主要内容" in focused


def test_phone_width_pages_do_not_scroll_sideways(page, live: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    """At 390 px wide tables and the week grid scroll inside their own box; the page itself never does."""
    [row] = query(live[1], "SELECT min(id) AS id FROM instruments WHERE retired_at IS NULL AND NOT restricted")
    page.set_viewport_size({"width": 390, "height": 844})
    login(page, "admin@demo.local")
    [booking] = query(live[1], "SELECT min(id) AS id FROM bookings")
    for url in ("/", "/instruments?q=质谱", f"/instruments/{row['id']}", f"/instruments/{row['id']}/book",
                "/admin/activity", "/admin/users", "/audit", "/audit/breakdown/institution", "/manage/bookings",
                "/schedule", "/equivalence", f"/bookings/{booking['id']}", "/profile", "/admin/holidays"):
        page.goto(url)
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (url, width)
        # The wrapper scrolls, not the table: a table restyled as a block loses its semantics for screen readers.
        tables = page.evaluate(
            """[...document.querySelectorAll('main table')].map(t => [getComputedStyle(t).display,
                 t.classList.contains('week-grid') || t.parentElement.classList.contains('table-scroll')])"""
        )
        assert all(display == "table" and wrapped for display, wrapped in tables), (url, tables)
    page.goto(f"/instruments/{row['id']}/book")
    screenshot(page, "phone-book")
    # The header's menus open within the screen too.
    page.goto("/")
    for menu in page.locator("nav[aria-label='主导航'] details").all():
        menu.locator("summary").click()
        box = menu.locator("ul").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "phone-nav-menu")
