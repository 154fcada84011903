"""The request's session (booking.core.db._request_session): committed when the request touched it, left alone when
it did not. The pool (SlotWaitingPool): a server out of connection slots makes a request wait, not fail. The read
connection (read_connection): straight from the sessions' pool, and back to it unless it may be mid-protocol."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from asyncpg import PostgresError
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from booking.core import db as core_db
from booking.core.db import _request_session, _used, make_engine, read_connection
from instruments.models import Chain
from tests.db import TestDatabase, as_role, create_capped_role, drop_role


async def _finish(gen) -> None:  # type: ignore[no-untyped-def]
    try:
        await gen.__anext__()
    except StopAsyncIteration:
        return
    raise AssertionError("the dependency yielded twice")


async def test_a_request_that_only_added_an_object_is_committed(session: AsyncSession) -> None:
    """add() begins no transaction; the commit's flush is what writes the object, so it must still run."""
    gen = _request_session()
    request_session = await gen.__anext__()
    request_session.add(Chain(name="仅 add 的产业链"))
    await _finish(gen)
    assert await session.scalar(select(Chain.id).where(Chain.name == "仅 add 的产业链")) is not None


async def test_a_request_that_wrote_is_committed(session: AsyncSession) -> None:
    gen = _request_session()
    request_session = await gen.__anext__()
    await request_session.execute(text("INSERT INTO chains (name) VALUES ('语句写入的产业链')"))
    await _finish(gen)
    assert await session.scalar(select(Chain.id).where(Chain.name == "语句写入的产业链")) is not None


async def test_an_untouched_session_holds_nothing_and_is_left_alone(session: AsyncSession) -> None:
    gen = _request_session()
    request_session = await gen.__anext__()
    assert not _used(request_session)
    await _finish(gen)
    assert not request_session.in_transaction()


async def test_used_means_a_transaction_or_objects(session: AsyncSession) -> None:
    for touch in ("add", "execute"):
        fresh = AsyncSession(bind=session.bind)
        assert not _used(fresh)
        if touch == "add":
            fresh.add(Chain(name="待写入"))
        else:
            await fresh.execute(text("SELECT 1"))
        assert _used(fresh), touch
        await fresh.rollback()
        await fresh.close()


class TestSlotWaitingPool:
    """The server refusing a connection for want of slots (SQLSTATE 53300) is load while the pool holds
    connections that will come back, and an outage only when it holds none."""

    @pytest.fixture
    async def capped(self, test_database: TestDatabase) -> AsyncIterator[Callable[[int], Awaitable[str]]]:
        roles: list[str] = []

        async def make(connections: int) -> str:
            role = f"booking_slots_{os.getpid()}_{len(roles)}"
            roles.append(role)
            return as_role(
                test_database.url, role, await create_capped_role(test_database.admin_dsn, role, connections)
            )

        yield make
        for role in roles:
            await drop_role(test_database.admin_dsn, role)

    async def test_a_refused_overflow_connection_waits_for_a_held_one(
        self, capped: Callable[[int], Awaitable[str]]
    ) -> None:
        async with _one_held_one_waiting(await capped(1), pool_timeout=10) as (engine, held, waiting):
            await held.close()
            assert await asyncio.wait_for(waiting, 10) == 1
            assert engine.pool.checkedout() == 0

    async def test_a_slot_freed_on_the_server_is_taken(self, capped: Callable[[int], Awaitable[str]]) -> None:
        """The held connection is closed rather than returned (an invalidated connection): the waiting request
        asks the server again and gets the freed slot, well before the pool's timeout."""
        async with _one_held_one_waiting(await capped(1), pool_timeout=20) as (_engine, held, waiting):
            started = time.perf_counter()
            await held.invalidate()
            await held.close()
            assert await asyncio.wait_for(waiting, 10) == 1
            assert time.perf_counter() - started < 5

    async def test_a_refusal_with_nothing_held_fails_at_once(self, capped: Callable[[int], Awaitable[str]]) -> None:
        engine = make_engine(await capped(0), pool_size=1, max_overflow=5, pool_timeout=10)
        try:
            started = time.perf_counter()
            with pytest.raises(DBAPIError) as refused:
                await _select_one(engine)
            assert getattr(refused.value.orig, "sqlstate", None) == "53300"
            assert time.perf_counter() - started < 5
        finally:
            await engine.dispose()


