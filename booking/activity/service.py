"""Recording and verifying the activity log.

`record` adds the entry to the caller's session, so it commits or rolls back with the change it describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.activity.models import ActivityEntry
from booking.core.context import request_id_var


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def snapshot(obj: Any, fields: list[str] | None = None, exclude: set[str] | None = None) -> dict[str, Any]:
    """A JSON-ready copy of a model's fields for the before/after columns."""
    data = obj.model_dump() if hasattr(obj, "model_dump") else dict(obj)
    exclude = (exclude or set()) | {"password_hash", "digest"}
    if fields is not None:
        data = {k: data.get(k) for k in fields}
    return _jsonable({k: v for k, v in data.items() if k not in exclude})


def changed(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the fields that changed, to keep entries readable."""
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


def record(
    session: AsyncSession,
    *,
    actor_id: int | None,
    action: str,
    target_type: str,
    target_id: Any = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> ActivityEntry:
    entry = ActivityEntry(
        actor_id=actor_id,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        before=_jsonable(before) if before is not None else None,
        after=_jsonable(after) if after is not None else None,
        request_id=request_id_var.get(),
    )
    session.add(entry)
    return entry


async def seal(session: AsyncSession, max_rows: int = 100_000) -> int:
    """Link unsealed rows into the hash chain; returns how many were sealed. Safe to run from any process."""
    return int((await session.execute(text("SELECT activity_seal(:n)"), {"n": max_rows})).scalar() or 0)


@dataclass
class VerifyResult:
    checked: int
    problems: list[str]
    unsealed: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


_VERIFY_SQL = text(
    """
    SELECT id, seq, hash, prev_hash,
           activity_row_hash(prev_hash, seq, at, actor_id, action, target_type, target_id, before, after,
                             request_id) AS expected,
           lag(hash) OVER (ORDER BY seq) AS previous_hash,
           lag(seq) OVER (ORDER BY seq) AS previous_seq
    FROM activity_log
    WHERE seq IS NOT NULL
    ORDER BY seq
    """
)


async def verify_chain(session: AsyncSession) -> VerifyResult:
    """Recompute every row's hash and check each row links to the one before it.

    Detects edited rows (hash mismatch), removed or reordered rows (seq gaps, broken links) and inserted
    rows that bypassed the trigger.
    """
    problems: list[str] = []
    checked = 0
    unsealed = int((await session.execute(text("SELECT count(*) FROM activity_log WHERE seq IS NULL"))).scalar() or 0)
    result = await session.stream(_VERIFY_SQL)
    async for row in result:
        checked += 1
        if row.hash is None:
            problems.append(f"row id={row.id}: sequenced but without a hash")
            continue
        if row.hash != row.expected:
            problems.append(f"row seq={row.seq} id={row.id}: content does not match its hash (edited)")
        if row.previous_seq is None:
            if row.seq != 1 or row.prev_hash is not None:
                problems.append(f"row seq={row.seq}: chain does not start at seq 1 (rows removed)")
        else:
            if row.seq != row.previous_seq + 1:
                problems.append(f"rows seq={row.previous_seq}..{row.seq}: gap in the chain (rows removed)")
            if row.prev_hash != row.previous_hash:
                problems.append(f"row seq={row.seq}: does not link to the row before it")
    return VerifyResult(checked=checked, problems=problems, unsealed=unsealed)
