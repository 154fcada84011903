"""Engine, sessions and the unit of work.

The boundary (request dependency, job, CLI command) owns the transaction: services only flush.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from asyncpg import InterfaceError, PostgresConnectionError
from fastapi import Depends
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util import queue as sqla_queue

from booking.core.errors import DomainError
from booking.core.settings import Settings, get_settings

# One naming convention so constraint names are stable between models and migrations.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

APP_DATABASE = "booking"

_engine: AsyncEngine | None = None
_sessionmaker: async_sessionmaker[AsyncSession] | None = None
_embedded_handle: Any = None


def resolve_database_url(settings: Settings | None = None, database: str = APP_DATABASE) -> str:
    """DATABASE_URL if set; otherwise start or attach to the embedded cluster in BOOKING_DATA_DIR.

    The resolved URL is exported as DATABASE_URL so that child processes (uvicorn workers) reuse it
    instead of each resolving it again.
    """
    global _embedded_handle
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    from booking.core.embedded import asyncpg_url, ensure_database, start_embedded

    socket_dir, handle = start_embedded(settings.data_dir)
    _embedded_handle = handle
    ensure_database(socket_dir, database)
    url = asyncpg_url(socket_dir, database)
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    return url


# SQLSTATE 53300: the server has no connection slot left (max_connections, or a role's or database's limit).
_TOO_MANY_CONNECTIONS = "53300"


def _refused_for_slots(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "sqlstate", None) == _TOO_MANY_CONNECTIONS:
            return True
        current = current.__cause__ or current.__context__
    return False


# How often a request waiting for a slot tries the server again (a refused connection still costs the server a
# backend process, so not much more often than this).
_SLOT_RETRY_S = 1.0


class SlotWaitingPool(AsyncAdaptedQueuePool):
    """A pool that, when the server refuses an overflow connection for want of slots, waits for a connection
    instead of failing the request: one of its own coming back, or a slot freed on the server.

    A burst (200 requests for one slot across two processes) grows every process's pool into its overflow at once,
    and with a few other clients on the server the pools together ask for more than max_connections. The refusal
    is load, not an outage: this process's own connections come back within milliseconds, and the request that
    waits for one gets its real answer (a 409 for a taken slot) instead of a 503. With none of its own in use or
    idle there is nothing to wait for, and the refusal stands (503, database unavailable).

    Overrides QueuePool's private `_do_get` (the same from SQLAlchemy 2.0 to 2.1); tests/core/test_db.py pins the
    behaviour, so an upgrade that changes it fails there.
    """

    def _do_get(self) -> ConnectionPoolEntry:
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                return super()._do_get()  # an idle connection, else a new one within max_overflow
            except Exception as exc:
                # Counted after the refusal: connections may have come back while the connect was refused.
                if not _refused_for_slots(exc) or self.checkedout() + self._pool.qsize() == 0:
                    raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PoolTimeoutError(
                    f"no connection slot on the server and none of this pool's {self.checkedout()} "
                    f"came back within {self._timeout:.0f} s"
                )
            try:
                return self._pool.get(True, min(remaining, _SLOT_RETRY_S))
            except sqla_queue.Empty:
                continue  # ours were closed rather than returned, or are slow: ask the server again


def make_engine(url: str, settings: Settings | None = None, **overrides: Any) -> AsyncEngine:
    settings = settings or get_settings()
    options: dict[str, Any] = {
        "poolclass": SlotWaitingPool,
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        # Not SQLAlchemy's pre-ping, which costs round trips on every checkout: _ping_idle_connections pings only
        # connections that sat idle (after a database restart those are the dead ones).
        "pool_pre_ping": False,
        "pool_recycle": 1800,
        "pool_timeout": settings.db_pool_timeout_s,
        "connect_args": {
            "timeout": settings.db_connect_timeout_s,
            "command_timeout": settings.db_command_timeout_s,
            # JIT compilation costs more than it saves on this service's short OLTP queries.
            "server_settings": {"application_name": "booking", "timezone": "UTC", "jit": "off"},
        },
    }
    ping_after_idle_s = overrides.pop("ping_after_idle_s", settings.db_ping_after_idle_s)
    options.update(overrides)
    engine = create_async_engine(url, **options)
    _ping_idle_connections(engine, ping_after_idle_s)
    return engine


def _ping_idle_connections(engine: AsyncEngine, after_s: float) -> None:
    """Check a connection that sat idle in the pool before handing it out; a dead one is replaced (the pool
    retries the checkout on DisconnectionError), so a restarted database costs no failed request."""

    def checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < after_s:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise DisconnectionError("idle connection is gone") from exc

    event.listen(engine.sync_engine, "checkin", checkin)
    event.listen(engine.sync_engine, "checkout", checkout)


def init_engine(url: str | None = None, **overrides: Any) -> AsyncEngine:
    global _engine, _sessionmaker
    if _engine is None:
        _engine = make_engine(url or resolve_database_url(), **overrides)
        _sessionmaker = async_sessionmaker(_engine, expire_on_commit=False, autoflush=False)
    return _engine


def get_engine() -> AsyncEngine:
    return init_engine()


def get_sessionmaker() -> async_sessionmaker[AsyncSession]:
    if _sessionmaker is None:
        init_engine()
    assert _sessionmaker is not None
    return _sessionmaker


def set_sessionmaker(maker: async_sessionmaker[AsyncSession]) -> None:
    """Used by tests to bind every session to one outer transaction."""
    global _sessionmaker
    _sessionmaker = maker


async def dispose_engine() -> None:
    global _engine, _sessionmaker
    if _engine is not None:
        await _engine.dispose()
    _engine = None
    _sessionmaker = None


@asynccontextmanager
async def read_connection() -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection for reading, straight from the pool the sessions use: no ORM session and no
    transaction (each statement is its own snapshot, as under READ COMMITTED in a session). For the catalogue
    search, the busiest anonymous route, whose statement often takes under half a millisecond: a session's begin,
    commit and close through the ORM cost about as much again.

    It reads through whatever the sessions are bound to: the engine's pool, or a connection that every session
    joins (the tests' outer transaction), so it sees what they see."""
    bind = get_sessionmaker().kw.get("bind")
    if isinstance(bind, AsyncConnection):
        yield (await bind.get_raw_connection()).driver_connection
        return
    engine = bind if isinstance(bind, AsyncEngine) else get_engine()
    pooled = await engine.raw_connection()
    conn = pooled.driver_connection
    broken = False
    try:
        yield conn
    except (asyncio.CancelledError, InterfaceError, PostgresConnectionError, OSError):
        # Cancelled mid-statement or failed on the wire: it may still be mid-statement on the server.
        broken = True
        raise
    finally:
        # Nothing resets a raw connection on its way back (the pool's reset rolls back only transactions the ORM
        # began): one the server closed (terminated, shut down, idle timeout: plain PostgresErrors) or left in a
        # transaction is closed rather than handed to the next request.
        if broken or conn.is_closed() or conn.is_in_transaction():
            await greenlet_spawn(pooled.invalidate)
        await greenlet_spawn(pooled.close)


