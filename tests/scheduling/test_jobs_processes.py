"""Two real scheduler processes run the same job at the same moment against a committed database: every due
item is processed exactly once (one status change, one activity record, one notification each)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy.dialects.postgresql import Range

from booking.core import migrations
from booking.core.db import make_engine
from tests.db import REPO, TestDatabase, _create, _drop, _with_database
from tests.ops_helpers import NOW

pytestmark = pytest.mark.race

ITEMS = 60


@pytest.fixture(scope="module")
def scratch(test_database: TestDatabase) -> Iterator[tuple[str, str]]:
    name = f"booking_jobs_{os.getpid()}"
    asyncio.run(_create(test_database.admin_dsn, name))
    dsn = _with_database(test_database.admin_dsn, name)
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    migrations.upgrade(url)
    yield url, dsn
    asyncio.run(_drop(test_database.admin_dsn, name))


async def _seed(url: str) -> list[int]:
    """Committed rows: one instrument and ITEMS pending requests whose start passed while nobody decided."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from booking.reservations.models import Booking
    from tests.factories import make_institution, make_instrument, make_user

    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            inst = await make_instrument(session, await make_institution(session))
            users = [await make_user(session) for _ in range(3)]
            bookings = []
            for i in range(ITEMS):
                start = NOW - timedelta(days=3) + timedelta(hours=i)
                end = start + timedelta(minutes=30)
                bookings.append(Booking(instrument_id=inst.id, user_id=users[i % 3].id, created_by=users[i % 3].id,
                                        status="pending", start_at=start, end_at=end, blocked=Range(start, end),
                                        purpose="并发测试", created_at=NOW - timedelta(days=5),
                                        updated_at=NOW - timedelta(days=5)))
            session.add_all(bookings)
            await session.commit()
            return [b.id for b in bookings]  # type: ignore[misc]
    finally:
        await engine.dispose()


async def _fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def _race(url: str, mode: str, runs: int = 3) -> list[list[str]]:
    env = {**os.environ, "DATABASE_URL": url, "BOOKING_LOG_LEVEL": "WARNING"}
    start_at = time.time() + 4.0
    procs = [subprocess.Popen([sys.executable, "-m", "tests.scheduling.job_worker", "expire_pending", NOW.isoformat(),
                               str(start_at), str(runs), mode], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outputs.append(out.split())
    return outputs


async def _reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE bookings SET status = 'pending', sequence = 0")
        await conn.execute("DELETE FROM notifications")
    finally:
        await conn.close()


@pytest.mark.parametrize("mode", ["runner", "bare"])
def test_two_processes_process_each_item_once(scratch: tuple[str, str], mode: str) -> None:
    url, dsn = scratch
    if mode == "runner":
        ids = asyncio.run(_seed(url))
    else:
        asyncio.run(_reset(dsn))
        ids = [r["id"] for r in asyncio.run(_fetch(dsn, "SELECT id FROM bookings ORDER BY id"))]
    before = asyncio.run(_fetch(dsn, "SELECT count(*) AS n FROM activity_log WHERE action = 'booking.expire'"))[0]["n"]
    outputs = _race(url, mode)
    processed = [int(x) for out in outputs for x in out if x != "skipped"]
    assert sum(processed) == ITEMS, outputs
    rows = asyncio.run(_fetch(dsn, "SELECT status, sequence FROM bookings"))
    assert {(r["status"], r["sequence"]) for r in rows} == {("expired", 1)}
    per_booking = asyncio.run(_fetch(dsn, """
        SELECT target_id, count(*) AS n FROM activity_log
        WHERE action = 'booking.expire' AND actor_id IS NULL GROUP BY target_id"""))
    counts = {int(r["target_id"]): r["n"] for r in per_booking}
    assert set(ids) <= set(counts)
    expected_per_item = 1 if mode == "runner" else 2  # the bare run re-expires the rows reset by _reset
    assert all(counts[i] == expected_per_item for i in ids), counts
    after = asyncio.run(_fetch(dsn, "SELECT count(*) AS n FROM activity_log WHERE action = 'booking.expire'"))[0]["n"]
    assert after - before == ITEMS
    notes = asyncio.run(_fetch(dsn, "SELECT count(*) AS n FROM notifications WHERE kind = 'booking.expire'"))
    assert notes[0]["n"] == ITEMS
