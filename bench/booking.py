"""Booking benchmarks, each beside a raw baseline in the same run.

(a) 64 concurrent clients create non-conflicting bookings through the API (bearer auth, rules, exclusion
    constraint, activity log) vs. raw asyncpg INSERTs into the same table from a default pool.
(b) Conflict storm: 200 simultaneous requests for one slot across 2 server processes.
(c) Free slots for 4 weeks on one instrument with 1,000,000 bookings in the table: API p95 vs. the raw SQL of the
    busy query.

Run: python bench/booking.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg

# This file is named booking.py like the application package: replace the script's own folder on sys.path with
# the repository root so `import booking` finds the application.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from tests.db import TestDatabase  # noqa: E402
from tests.live import OVERLAPS_SQL, Scratch, seed_booking_world  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def bench_api_inserts(base_urls: list[str], tokens: list[str], instrument_id: int, total: int,
                            concurrency: int, day0: datetime) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    # aiohttp, not httpx: httpx's async pool costs more CPU per request than the server on this 2-core box and
    # would make the load generator the bottleneck.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as client:
        async def worker(w: int) -> None:
            nonlocal errors
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                start = day0 + timedelta(hours=i)
                t = time.perf_counter()
                async with client.post(f"{base_urls[i % len(base_urls)]}/api/v1/bookings",
                                       headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
                                       json={"instrument_id": instrument_id, "start": start.isoformat(),
                                             "end": (start + timedelta(minutes=30)).isoformat(),
                                             "purpose": "bench"}) as r:
                    await r.read()
                    status = r.status
                latencies.append(time.perf_counter() - t)
                if status != 201:
                    errors += 1
        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
    return total / elapsed, latencies, errors


async def bench_raw_inserts(dsn: str, instrument_id: int, user_id: int, total: int, concurrency: int,
                            day0: datetime) -> float:
    pool = await asyncpg.create_pool(dsn)  # default pool, as the issue asks
    sql = """INSERT INTO bookings (instrument_id, user_id, created_by, status, start_at, end_at, blocked, purpose,
             service_mode, sequence) VALUES ($1, $2, $2, 'confirmed', $3, $4, tstzrange($3, $4), 'raw', 'occupancy', 0)"""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            start = day0 + timedelta(hours=i)
            async with pool.acquire() as conn:
                await conn.execute(sql, instrument_id, user_id, start, start + timedelta(minutes=30))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return total / elapsed


async def bench_storm(base_urls: list[str], tokens: list[str], instrument_id: int, start: datetime
                      ) -> tuple[float, list[int]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=250)) as client:
        # Open the connections first so the storm measures the server, not TCP set-up.
        async def warm(i: int) -> None:
            async with client.get(f"{base_urls[i % 2]}/metrics") as r:
                await r.read()
        await asyncio.gather(*(warm(i) for i in range(200)))

        async def one(i: int) -> int:
            async with client.post(f"{base_urls[i % 2]}/api/v1/bookings",
                                   headers={"Authorization": f"Bearer {tokens[i]}"},
                                   json={"instrument_id": instrument_id, "start": start.isoformat(),
                                         "end": (start + timedelta(hours=1)).isoformat(), "purpose": "storm"}) as r:
                await r.read()
                return r.status
        started = time.perf_counter()
        statuses = await asyncio.gather(*(one(i) for i in range(200)))
        return time.perf_counter() - started, list(statuses)


async def fill_million(dsn: str, instrument_ids: list[int], user_id: int, per_instrument: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET synchronous_commit = off")
        # Hour-long bookings every 2 hours, back to 2020, on every instrument.
        await conn.execute(f"""
            INSERT INTO bookings (instrument_id, user_id, created_by, status, start_at, end_at, blocked, purpose,
                                  service_mode, sequence)
            SELECT i, {user_id}, {user_id}, 'confirmed', t, t + interval '1 hour', tstzrange(t, t + interval '1 hour'),
                   'filler', 'occupancy', 0
            FROM unnest($1::int[]) AS i,
                 generate_series(timestamptz '2026-12-20 00:00+00' - ({per_instrument} * interval '2 hours'),
                                 timestamptz '2026-12-20 00:00+00' - interval '2 hours', interval '2 hours') AS t
        """, instrument_ids)
        await conn.execute("ANALYZE bookings")
    finally:
        await conn.close()


async def make_instruments(dsn: str, template_id: int, count: int) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        # With their audit history, which the database checks at commit.
        rows = await conn.fetch("""
            WITH i AS (
              INSERT INTO instruments (institution_id, asset_number, name, category_code, original_value, city_code,
                                       sharing_mode, status, subjects, qualification_required, accepts_vouchers,
                                       restricted, created_at, updated_at)
              SELECT institution_id, 'FILL-' || g, name || g, category_code, original_value, city_code, sharing_mode,
                     status, subjects, false, false, false, now(), now()
              FROM instruments, generate_series(1, $2) g WHERE id = $1
              RETURNING id, sharing_mode, status, original_value, institution_id, city_code),
            h AS (
              INSERT INTO instrument_history (instrument_id, valid_from, sharing_mode, status, original_value,
                                              institution_id, city_code)
              SELECT id, now(), sharing_mode, status, original_value, institution_id, city_code FROM i)
            SELECT id FROM i""", template_id, count)
        return [r["id"] for r in rows]
    finally:
        await conn.close()


async def bench_free_slots(base: str, dsn: str, instrument_id: int, runs: int) -> tuple[list[float], list[float]]:
    frm = datetime(2026, 12, 21, 0, 0, tzinfo=UTC)
    to = frm + timedelta(weeks=4)
    api: list[float] = []
    async with aiohttp.ClientSession() as client:
        for _ in range(runs):
            t = time.perf_counter()
            async with client.get(f"{base}/api/v1/instruments/{instrument_id}/availability",
                                  params={"from": frm.isoformat(), "to": to.isoformat()}) as r:
                body = await r.text()
                assert r.status == 200, body
            api.append(time.perf_counter() - t)
    raw: list[float] = []
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(runs):
            t = time.perf_counter()
            await conn.fetch("""SELECT blocked FROM bookings WHERE instrument_id = $1
                                AND status IN ('pending','confirmed','in_use','held') AND blocked && tstzrange($2, $3)""",
                             instrument_id, frm, to)
            raw.append(time.perf_counter() - t)
    finally:
        await conn.close()
    return api, raw


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    args = parser.parse_args()
    total = 600 if args.quick else 3000
    per_instrument = 100 if args.quick else 1000
    fillers = 100 if args.quick else 1000

    base_db = TestDatabase()
    scratch = Scratch.create(base_db, "booking_bench")
    dsn = scratch.url.replace("postgresql+asyncpg://", "postgresql://", 1)
    try:
        engine = scratch.engine()
        world = asyncio.run(_seed(engine))
        tokens, inst_id = world["tokens"], world["instrument_id"]
        servers = [scratch.start_server(log_name="bench-a"), scratch.start_server(log_name="bench-b")]
        user_id = asyncio.run(_first_user(dsn))
        day0 = datetime(2027, 1, 4, 0, 0, tzinfo=UTC)

        print("== (a) non-conflicting bookings, 64 concurrent clients")
        asyncio.run(bench_api_inserts(servers, tokens, inst_id, 400, 64, day0 + timedelta(days=600)))  # warm-up
        api_rate, lat64, errors = asyncio.run(bench_api_inserts(servers, tokens, inst_id, total, 64, day0))
        raw_rate = asyncio.run(bench_raw_inserts(dsn, inst_id, user_id, total, 64, day0 + timedelta(days=200)))
        _, lat32, errors32 = asyncio.run(bench_api_inserts(servers, tokens, inst_id, total // 2, 32,
                                                           day0 + timedelta(days=400)))
        print(f"API: {api_rate:,.0f} bookings/s (errors {errors}); raw asyncpg INSERT (default pool): "
              f"{raw_rate:,.0f}/s; ratio {api_rate / raw_rate:.2f}x")
        print(f"API latency at 64 conns: p50 {pct(lat64, 50) * 1000:.1f} ms, p99 {pct(lat64, 99) * 1000:.1f} ms")
        print(f"API latency at 32 conns: p50 {pct(lat32, 50) * 1000:.1f} ms, p99 {pct(lat32, 99) * 1000:.1f} ms "
              f"(errors {errors32})")

        print("== (b) conflict storm: 200 requests for one slot across 2 server processes")
        storm_start = datetime(2035, 6, 1, 2, 0, tzinfo=UTC)
        elapsed, statuses = asyncio.run(bench_storm(servers, tokens, inst_id, storm_start))
        stored = asyncio.run(_count(dsn, "SELECT count(*) FROM bookings WHERE purpose = 'storm'"))
        overlaps = asyncio.run(_count(dsn, OVERLAPS_SQL))
        print(f"all 200 answered in {elapsed * 1000:.0f} ms; 201: {statuses.count(201)}, 409: {statuses.count(409)}, "
              f"other: {[s for s in statuses if s not in (201, 409)]}; stored {stored}; overlaps {overlaps}")

        print(f"== (c) free slots for 4 weeks with {fillers * per_instrument:,} bookings in the table")
        ids = [*asyncio.run(make_instruments(dsn, inst_id, fillers - 1)), inst_id]
        asyncio.run(fill_million(dsn, ids, user_id, per_instrument))
        rows = asyncio.run(_count(dsn, "SELECT count(*) FROM bookings"))
        api, raw = asyncio.run(bench_free_slots(servers[0], dsn, ids[len(ids) // 2], 200))
        print(f"bookings in table: {rows:,}; API p50 {pct(api, 50) * 1000:.2f} ms, p95 {pct(api, 95) * 1000:.2f} ms; "
              f"raw busy query p50 {pct(raw, 50) * 1000:.2f} ms, p95 {pct(raw, 95) * 1000:.2f} ms")
    finally:
        scratch.close()


async def _seed(engine: object) -> dict[str, object]:
    try:
        return await seed_booking_world(engine, users=200)  # type: ignore[arg-type]
    finally:
        await engine.dispose()  # type: ignore[attr-defined]


async def _first_user(dsn: str) -> int:
    return await _count(dsn, "SELECT min(id) FROM users")


async def _count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql) or 0)
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
