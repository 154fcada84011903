"""Browser tests: Playwright for Python driving Debian's Chromium against a real server process.

The server runs `booking demo` on its own committed database, exactly as a user would start it. A missing
browser is a failure, not a skip: CI must not pass without having run these.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.db import TestDatabase, _create, _drop, _with_database

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]


def _in_thread(coro_fn, *args):  # type: ignore[no-untyped-def]
    # Playwright's sync API keeps an event loop running in this thread, so database set-up runs in another one.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn(*args))).result()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def live(test_database: TestDatabase) -> Iterator[tuple[str, str]]:
    """(base URL, database URL) of a server running `booking demo` on a committed database of its own."""
    name = f"booking_live_{os.getpid()}"
    _in_thread(_create, test_database.admin_dsn, name)
    url = _with_database(test_database.admin_dsn, name).replace("postgresql://", "postgresql+asyncpg://", 1)
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": url, "BOOKING_LOG_LEVEL": "WARNING",
           "BOOKING_DEMO_SCALE": os.environ.get("BOOKING_DEMO_SCALE", "0.1"),
           # The booking walk-through books a slot for tomorrow and then checks in: allow check-in a week early
           # (a setting, so the flow runs without waiting for the slot's real start).
           "BOOKING_CHECK_IN_EARLY_MIN": "10080",
           # At this small scale, terms in 60 instruments count as frequent, so the pages also search through the
           # kept postings and counts (the demo seed promotes them).
           "BOOKING_SEARCH_FREQUENT_TERM_ROWS": "60"}
    log = open(ARTIFACTS.mkdir(exist_ok=True) or ARTIFACTS / "live-server.log", "w")  # noqa: SIM115
    # --no-jobs: the pages are tested against a world that changes only by what the tests do (the jobs have tests
    # of their own, and test_cli checks that `booking demo` runs them).
    proc = subprocess.Popen([sys.executable, "-m", "booking.cli", "demo", "--port", str(port), "--no-jobs"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see {log.name}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy in 180 s")
            time.sleep(0.3)
        yield base, url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        _in_thread(_drop, test_database.admin_dsn, name)


@pytest.fixture(scope="session")
def live_server(live: tuple[str, str]) -> str:
    return live[0]


def query(url: str, sql: str, *args: object) -> list[dict[str, object]]:
    """Read the live server's database (from a thread: Playwright keeps this thread's event loop busy)."""
    import asyncpg

    async def run() -> list[dict[str, object]]:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    async def go() -> list[dict[str, object]]:
        return await run()

    return _in_thread(go)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium and fonts-noto-cjk (see .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(live_server: str, browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=live_server, locale="zh-CN", viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    yield pg
    context.close()


def login(page, email: str, password: str = "demo-pass-2027") -> None:  # type: ignore[no-untyped-def]
    page.goto("/login")
    page.get_by_label("邮箱").fill(email)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()
    page.wait_for_load_state("networkidle")


def screenshot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def logout(page) -> None:  # type: ignore[no-untyped-def]
    page.get_by_role("button", name="退出").click()
    page.wait_for_url("**/login")