@contextlib.asynccontextmanager
async def _one_held_one_waiting(url: str, *, pool_timeout: float
                                ) -> AsyncIterator[tuple[AsyncEngine, AsyncConnection, asyncio.Task[int]]]:
    """A pool whose role has one server slot: one connection held, and a request refused by the server (53300)
    and now waiting in the pool."""
    engine = make_engine(url, pool_size=1, max_overflow=5, pool_timeout=pool_timeout)
    held = await engine.connect()
    try:
        await held.execute(text("SELECT 1"))
        waiting = asyncio.create_task(_select_one(engine))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # refused by the server, now queued for the held connection
        yield engine, held, waiting
    finally:
        await held.close()
        await engine.dispose()


async def _select_one(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT 1"))).scalar_one())


class TestReadConnection:
    @pytest.fixture
    async def engine(self, test_database: TestDatabase) -> AsyncIterator[AsyncEngine]:
        """Sessions bound to an engine of one connection, as in the application (not the tests' outer
        transaction)."""
        engine = make_engine(test_database.url, pool_size=1, max_overflow=0, pool_timeout=5)
        previous = core_db._sessionmaker
        core_db.set_sessionmaker(async_sessionmaker(engine, expire_on_commit=False, autoflush=False))
        yield engine
        core_db._sessionmaker = previous
        await engine.dispose()

    async def test_it_comes_from_the_pool_and_goes_back(self, engine: AsyncEngine) -> None:
        async with read_connection() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            assert engine.pool.checkedout() == 1
            assert not conn.is_in_transaction()  # one statement, its own snapshot
        assert engine.pool.checkedout() == 0
        async with read_connection() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid

    async def test_a_statement_error_leaves_it_in_the_pool(self, engine: AsyncEngine) -> None:
        async with read_connection() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(PostgresError):
            async with read_connection() as conn:
                await conn.fetch("SELECT 1 / 0")
        async with read_connection() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid

    async def test_a_cancelled_statement_closes_it(self, engine: AsyncEngine) -> None:
        """A client gone mid-search cancels the request: the connection may still be mid-statement on the server,
        so it is closed (as SQLAlchemy does with its own) and the next request gets a fresh one."""
        async with read_connection() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")

        async def slow() -> None:
            async with read_connection() as conn:
                await conn.fetch("SELECT pg_sleep(5)")

        task = asyncio.create_task(slow())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert engine.pool.checkedout() == 0
        started = time.perf_counter()
        async with read_connection() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") != pid
            assert await conn.fetchval("SELECT 1") == 1
        assert time.perf_counter() - started < 3


    async def test_one_the_server_closed_is_not_handed_on(self, engine: AsyncEngine) -> None:
        """Terminated (a failover, pg_terminate_backend): asyncpg raises a plain PostgresError (57P01) and the
        connection is closed; the next request gets one that works."""
        with pytest.raises(PostgresError):
            async with read_connection() as conn:
                await conn.fetch("SELECT pg_terminate_backend(pg_backend_pid())")
        assert engine.pool.checkedout() == 0
        async with read_connection() as conn:
            assert await conn.fetchval("SELECT 1") == 1

    async def test_one_left_in_a_transaction_is_not_handed_on(self, engine: AsyncEngine) -> None:
        async with read_connection() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("BEGIN")
        async with read_connection() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT pg_backend_pid()") != pid


async def test_read_connection_sees_what_the_sessions_see(session: AsyncSession) -> None:
    """Sessions joined to one outer connection (the tests' transaction): the read runs in it."""
    session.add(Chain(name="未提交的产业链"))
    await session.flush()
    async with read_connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM chains WHERE name = '未提交的产业链'") == 1
