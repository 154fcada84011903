"""HTML pages for notifications, and the unread badge the header loads with htmx."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from booking.auth.deps import CsrfDep, WebUser, load_web_principal
from booking.core.db import SessionDep
from booking.core.web import is_htmx, redirect, render
from booking.notify import repository as repo
from booking.notify import service

router = APIRouter(include_in_schema=False, dependencies=[Depends(load_web_principal), CsrfDep])

PAGE_SIZE = 30


async def _page(request: Request, session: SessionDep, principal: WebUser, offset: int,
                flash: str | None = None) -> Response:
    rows, total, unread = await service.list_mine(session, principal.id, limit=PAGE_SIZE, offset=offset)
    ctx = {"rows": rows, "total": total, "unread": unread, "offset": offset, "page_size": PAGE_SIZE,
           "flash": flash}
    # An htmx action re-renders only the list; the badge in the header is updated out of band.
    return render(request, "notify/notifications.html", ctx, block="list")


@router.get("/notifications")
async def notifications(request: Request, session: SessionDep, principal: WebUser,
                        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Response:
    return await _page(request, session, principal, offset)


@router.get("/notifications/badge")
async def badge(request: Request, session: SessionDep, principal: WebUser) -> Response:
    unread = await repo.unread_count(session, principal.id)
    return render(request, "notify/_badge.html", {"unread": unread, "oob": False})


@router.post("/notifications/{notification_id}/read")
async def read_one(request: Request, session: SessionDep, principal: WebUser, notification_id: int,
                   offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Response:
    await service.mark_read(session, principal.id, notification_id)
    if is_htmx(request):
        return await _page(request, session, principal, offset)
    return redirect(request, f"/notifications?offset={offset}")


@router.post("/notifications/read-all")
async def read_all(request: Request, session: SessionDep, principal: WebUser) -> Response:
    await service.mark_all_read(session, principal.id)
    if is_htmx(request):
        return await _page(request, session, principal, 0, flash="已全部标为已读")
    return redirect(request, "/notifications")
