"""A live server for browser tests: a scratch database that is committed to (not rolled back), seeded with the demo
province through the real CLI, and uvicorn serving the app on a free localhost port in a subprocess."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.db import REPO, TestDatabase, _create, _drop, _with_database


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def live_server(test_database: TestDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = f"booking_browser_{os.getpid()}"
    asyncio.run(_create(test_database.admin_dsn, name))
    url = _with_database(test_database.admin_dsn, name).replace("postgresql://", "postgresql+asyncpg://", 1)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PYTHONPATH": str(REPO),
        "BOOKING_LOG_LEVEL": "WARNING",
        "BOOKING_DATA_DIR": str(tmp_path_factory.mktemp("browser-data")),
    }
    seeded = subprocess.run(
        [sys.executable, "-m", "booking.cli", "demo", "--no-serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stderr
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env["BOOKING_BASE_URL"] = base
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "booking.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"server did not start: {server.stderr.read().decode() if server.stderr else ''}"
                )
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        if server.stderr:
            server.stderr.close()
        asyncio.run(_drop(test_database.admin_dsn, name))


LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
