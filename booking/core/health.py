"""Health and metrics endpoints."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from booking.core.db import get_sessionmaker
from booking.core.migrations import current_revision_sync, head_revision

router = APIRouter(tags=["ops"])
_HEAD = head_revision()


async def _current_revision() -> str | None:
    async with get_sessionmaker()() as session:
        conn = await session.connection()
        return await conn.run_sync(current_revision_sync)


@router.get("/healthz", summary="200 when the database answers and migrations are at head, else 503")
async def healthz() -> JSONResponse:
    try:
        current = await asyncio.wait_for(_current_revision(), timeout=3)
    except Exception as exc:  # any failure to reach the database is 'unhealthy', never a 500
        return JSONResponse({"status": "unavailable", "database": "down", "error": type(exc).__name__},
                            status_code=503)
    if current != _HEAD:
        return JSONResponse({"status": "unavailable", "database": "up", "migrations": {"current": current,
                             "head": _HEAD}}, status_code=503)
    return JSONResponse({"status": "ok", "database": "up", "migrations": {"current": current, "head": _HEAD}})


@router.get("/metrics", summary="Prometheus metrics of this process")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
