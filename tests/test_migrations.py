"""Migrations are reviewed code: reversible, and the models match what they build."""

from __future__ import annotations

import asyncio
import os

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from booking import models  # noqa: F401
from booking.core import migrations
from booking.core.db import make_engine
from tests.db import TestDatabase, _create, _drop, _with_database


@pytest.fixture
def scratch_database(test_database: TestDatabase):  # type: ignore[no-untyped-def]
    name = f"booking_migr_{os.getpid()}"
    asyncio.run(_create(test_database.admin_dsn, name))
    url = _with_database(test_database.admin_dsn, name).replace("postgresql://", "postgresql+asyncpg://", 1)
    yield url
    asyncio.run(_drop(test_database.admin_dsn, name))


def _diff(url: str) -> list[object]:
    async def run() -> list[object]:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                def compare(sync_conn):  # type: ignore[no-untyped-def]
                    ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                    return [d for d in compare_metadata(ctx, SQLModel.metadata)
                            if not (d[0] == "remove_table" and d[1].name == "alembic_version")]
                return await conn.run_sync(compare)
        finally:
            await engine.dispose()
    return asyncio.run(run())


def _tables(url: str) -> set[str]:
    async def run() -> set[str]:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
                return {r[0] for r in rows}
        finally:
            await engine.dispose()
    return asyncio.run(run())


def test_upgrade_downgrade_upgrade(scratch_database: str) -> None:
    migrations.upgrade(scratch_database)
    assert "activity_log" in _tables(scratch_database)
    migrations.downgrade(scratch_database, "base")
    assert _tables(scratch_database) <= {"alembic_version"}
    migrations.upgrade(scratch_database)
    assert _diff(scratch_database) == []


def test_models_match_migrations(test_database: TestDatabase) -> None:
    assert _diff(test_database.url) == []


def test_single_head() -> None:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(migrations.alembic_config()).get_heads()
    assert len(heads) == 1
