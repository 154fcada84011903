"""Real server processes on a committed scratch database, for race tests and benchmarks."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from booking.core.db import make_engine
from tests.db import TestDatabase, _create, _drop, _with_database

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Scratch:
    """A committed database of its own, migrated to head."""

    admin_dsn: str
    name: str
    url: str = ""
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)

    @classmethod
    def create(cls, base: TestDatabase, name: str) -> Scratch:
        from booking.core import migrations

        asyncio.run(_create(base.admin_dsn, name))
        url = _with_database(base.admin_dsn, name).replace("postgresql://", "postgresql+asyncpg://", 1)
        migrations.upgrade(url)
        return cls(base.admin_dsn, name, url)

    def engine(self, **kw: Any) -> AsyncEngine:
        return make_engine(self.url, **kw)

    def start_server(self, port: int | None = None, workers: int = 1, log_name: str = "server",
                     env: dict[str, str] | None = None) -> str:
        port = port or free_port()
        environ = {**os.environ, "DATABASE_URL": self.url, "BOOKING_LOG_LEVEL": "WARNING", "BOOKING_LOG_JSON": "false",
                   "BOOKING_DB_POOL_SIZE": "40", "BOOKING_DB_MAX_OVERFLOW": "10", **(env or {})}
        logs = REPO / "test-artifacts"
        logs.mkdir(exist_ok=True)
        out = open(logs / f"{log_name}-{port}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "booking.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning"],
            env=environ, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        self.servers.append(proc)
        self.logs.append(out)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start")

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for log in self.logs:
            log.close()
        asyncio.run(_drop(self.admin_dsn, self.name))


async def seed_booking_world(engine: AsyncEngine, users: int, *, buffer_after_min: int = 0) -> dict[str, Any]:
    """An instrument open every day 00:00-24:00 with auto-confirm and no lead time, and `users` researchers
    with bearer tokens."""
    from booking.accounts.models import Institution, User
    from booking.auth.models import ApiToken
    from booking.core.security import hash_password, token_digest
    from instruments.models import Instrument, InstrumentHistory
    from scheduling.models import InstrumentRules, OpeningWindow

    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as s, s.begin():
        owner = Institution(name="竞争测试大学", kind="高校", city_code="510100")
        guest = Institution(name="竞争测试研究所", kind="科研院所", city_code="510700")
        s.add_all([owner, guest])
        await s.flush()
        inst = Instrument(institution_id=owner.id, asset_number="RACE-1", name="竞争测试质谱仪", category_code="010200",
                          original_value=Decimal("900000"), city_code="510100", sharing_mode="external", status="normal")
        s.add(inst)
        await s.flush()
        from booking.core.clock import utcnow

        s.add(InstrumentHistory(instrument_id=inst.id, valid_from=utcnow(), sharing_mode="external", status="normal",
                                original_value=inst.original_value, institution_id=owner.id, city_code="510100"))
        from datetime import time as dtime

        for d in range(7):
            s.add(OpeningWindow(instrument_id=inst.id, weekday=d, start_time=dtime(0), end_time=dtime(0)))
        s.add(InstrumentRules(instrument_id=inst.id, granularity_min=30, min_duration_min=30, max_duration_min=1440,
                              min_lead_min=0, max_horizon_days=3650, approval_required=False, follow_holidays=False,
                              buffer_after_min=buffer_after_min))
        pw = hash_password("race-password-123")
        tokens = []
        for i in range(users):
            u = User(email=f"racer{i}@example.cn", name=f"竞争者{i}", institution_id=guest.id, password_hash=pw)
            s.add(u)
            await s.flush()
            token = f"bka_race_{i}_{os.urandom(8).hex()}"
            s.add(ApiToken(user_id=u.id, kind="personal", name="race", digest=token_digest(token), prefix=token[:12]))
            tokens.append(token)
    return {"instrument_id": inst.id, "tokens": tokens}


OVERLAPS_SQL = """
SELECT count(*) FROM bookings a JOIN bookings b ON a.instrument_id = b.instrument_id AND a.id < b.id
WHERE a.status IN ('pending', 'confirmed', 'in_use', 'held') AND b.status IN ('pending', 'confirmed', 'in_use', 'held')
  AND a.blocked && b.blocked
"""
