"""Test database: the same rule as the service (DATABASE_URL, else embedded PostgreSQL), one fresh database per
test process, migrated by Alembic once."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

REPO = Path(__file__).resolve().parent.parent


def _server_url() -> tuple[str, str | None]:
    """(asyncpg admin DSN for the server, socket dir when embedded)."""
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        url = url.replace("postgresql+asyncpg://", "postgresql://")
        return url, None
    from booking.core.embedded import start_embedded

    data_dir = Path(os.environ.get("BOOKING_TEST_DATA_DIR", REPO / ".test-data"))
    socket_dir, _handle = start_embedded(data_dir)
    return f"postgresql://postgres@/postgres?host={socket_dir}", socket_dir


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def as_role(url: str, role: str, password: str) -> str:
    """`url` logging in as `role` instead."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{role}:{password}@{host}", parts.path, parts.query, parts.fragment))


async def create_capped_role(admin_dsn: str, role: str, connections: int) -> str:
    """A login role allowed `connections` connections at once, with the admin's privileges by membership; returns
    its password. It is no superuser, so the cap applies: the server refuses its next connection with SQLSTATE
    53300, as at max_connections, without taking slots from anything else on a shared cluster."""
    password = secrets.token_hex(16)
    conn = await asyncpg.connect(admin_dsn)
    try:
        admin = await conn.fetchval("SELECT current_user")
        await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        await conn.execute(f"""CREATE ROLE "{role}" LOGIN PASSWORD '{password}' CONNECTION LIMIT {int(connections)}""")
        await conn.execute(f'GRANT "{admin}" TO "{role}"')
    finally:
        await conn.close()
    return password


async def drop_role(admin_dsn: str, role: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
        await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


async def _create(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        version = int(await conn.fetchval("SHOW server_version_num"))
        locale = ("LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8'" if version >= 170000
                  else "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'")
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\' {locale}')
        # The test cluster is disposable: skip waiting for fsync on commit.
        await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    finally:
        await conn.close()


async def _drop(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class TestDatabase:
    __test__ = False  # a helper, not a test class

    def __init__(self) -> None:
        self.admin_dsn, self.socket_dir = _server_url()
        self.name = f"booking_test_{os.getpid()}"
        self.dsn = _with_database(self.admin_dsn, self.name)
        self.url = self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)

    def create(self) -> None:
        asyncio.run(_create(self.admin_dsn, self.name))

    def drop(self) -> None:
        asyncio.run(_drop(self.admin_dsn, self.name))

    def migrate(self) -> None:
        from booking.core import migrations

        migrations.upgrade(self.url)
