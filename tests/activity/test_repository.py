"""Reading the activity log: its order."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from booking.activity import repository
from booking.activity.service import record


async def test_unsealed_entries_first_in_written_order(session: AsyncSession) -> None:
    for n in range(3):
        record(session, actor_id=None, action=f"test.order_{n}", target_type="system", target_id=n)
    await session.flush()
    rows, _ = await repository.list_entries(session, action="test.order_", target_type=None, target_id=None,
                                            actor_id=None, limit=10, offset=0)
    assert [r.action for r in rows] == ["test.order_2", "test.order_1", "test.order_0"]
