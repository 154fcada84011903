"""Catalogue search benchmark: 100,000 instruments in a scratch database, the real FastAPI app in-process, and
beside each API figure the raw SQL time of the very statement the API runs (one statement: page, total and facets),
executed directly with asyncpg with the same arguments in the same run.

    python bench/catalog_search.py [--instruments 100000] [--runs 200] [--keep] [--reuse] [--only TEXT]

--keep leaves the scratch database behind; --reuse measures an existing one (migrated to head first) instead of
building it again; --only measures just the queries whose label contains TEXT.

API time is the application's handling of the request until it has sent the last byte of the body, which is when a
server hands the answer to the client: the ASGI app is called in-process with the request's scope (all middleware,
the search, the JSON body) on the event loop the service runs on (uvloop, as uvicorn picks it). "done" runs on
until the app returns, its tidying up after the answer included (the access log, the metrics): work that delays
the next request on the same loop but not this answer. Neither includes an HTTP client's own work (the "httpx"
column: the same request through httpx's ASGITransport, which adds about 0.3 ms of URL parsing, cookie jar and
response objects) or the HTTP server's parsing, which a deployment adds in front of either.

Prints p50/p95 per query and the API/SQL ratios, to the last byte and to done. Targets (issue 3): API p95 ≤ 20 ms,
API ≤ 2× SQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("BOOKING_SECRET_KEY", "bench-secret-key-0123456789-abcdefghijklmnop")
os.environ.setdefault("BOOKING_DATA_DIR", tempfile.mkdtemp(prefix="booking-bench-"))
# The service's own logging (INFO: an access-log line per request, JSON), written to nowhere by measure().
os.environ.setdefault("BOOKING_LOG_LEVEL", "INFO")
os.environ.setdefault("BOOKING_LOG_JSON", "true")
_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - for the whole run

QUERIES: list[tuple[str, dict[str, str]]] = [
    ("q=质谱 (2-char CJK, facets)", {"q": "质谱"}),
    ("q=核磁 (2-char CJK, facets)", {"q": "核磁"}),
    ("q=电镜 (2-char CJK, no match in names)", {"q": "电镜"}),
    (
        "q=色谱 + 成都 + 外部共享 + 大型 + sort",
        {"q": "色谱", "city": "510100", "sharing_mode": "external", "large": "true", "sort": "value_desc"},
    ),
    (
        "facets: category=01 + 绵阳 + 科研院所",
        {"category": "01", "city": "510700", "institution_kind": "科研院所"},
    ),
    ("q=液相色谱-质谱 (6 chars)", {"q": "液相色谱-质谱"}),
    ("browse, no filter (facets over all)", {}),
    ("q=分析 (2-char CJK, very common: ~44% of rows)", {"q": "分析"}),
    ("q=分析 + 绵阳 (common term + facet filter)", {"q": "分析", "city": "510700"}),
    ("q=色谱 (2-char CJK, common: ~15% of rows)", {"q": "色谱"}),
    ("q=分析仪 (3-char CJK, common)", {"q": "分析仪"}),
    ("q=分析 + 大型 (common term + value filter)", {"q": "分析", "large": "true"}),
    ("q=分析, sort=value_desc (common term)", {"q": "分析", "sort": "value_desc"}),
    ("q=分析, sort=name (common term)", {"q": "分析", "sort": "name"}),
    ("q=分析仪 + 绵阳, sort=name", {"q": "分析仪", "city": "510700", "sort": "name"}),
    ("q=分析 + 接受创新券 (common term + vouchers)", {"q": "分析", "vouchers": "true"}),
    ("q=分析 + 产业链 (common term + chain tag)", {"q": "分析", "chain": "1"}),
    ("q=色谱 + 产业链 + 创新券 + 成都", {"q": "色谱", "chain": "2", "vouchers": "true", "city": "510100"}),
    ("q=分析 + 原值 ≥ 10万 (common term + value bound)", {"q": "分析", "min_value": "100000"}),
    ("q=分析 + 原值 20万–80万 (common term + value range)", {"q": "分析", "min_value": "200000", "max_value": "800000"}),
    ("q=分析 + 成都 + 原值 ≤ 30万", {"q": "分析", "city": "510100", "max_value": "300000"}),
    ("no text: 接受创新券 only", {"vouchers": "true"}),
    ("no text: 产业链 only", {"chain": "1"}),
    ("no text: 原值 ≥ 100万", {"min_value": "1000000"}),
    ("no text: 接受创新券 + 成都", {"vouchers": "true", "city": "510100"}),
    ("no text: 原值 ≥ 100万 + 高校", {"min_value": "1000000", "institution_kind": "高校"}),
]


async def _has_instruments(dsn: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        return False
    try:
        return bool(await conn.fetchval("SELECT to_regclass('instruments') IS NOT NULL"))
    finally:
        await conn.close()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def build(url: str, count: int) -> None:
    import asyncpg

    from booking.core.clock import to_local, utcnow
    from booking.core.db import dispose_engine, init_engine, unit_of_work
    from instruments.seed import seed_province

    init_engine(url)
    started = time.perf_counter()
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 2 or done == total:
            last[0] = time.perf_counter()
            print(f"  seeding {stage}: {done}/{total}", flush=True)

    async with unit_of_work() as session:
        counts = await seed_province(
            session, today=to_local(utcnow()).date(), progress=progress, target=count
        )
    await dispose_engine()
    print(
        f"built {counts['instruments']} instruments in {counts['institutions']} institutions "
        f"in {time.perf_counter() - started:.1f}s"
    )
    # What autovacuum would have done by the time anyone searches: visibility map and statistics.
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


async def sql_for(params: dict[str, str], frequent: dict[str, int]) -> tuple[str, list[Any], str]:
    """The statement the API runs for these parameters (one statement: page, total and facets), its arguments, and
    where its counts come from besides a live count ("cube", "terms" for the kept counts of a frequent term).
    `frequent`: the frequent terms, as the API's repository reads them."""
    from decimal import Decimal

    from instruments.rules import category_prefix
    from instruments.search_sql import SearchFilters, Viewer, search_sql

    f = SearchFilters(
        q=params.get("q"),
        city=params.get("city"),
        institution_kind=params.get("institution_kind"),
        category=category_prefix(params.get("category")),
        sharing_mode=params.get("sharing_mode"),
        large=True if params.get("large") == "true" else None,
        vouchers=True if params.get("vouchers") == "true" else None,
        chain_id=int(params["chain"]) if "chain" in params else None,
        min_value=Decimal(params["min_value"]) if "min_value" in params else None,
        max_value=Decimal(params["max_value"]) if "max_value" in params else None,
        threshold=Decimal("500000"),
    )
    query = search_sql(f, Viewer(), sort=params.get("sort", "relevance"), limit=20, offset=0, frequent=frequent)
    return query.sql, query.args, "cube" if query.counted_from_cube else "terms" if query.frequent_term else ""


