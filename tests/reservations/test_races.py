"""Races between real OS processes: the exclusion constraint, not Python, decides, so no path can store
overlapping active bookings; a server killed mid-storm leaves nothing half-written."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.db import TestDatabase, as_role, create_capped_role, drop_role
from tests.live import OVERLAPS_SQL, Scratch, seed_booking_world

pytestmark = pytest.mark.race


@pytest.fixture(scope="module")
def world(test_database: TestDatabase) -> Iterator[tuple[Scratch, dict[str, Any], list[str]]]:
    scratch = Scratch.create(test_database, f"booking_race_{id(test_database) % 100000}")
    try:
        engine = scratch.engine()
        data = asyncio.run(_seed(engine))
        servers = [scratch.start_server(log_name="race-a"), scratch.start_server(log_name="race-b")]
        yield scratch, data, servers
    finally:
        scratch.close()


async def _seed(engine: Any) -> dict[str, Any]:
    try:
        return await seed_booking_world(engine, users=60, buffer_after_min=30)
    finally:
        await engine.dispose()


async def _fire(servers: list[str], tokens: list[str], instrument_id: int, slots: list[tuple[datetime, datetime]]
                ) -> list[int]:
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def one(i: int) -> int:
            start, end = slots[i % len(slots)]
            r = await client.post(f"{servers[i % 2]}/api/v1/bookings",
                                  headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
                                  json={"instrument_id": instrument_id, "start": start.isoformat(),
                                        "end": end.isoformat(), "purpose": "竞争测试"})
            if r.status_code == 409:
                assert r.json()["alternatives"], r.text
            return r.status_code
        return list(await asyncio.gather(*(one(i) for i in range(len(tokens)))))


def _scalar(scratch: Scratch, sql: str) -> int:
    async def go() -> int:
        engine = scratch.engine(pool_size=1, max_overflow=0)
        try:
            async with engine.begin() as conn:
                return int((await conn.execute(text(sql))).scalar() or 0)
        finally:
            await engine.dispose()
    return asyncio.run(go())


def test_two_processes_same_slot_one_winner(world: tuple[Scratch, dict[str, Any], list[str]]) -> None:
    scratch, data, servers = world
    start = datetime(2031, 3, 3, 1, 0, tzinfo=UTC)
    statuses = asyncio.run(_fire(servers, data["tokens"], data["instrument_id"], [(start, start + timedelta(hours=2))]))
    assert statuses.count(201) == 1, statuses
    assert statuses.count(409) == len(statuses) - 1, statuses
    assert _scalar(scratch, OVERLAPS_SQL) == 0


def test_storm_with_the_database_short_of_connections_still_answers_409(
        world: tuple[Scratch, dict[str, Any], list[str]]) -> None:
    """The bench's storm once answered a few 503s: each process's pool grew into its overflow at once, and the
    server, at max_connections with another client on it, refused the extra connections (SQLSTATE 53300). Here
    a role capped at 8 connections stands in for the full server, under two processes whose pools could open 20."""
    scratch, data, _ = world
    role = f"booking_capped_{os.getpid()}"
    password = asyncio.run(create_capped_role(scratch.admin_dsn, role, 8))
    env = {"DATABASE_URL": as_role(scratch.url, role, password),
           "BOOKING_DB_POOL_SIZE": "3", "BOOKING_DB_MAX_OVERFLOW": "7"}
    first = len(scratch.servers)
    try:
        capped = [scratch.start_server(log_name=name, env=env) for name in ("capped-a", "capped-b")]
        start = datetime(2031, 6, 2, 1, 0, tzinfo=UTC)
        statuses = asyncio.run(_fire(capped, data["tokens"], data["instrument_id"],
                                     [(start, start + timedelta(hours=2))]))
    finally:
        for proc in scratch.servers[first:]:
            proc.terminate()
            proc.wait(10)
        asyncio.run(drop_role(scratch.admin_dsn, role))
    assert statuses.count(201) == 1, statuses
    assert statuses.count(409) == len(statuses) - 1, statuses
    assert _scalar(scratch, OVERLAPS_SQL) == 0


def test_two_processes_overlapping_slots_never_overlap(world: tuple[Scratch, dict[str, Any], list[str]]) -> None:
    scratch, data, servers = world
    base = datetime(2031, 4, 7, 0, 0, tzinfo=UTC)
    # Staggered, partly overlapping requests (30-minute cool-down included in the constraint).
    slots = [(base + timedelta(minutes=30 * i), base + timedelta(minutes=30 * i + 90)) for i in range(20)]
    statuses = asyncio.run(_fire(servers, data["tokens"], data["instrument_id"], slots))
    assert set(statuses) <= {201, 409}, statuses
    assert 201 in statuses
    assert _scalar(scratch, OVERLAPS_SQL) == 0


def test_killed_server_leaves_no_half_written_booking(world: tuple[Scratch, dict[str, Any], list[str]]) -> None:
    scratch, data, _ = world
    victim_url = scratch.start_server(log_name="race-victim")
    victim = scratch.servers[-1]
    base = datetime(2031, 5, 5, 0, 0, tzinfo=UTC)
    slots = [(base + timedelta(hours=3 * i), base + timedelta(hours=3 * i + 2)) for i in range(60)]

    async def storm() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            async def one(i: int) -> None:
                start, end = slots[i]
                # The server dies under some of these requests: exactly the point.
                with contextlib.suppress(httpx.HTTPError):
                    await client.post(f"{victim_url}/api/v1/bookings",
                                      headers={"Authorization": f"Bearer {data['tokens'][i]}"},
                                      json={"instrument_id": data["instrument_id"], "start": start.isoformat(),
                                            "end": end.isoformat(), "purpose": "断电测试"})
            tasks = [asyncio.create_task(one(i)) for i in range(60)]
            await asyncio.sleep(0.15)
            scratch.kill(victim)
            await asyncio.gather(*tasks)

    started = time.perf_counter()
    asyncio.run(storm())
    assert time.perf_counter() - started < 60
    # Every stored booking of the storm has its activity entry: the transaction was all or nothing.
    half = _scalar(scratch, """
        SELECT count(*) FROM bookings b WHERE b.purpose = '断电测试' AND NOT EXISTS (
            SELECT 1 FROM activity_log a WHERE a.action = 'booking.created' AND a.target_id = b.id::text)""")
    assert half == 0
    assert _scalar(scratch, OVERLAPS_SQL) == 0
    # The chain stays intact through the crash once the survivors' entries are sealed.
    assert _scalar(scratch, "SELECT activity_seal()") >= 0
    assert _scalar(scratch, "SELECT count(*) FROM activity_log WHERE seq IS NULL") == 0
    assert _scalar(scratch, """
        SELECT count(*) FROM (SELECT hash, lag(hash) OVER (ORDER BY seq) AS prev, prev_hash FROM activity_log
                              WHERE seq IS NOT NULL) x
        WHERE x.prev IS DISTINCT FROM x.prev_hash""") == 0
