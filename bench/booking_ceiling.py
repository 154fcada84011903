"""What this machine and stack can do at best, beside bench/booking.py's figures for the real service.

Two throw-away FastAPI apps run in the same 2-process setup, driven by the same load generator as bench (a)/(b),
against the same seeded scratch database, beside the same raw asyncpg INSERT baseline:

- hello: POST /api/v1/bookings parses the JSON body and returns a constant (no database at all): the HTTP ceiling.
- lean: the leanest honest booking endpoint: one statement reads the bearer token's user, the instrument, its rules
  and windows and the user's block; one statement inserts the booking (ON CONFLICT DO NOTHING against the exclusion
  constraint), its activity entry, notification and outbox email. No rule evaluation, no alternatives on 409, no
  middleware, no metrics: everything the real service does beyond that only costs more.

If `lean` cannot reach a target, no FastAPI implementation that reads (token, instrument, rules) before it writes,
inside a transaction, can reach it on this machine.

Run: python bench/booking_ceiling.py
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import ORJSONResponse  # noqa: E402
from pydantic import AwareDatetime, BaseModel  # noqa: E402


class BookingIn(BaseModel):
    instrument_id: int
    start: AwareDatetime
    end: AwareDatetime
    purpose: str


hello = FastAPI(default_response_class=ORJSONResponse)


@hello.post("/api/v1/bookings", status_code=201)
async def hello_create(data: BookingIn) -> dict[str, Any]:
    return {"id": 1, "status": "confirmed", "instrument_id": data.instrument_id}


_READ = """
SELECT u.id AS user_id, u.email, i.name,
  (SELECT coalesce(json_agg(g.role), '[]') FROM role_grants g WHERE g.user_id = u.id) AS grants,
  (SELECT row_to_json(r) FROM booking_rules r WHERE r.instrument_id = i.id) AS rules,
  (SELECT coalesce(json_agg(json_build_array(w.weekday, w.start_time, w.end_time)), '[]')
   FROM opening_windows w WHERE w.instrument_id = i.id) AS windows,
  EXISTS (SELECT 1 FROM booking_blocks k WHERE k.user_id = u.id AND k.lifted_at IS NULL) AS blocked
FROM api_tokens t JOIN users u ON u.id = t.user_id, instruments i
WHERE t.digest = $1 AND t.revoked_at IS NULL AND u.is_active AND i.id = $2
"""
_WRITE = """
WITH b AS (
  INSERT INTO bookings (instrument_id, user_id, created_by, status, start_at, end_at, blocked, purpose, service_mode,
                        sequence, created_at, updated_at, decided_by, decided_at)
  VALUES ($1, $2, $2, 'confirmed', $3, $4, tstzrange($3, $4), $5, 'occupancy', 0, now(), now(), $2, now())
  ON CONFLICT DO NOTHING RETURNING id, status),
a AS (INSERT INTO activity_log (at, actor_id, action, target_type, target_id, after)
      SELECT now(), $2, 'booking.created', 'booking', b.id::text, $6::jsonb FROM b),
n AS (INSERT INTO notifications (user_id, kind, title, body, link, created_at)
      SELECT $2, 'booking.confirmed', $7::text, $7::text, '/bookings/' || b.id, now() FROM b),
o AS (INSERT INTO email_outbox (to_address, subject, body, created_at, attempts) SELECT $8, $7::text, $7::text, now(), 0 FROM b)
SELECT id, status FROM b
"""

_pool: Any = None


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    import asyncpg

    global _pool
    _pool = await asyncpg.create_pool(os.environ["CEILING_DSN"], min_size=10, max_size=40)
    yield
    await _pool.close()


lean = FastAPI(default_response_class=ORJSONResponse, lifespan=_lifespan)


@lean.post("/api/v1/bookings", status_code=201, response_model=None)
async def lean_create(request: Request, data: BookingIn) -> Any:
    digest = hashlib.sha256(request.headers.get("authorization", "")[7:].encode()).hexdigest()
    async with _pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_READ, digest, data.instrument_id)
        if row is None:
            return ORJSONResponse({"detail": "unauthorised"}, status_code=401)
        json.loads(row["rules"] or "null"), json.loads(row["windows"])
        title = f"预约已确认：{row['name']}"
        done = await conn.fetchrow(_WRITE, data.instrument_id, row["user_id"], data.start, data.end, data.purpose,
                                   json.dumps({"instrument_id": data.instrument_id, "start": data.start.isoformat()}),
                                   title, row["email"])
    if done is None:
        return ORJSONResponse({"detail": "slot taken"}, status_code=409)
    return {"id": done["id"], "status": done["status"], "instrument_id": data.instrument_id,
            "start": data.start, "end": data.end}


def main() -> None:
    # bench/booking.py is loaded by path: this folder is not a package, and its name clashes with the application's.
    import importlib.util

    from tests.db import TestDatabase
    from tests.live import Scratch, free_port

    spec = importlib.util.spec_from_file_location("bench_booking", Path(__file__).with_name("booking.py"))
    assert spec and spec.loader
    bb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bb)

    scratch = Scratch.create(TestDatabase(), "booking_ceiling")
    dsn = scratch.url.replace("postgresql+asyncpg://", "postgresql://", 1)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        world = asyncio.run(bb._seed(scratch.engine()))
        tokens, inst_id = world["tokens"], world["instrument_id"]
        user_id = asyncio.run(bb._first_user(dsn))
        day = datetime(2027, 1, 4, tzinfo=UTC)
        for n, app in enumerate(("hello", "lean")):
            urls = []
            for _ in range(2):
                port = free_port()
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", f"bench.booking_ceiling:{app}", "--port", str(port),
                     "--log-level", "warning", "--no-access-log"],
                    cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "CEILING_DSN": dsn}))
                urls.append(f"http://127.0.0.1:{port}")
            time.sleep(4)
            base = day + timedelta(days=1000 * (n + 1))
            asyncio.run(bb.bench_api_inserts(urls, tokens, inst_id, 400, 64, base + timedelta(days=600)))
            rate, lat64, errors = asyncio.run(bb.bench_api_inserts(urls, tokens, inst_id, 3000, 64, base))
            raw = asyncio.run(bb.bench_raw_inserts(dsn, inst_id, user_id, 3000, 64, base + timedelta(days=300)))
            _, lat32, _ = asyncio.run(bb.bench_api_inserts(urls, tokens, inst_id, 1500, 32,
                                                           base + timedelta(days=450)))
            print(f"== {app}: {rate:,.0f} bookings/s (errors {errors}); raw asyncpg INSERT {raw:,.0f}/s; "
                  f"ratio {rate / raw:.2f}x; p99 at 64 conns {bb.pct(lat64, 99) * 1000:.1f} ms, "
                  f"at 32 conns {bb.pct(lat32, 99) * 1000:.1f} ms")
            if app == "lean":
                elapsed, statuses = asyncio.run(bb.bench_storm(urls, tokens, inst_id,
                                                               datetime(2035, 6, 1, 2, tzinfo=UTC)))
                print(f"   storm: 200 answered in {elapsed * 1000:.0f} ms; 201: {statuses.count(201)}, "
                      f"409: {statuses.count(409)} (no alternatives computed)")
            for p in procs:
                p.terminate()
                p.wait(10)
            procs.clear()
    finally:
        for p in procs:
            p.terminate()
        scratch.close()


if __name__ == "__main__":
    main()
