"""The activity log: written with the change, append-only in the database, tamper-evident by its hash chain."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from booking.activity.models import ActivityEntry
from booking.activity.service import record, seal, verify_chain
from booking.core.context import request_id_var


async def _add(session: AsyncSession, n: int) -> list[ActivityEntry]:
    entries = [record(session, actor_id=1, action="test.happened", target_type="thing", target_id=i,
                      before={"v": i}, after={"v": i + 1, "名称": "质谱仪"}) for i in range(n)]
    await session.flush()
    return entries


async def _sealed(session: AsyncSession, n: int) -> list[ActivityEntry]:
    entries = await _add(session, n)
    await seal(session)
    for e in entries:
        await session.refresh(e)
    return entries


class TestRecord:
    async def test_written_unsealed_then_sealed_in_order(self, session: AsyncSession) -> None:
        entries = await _add(session, 3)
        await session.refresh(entries[0])
        assert entries[0].seq is None and entries[0].hash is None
        assert await seal(session) >= 3
        assert await seal(session) == 0  # idempotent
        for e in entries:
            await session.refresh(e)
        assert [e.seq for e in entries] == sorted(e.seq for e in entries)  # type: ignore[type-var]
        assert entries[1].prev_hash == entries[0].hash
        assert entries[2].prev_hash == entries[1].hash
        assert all(e.hash and len(e.hash) == 64 for e in entries)

    async def test_request_id_recorded(self, session: AsyncSession) -> None:
        token = request_id_var.set("req-test-123456")
        try:
            entry = record(session, actor_id=None, action="x.y", target_type="t")
        finally:
            request_id_var.reset(token)
        await session.flush()
        await session.refresh(entry)
        assert entry.request_id == "req-test-123456"

    async def test_rolled_back_with_the_change(self, session: AsyncSession) -> None:
        nested = await session.begin_nested()
        record(session, actor_id=1, action="will.vanish", target_type="t")
        await session.flush()
        await nested.rollback()
        found = await session.scalars(select(ActivityEntry).where(ActivityEntry.action == "will.vanish"))
        assert found.first() is None


class TestAppendOnly:
    @pytest.mark.parametrize("statement", [
        "UPDATE activity_log SET action = 'forged' WHERE id = :id",
        "DELETE FROM activity_log WHERE id = :id",
    ])
    async def test_database_refuses(self, session: AsyncSession, statement: str) -> None:
        [entry] = await _sealed(session, 1)
        nested = await session.begin_nested()
        with pytest.raises(DBAPIError, match="append-only"):
            await session.execute(text(statement), {"id": entry.id})
        await nested.rollback()

    async def test_truncate_refused(self, session: AsyncSession) -> None:
        await _sealed(session, 1)
        nested = await session.begin_nested()
        with pytest.raises(DBAPIError, match="append-only"):
            await session.execute(text("TRUNCATE activity_log"))
        await nested.rollback()


class TestSealGuard:
    async def test_cannot_forge_a_seal(self, session: AsyncSession) -> None:
        [entry] = await _add(session, 1)
        nested = await session.begin_nested()
        with pytest.raises(DBAPIError, match="append-only"):
            await session.execute(text("UPDATE activity_log SET seq = 999, hash = 'x' WHERE id = :id"), {"id": entry.id})
        await nested.rollback()

    async def test_cannot_edit_while_unsealed(self, session: AsyncSession) -> None:
        [entry] = await _add(session, 1)
        nested = await session.begin_nested()
        with pytest.raises(DBAPIError, match="append-only"):
            await session.execute(text("UPDATE activity_log SET action = 'forged' WHERE id = :id"), {"id": entry.id})
        await nested.rollback()

    async def test_insert_cannot_preset_chain(self, session: AsyncSession) -> None:
        await session.execute(text("INSERT INTO activity_log (at, action, target_type, seq, hash) "
                                   "VALUES (now(), 'forged.insert', 't', 1, 'abc')"))
        row = (await session.execute(text("SELECT seq, hash FROM activity_log WHERE action = 'forged.insert'"))).one()
        assert row.seq is None and row.hash is None


class TestVerify:
    async def test_intact_chain_verifies(self, session: AsyncSession) -> None:
        await _sealed(session, 5)
        result = await verify_chain(session)
        assert result.ok, result.problems
        assert result.checked >= 5

    async def _tamper(self, session: AsyncSession, sql: str, **params: object) -> None:
        # Only a superuser who disables the guard trigger can do this: exactly the case verification is for.
        await session.execute(text("ALTER TABLE activity_log DISABLE TRIGGER activity_log_no_update_delete"))
        await session.execute(text(sql), params)
        await session.execute(text("ALTER TABLE activity_log ENABLE TRIGGER activity_log_no_update_delete"))

    async def test_edited_row_detected(self, session: AsyncSession) -> None:
        entries = await _sealed(session, 3)
        await self._tamper(session, "UPDATE activity_log SET after = '{\"v\": 999}' WHERE id = :id", id=entries[1].id)
        result = await verify_chain(session)
        assert not result.ok
        assert any("edited" in p for p in result.problems)

    async def test_deleted_row_detected(self, session: AsyncSession) -> None:
        entries = await _sealed(session, 3)
        await self._tamper(session, "DELETE FROM activity_log WHERE id = :id", id=entries[1].id)
        result = await verify_chain(session)
        assert any("gap" in p or "link" in p for p in result.problems)

    async def test_rehashed_edit_still_breaks_the_next_link(self, session: AsyncSession) -> None:
        entries = await _sealed(session, 3)
        await self._tamper(
            session,
            "UPDATE activity_log SET after = '{\"v\": 0}', hash = activity_row_hash(prev_hash, seq, at, actor_id, "
            "action, target_type, target_id, before, '{\"v\": 0}'::jsonb, request_id) WHERE id = :id",
            id=entries[1].id,
        )
        result = await verify_chain(session)
        assert any("does not link" in p for p in result.problems)
