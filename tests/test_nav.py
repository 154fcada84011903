"""Which navigation entry is current: the best match only (table-driven), and on real pages."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role
from booking.nav import _match
from tests.factories import login_web, make_institution, make_instrument, make_user

SCHEDULE_ALSO = (r"^/instruments/\d+/(schedule|simulate)",)


@pytest.mark.parametrize(("path", "href", "also", "score"), [
    ("/", "/", (), 1),
    ("/instruments", "/", (), 0),
    ("/instruments", "/instruments", (), len("/instruments")),
    ("/instruments/import", "/instruments", (), len("/instruments")),
    ("/instruments/import", "/instruments/import", (), len("/instruments/import")),
    ("/instrumentsx", "/instruments", (), 0),  # a prefix of the word, not of the path
    ("/instruments/12/schedule", "/schedule", SCHEDULE_ALSO, 10_000),
    ("/instruments/12/simulate", "/schedule", SCHEDULE_ALSO, 10_000),
    ("/institutions?city=510100", "/institutions?city=510100", (), 0),
    ("/institutions", "/institutions?city=510100", (), len("/institutions")),
])
def test_match(path: str, href: str, also: tuple[str, ...], score: int) -> None:
    assert _match(path, href, also) == score


def current(html: str) -> list[str]:
    return re.findall(r'aria-current="page" data-nav="([\w-]+)"', html)


async def test_one_current_entry_on_pages(client: httpx.AsyncClient, session: AsyncSession) -> None:
    owner = await make_institution(session)
    inst = await make_instrument(session, owner)
    await login_web(session, client, await make_user(session, role=Role.facility_manager, grant_institution=owner))
    for path, key in (("/instruments", "instruments"), ("/instruments/import", "instrument-import"),
                      (f"/instruments/{inst.id}", "instruments"), (f"/instruments/{inst.id}/schedule", "schedule"),
                      ("/schedule", "schedule"), ("/", "home")):
        r = await client.get(path)
        assert r.status_code == 200, path
        assert current(r.text) == [key], path
        # A screen reader hears, on the closed menu, that the current page is inside it (a class only shows it).
        in_menu = re.findall(r'<summary class="current">([^<]+)<span class="sr-only">（当前页面在此菜单中）</span>', r.text)
        assert in_menu == (["管理工具"] if key == "instrument-import" else []), path


def _item(key: str, group: str | None = None, current: bool = False) -> dict[str, object]:
    return {"key": key, "label": key, "href": f"/{key}", "current": current, "badge": None, "group": group}


@pytest.mark.parametrize(("items", "bar"), [
    ([], []),
    ([_item("a"), _item("b")], ["a", "b"]),
    # A menu stands where its first entry would.
    ([_item("a"), _item("x", "M"), _item("b"), _item("y", "M")], ["a", ("M", ["x", "y"], False), "b"]),
    # A menu with one visible entry is that entry (an auditor's 系统管理 holds only 操作日志).
    ([_item("a"), _item("x", "M")], ["a", "x"]),
    # The menu holding the current page says so.
    ([_item("x", "M"), _item("y", "M", current=True), _item("z", "N"), _item("w", "N")],
     [("M", ["x", "y"], True), ("N", ["z", "w"], False)]),
])
def test_nav_bar(items: list[dict[str, object]], bar: list[object]) -> None:
    from booking.nav import nav_bar

    shown = [(e["menu"], [i["key"] for i in e["items"]], e["current"]) if "menu" in e else e["key"]
             for e in nav_bar(items)]
    assert shown == bar


def test_menus_hold_the_pages_used_less_than_daily() -> None:
    from booking.app import create_app  # registers every entry
    from booking.nav import ACCOUNT, SYSTEM, TOOLS, _items

    create_app()
    groups = {key: item.group for key, item in _items.items()}
    assert {k for k, g in groups.items() if g == TOOLS} == {"instrument-import", "equivalence", "rounds"}
    assert {k for k, g in groups.items() if g == SYSTEM} == {
        "role-requests", "users", "activity", "holidays", "instrument-codes"}
    assert {k for k, g in groups.items() if g == ACCOUNT} == {"calendar", "profile"}
    # What a user does every day stays in the bar.
    assert all(groups[k] is None for k in ("home", "instruments", "my-bookings", "booking-queue", "schedule",
                                           "notifications", "stats"))


async def test_a_booking_belongs_to_whoever_looks_at_it(client: httpx.AsyncClient, session: AsyncSession) -> None:
    """A manager on a user's booking is in 预约管理, also on a refused form's page; the user is in 我的预约."""
    from datetime import timedelta

    from tests.ops_helpers import NOW, make_booking, make_service_record

    owner = await make_institution(session)
    inst = await make_instrument(session, owner)
    manager = await make_user(session, role=Role.facility_manager, grant_institution=owner)
    user = await make_user(session)
    booking = await make_booking(session, inst, user, NOW - timedelta(days=2), 2, status="completed")
    rec = await make_service_record(session, booking, owner.id, amount="100.00",  # type: ignore[arg-type]
                                    fee_basis="外部 50 元/小时 × 2 小时")

    await login_web(session, client, manager)
    assert current((await client.get(f"/bookings/{booking.id}")).text) == ["booking-queue"]
    page = await client.get(f"/bookings/{booking.id}")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    refused = await client.post(f"/service-records/{rec.id}/payment",
                                data={"csrf_token": csrf.group(1), "method": "", "paid_at": ""})
    assert refused.status_code == 422 and current(refused.text) == ["booking-queue"]

    await login_web(session, client, user)
    assert current((await client.get(f"/bookings/{booking.id}")).text) == ["my-bookings"]
