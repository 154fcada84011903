"""The database refuses to commit an instrument whose audit history is out of step (revision 0011).

The test's transaction never commits, so each case fires the deferred check with SET CONSTRAINTS ... IMMEDIATE,
which checks everything pending at that moment, inside a savepoint that a refusal rolls back."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role
from instruments import service
from instruments.models import Instrument
from instruments.schemas import InstrumentUpdate
from tests.factories import make_instrument, make_user, principal_for

CHECK = text("SET CONSTRAINTS instrument_history_matches IMMEDIATE")


async def _checked(session: AsyncSession, *statements: str, **params: Any) -> str | None:
    """Run the statements, then the check: None if it passes, else the database's message."""
    try:
        async with session.begin_nested():
            for statement in statements:
                await session.execute(text(statement), params)
            await session.execute(CHECK)
            await session.execute(text("SET CONSTRAINTS instrument_history_matches DEFERRED"))
    except DBAPIError as exc:
        return str(exc.orig)
    return None


@pytest.mark.parametrize(
    ("statements", "problem"),
    [
        (["UPDATE instruments SET sharing_mode = 'none' WHERE id = :iid"],
         "its open history row does not hold its current values"),
        (["UPDATE instruments SET original_value = original_value + 1 WHERE id = :iid"],
         "its open history row does not hold its current values"),
        (["UPDATE instruments SET city_code = '510700' WHERE id = :iid"],
         "its open history row does not hold its current values"),
        (["DELETE FROM instrument_history WHERE instrument_id = :iid"], "it has no open history row"),
        (["UPDATE instrument_history SET valid_to = '2100-01-01' WHERE instrument_id = :iid"],
         "it has no open history row"),
        (["UPDATE instruments SET retired_at = now(), retired_reason = '报废' WHERE id = :iid"],
         "it is retired but its history has an open row"),
    ],
)
async def test_a_change_without_its_history_is_refused(session: AsyncSession, statements: list[str],
                                                      problem: str) -> None:
    inst = await make_instrument(session, city_code="510100", sharing_mode="external")
    message = await _checked(session, *statements, iid=inst.id)
    assert message is not None and problem in message and f"instrument {inst.id}" in message


@pytest.mark.parametrize(
    "statements",
    [
        # A change with its history, written by hand the way the application writes it.
        ["UPDATE instruments SET sharing_mode = 'none' WHERE id = :iid",
         "UPDATE instrument_history SET valid_to = '2100-01-01' WHERE instrument_id = :iid AND valid_to IS NULL",
         "INSERT INTO instrument_history (instrument_id, valid_from, sharing_mode, status, original_value,"
         " institution_id, city_code) SELECT id, '2100-01-01', sharing_mode, status, original_value, institution_id,"
         " city_code FROM instruments WHERE id = :iid"],
        # Fields the audit does not count by need no history.
        ["UPDATE instruments SET name = '改名后的仪器', fee_text = '每小时 200 元' WHERE id = :iid"],
        # Nothing to keep when the instrument goes (its history goes with it).
        ["DELETE FROM instruments WHERE id = :iid"],
    ],
)
async def test_a_change_with_its_history_passes(session: AsyncSession, statements: list[str]) -> None:
    inst = await make_instrument(session)
    assert await _checked(session, *statements, iid=inst.id) is None


async def test_the_application_keeps_history_in_step(session: AsyncSession) -> None:
    from booking.accounts.models import Institution

    inst = await make_instrument(session, sharing_mode="external", status="normal")
    institution = await session.get_one(Institution, inst.institution_id)
    actor = await principal_for(session, await make_user(session, role=Role.facility_manager,
                                                         grant_institution=institution))
    await service.update_instrument(session, actor, inst.id,  # type: ignore[arg-type]
                                    InstrumentUpdate(sharing_mode="internal", status="standby"))
    assert await _checked(session) is None
    await service.retire_instrument(session, actor, inst.id, "报废")  # type: ignore[arg-type]
    assert await _checked(session) is None
    assert (await session.get_one(Instrument, inst.id)).retired_at is not None