class AsgiCaller:
    """Calls the ASGI app the way a server does for one GET request, and returns the status and the body.
    `sent_at`: when the app sent the last byte of the body (perf_counter), which is when a server hands it to the
    client; the app may still be tidying up after that (the access log, the metrics)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent_at = 0.0

    async def get(self, path: str, params: dict[str, str]) -> tuple[int, bytes]:
        from urllib.parse import urlencode

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "root_path": "", "query_string": urlencode(params).encode(),
            "headers": [(b"host", b"bench"), (b"accept", b"application/json")],
            "client": ("127.0.0.1", 50000), "server": ("bench", 80),
        }
        request_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # no disconnect while the app answers
            raise AssertionError("unreachable")

        status = 0
        body: list[bytes] = []
        self.sent_at = 0.0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self.sent_at = time.perf_counter()

        await self.app(scope, receive, send)
        assert self.sent_at, "the app returned without sending the whole body"
        return status, b"".join(body)


async def measure(dsn: str, runs: int) -> list[dict[str, Any]]:
    import asyncpg
    import httpx

    from booking.app import create_app

    app = create_app()
    import logging

    for handler in logging.getLogger().handlers:  # formatted as served, written to nowhere
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(_DEVNULL)
    caller = AsgiCaller(app)
    transport = httpx.ASGITransport(app=app)
    # The session settings the application's engine gives its connections (booking.core.db.make_engine).
    conn = await asyncpg.connect(dsn, server_settings={"jit": "off", "timezone": "UTC"})
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        frequent = {r["term"]: r["id"] for r in await conn.fetch("SELECT term, id FROM search_frequent_terms")}
        for label, params in QUERIES:
            sql, args, counted = await sql_for(params, frequent)
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
            index = counted or ("bigram" if "ix_instrument_search_bigrams" in json.dumps(plan) else "-")
            total = None
            for _ in range(20):  # warm up all paths (caches, prepared statements, generic-plan switch)
                r = await client.get("/api/v1/instruments", params=params)
                assert r.status_code == 200, r.text
                total = r.json()["total"]
                status, body = await caller.get("/api/v1/instruments", params)
                assert status == 200 and json.loads(body) == r.json(), body[:300]
                rows = await conn.fetch(sql, *args)
                assert next((row["n"] for row in rows if row["facet"] == "_total"), 0) == total
            api: list[float] = []
            returned: list[float] = []
            via_httpx: list[float] = []
            raw: list[float] = []
            for _ in range(runs):
                t0 = time.perf_counter()
                await caller.get("/api/v1/instruments", params)
                t1 = time.perf_counter()
                await conn.fetch(sql, *args)
                t2 = time.perf_counter()
                await client.get("/api/v1/instruments", params=params)
                t3 = time.perf_counter()
                api.append((caller.sent_at - t0) * 1000)
                returned.append((t1 - t0) * 1000)
                raw.append((t2 - t1) * 1000)
                via_httpx.append((t3 - t2) * 1000)
            out.append(
                {
                    "query": label,
                    "total": total,
                    "index": index,
                    "api_p50": statistics.median(api),
                    "api_p95": pct(api, 0.95),
                    "sql_p50": statistics.median(raw),
                    "sql_p95": pct(raw, 0.95),
                    "httpx_p50": statistics.median(via_httpx),
                    "done_p50": statistics.median(returned),
                    "done_p95": pct(returned, 0.95),
                }
            )
    await conn.close()
    from booking.core.db import dispose_engine

    await dispose_engine()
    return out


def _run_as_served(coro: Any) -> Any:
    """Runs the measurement on the event loop the service runs on: uvicorn takes uvloop when it is installed
    (uvicorn[standard], a dependency), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        print("event loop: asyncio")
        return asyncio.run(coro)
    print(f"event loop: uvloop {uvloop.__version__}")
    return uvloop.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instruments", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", action="store_true", help="measure the kept scratch database (implies --keep)")
    parser.add_argument("--only", default=None, help="measure only the queries whose label contains this text")
    args = parser.parse_args()
    if args.only:
        QUERIES[:] = [(label, params) for label, params in QUERIES if args.only in label]

    from booking.core import migrations
    from tests.db import TestDatabase, _create, _drop, _with_database

    server = TestDatabase()
    name = "booking_bench_catalog"
    dsn = _with_database(server.admin_dsn, name)
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    reuse = args.reuse and asyncio.run(_has_instruments(dsn))
    if not reuse:
        asyncio.run(_create(server.admin_dsn, name))
    try:
        migrations.upgrade(url)
        os.environ["DATABASE_URL"] = url
        from booking.core.settings import get_settings

        get_settings.cache_clear()
        if reuse:
            print(f"reusing the scratch database {name}")
        else:
            asyncio.run(build(url, args.instruments))
        results = _run_as_served(measure(dsn, args.runs))
    finally:
        if not (args.keep or args.reuse):
            asyncio.run(_drop(server.admin_dsn, name))
    print()
    print(
        f"{'query':46} {'hits':>6} {'counts':>6} {'API p50':>8} {'API p95':>8} {'SQL p50':>8} {'SQL p95':>8} "
        f"{'ratio50':>7} {'ratio95':>7} {'done50':>7} {'done95':>7} {'dratio50':>8} {'dratio95':>8} {'httpx50':>8}"
    )
    for r in results:
        print(
            f"{r['query']:46} {r['total']:>6} {r['index']:>6} {r['api_p50']:8.2f} "
            f"{r['api_p95']:8.2f} {r['sql_p50']:8.2f} {r['sql_p95']:8.2f} {r['api_p50'] / r['sql_p50']:7.2f} "
            f"{r['api_p95'] / r['sql_p95']:7.2f} {r['done_p50']:7.2f} {r['done_p95']:7.2f} "
            f"{r['done_p50'] / r['sql_p50']:8.2f} {r['done_p95'] / r['sql_p95']:8.2f} {r['httpx_p50']:8.2f}"
        )
    print(
        "(ms; API = the app's handling of the request until it has sent the last byte of the body, called as an ASGI"
        " app in-process; done = until the app returned, its tidying up after the answer (access log, metrics)"
        " included, dratio = done/SQL; httpx50 = the same"
        " request through httpx's ASGITransport, client work included; SQL = the same statement with the same arguments"
        " via asyncpg; counts: bigram = matches found through the bigram GIN index and counted live, cube = total and"
        " facets read from the facet-count cube, terms = page from the frequent term's postings, total and facets"
        " from its kept counts)"
    )


if __name__ == "__main__":
    main()
