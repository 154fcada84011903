"""An industrial-chain tag deleted while a manager saves an instrument carrying it: the manager gets a 422 naming the
tags field (never a 500), and nothing of the refused save stays, on the page nor through the service."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking.core.errors import RuleViolation
from instruments import service
from instruments.models import Chain, Instrument
from instruments.schemas import InstrumentCreate
from tests.db import TestDatabase
from tests.factories import login_web, make_institution, make_user, principal_for
from tests.instruments.test_pages import FORM
from tests.live import Scratch

pytestmark = pytest.mark.asyncio


def _create(institution_id: int, asset_number: str, chains: list[str]) -> InstrumentCreate:
    return InstrumentCreate.model_validate({
        "institution_id": institution_id, "asset_number": asset_number, "name": "竞态测试光谱仪",
        "category_code": "010101", "original_value": "880000", "sharing_mode": "external",
        "contact_phone": "028-85412345", "chains": chains,
    })


async def _count(session: AsyncSession, asset_number: str) -> int:
    return int(await session.scalar(
        select(func.count()).select_from(Instrument).where(Instrument.asset_number == asset_number)) or 0)


class TestTagGoneBeforeLinking:
    async def test_a_tag_validated_then_gone_is_a_422_on_the_tags_field(self, session: AsyncSession) -> None:
        with pytest.raises(RuleViolation) as caught:
            await service._set_chains(session, 1, ["从未存在的链"])
        assert caught.value.status == 422
        assert [(p.field, p.code) for p in caught.value.problems] == [("chains", "unknown_chain")]
        assert "产业链标签「从未存在的链」刚被管理员删除或改名" in caught.value.detail

    async def test_a_link_to_a_deleted_tag_is_a_422_and_the_session_stays_usable(
        self, session: AsyncSession
    ) -> None:
        institution = await make_institution(session)
        manager = await make_user(session, role="facility_manager", grant_institution=institution)
        inst = await service.create_instrument(session, await principal_for(session, manager),
                                               _create(institution.id, "RACE-1", []))  # type: ignore[arg-type]
        with pytest.raises(RuleViolation) as caught:
            await service._link_chains(session, [{"instrument_id": inst.id, "chain_id": 2**31 - 1}])
        assert [(p.field, p.code) for p in caught.value.problems] == [("chains", "unknown_chain")]
        assert await _count(session, "RACE-1") == 1  # the foreign key's refusal went with its savepoint only

    async def test_the_page_shows_the_form_again_and_keeps_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The tag is there when the form is checked and gone when the links are written (another admin deleted
        it in between): the instrument row written before the links must not stay behind the page's commit."""
        institution = await make_institution(session, name="竞态测试大学")
        user = await make_user(session, role="facility_manager", grant_institution=institution)
        await login_web(session, client, user)
        gone = Chain(name="刚删除的链")
        session.add(gone)
        await session.flush()
        real_reference_data = service.reference_data

        async def reference_then_delete(*args: Any, **kwargs: Any) -> Any:
            found = await real_reference_data(*args, **kwargs)
            await session.delete(gone)
            await session.flush()
            return found

        monkeypatch.setattr(service, "reference_data", reference_then_delete)
        form = {**FORM, "institution_id": str(institution.id), "asset_number": "RACE-PAGE", "chains": "刚删除的链"}
        r = await client.post("/instruments/new", data=form)
        assert r.status_code == 422, r.text
        assert 'id="e-chains"' in r.text and "刚被管理员删除" in r.text
        assert await _count(session, "RACE-PAGE") == 0


@pytest.fixture(scope="module")
def scratch(test_database: TestDatabase) -> Iterator[Scratch]:
    db = Scratch.create(test_database, f"booking_chain_race_{id(test_database) % 100000}")
    try:
        yield db
    finally:
        db.close()


@pytest.mark.race
async def test_a_tag_deleted_while_an_instrument_is_saved_with_it(scratch: Scratch) -> None:
    """Committed transactions on two connections: the admin's delete holds the tag's row; the manager's save
    waits on it in the links' foreign key, then finds it gone and is refused with nothing written."""
    engine = scratch.engine()
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with sessions() as setup:
            institution = await make_institution(setup, name="并发删除标签研究院")
            manager = await make_user(setup, role="facility_manager", grant_institution=institution)
            admin = await make_user(setup, role="platform_admin")
            chain = Chain(name="并发删除的链")
            setup.add(chain)
            await setup.flush()
            manager_p, admin_p = await principal_for(setup, manager), await principal_for(setup, admin)
            await setup.commit()
        assert institution.id is not None and chain.id is not None

        async with sessions() as deleting, sessions() as saving, sessions() as watching:
            await service.delete_chain(deleting, admin_p, chain.id)  # row locked and gone, not committed yet
            saver = await saving.scalar(text("SELECT pg_backend_pid()"))

            async def save() -> None:
                await service.create_instrument(saving, manager_p, _create(institution.id, "RACE-2", [chain.name]))

            task = asyncio.create_task(save())
            # Wait until the save really waits on the delete's lock (its links' foreign key), however slow the
            # machine: only then is it the foreign key, not the form's check, that finds the tag gone.
            for _ in range(300):
                waiting = await watching.scalar(
                    text("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid"), {"pid": saver})
                await watching.commit()
                if waiting or task.done():
                    break
                await asyncio.sleep(0.05)
            assert waiting and not task.done(), "the save should wait for the delete's lock"
            await deleting.commit()
            with pytest.raises(RuleViolation) as caught:
                await asyncio.wait_for(task, 10)
            assert [(p.field, p.code) for p in caught.value.problems] == [("chains", "unknown_chain")]
            assert caught.value.detail.startswith("所选的产业链标签中有标签刚被管理员删除或改名")  # the foreign key's path
            await saving.rollback()

        async with sessions() as check:
            assert await _count(check, "RACE-2") == 0
            assert await check.get(Chain, chain.id) is None
    finally:
        await engine.dispose()
