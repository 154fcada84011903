"""Every action code and object type the code records has a Chinese label on the activity page."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role
from booking.activity.labels import ACTION_LABELS, TARGET_LABELS
from booking.activity.service import record
from booking.reservations.rules import TRANSITIONS
from tests.factories import login_web, make_user

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("booking", "instruments", "scheduling") for p in (ROOT / d).rglob("*.py")]


def _found(pattern: str) -> set[str]:
    return {m for p in SOURCES for m in re.findall(pattern, p.read_text(encoding="utf-8"))}


def test_every_recorded_action_has_a_label() -> None:
    actions = _found(r'action="([a-z_]+\.[a-z_]+)"')
    assert len(actions) > 50  # the scan finds the calls
    actions |= {f"booking.{a}" for a in TRANSITIONS} | {"role_request.approved", "role_request.rejected"}
    assert sorted(actions - set(ACTION_LABELS)) == []


def test_every_target_type_has_a_label() -> None:
    targets = _found(r'target_type="([a-z_]+)"')
    assert len(targets) > 15
    assert sorted(targets - set(TARGET_LABELS)) == []


async def test_page_shows_labels_and_keeps_codes(client: httpx.AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(session, role=Role.platform_admin, institution_id=None)
    record(session, actor_id=admin.id, action="instrument.retired", target_type="instrument", target_id=7)
    await session.flush()
    await login_web(session, client, admin)
    page = await client.get("/admin/activity", params={"action": "instrument.retired"})
    assert "仪器退役" in page.text and "<code>instrument.retired</code>" in page.text and "仪器 7" in page.text

