"""HTML pages for platform administration: role approvals, users, the activity log."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from booking.accounts import repository as accounts_repo
from booking.accounts import service as accounts
from booking.activity import repository as activity_repo
from booking.activity.labels import ACTION_LABELS, TARGET_LABELS
from booking.auth.deps import CsrfDep, WebAdmin, WebAuditor, load_web_principal
from booking.core.clock import utcnow
from booking.core.db import SessionDep
from booking.core.errors import Forbidden
from booking.core.forms import form_note
from booking.core.web import redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(load_web_principal), CsrfDep])


# Rows per page of the role-request list.
REQUESTS_PAGE = 50


@router.get("/admin/role-requests")
async def role_requests(request: Request, session: SessionDep, principal: WebAdmin,
                        status: Annotated[str, Query(pattern="^(pending|approved|rejected|all)$")] = "pending",
                        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
                        did: Annotated[str, Query(pattern="^(approve|reject)?$")] = "") -> Response:
    rows, total = await accounts_repo.list_role_requests(session, status=None if status == "all" else status,
                                                         user_id=None, limit=REQUESTS_PAGE, offset=offset)
    users = await accounts_repo.users_by_id(session, [r.user_id for r in rows])
    institutions = await accounts_repo.institution_names_of(
        session, [r.institution_id for r in rows if r.institution_id is not None])
    return render(request, "admin/role_requests.html",
                  {"rows": rows, "total": total, "status": status, "users": users, "institutions": institutions,
                   "offset": offset, "page_size": REQUESTS_PAGE, "params": {"status": status},
                   "flash": _DECIDED.get(did)})


_DECIDED = {"approve": "已批准该申请，角色已开通，申请人会收到通知", "reject": "已拒绝该申请，申请人会收到通知"}


@router.post("/admin/role-requests/{request_id}/{decision}")
async def decide(request: Request, session: SessionDep, principal: WebAdmin, request_id: int, decision: str
                 ) -> Response:
    if decision not in ("approve", "reject"):
        raise Forbidden("未知操作")
    form = await request.form()
    note = form_note(form, "note")
    await accounts.decide_role_request(session, principal, request_id, approve=decision == "approve", note=note)
    return redirect(request, f"/admin/role-requests?did={decision}")


@router.get("/admin/users")
async def users(request: Request, session: SessionDep, principal: WebAdmin,
                q: Annotated[str | None, Query(max_length=100)] = None,
                offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    rows, total = await accounts_repo.list_users(session, q=q, institution_id=None, limit=50, offset=offset)
    grants = await accounts_repo.grants_of(session, [u.id for u in rows])  # type: ignore[misc]
    institutions = await accounts_repo.institution_names_of(
        session, [u.institution_id for u in rows if u.institution_id is not None])
    return render(request, "admin/users.html", {"rows": rows, "total": total, "grants": grants, "q": q or "",
                                                "institutions": institutions,
                                                "offset": offset, "params": {"q": q}}, block="results")


SEAL_STALLED_AFTER = timedelta(minutes=2)


@router.get("/admin/activity")
async def activity(request: Request, session: SessionDep, principal: WebAuditor,
                   action: Annotated[str | None, Query(max_length=80)] = None,
                   offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    if not (principal.is_admin or principal.is_provincial_auditor):
        raise Forbidden("只有平台管理员和省级审计人员可以查看全部操作日志")
    rows, total = await activity_repo.list_entries(session, action=action, target_type=None, target_id=None,
                                                   actor_id=None, limit=50, offset=offset)
    names = await accounts_repo.names_of(session, [e.actor_id for e in rows if e.actor_id is not None])
    waiting, oldest = await activity_repo.oldest_unsealed(session)
    # The seal job runs every few seconds: entries waiting minutes mean the job runner is not running.
    stalled = waiting if oldest is not None and utcnow() - oldest > SEAL_STALLED_AFTER else 0
    return render(request, "admin/activity.html", {"rows": rows, "total": total, "action": action or "",
                                                   "stalled": stalled, "stalled_since": oldest,
                                                   "ACTION_LABELS": ACTION_LABELS, "TARGET_LABELS": TARGET_LABELS,
                                                   "offset": offset, "params": {"action": action},
                                                   "names": names},
                  block="results")
