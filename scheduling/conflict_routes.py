"""HTML pages of the conflict-resolving scheduler: waitlist and offers (with a countdown), flexible requests,
equivalence groups, allocation rounds (preview and publish), and the rule-change simulation.

Each handler parses the form with the API's schema, calls the same service as the API, and on a refused input
renders the form again with its errors (422/409) — the savepoint keeps a refused change from leaving anything."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from booking.auth.deps import CsrfDep, WebManager, WebPrincipal, WebUser, load_web_principal
from booking.core.clock import LOCAL_TZ, to_local, utcnow
from booking.core.db import SessionDep, refusable
from booking.core.errors import DomainError, Problem, RuleViolation
from booking.core.forms import errors_by_field, form_values, parse_form
from booking.core.web import is_htmx, redirect, render
from booking.reservations.models import SERVICE_MODE_LABELS, STATUS_LABELS
from booking.reservations.queue import managed_instrument_ids
from instruments.service import get_visible
from scheduling import conflict_repository as repo
from scheduling import editor, equivalence, explain, flexible, queries, rounds, waitlist
from scheduling.conflict_schemas import FlexibleIn, GroupIn, GroupUpdate, MemberIn, SimulationIn, WaitlistIn
from scheduling.schemas import RulesIn, WindowIn

router = APIRouter(include_in_schema=False, dependencies=[Depends(load_web_principal), CsrfDep])

FIELD_LABELS = {
    "instrument_id": "仪器", "instrument_ids": "仪器", "start": "开始时间", "end": "结束时间", "purpose": "用途",
    "duration_minutes": "所需时长", "window_start": "最早开始", "window_end": "最晚结束", "deadline": "最晚何时需要确定",
    "preferred_hours": "偏好时段", "name": "名称", "override_reason": "混合分类的理由", "capability_tags": "能力标签",
    "allocation_mode": "分配方式", "round_weekday": "截止星期", "round_time": "截止钟点",
    "user_cap_hours": "每人上限", "institution_cap_hours": "每单位上限", "external_min_share": "外部用户最低占比",
    "offer": "候补时段", "status": "状态", "user": "用户", "cutoff_at": "本轮截止", "windows": "开放时段",
    "service_mode": "服务方式", "tags": "能力标签", "project_name": "项目名称", "funding_source": "经费来源",
    "sample_notes": "样品说明", "days": "查看天数",
}
OUTCOME_LABELS = {"open": "保留中", "accepted": "已接受", "declined": "已放弃", "expired": "已过期",
                  "withdrawn": "已撤回", "auto_booked": "已自动预约"}
WAITLIST_LABELS = {"waiting": "排队中", "offered": "已为您保留", "fulfilled": "已预约", "cancelled": "已取消",
                   "lapsed": "已过期"}
FLEXIBLE_LABELS = {"waiting": "等待空档", "placed": "已安排", "collected": "已加入轮次", "granted": "已获批",
                   "refused": "未获批", "expired": "已过期", "cancelled": "已撤销"}
ROUND_LABELS = {"open": "收集中", "previewed": "已预览", "published": "已发布"}
WEEKDAYS = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")


def _ctx(**kw: Any) -> dict[str, Any]:
    return {"field_labels": FIELD_LABELS, "OUTCOME_LABELS": OUTCOME_LABELS, "WAITLIST_LABELS": WAITLIST_LABELS,
            "FLEXIBLE_LABELS": FLEXIBLE_LABELS, "ROUND_LABELS": ROUND_LABELS, "STATUS_LABELS": STATUS_LABELS,
            "SERVICE_MODE_LABELS": SERVICE_MODE_LABELS, "WEEKDAYS": WEEKDAYS, "errors": {}, "problems": [],
            "values": {}, "now": utcnow(), **kw}


def _instant(value: str | None) -> str | None:
    """A datetime-local field is Beijing wall-clock time (the pages say so): attach +08:00; leave anything that
    does not parse for the schema to report against its field."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return value
    return (parsed.replace(tzinfo=LOCAL_TZ) if parsed.tzinfo is None else parsed).isoformat()


def _local_input(value: datetime | str | None) -> str:
    """An instant as a datetime-local value in Beijing time."""
    if not value:
        return ""
    instant = datetime.fromisoformat(value) if isinstance(value, str) else value
    return to_local(instant).strftime("%Y-%m-%dT%H:%M")


