"""The request's session (booking.core.db._request_session): committed when the request touched it, left alone when
it did not."""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.core.db import _request_session, _used
from instruments.models import Chain


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
