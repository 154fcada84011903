"""Audit statistics benchmark: 12,000 instruments and 1,000,000 service records in a scratch database.

Prints the dashboard API's p50/p95 (GET /api/v1/stats/sharing through the whole application: bearer token,
scope, headline, 24-month trend, projection) for today and for a past mid-month day, the by-city breakdown's, and
the XLSX export's time, each beside the raw SQL aggregate of the same figures computed from the raw rows in the
same run, with the ratio.

    python bench/stats.py [--instruments 12000] [--records 1000000] [--runs 40] [--keep]

Uses DATABASE_URL's server (or the embedded PostgreSQL of the tests) and a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("BOOKING_SECRET_KEY", "bench-secret-key-0123456789-abcdefghijklmnop")
os.environ.setdefault("BOOKING_LOG_LEVEL", "WARNING")
os.environ.setdefault("BOOKING_LOG_JSON", "false")
os.environ.setdefault("BOOKING_DB_COMMAND_TIMEOUT_S", "900")

from tests.db import TestDatabase, _create, _drop, _with_database  # noqa: E402

DB_NAME = "booking_bench_stats"

GENERATE = [
    """INSERT INTO institutions (name, kind, city_code)
       SELECT '基准单位' || g,
              (ARRAY['高校','科研院所','企业','中试平台','新型研发机构','医疗机构','其他'])[1 + g % 7],
              CASE WHEN g % 10 < 4 THEN '510100' WHEN g % 10 = 4 THEN '510700'
                   ELSE (SELECT code FROM cities ORDER BY code OFFSET (g % 21) LIMIT 1) END
       FROM generate_series(1, 300) g""",
    """INSERT INTO instruments (institution_id, asset_number, name, category_code, original_value, city_code,
                                sharing_mode, status, usage_kind, model, manufacturer, fee_unit, fee_internal,
                                fee_external, fee_minimum)
       SELECT inst.id, 'B' || g, (ARRAY['扫描电子显微镜','液相色谱-质谱联用仪','核磁共振波谱仪','X射线衍射仪',
                                       '万能材料试验机','流式细胞仪'])[1 + g % 6],
              (ARRAY['010000','020000','030000','040000','090000','110000'])[1 + g % 6],
              CASE WHEN random() < 0.25 THEN 200000 + floor(random() * 290000) ELSE 500000 + floor(random() * 9000000) END,
              inst.city_code,
              CASE WHEN random() < 0.6 THEN 'external' WHEN random() < 0.75 THEN 'internal' ELSE 'none' END,
              CASE WHEN random() < 0.85 THEN 'normal' WHEN random() < 0.5 THEN 'standby' ELSE 'awaiting_repair' END,
              CASE WHEN random() < 0.2 THEN 'special' ELSE 'general' END, 'M-' || g, '基准厂商', 'hour', 200, 320, 50
       FROM generate_series(1, :n) g JOIN institutions inst ON inst.id = (SELECT min(id) FROM institutions) + g % 300""",
    """INSERT INTO instrument_history (instrument_id, valid_from, sharing_mode, status, original_value,
                                      institution_id, city_code)
       SELECT id, now() - make_interval(days => 100 + floor(random() * 600)::int), sharing_mode, status,
              original_value, institution_id, city_code FROM instruments""",
    """INSERT INTO opening_windows (instrument_id, weekday, start_time, end_time)
       SELECT i.id, d, time '09:00', time '17:00' FROM instruments i CROSS JOIN generate_series(0, 4) d
       WHERE i.sharing_mode = 'external' AND i.id % 10 <> 3""",
    """INSERT INTO audit_published_spans (instrument_id, valid_from)
       SELECT DISTINCT w.instrument_id, ((SELECT min(valid_from) FROM instrument_history h
                                          WHERE h.instrument_id = w.instrument_id) AT TIME ZONE 'Asia/Shanghai')::date
       FROM opening_windows w""",
    """INSERT INTO service_records (instrument_id, user_institution_id, provider_institution_id, is_external,
                                   started_at, ended_at, hours, service_mode, amount, rating, rated_at, created_at)
       SELECT i.id, CASE WHEN x.ext THEN (SELECT min(id) FROM institutions) + (x.g * 7) % 300 ELSE i.institution_id END,
              i.institution_id, x.ext, x.ended - make_interval(mins => (x.hours * 60)::int), x.ended, x.hours,
              'technical', x.hours * CASE WHEN x.ext THEN 320 ELSE 200 END,
              CASE WHEN x.r < 0.6 THEN 3 + floor(x.r * 3.4) END,
              CASE WHEN x.r < 0.6 THEN x.ended + interval '1 day' END, x.ended + interval '10 minutes'
       FROM (SELECT g, random() < 0.25 AS ext, now() - interval '2 days' - random() * interval '400 days' AS ended,
                    round((1 + random() * 7)::numeric, 1) AS hours, random() AS r,
                    1 + floor(random() * :n)::int AS k
             FROM generate_series(1, :chunk) g) x
       JOIN instruments i ON i.id = (SELECT min(id) FROM instruments) + x.k - 1""",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def setup(url: str, n: int, m: int) -> None:
    from sqlalchemy import text

    from booking.core.db import make_engine

    engine = make_engine(url)
    async with engine.begin() as conn:
        for i, sql in enumerate(GENERATE):
            t = time.perf_counter()
            # The records go in in chunks (each one statement, summarised by the statement-level trigger).
            chunks = [min(200_000, m - k) for k in range(0, m, 200_000)] if ":chunk" in sql else [0]
            for chunk in chunks:
                await conn.execute(text(sql), {"n": n, "chunk": chunk})
            print(f"  generate step {i + 1}/{len(GENERATE)}: {time.perf_counter() - t:.1f}s", flush=True)
    async with engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        await conn.execute(text("VACUUM ANALYZE"))
    await engine.dispose()


async def run(url: str, runs: int) -> None:
    import httpx

    from booking.accounts.models import Role, RoleGrant, User
    from booking.app import create_app
    from booking.audit import repository as repo
    from booking.audit import service
    from booking.audit.rules import AsOf
    from booking.auth import service as auth_service
    from booking.core.db import get_sessionmaker, init_engine, unit_of_work
    from booking.core.security import hash_password

    init_engine(url)
    async with unit_of_work() as session:
        t = time.perf_counter()
        await service.snapshot(session)
        print(f"  snapshot job (spans + freezing {service.definitions().trend_months} months): "
              f"{time.perf_counter() - t:.1f}s", flush=True)
        user = User(email=f"bench-auditor-{os.getpid()}@example.cn", name="基准审计",
                    password_hash=hash_password("x" * 12))
        session.add(user)
        await session.flush()
        session.add(RoleGrant(user_id=user.id, role=Role.auditor))
        token, _ = await auth_service.issue_access_token(session, user)
    headers = {"Authorization": f"Bearer {token}"}
    app = create_app()
    today = service.today()
    past = today.replace(day=1) - timedelta(days=20)  # a mid-month day in the past
    d = service.definitions()

    async def raw_figures(day: date) -> float:
        """The dashboard's figures (headline and each trend point) computed from the raw rows only."""
        asof = AsOf(day)
        points = [AsOf(service.month_end(mo)) for mo in service.trend_months(asof, d)] + [asof]
        t = time.perf_counter()
        async with get_sessionmaker()() as s:
            for p in points:
                await repo.raw_sharing_counts(s, p, today, d, repo.Filters())
        return time.perf_counter() - t

    async def raw_headline(day: date) -> float:
        t = time.perf_counter()
        async with get_sessionmaker()() as s:
            await repo.raw_sharing_counts(s, AsOf(day), today, d, repo.Filters())
        return time.perf_counter() - t

    async def raw_by_city(day: date) -> float:
        t = time.perf_counter()
        async with get_sessionmaker()() as s:
            await repo.raw_sharing_by_city(s, AsOf(day), today, d, repo.Filters())
        return time.perf_counter() - t

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        async def timed(path: str, params: dict[str, str]) -> list[float]:
            out = []
            for i in range(runs + 3):
                t = time.perf_counter()
                r = await client.get(path, params=params, headers=headers)
                elapsed = time.perf_counter() - t
                assert r.status_code == 200, r.text[:300]
                if i >= 3:  # warm-up
                    out.append(elapsed)
            return out

        rows = []
        for label, day in (("today", today), (f"past {past.isoformat()}", past)):
            api = await timed("/api/v1/stats/sharing", {"as_of": day.isoformat()})
            raw_full = [await raw_figures(day) for _ in range(3)]
            raw_one = [await raw_headline(day) for _ in range(5)]
            rows.append((f"GET /stats/sharing ({label})", api, statistics.median(raw_full), statistics.median(raw_one)))
        api = await timed("/api/v1/stats/sharing/by-city", {})
        rows.append(("GET /stats/sharing/by-city (today)", api, statistics.median([await raw_by_city(today)
                                                                                    for _ in range(3)]), None))
        print()
        print(f"{'endpoint':40} {'p50 ms':>8} {'p95 ms':>8} {'raw SQL ms':>11} {'p95/raw':>8}  raw headline ms")
        for name, values, raw, one in rows:
            p50, p95 = pct(values, 0.5) * 1000, pct(values, 0.95) * 1000
            extra = f"{one * 1000:.1f}" if one is not None else ""
            print(f"{name:40} {p50:8.1f} {p95:8.1f} {raw * 1000:11.1f} {p95 / (raw * 1000):8.2f}  {extra}")
        t = time.perf_counter()
        r = await client.get("/api/v1/stats/export.xlsx", headers=headers)
        xlsx_s = time.perf_counter() - t
        assert r.status_code == 200
        t = time.perf_counter()
        async with get_sessionmaker()() as s:
            from booking.audit.rules import year_window

            asof = AsOf(today)
            await repo.raw_usage_totals(s, asof, d, repo.Filters(), year_window(asof, today.year))
        raw_usage = time.perf_counter() - t
        print(f"\nGET /stats/export.xlsx (15 sheets, {len(r.content) / 1024:.0f} KiB): {xlsx_s:.2f}s; "
              f"raw SQL year usage total alone: {raw_usage * 1000:.0f} ms")
    from booking.core.db import dispose_engine

    await dispose_engine()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instruments", type=int, default=12_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept database (skip generation)")
    args = parser.parse_args()
    db = TestDatabase()
    url = _with_database(db.admin_dsn, DB_NAME).replace("postgresql://", "postgresql+asyncpg://", 1)
    os.environ["DATABASE_URL"] = url
    if not args.reuse:
        asyncio.run(_create(db.admin_dsn, DB_NAME))
        from booking.core import migrations

        migrations.upgrade(url)
        t = time.perf_counter()
        print(f"generating {args.instruments} instruments and {args.records} service records ...", flush=True)
        asyncio.run(setup(url, args.instruments, args.records))
        print(f"  data ready in {time.perf_counter() - t:.1f}s", flush=True)
    try:
        asyncio.run(run(url, args.runs))
    finally:
        if not args.keep:
            asyncio.run(_drop(db.admin_dsn, DB_NAME))


if __name__ == "__main__":
    main()
