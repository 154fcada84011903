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