async def _form(request: Request) -> dict[str, str]:
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


def _checked(form: dict[str, str], name: str) -> bool:
    return form.get(name) in ("on", "true", "1")


# ---- waitlist -----------------------------------------------------------------------------------------------------

# Rows per page of a user's waitlist entries and flexible requests.
WAITLIST_PAGE = 50
FLEXIBLE_PAGE = 50


async def _waitlist_page(request: Request, session: SessionDep, principal: WebUser, *, offset: int = 0,
                         status_code: int = 200, **extra: Any) -> Response:
    rows, total = await waitlist.mine(session, principal, active_only=False, limit=WAITLIST_PAGE, offset=offset)
    # Slots held for the user are shown above the list whatever page of it is open.
    offered, _ = await waitlist.mine(session, principal, active_only=False, statuses=("offered",),
                                     limit=WAITLIST_PAGE, offset=0)
    instruments = await repo.instruments(session, [o.instrument_id for v in rows + offered for o in v.offers])
    return render(request, "scheduling/waitlist.html",
                  _ctx(rows=rows, offered=offered, offer_instruments=instruments, total=total, offset=offset,
                       page_size=WAITLIST_PAGE, **extra),
                  block="waitlist_body", status_code=status_code)


@router.get("/waitlist")
async def waitlist_page(request: Request, session: SessionDep, principal: WebUser,
                        joined: int = 0, accepted: int = 0,
                        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Response:
    flash = "已加入候补队列：有空档时会为您保留并通知您" if joined else (
        f"已接受，预约 #{accepted} 已生成" if accepted else None)
    return await _waitlist_page(request, session, principal, offset=offset, flash=flash)


async def _join_form(request: Request, session: SessionDep, principal: WebUser, values: dict[str, Any], *,
                     status_code: int = 200, problems: list[Problem] | None = None) -> Response:
    inst = await get_visible(session, principal, int(values["instrument_id"]))
    _, group, others = await equivalence.equivalents_of(session, principal, inst.id)  # type: ignore[arg-type]
    return render(request, "scheduling/waitlist_new.html",
                  _ctx(inst=inst, group=group, equivalents=others, values=values, problems=problems or [],
                       errors=errors_by_field(problems or [])), status_code=status_code)


@router.get("/waitlist/new")
async def waitlist_new(request: Request, session: SessionDep, principal: WebUser,
                       instrument_id: Annotated[int, Query()],
                       start: Annotated[str | None, Query(max_length=40)] = None,
                       end: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    values = {"instrument_id": instrument_id, "start": _local_input(start) if start else "",
              "end": _local_input(end) if end else ""}
    return await _join_form(request, session, principal, values)


@router.post("/waitlist")
async def waitlist_join(request: Request, session: SessionDep, principal: WebUser) -> Response:
    form = await _form(request)
    raw: dict[str, Any] = {k: form.get(k, "") for k in ("instrument_id", "purpose", "project_name", "service_mode",
                                                       "duration_minutes")}
    raw.update(start=_instant(form.get("start")) or "", end=_instant(form.get("end")) or "",
               any_equivalent=_checked(form, "any_equivalent"), auto_confirm=_checked(form, "auto_confirm"))
    if form.get("kind") != "window":
        raw.pop("duration_minutes")
    try:
        if form.get("kind") == "window" and not str(raw.get("duration_minutes") or "").strip():
            # Without a length "any slot in the window" would silently become "the whole window".
            raise RuleViolation("请填写所需时长", problems=[Problem(
                "duration_minutes", "missing", "选择“在时间范围内任意空出的时段均可”时，请填写所需时长（分钟）")])
        data = parse_form(WaitlistIn, raw)
        async with refusable(session):
            await waitlist.join(session, principal, data)
    except DomainError as exc:
        if exc.status in (403, 404) or not form.get("instrument_id", "").isdigit():
            raise
        return await _join_form(request, session, principal, form_values(form), status_code=exc.status,
                                problems=exc.problems or [Problem(None, "error", exc.detail)])
    return redirect(request, "/waitlist?joined=1")


@router.post("/waitlist/{entry_id:int}/cancel")
async def waitlist_cancel(request: Request, session: SessionDep, principal: WebUser, entry_id: int) -> Response:
    await waitlist.cancel(session, principal, entry_id)
    return redirect(request, "/waitlist")


@router.post("/waitlist/offers/{offer_id:int}/accept")
async def offer_accept(request: Request, session: SessionDep, principal: WebUser, offer_id: int) -> Response:
    try:
        async with refusable(session):
            booking = await waitlist.accept(session, principal, offer_id)
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        # A 410 keeps its change (the expired hold was released and passed on): commit it with the page.
        return await _waitlist_page(request, session, principal, status_code=exc.status, flash_kind="error",
                                    flash="；".join(p.message for p in exc.problems) or exc.detail)
    return redirect(request, f"/waitlist?accepted={booking.id}")


@router.post("/waitlist/offers/{offer_id:int}/decline")
async def offer_decline(request: Request, session: SessionDep, principal: WebUser, offer_id: int) -> Response:
    await waitlist.decline(session, principal, offer_id)
    return redirect(request, "/waitlist")


# ---- flexible requests --------------------------------------------------------------------------------------------

@router.get("/requests/flexible")
async def flexible_list(request: Request, session: SessionDep, principal: WebUser,
                        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Response:
    rows, total = await repo.flexible_of_user(session, principal.id, limit=FLEXIBLE_PAGE, offset=offset)
    bookings = await flexible.bookings_of(session, rows)
    instruments = await repo.instruments(session, [r.instrument_id for r in rows] +
                                         [b.instrument_id for b in bookings.values()])
    return render(request, "scheduling/flexible_list.html",
                  _ctx(rows=rows, bookings=bookings, instruments=instruments, total=total, offset=offset,
                       page_size=FLEXIBLE_PAGE))


async def _flexible_form(request: Request, session: SessionDep, principal: WebUser, values: dict[str, Any], *,
                         status_code: int = 200, problems: list[Problem] | None = None) -> Response:
    inst = None
    group = None
    others: list[Any] = []
    if str(values.get("instrument_id", "")).isdigit():
        inst = await get_visible(session, principal, int(values["instrument_id"]))
        _, group, others = await equivalence.equivalents_of(session, principal, inst.id)  # type: ignore[arg-type]
    return render(request, "scheduling/flexible_new.html",
                  _ctx(inst=inst, group=group, equivalents=others, values=values, problems=problems or [],
                       errors=errors_by_field(problems or [])), status_code=status_code)


@router.get("/requests/flexible/new")
async def flexible_new(request: Request, session: SessionDep, principal: WebUser,
                       instrument_id: Annotated[int | None, Query()] = None) -> Response:
    tomorrow = to_local(utcnow()).date() + timedelta(days=1)
    values = {"instrument_id": instrument_id or "", "duration_minutes": "120",
              "window_start": f"{tomorrow.isoformat()}T08:00",
              "window_end": f"{(tomorrow + timedelta(days=6)).isoformat()}T20:00", "any_equivalent": "on"}
    return await _flexible_form(request, session, principal, values)


@router.post("/requests/flexible")
async def flexible_submit(request: Request, session: SessionDep, principal: WebUser) -> Response:
    form = await _form(request)
    raw: dict[str, Any] = {k: form.get(k, "") for k in ("instrument_id", "duration_minutes", "purpose",
                                                       "project_name", "funding_source", "service_mode")}
    raw.update(window_start=_instant(form.get("window_start")) or "", window_end=_instant(form.get("window_end")) or "",
               deadline=_instant(form.get("deadline")) or "", any_equivalent=_checked(form, "any_equivalent"))
    if form.get("preferred_start") or form.get("preferred_end"):
        raw["preferred_hours"] = [{"start": form.get("preferred_start") or "", "end": form.get("preferred_end") or ""}]
    try:
        data = parse_form(FlexibleIn, raw)
        async with refusable(session):
            row = await flexible.submit(session, principal, data)
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        return await _flexible_form(request, session, principal, form_values(form), status_code=exc.status,
                                    problems=exc.problems or [Problem(None, "error", exc.detail)])
    return redirect(request, f"/requests/flexible/{row.id}")


@router.get("/requests/flexible/{request_id:int}")
async def flexible_detail(request: Request, session: SessionDep, principal: WebUser, request_id: int) -> Response:
    row = await flexible.get_own(session, principal, request_id)
    bookings = await flexible.bookings_of(session, [row])
    booking = bookings.get(row.booking_id) if row.booking_id else None
    ids = [row.instrument_id] + ([booking.instrument_id] if booking else [])
    instruments = await repo.instruments(session, ids)
    round_row = await repo.round_(session, row.round_id) if row.round_id else None
    return render(request, "scheduling/flexible_detail.html",
                  _ctx(r=row, booking=booking, instruments=instruments, round=round_row))


@router.post("/requests/flexible/{request_id:int}/cancel")
async def flexible_cancel(request: Request, session: SessionDep, principal: WebUser, request_id: int) -> Response:
    await flexible.cancel(session, principal, request_id)
    return redirect(request, f"/requests/flexible/{request_id}")


# ---- equivalence groups -------------------------------------------------------------------------------------------

# A picker lists at most this many instruments; the search box and the classification code narrow it (a manager of
# a university may manage thousands).
PICK_LIMIT = 50
PickQuery = Annotated[str | None, Query(max_length=50, description="名称、型号或内部编码")]
PickCategory = Annotated[str | None, Query(pattern=r"^\d{0,6}$", description="分类编码（前缀）")]


async def _pick(session: SessionDep, principal: WebManager, *, q: str | None, category: str | None,
                chosen: Sequence[int] = (), exclude: Sequence[int] = ()) -> dict[str, Any]:
    """The instrument picker: the chosen instruments the principal manages (ticked, kept across searches), then the
    first PICK_LIMIT other managed instruments matching the search, by classification code and name."""
    ids = await managed_instrument_ids(session, principal)
    managed = None if ids is None else set(ids)
    mine = [i for i in dict.fromkeys(chosen) if managed is None or i in managed][:PICK_LIMIT * 4]
    picked = (await queries.schedule_index(session, mine, by_category=True, limit=len(mine), count=False))[0] \
        if mine else []
    q, category = (q or "").strip() or None, category or None
    matches, total = await queries.schedule_index(session, ids, q=q, category=category, by_category=True,
                                                  exclude=[*mine, *exclude], limit=PICK_LIMIT)
    return {"picked": picked, "matches": matches, "match_total": total, "pick_q": q or "",
            "pick_category": category or "", "has_managed": ids is None or bool(ids)}


async def _groups_page(request: Request, session: SessionDep, principal: WebManager, *, status_code: int = 200,
                       offset: int = 0, chosen: Sequence[int] = (), values: dict[str, str] | None = None,
                       **extra: Any) -> Response:
    views, total = await equivalence.list_groups(session, principal, limit=PICK_LIMIT, offset=offset)
    values = values or {}
    pick = await _pick(session, principal, q=values.get("q"), category=values.get("category"), chosen=chosen)
    return render(request, "scheduling/groups.html",
                  _ctx(groups=views, total=total, offset=offset, params={}, values=values, **pick, **extra),
                  status_code=status_code)


@router.get("/equivalence")
async def groups_page(request: Request, session: SessionDep, principal: WebManager,
                      offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Response:
    return await _groups_page(request, session, principal, offset=offset)


@router.get("/equivalence/pick")
async def groups_pick(request: Request, session: SessionDep, principal: WebManager, q: PickQuery = None,
                      category: PickCategory = None,
                      instrument_ids: Annotated[list[int], Query(max_length=200)] = []) -> Response:  # noqa: B006
    """The new group's instrument picker after a search (htmx fragment): ticked instruments stay ticked."""
    if not is_htmx(request):  # opened as a page (a new tab, history): the page the picker belongs to
        return redirect(request, "/equivalence")
    pick = await _pick(session, principal, q=q, category=category, chosen=instrument_ids)
    return render(request, "scheduling/groups.html", _ctx(**pick), block="pick")


def _tags(text: str) -> list[str]:
    return [t for t in (p.strip() for p in text.replace("，", ",").split(",")) if t]


@router.post("/equivalence")
async def group_create(request: Request, session: SessionDep, principal: WebManager) -> Response:
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    raw = {"name": values.get("name", ""), "description": values.get("description", ""),
           "capability_tags": _tags(values.get("capability_tags", "")),
           "instrument_ids": [v for v in form.getlist("instrument_ids") if isinstance(v, str)],
           "override_reason": values.get("override_reason", "")}
    try:
        data = parse_form(GroupIn, raw)
        async with refusable(session):
            view = await equivalence.create_group(session, principal, data)
    except DomainError as exc:
        if exc.status == 404:
            raise
        return await _groups_page(request, session, principal, status_code=exc.status,
                                  problems=exc.problems or [Problem(None, "error", exc.detail)],
                                  errors=errors_by_field(exc.problems), values=form_values(values),
                                  chosen=[int(v) for v in raw["instrument_ids"] if v.isdigit()])
    return redirect(request, f"/equivalence/{view.group.id}")


async def _candidates(session: SessionDep, principal: WebManager, view: equivalence.GroupView, *, q: str | None,
                      category: str | None) -> dict[str, Any]:
    """The add-a-member picker: managed instruments not in the group, by default of the group's classification."""
    pick = await _pick(session, principal, q=q, category=category, exclude=[i.id for _, i in view.members])
    return {"candidates": pick["matches"], "candidate_total": pick["match_total"], "cand_q": pick["pick_q"],
            "cand_category": pick["pick_category"], "has_managed": pick["has_managed"]}


async def _group_page(request: Request, session: SessionDep, principal: WebManager, group_id: int, *,
                      status_code: int = 200, **extra: Any) -> Response:
    view = await equivalence.get_group(session, principal, group_id)
    group_rounds = await repo.rounds_of_groups(session, [group_id], 20)
    picker = await _candidates(session, principal, view, q=None, category=view.group.category_code)
    return render(request, "scheduling/group.html",
                  _ctx(v=view, g=view.group, rounds=group_rounds, **picker,
                       next_cutoff=rounds.next_cutoff(view.group, utcnow()), **extra), status_code=status_code)


@router.get("/equivalence/{group_id:int}/candidates")
async def group_candidates(request: Request, session: SessionDep, principal: WebManager, group_id: int,
                           q: PickQuery = None, category: PickCategory = None) -> Response:
    """The add-a-member picker after a search (htmx fragment)."""
    await equivalence.managed_group(session, principal, group_id)
    if not is_htmx(request):
        return redirect(request, f"/equivalence/{group_id}")
    view = await equivalence.get_group(session, principal, group_id)
    picker = await _candidates(session, principal, view, q=q, category=category)
    return render(request, "scheduling/group.html", _ctx(v=view, g=view.group, **picker), block="candidates")


@router.get("/equivalence/{group_id:int}")
async def group_page(request: Request, session: SessionDep, principal: WebManager, group_id: int) -> Response:
    return await _group_page(request, session, principal, group_id)


async def _group_act(request: Request, session: SessionDep, principal: WebManager, group_id: int, section: str,
                     action: Any, values: dict[str, str]) -> Response:
    try:
        async with refusable(session):
            flash = await action()
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        return await _group_page(request, session, principal, group_id, status_code=exc.status,
                                 problems=exc.problems or [Problem(None, "error", exc.detail)], open=section,
                                 errors={section: errors_by_field(exc.problems)}, values={section: values})
    return await _group_page(request, session, principal, group_id, flash=flash)


@router.post("/equivalence/{group_id:int}")
async def group_update(request: Request, session: SessionDep, principal: WebManager, group_id: int) -> Response:
    await equivalence.managed_group(session, principal, group_id)  # 403/404 before looking at the form
    form = await _form(request)
    raw: dict[str, Any] = {"name": form.get("name", ""), "description": form.get("description") or None,
                           "capability_tags": _tags(form.get("capability_tags", "")),
                           "allocation_mode": form.get("allocation_mode", ""),
                           "round_weekday": form.get("round_weekday", ""), "round_time": form.get("round_time", ""),
                           "user_cap_hours": form.get("user_cap_hours") or None,
                           "institution_cap_hours": form.get("institution_cap_hours") or None,
                           "external_min_share": form.get("external_min_share", "")}
    if "override_reason" in form:
        raw["override_reason"] = form.get("override_reason") or None

    async def action() -> str:
        data = parse_form(GroupUpdate, raw, blank_is_none=False)
        await equivalence.update_group(session, principal, group_id, data)
        return "已保存等效仪器组设置"
    return await _group_act(request, session, principal, group_id, "settings", action, form)


@router.post("/equivalence/{group_id:int}/members")
async def group_add_member(request: Request, session: SessionDep, principal: WebManager, group_id: int
                           ) -> Response:
    await equivalence.managed_group(session, principal, group_id)  # 403/404 before looking at the form
    form = await _form(request)

    async def action() -> str:
        data = parse_form(MemberIn, {"instrument_id": form.get("instrument_id", ""), "tags": _tags(form.get("tags", "")),
                                     "override_reason": form.get("override_reason", "")})
        await equivalence.add_member(session, principal, group_id, data)
        return "已加入仪器"
    return await _group_act(request, session, principal, group_id, "member", action, form)


@router.post("/equivalence/{group_id:int}/members/{instrument_id:int}/delete")
async def group_remove_member(request: Request, session: SessionDep, principal: WebManager, group_id: int,
                              instrument_id: int) -> Response:
    form = await _form(request)

    async def action() -> str:
        await equivalence.remove_member(session, principal, group_id, instrument_id)
        return "已移出仪器"
    return await _group_act(request, session, principal, group_id, "member", action, form)


# ---- rounds -------------------------------------------------------------------------------------------------------

@router.get("/rounds")
async def rounds_page(request: Request, session: SessionDep, principal: WebManager) -> Response:
    return render(request, "scheduling/rounds.html", _ctx(rows=await rounds.list_rounds(session, principal)))


async def _round_page(request: Request, session: SessionDep, principal: WebManager, round_id: int, *,
                      status_code: int = 200, **extra: Any) -> Response:
    view = await rounds.get_round(session, principal, round_id)
    users = await repo.users(session, [r.user_id for r in view.requests])
    instrument_ids = [r.instrument_id for r in view.requests] + [
        d["instrument_id"] for d in (view.round.preview or {}).get("decisions", []) if d.get("instrument_id")]
    instruments = await repo.instruments(session, instrument_ids)
    decisions = {d["request_id"]: d for d in (view.round.preview or {}).get("decisions", [])}
    return render(request, "scheduling/round.html",
                  _ctx(v=view, users=users, instruments=instruments, decisions=decisions,
                       figures=rounds.figures(view) if view.round.preview else None, **extra),
                  status_code=status_code)


@router.get("/rounds/{round_id:int}")
async def round_page(request: Request, session: SessionDep, principal: WebManager, round_id: int) -> Response:
    return await _round_page(request, session, principal, round_id)


async def _round_act(request: Request, session: SessionDep, principal: WebManager, round_id: int, action: Any,
                     done: str) -> Response:
    try:
        async with refusable(session):
            await action(session, principal, round_id)
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        return await _round_page(request, session, principal, round_id, status_code=exc.status, flash_kind="error",
                                 flash="；".join(p.message for p in exc.problems) or exc.detail)
    return await _round_page(request, session, principal, round_id, flash=done)


@router.post("/rounds/{round_id:int}/close")
async def round_close(request: Request, session: SessionDep, principal: WebManager, round_id: int) -> Response:
    return await _round_act(request, session, principal, round_id, rounds.close, "本轮已截止，可以预览分配结果")


@router.post("/rounds/{round_id:int}/preview")
async def round_preview(request: Request, session: SessionDep, principal: WebManager, round_id: int) -> Response:
    return await _round_act(request, session, principal, round_id, rounds.preview,
                            "已生成分配预览（尚未预约），请核对后发布")


@router.post("/rounds/{round_id:int}/publish")
async def round_publish(request: Request, session: SessionDep, principal: WebManager, round_id: int) -> Response:
    return await _round_act(request, session, principal, round_id, rounds.publish,
                            "已发布：获批的申请已预约，结果已通知每位申请人")


# ---- explain ------------------------------------------------------------------------------------------------------

@router.get("/instruments/{instrument_id:int}/explain")
async def explain_page(request: Request, session: SessionDep, principal: WebPrincipal, instrument_id: int,
                       start: Annotated[str, Query(max_length=40)], end: Annotated[str, Query(max_length=40)]
                       ) -> Response:
    """Why a slot can or cannot be booked; htmx loads just the explanation into the booking form's check."""
    try:
        start_at, end_at = datetime.fromisoformat(start), datetime.fromisoformat(end)
        if start_at.tzinfo is None or end_at.tzinfo is None:
            raise ValueError
    except ValueError:
        raise RuleViolation("时间格式不正确", problems=[Problem("start", "datetime_parsing",
                                                            "时间格式不正确（应为带时区的 ISO 8601）")]) from None
    inst = await get_visible(session, principal, instrument_id)
    result = await explain.explain_slot(session, principal, instrument_id, start_at, end_at)
    return render(request, "scheduling/explain.html", _ctx(inst=inst, x=result), block="explain")


# ---- simulate -----------------------------------------------------------------------------------------------------

def _windows_text(windows: list[Any]) -> str:
    return "\n".join(f"{WEEKDAYS[w.weekday]} {w.start_time:%H:%M}-{w.end_time:%H:%M}" for w in windows)


def _parse_windows(text: str) -> list[dict[str, str]]:
    """Lines like "周一 09:00-17:00" (or "1 09:00-17:00"; several spans per line allowed)."""
    out: list[dict[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.replace("，", " ").replace(",", " ").split()
        if not parts:
            continue
        day = parts[0]
        weekday = WEEKDAYS.index(day) if day in WEEKDAYS else (int(day) - 1 if day.isdigit() and 1 <= int(day) <= 7
                                                                  else None)
        spans = [p.replace("–", "-").split("-") for p in parts[1:]]
        if weekday is None or not spans or any(len(s) != 2 for s in spans):
            raise RuleViolation("开放时段格式不正确", problems=[Problem(
                "windows", "invalid_format", f"第 {number} 行格式应为“周一 09:00-12:00 13:30-17:30”")])
        out += [{"weekday": str(weekday), "start": a.strip().zfill(5), "end": b.strip().zfill(5)} for a, b in spans]
    return out


def _windows_in(rows: list[dict[str, str]]) -> list[WindowIn]:
    """Each parsed line through the API's schema; problems name `windows[i].field` like the API's."""
    out: list[WindowIn] = []
    problems: list[Problem] = []
    for index, row in enumerate(rows):
        try:
            out.append(parse_form(WindowIn, row))
        except RuleViolation as exc:
            problems += [Problem(f"windows[{index}].{p.field}", p.code, p.message) for p in exc.problems]
    if problems:
        raise RuleViolation("开放时段有误", problems=problems)
    return out


async def _simulate_page(request: Request, session: SessionDep, principal: WebManager, instrument_id: int, *,
                         status_code: int = 200, **extra: Any) -> Response:
    schedule = await editor.get_schedule(session, principal, instrument_id)
    values = {"windows": _windows_text(schedule.windows), "days": "31",
              **{k: getattr(schedule.rules, k) for k in RulesIn.model_fields}}
    values.update(extra.pop("values", {}))
    return render(request, "scheduling/simulate.html", _ctx(s=schedule, inst=schedule.instrument, values=values,
                                                             **extra), status_code=status_code)


@router.get("/instruments/{instrument_id:int}/simulate")
async def simulate_page(request: Request, session: SessionDep, principal: WebManager, instrument_id: int) -> Response:
    return await _simulate_page(request, session, principal, instrument_id)


@router.post("/instruments/{instrument_id:int}/simulate")
async def simulate(request: Request, session: SessionDep, principal: WebManager, instrument_id: int) -> Response:
    form = await _form(request)
    try:
        rules = {k: form.get(k, "") for k in RulesIn.model_fields}
        rules.update({k: "true" if _checked(form, k) else "false" for k in ("approval_required", "follow_holidays")})
        raw = {"windows": _windows_in(_parse_windows(form.get("windows", "")))
               if form.get("windows", "").strip() else None,
               "rules": parse_form(RulesIn, rules), "days": form.get("days") or "31"}
        data = parse_form(SimulationIn, raw)
        result = await explain.simulate_change(session, principal, instrument_id, data)
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        return await _simulate_page(request, session, principal, instrument_id, status_code=exc.status,
                                    problems=exc.problems, errors=errors_by_field(exc.problems),
                                    values=form_values(form))
    return await _simulate_page(request, session, principal, instrument_id, result=result, values=form_values(form))

