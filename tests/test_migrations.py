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


def test_payment_revision_marks_existing_services_untracked(scratch_database: str) -> None:
    """Revision 0012 ("service_record_payment"): services recorded before payments were kept become `untracked`
    (payment never recorded), not `unpaid`, which would put every past service on the providers' list to collect;
    services recorded afterwards start unpaid. The rows themselves survive downgrade and upgrade."""
    from datetime import timedelta
    from decimal import Decimal

    from sqlalchemy.ext.asyncio import async_sessionmaker

    from booking.usage.models import ServiceRecord
    from tests.factories import make_institution, make_instrument, make_user
    from tests.ops_helpers import NOW, make_booking

    migrations.upgrade(scratch_database)

    async def seed() -> None:
        engine = make_engine(scratch_database)
        try:
            async with async_sessionmaker(engine, expire_on_commit=False)() as session:
                owner = await make_institution(session, name="迁移测试大学")
                inst = await make_instrument(session, owner, name="迁移测试质谱仪")
                user = await make_user(session)
                for days, status in ((3, "paid"), (2, "unpaid")):
                    booking = await make_booking(session, inst, user, NOW - timedelta(days=days), 1,
                                                 status="completed")
                    paid = status == "paid"
                    session.add(ServiceRecord(
                        instrument_id=inst.id, booking_id=booking.id, user_id=user.id,  # type: ignore[arg-type]
                        provider_institution_id=owner.id, is_external=True,  # type: ignore[arg-type]
                        started_at=booking.start_at, ended_at=booking.end_at, hours=Decimal("1"),
                        service_mode="occupancy", amount=Decimal("300.00"), fee_basis="外部 300 元/小时 × 1 小时",
                        payment_status=status, paid_at=NOW if paid else None,
                        payment_method="cash" if paid else None, paid_amount=Decimal("300.00") if paid else None))
                await session.commit()
        finally:
            await engine.dispose()

    async def statuses() -> list[str]:
        engine = make_engine(scratch_database)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(text("SELECT payment_status FROM service_records ORDER BY id"))
                return [r[0] for r in rows]
        finally:
            await engine.dispose()

    asyncio.run(seed())
    assert asyncio.run(statuses()) == ["paid", "unpaid"]
    migrations.downgrade(scratch_database, "0011")
    migrations.upgrade(scratch_database, "0012")
    assert asyncio.run(statuses()) == ["untracked", "untracked"]

    async def new_service_default() -> str:
        engine = make_engine(scratch_database)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(
                    "INSERT INTO service_records (instrument_id, booking_id, user_id, provider_institution_id,"
                    " is_external, started_at, ended_at, hours, service_mode, amount, fee_basis)"
                    " SELECT instrument_id, NULL, user_id, provider_institution_id, is_external, started_at,"
                    " ended_at, hours, service_mode, amount, fee_basis FROM service_records ORDER BY id LIMIT 1"))
                return str(await conn.scalar(text("SELECT payment_status FROM service_records ORDER BY id DESC"
                                                  " LIMIT 1")))
        finally:
            await engine.dispose()

    assert asyncio.run(new_service_default()) == "unpaid"
