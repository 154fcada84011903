"""JSON API for the activity log (platform admins and provincial auditors)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from booking.activity import repository as activity_repo
from booking.auth.deps import ApiAuditor
from booking.core.db import SessionDep
from booking.core.errors import Forbidden
from booking.core.pagination import Page, PageDep

router = APIRouter(prefix="/api/v1", tags=["activity"])


class ActivityPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    seq: int | None
    at: datetime
    actor_id: int | None
    action: str
    target_type: str
    target_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
    hash: str | None


@router.get("/activity", response_model=Page[ActivityPublic], summary="Activity log (admins, provincial auditors)")
async def list_activity(
    principal: ApiAuditor, session: SessionDep, page: PageDep,
    action: Annotated[str | None, Query(max_length=80)] = None,
    target_type: Annotated[str | None, Query(max_length=40)] = None,
    target_id: Annotated[str | None, Query(max_length=80)] = None,
    actor: Annotated[int | None, Query()] = None,
) -> Page[ActivityPublic]:
    if not (principal.is_admin or principal.is_provincial_auditor):
        raise Forbidden("只有平台管理员和省级审计人员可以查看全部操作日志")
    rows, total = await activity_repo.list_entries(session, action=action, target_type=target_type,
                                                   target_id=target_id, actor_id=actor, limit=page.limit,
                                                   offset=page.offset)
    return Page(items=[ActivityPublic.model_validate(r) for r in rows], total=total, limit=page.limit,
                offset=page.offset)
