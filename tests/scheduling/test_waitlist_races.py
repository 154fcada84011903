"""Concurrent acceptances of one held offer, through a real server process on a committed database: the offer row
is locked first, so exactly one acceptance books and the others get 409; one booking row, no overlap."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.db import TestDatabase
from tests.live import OVERLAPS_SQL, Scratch, seed_booking_world

pytestmark = pytest.mark.race


@pytest.fixture(scope="module")
def world(test_database: TestDatabase) -> Iterator[tuple[Scratch, dict[str, Any], str]]:
    scratch = Scratch.create(test_database, f"booking_wl_race_{id(test_database) % 100000}")
    try:
        async def seed() -> dict[str, Any]:
            engine = scratch.engine()
            try:
                return await seed_booking_world(engine, users=3)
            finally:
                await engine.dispose()
        data = asyncio.run(seed())
        yield scratch, data, scratch.start_server(log_name="waitlist-race")
    finally:
        scratch.close()


def _scalar(scratch: Scratch, sql: str, **params: Any) -> int:
    async def go() -> int:
        engine = scratch.engine(pool_size=1, max_overflow=0)
        try:
            async with engine.begin() as conn:
                return int((await conn.execute(text(sql), params)).scalar() or 0)
        finally:
            await engine.dispose()
    return asyncio.run(go())


def test_concurrent_acceptances_make_one_booking(world: tuple[Scratch, dict[str, Any], str]) -> None:
    scratch, data, base = world
    owner, waiter = ({"Authorization": f"Bearer {t}"} for t in data["tokens"][:2])
    start = datetime(2031, 6, 2, 2, 0, tzinfo=UTC)
    slot = {"instrument_id": data["instrument_id"], "start": start.isoformat(),
            "end": (start + timedelta(hours=2)).isoformat(), "purpose": "候补竞争测试"}

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=50)) as c:
            taken = await c.post("/api/v1/bookings", headers=owner, json=slot)
            assert taken.status_code == 201, taken.text
            joined = await c.post("/api/v1/waitlist", headers=waiter, json=slot)
            assert joined.status_code == 201 and joined.json()["status"] == "waiting", joined.text
            cancelled = await c.post(f"/api/v1/bookings/{taken.json()['id']}/cancel", headers=owner)
            assert cancelled.status_code == 200
            entry = (await c.get(f"/api/v1/waitlist/{joined.json()['id']}", headers=waiter)).json()
            offer = entry["offer"]
            assert offer is not None and entry["status"] == "offered"
            answers = await asyncio.gather(*(c.post(f"/api/v1/waitlist/offers/{offer['id']}/accept", headers=waiter)
                                             for _ in range(12)))
            return [a.status_code for a in answers]

    statuses = asyncio.run(scenario())
    assert statuses.count(200) == 1, statuses
    assert statuses.count(409) == len(statuses) - 1, statuses
    assert _scalar(scratch, "SELECT count(*) FROM bookings WHERE purpose = '候补竞争测试' AND status = 'confirmed'") == 1
    assert _scalar(scratch, "SELECT count(*) FROM bookings WHERE purpose = '候补竞争测试' AND status = 'held'") == 0
    assert _scalar(scratch, "SELECT count(*) FROM waitlist_offers WHERE outcome = 'accepted'") == 1
    assert _scalar(scratch, OVERLAPS_SQL) == 0
