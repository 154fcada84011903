"""JSON API for the signed-in user's notifications."""

from __future__ import annotations

from fastapi import APIRouter

from booking.auth.deps import ApiUser
from booking.core.db import SessionDep
from booking.core.pagination import PageDep
from booking.notify import service
from booking.notify.schemas import NotificationPage, NotificationPublic, ReadAllResult

router = APIRouter(prefix="/api/v1", tags=["notifications"])


@router.get("/notifications", response_model=NotificationPage, summary="My notifications, unread first")
async def list_notifications(session: SessionDep, principal: ApiUser, page: PageDep) -> NotificationPage:
    rows, total, unread = await service.list_mine(session, principal.id, limit=page.limit, offset=page.offset)
    return NotificationPage(items=[NotificationPublic.model_validate(n) for n in rows], total=total,
                            limit=page.limit, offset=page.offset, unread=unread)


@router.post("/notifications/read-all", response_model=ReadAllResult, summary="Mark all my notifications read")
async def read_all(session: SessionDep, principal: ApiUser) -> ReadAllResult:
    updated = await service.mark_all_read(session, principal.id)
    return ReadAllResult(updated=updated, unread=0)


@router.post("/notifications/{notification_id}/read", response_model=NotificationPublic,
             summary="Mark one of my notifications read")
async def read_one(session: SessionDep, principal: ApiUser, notification_id: int) -> NotificationPublic:
    return NotificationPublic.model_validate(await service.mark_read(session, principal.id, notification_id))
