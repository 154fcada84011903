"""The `booking` command against a real database: users, db check, activity verify."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import asyncpg
import pytest

from booking.core import migrations
from tests.db import TestDatabase, _create, _drop, _with_database


@pytest.fixture(scope="module")
def cli_database(test_database: TestDatabase) -> Iterator[tuple[str, str]]:
    """A committed scratch database for commands that run in their own process."""
    name = f"booking_cli_{os.getpid()}"
    asyncio.run(_create(test_database.admin_dsn, name))
    dsn = _with_database(test_database.admin_dsn, name)
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    migrations.upgrade(url)
    yield url, dsn
    asyncio.run(_drop(test_database.admin_dsn, name))


def _run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "BOOKING_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "booking.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def _fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()
    return asyncio.run(go())


class TestUsersCreate:
    def test_creates_admin_and_records_activity(self, cli_database: tuple[str, str]) -> None:
        url, dsn = cli_database
        r = _run(url, "users", "create", "--email", "Root@Example.cn", "--role", "platform_admin",
                 "--password", "a-long-admin-passphrase", "--name", "管理员")
        assert r.returncode == 0, r.stderr
        rows = _fetch(dsn, "SELECT u.email, g.role FROM users u JOIN role_grants g ON g.user_id = u.id")
        assert [(row["email"], row["role"]) for row in rows] == [("root@example.cn", "platform_admin")]
        actions = {row["action"] for row in _fetch(dsn, "SELECT action FROM activity_log")}
        assert {"user.created", "role.granted"} <= actions

    @pytest.mark.parametrize(("args", "message"), [
        (["--email", "x@example.cn", "--role", "wizard", "--password", "a-long-passphrase"], "--role"),
        (["--email", "not-an-email", "--password", "a-long-passphrase"], "email"),
        (["--email", "y@example.cn", "--password", "short"], "password"),
        (["--email", "z@example.cn", "--role", "facility_manager", "--password", "a-long-passphrase"],
         "institution"),
        (["--email", "w@example.cn", "--role", "auditor", "--city", "999999", "--password", "a-long-passphrase"],
         "city"),
    ])
    def test_bad_input_exits_2_naming_the_option(self, cli_database: tuple[str, str], args: list[str],
                                                 message: str) -> None:
        url, dsn = cli_database
        before = _fetch(dsn, "SELECT count(*) AS n FROM users")[0]["n"]
        r = _run(url, "users", "create", *args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert message in (r.stderr + r.stdout)
        assert _fetch(dsn, "SELECT count(*) AS n FROM users")[0]["n"] == before


class TestDbCheck:
    def test_at_head_and_models_match(self, cli_database: tuple[str, str]) -> None:
        r = _run(cli_database[0], "db", "check")
        assert r.returncode == 0, r.stderr
        assert "models match" in r.stderr


class TestActivityVerify:
    def test_intact_then_tampered(self, cli_database: tuple[str, str]) -> None:
        url, dsn = cli_database
        _run(url, "users", "create", "--email", "v@example.cn", "--password", "a-long-passphrase")
        ok = _run(url, "activity", "verify")
        assert ok.returncode == 0, ok.stderr
        assert "intact" in ok.stderr
        _fetch(dsn, "ALTER TABLE activity_log DISABLE TRIGGER activity_log_no_update_delete")
        _fetch(dsn, "UPDATE activity_log SET actor_id = 4242 WHERE seq = 1")
        _fetch(dsn, "ALTER TABLE activity_log ENABLE TRIGGER activity_log_no_update_delete")
        bad = _run(url, "activity", "verify")
        assert bad.returncode == 1
        assert "TAMPERED" in bad.stderr


def test_serve_points_links_at_its_own_address_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from booking import cli
    from booking.core.settings import get_settings

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    monkeypatch.delenv("BOOKING_BASE_URL", raising=False)
    try:
        cli._serve("0.0.0.0", 8765, 1)  # noqa: S104
        assert get_settings().base_url == "http://127.0.0.1:8765"
        monkeypatch.setenv("BOOKING_BASE_URL", "https://yiqi.example.cn")
        get_settings.cache_clear()
        cli._serve("127.0.0.1", 9000, 1)
        assert get_settings().base_url == "https://yiqi.example.cn"
    finally:
        monkeypatch.delenv("BOOKING_BASE_URL", raising=False)
        get_settings.cache_clear()


def test_demo_serves_with_the_background_jobs_beside_it(cli_database: tuple[str, str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`booking demo` starts the job runner in its own process: while the server runs, the activity log gets sealed
    (the `activity.seal` job); when the server stops, so does the runner. `--no-jobs` starts none."""
    import time

    from booking import cli
    from booking.core.settings import get_settings

    url, dsn = cli_database
    r = _run(url, "users", "create", "--email", "jobs@example.cn", "--password", "a-long-passphrase-1")
    assert r.returncode == 0, r.stderr  # not empty, so the demo does not seed; and an unsealed entry
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("BOOKING_BASE_URL", "http://127.0.0.1:9")
    get_settings.cache_clear()
    started: list[subprocess.Popen[bytes]] = []
    real_start = cli._start_jobs
    monkeypatch.setattr(cli, "_start_jobs", lambda: started.append(real_start()) or started[-1])
    sealed: list[bool] = []

    def serve(host: str, port: int, workers: int) -> None:  # stands in for uvicorn until the log is sealed
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not _fetch(dsn, "SELECT 1 FROM activity_log WHERE seq IS NULL"):
                sealed.append(True)
                return
            time.sleep(0.5)

    monkeypatch.setattr(cli, "_serve", serve)
    try:
        cli.demo(host="127.0.0.1", port=9, workers=1, no_serve=False, no_jobs=False)
        assert sealed == [True]
        assert len(started) == 1 and started[0].poll() is not None  # stopped with the server
        cli.demo(host="127.0.0.1", port=9, workers=1, no_serve=False, no_jobs=True)
        assert len(started) == 1
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
        get_settings.cache_clear()


