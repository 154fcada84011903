"""PostgreSQL advisory locks: one holder across every process of the service."""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a lock name (Python's hash() differs between processes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


async def try_xact_lock(session: AsyncSession, name: str) -> bool:
    """Take a transaction-scoped lock if free; released automatically at commit or rollback."""
    result = await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key(name)})
    return bool(result.scalar())


async def xact_lock(session: AsyncSession, name: str) -> None:
    """Wait for a transaction-scoped lock."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})