@asynccontextmanager
async def unit_of_work() -> AsyncIterator[AsyncSession]:
    """A transaction owned by a job or CLI command: commit on success, roll back on error."""
    async with get_sessionmaker()() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def _request_session() -> AsyncIterator[AsyncSession]:
    # scope="function": the commit runs before the response is sent, so a failed commit becomes an error
    # response instead of a 200 for something that was never stored.
    session = get_sessionmaker()()
    try:
        yield session
        if _used(session):
            await session.commit()
    except DomainError as exc:
        if exc.commit_anyway:
            await session.commit()
        else:
            await _rollback_keeping_loaded(session)
        raise
    except BaseException:
        await _rollback_keeping_loaded(session)
        raise
    finally:
        if _used(session):
            await session.close()


def _used(session: AsyncSession) -> bool:
    """Whether the request touched its session: a transaction begun, or objects added or attached (add() does not
    begin one; the commit's flush writes them). An untouched session holds no connection and nothing to write, and
    its commit and close are greenlet hops through the ORM that a route which never used it need not pay."""
    return session.in_transaction() or bool(session.new) or bool(session.identity_map)


@asynccontextmanager
async def refusable(session: AsyncSession) -> AsyncIterator[None]:
    """Run a use case that a page may refuse and then show again, in a savepoint. The page's response is a normal
    one, so the request commits: a refusal must take back whatever the use case wrote before it (and leave the
    session usable for the re-render), except what the error says to keep (`commit_anyway`, e.g. an expired hold
    released on the way)."""
    savepoint = await session.begin_nested()
    try:
        yield
    except DomainError as exc:
        if exc.commit_anyway and savepoint.is_active:
            await savepoint.commit()
        elif savepoint.is_active:
            await savepoint.rollback()
        raise
    except BaseException:
        if savepoint.is_active:
            await savepoint.rollback()
        raise
    else:
        await savepoint.commit()


async def _rollback_keeping_loaded(session: AsyncSession) -> None:
    # A rollback expires every object in the session, and the error page still shows the signed-in user (loaded
    # by this session): detach them first so they keep the values they were loaded with.
    session.expunge_all()
    await session.rollback()


SessionDep = Annotated[AsyncSession, Depends(_request_session, scope="function")]