def test_sigterm_stops_the_demo_its_job_runner_and_its_embedded_postgresql(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`booking demo` with no DATABASE_URL runs its own PostgreSQL. A service manager stops it with SIGTERM: the
    server shuts down, then the job runner and the embedded PostgreSQL stop with it (uvicorn raises the signal again
    after its shutdown, which used to end the process before any cleanup ran)."""
    import signal
    import socket
    import time

    import httpx
    import psutil

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"BOOKING_DATA_DIR": str(tmp_path), "BOOKING_DEMO_SCALE": "0.02", "BOOKING_LOG_LEVEL": "WARNING"}
    log = (tmp_path / "server.log").open("w")
    demo = subprocess.Popen([sys.executable, "-m", "booking.cli", "demo", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert demo.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "demo did not become healthy"
            time.sleep(0.5)
        # Handles taken before the signal: a process gone (or left a zombie) afterwards is still recognised.
        postmaster = psutil.Process(int((tmp_path / "pg" / "postmaster.pid").read_text().split()[0]))
        children = psutil.Process(demo.pid).children()
        assert children  # the job runner

        demo.send_signal(signal.SIGTERM)
        assert demo.wait(60) == 0  # a stop that was asked for

        def gone(process: psutil.Process) -> bool:
            try:
                return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        deadline = time.monotonic() + 20
        while not all(gone(p) for p in (postmaster, *children)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert gone(postmaster), "the embedded PostgreSQL is still running"
        assert all(gone(child) for child in children), "the job runner is still running"
    finally:
        if demo.poll() is None:
            demo.kill()
        log.close()
        pidfile = tmp_path / "pg" / "postmaster.pid"
        if pidfile.exists():  # leave nothing running whatever happened
            with contextlib.suppress(Exception):
                psutil.Process(int(pidfile.read_text().split()[0])).kill()
