"""Fixtures: a real PostgreSQL database migrated once; every test inside a transaction rolled back at the end."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator

# Settings are read at import time by some modules: fix them before anything imports booking.
os.environ.setdefault("BOOKING_SECRET_KEY", "test-secret-key-0123456789-abcdefghijklmnop")
os.environ.setdefault("BOOKING_DATA_DIR", tempfile.mkdtemp(prefix="booking-test-"))
os.environ.setdefault("BOOKING_LOG_JSON", "false")
os.environ.setdefault("BOOKING_LOG_LEVEL", "WARNING")

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from booking.core import db as core_db
from tests.db import TestDatabase


@pytest.fixture(scope="session")
def test_database() -> Iterator[TestDatabase]:
    database = TestDatabase()
    database.create()
    database.migrate()
    os.environ["DATABASE_URL"] = database.url
    from booking.core.settings import get_settings

    get_settings.cache_clear()
    yield database
    database.drop()


@pytest.fixture(scope="session")
async def engine(test_database: TestDatabase) -> AsyncIterator[AsyncEngine]:
    eng = core_db.make_engine(test_database.url, pool_size=5, max_overflow=10)
    yield eng
    await eng.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        outer = await conn.begin()
        yield conn
        if outer.is_active:
            try:
                # The test's transaction is never committed, so the deferred checks (instrument_history agrees
                # with the instruments) would never run: run them now, on everything the test wrote.
                await conn.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
            finally:
                await outer.rollback()


@pytest.fixture
async def session(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """The test's session and every session the app opens share one connection and one outer transaction;
    commits become savepoint releases, and everything is rolled back after the test."""
    maker = async_sessionmaker(bind=connection, expire_on_commit=False, autoflush=False,
                               join_transaction_mode="create_savepoint")
    previous = core_db._sessionmaker
    core_db.set_sessionmaker(maker)
    async with maker() as s:
        yield s
    core_db._sessionmaker = previous


@pytest.fixture(scope="session")
def app(test_database: TestDatabase):  # type: ignore[no-untyped-def]
    from booking.app import create_app

    return create_app()


@pytest.fixture
async def client(app, session: AsyncSession) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    from booking.core.clock import set_clock

    yield
    set_clock(None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests last: Playwright's sync API keeps an event loop running in the main thread while the browser
    is open, which async tests after it could not share."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: a missing browser or server must not turn into a green run."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        reporter.write_line(f"CI: {skipped} test(s) were skipped; failing the run", red=True)  # type: ignore[union-attr]
        session.exitstatus = 1
