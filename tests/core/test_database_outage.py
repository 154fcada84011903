"""Database down → 503 quickly (not a hang); the service recovers by itself when the database returns.

A small TCP proxy sits between the app and PostgreSQL so the test can cut and restore the database connection
without touching the server other tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from booking.core import db as core_db
from tests.db import TestDatabase


class Proxy:
    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.port = _free_port()
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if isinstance(self.target, str):
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _target(db: TestDatabase) -> tuple[str, int] | str:
    parts = urlsplit(db.dsn)
    host = parse_qs(parts.query).get("host", [None])[0]
    if host and host.startswith("/"):
        [sock] = glob.glob(f"{host}/.s.PGSQL.*")[:1]
        return sock
    return (parts.hostname or "127.0.0.1", parts.port or 5432)


@pytest.fixture
async def proxied_client(app, test_database: TestDatabase) -> AsyncIterator[tuple[httpx.AsyncClient, Proxy]]:  # type: ignore[no-untyped-def]
    proxy = Proxy(_target(test_database))
    await proxy.start()
    user = urlsplit(test_database.dsn).username or "postgres"
    password = urlsplit(test_database.dsn).password
    auth = f"{user}:{password}" if password else user
    url = f"postgresql+asyncpg://{auth}@127.0.0.1:{proxy.port}/{test_database.name}"
    engine = core_db.make_engine(url, pool_size=2, max_overflow=0, ping_after_idle_s=0.2)
    previous = core_db._sessionmaker
    core_db.set_sessionmaker(async_sessionmaker(engine, expire_on_commit=False))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client, proxy
    core_db._sessionmaker = previous
    await engine.dispose()
    with contextlib.suppress(Exception):
        await proxy.stop()


async def test_outage_is_quick_503_and_recovers(proxied_client: tuple[httpx.AsyncClient, Proxy]) -> None:
    client, proxy = proxied_client
    assert (await client.get("/api/v1/institutions")).status_code == 200

    await proxy.stop()
    started = time.perf_counter()
    api = await client.get("/api/v1/institutions")
    page = await client.get("/institutions")
    elapsed = time.perf_counter() - started
    assert api.status_code == 503
    assert api.headers["content-type"].startswith("application/problem+json")
    assert api.headers["retry-after"]
    assert page.status_code == 503 and "服务暂不可用" in page.text
    assert elapsed < 8, f"outage answered in {elapsed:.1f}s"

    health = await client.get("/healthz")
    assert health.status_code == 503 and health.json()["database"] == "down"

    await _restart(proxy)
    for _ in range(20):
        r = await client.get("/api/v1/institutions")
        if r.status_code == 200:
            break
        await asyncio.sleep(0.2)
    assert r.status_code == 200
    assert (await client.get("/healthz")).status_code == 200


async def test_database_restart_while_idle_fails_no_request(
    proxied_client: tuple[httpx.AsyncClient, Proxy],
) -> None:
    # Every pooled connection dies with the restart; one that sat idle is pinged and replaced before use.
    client, proxy = proxied_client
    assert (await client.get("/api/v1/institutions")).status_code == 200
    await proxy.stop()
    await _restart(proxy)
    await asyncio.sleep(0.3)
    assert (await client.get("/api/v1/institutions")).status_code == 200
    assert (await client.get("/healthz")).status_code == 200


async def test_the_anonymous_search_through_the_pool(proxied_client: tuple[httpx.AsyncClient, Proxy]) -> None:
    """The catalogue search reads through a raw pooled connection (booking.core.db.read_connection), not a
    session: it answers, gives the connection back, answers 503 in an outage and recovers like the other routes."""
    client, proxy = proxied_client
    pool = core_db.get_sessionmaker().kw["bind"].pool
    r = await client.get("/api/v1/instruments", params={"q": "质谱"})
    assert r.status_code == 200 and r.json()["total"] >= 0, r.text
    assert pool.checkedout() == 0
    assert (await client.get("/api/v1/instruments", params={"city": "999999"})).status_code == 422
    bad_token = await client.get("/api/v1/instruments", headers={"Authorization": "Bearer not-a-token"})
    assert bad_token.status_code == 401
    assert pool.checkedout() == 0

    await proxy.stop()
    started = time.perf_counter()
    down = await client.get("/api/v1/instruments", params={"q": "质谱"})
    assert down.status_code == 503 and down.headers["content-type"].startswith("application/problem+json")
    assert time.perf_counter() - started < 8
    assert pool.checkedout() == 0

    await _restart(proxy)
    await asyncio.sleep(0.3)
    assert (await client.get("/api/v1/instruments", params={"q": "质谱"})).status_code == 200
    assert pool.checkedout() == 0


async def _restart(proxy: Proxy) -> None:
    proxy.server = await asyncio.start_server(proxy._handle, "127.0.0.1", proxy.port)


async def test_a_transaction_aborted_by_a_concurrent_one_is_a_503_to_retry(session) -> None:  # type: ignore[no-untyped-def]
    # A deadlock victim (or a serialization failure) wrote nothing and usually succeeds when retried: 503 with
    # Retry-After, not a 500.
    from sqlalchemy import text

    from booking.app import create_app

    app = create_app()

    @app.get("/api/v1/test-deadlock")
    async def deadlock() -> None:
        async with core_db.get_sessionmaker()() as s:
            await s.execute(text("DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$"))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        r = await client.get("/api/v1/test-deadlock")
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "请重试" in r.json()["detail"]


async def test_exports_give_their_connection_back(proxied_client: tuple[httpx.AsyncClient, Proxy]) -> None:
    """A streamed export reads after the request's session has closed: its rows come through a session of their
    own, which gives the connection back once the body is sent (before, it waited for the garbage collector)."""
    client, _ = proxied_client
    pool = core_db.get_sessionmaker().kw["bind"].pool
    for fmt in ("csv", "json", "xlsx"):
        r = await client.get(f"/api/v1/instruments/export.{fmt}", params={"city": "510700"})
        assert r.status_code == 200, r.text
        assert pool.checkedout() == 0, fmt


async def test_an_export_left_mid_stream_gives_its_connection_back(
    app, proxied_client: tuple[httpx.AsyncClient, Proxy]  # type: ignore[no-untyped-def]
) -> None:
    """A client that goes away while the rows are being sent: the body (and the session it reads through) is
    closed with the response (instruments.api._ClosingStream). On CPython an abandoned generator is also finalised
    as soon as it is dropped, so this passes without that too; it guards the outcome, not the mechanism."""
    from sqlalchemy import delete

    from booking.accounts.models import Institution
    from instruments.models import Instrument
    from tests.factories import make_institution, make_instrument

    maker = core_db.get_sessionmaker()
    async with maker() as s:  # committed: the export reads through a session of its own
        owner = await make_institution(s, name="中途断开测试单位")
        await make_instrument(s, owner, name="中途断开测试仪")
        await s.commit()
    pool = maker.kw["bind"].pool
    gone = asyncio.Event()
    bodies = 0

    async def receive() -> dict[str, object]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            if bodies == 2:  # the rows: the client is gone while they go out
                gone.set()
                await asyncio.sleep(3600)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/api/v1/instruments/export.csv", "raw_path": b"",
             "root_path": "", "query_string": "q=中途断开测试".encode(), "headers": [(b"host", b"testserver")],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    try:
        await asyncio.wait_for(app(scope, receive, send), 30)
        assert bodies == 2
        assert pool.checkedout() == 0
    finally:
        async with maker() as s:
            await s.execute(delete(Instrument).where(Instrument.institution_id == owner.id))
            await s.execute(delete(Institution).where(Institution.id == owner.id))
            await s.commit()
