"""HTML pages: the availability and rules editor (managers), the holiday overrides (platform admins).

Each form posts to its own URL; the page is rendered again with a flash, or with the section's errors (422)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from booking.auth.deps import CsrfDep, WebAdmin, WebManager, load_web_principal
from booking.core.clock import LOCAL_TZ, utcnow
from booking.core.db import SessionDep, refusable
from booking.core.errors import DomainError, Problem, RuleViolation
from booking.core.forms import errors_by_field, form_values, parse_form
from booking.core.web import render
from booking.reservations.models import STATUS_LABELS
from booking.reservations.queue import managed_instrument_ids
from scheduling import editor, queries
from scheduling import qualifications as quals
from scheduling.intervals import local_date
from scheduling.schemas import (
    BlackoutIn,
    HolidayOverrideIn,
    LiftBlockIn,
    OverrideIn,
    QualificationIn,
    RulesIn,
    WindowIn,
)

router = APIRouter(include_in_schema=False, dependencies=[Depends(load_web_principal), CsrfDep])

_SPAN = re.compile(r"^\s*(\d{1,2}:\d{2})\s*[-–~至]\s*(\d{1,2}:\d{2})\s*$")
FIELD_LABELS = {
    "weekday": "星期", "start": "开始", "end": "结束", "valid_from": "生效日期", "valid_to": "失效日期",
    "day": "日期", "windows": "开放时段", "reason": "原因", "starts_at": "开始时间", "ends_at": "结束时间",
    "start_time": "开始钟点", "end_time": "结束钟点", "granularity_min": "时间粒度", "min_duration_min": "最短时长",
    "max_duration_min": "最长时长", "min_lead_min": "最少提前", "max_horizon_days": "最远可约",
    "max_user_hours_week": "每人每周上限", "max_institution_hours_month": "每单位每月上限",
    "cancellation_deadline_h": "取消截止", "buffer_before_min": "准备时间", "buffer_after_min": "冷却时间",
    "no_show_grace_min": "爽约宽限", "user": "用户", "user_id": "用户", "email": "用户", "valid_until": "有效期至",
    "name": "名称", "kind": "类型",
}


@router.get("/schedule")
async def index(request: Request, session: SessionDep, principal: WebManager,
                q: Annotated[str | None, Query(max_length=50)] = None,
                offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Response:
    ids = await managed_instrument_ids(session, principal)
    q = (q or "").strip() or None
    rows, total = await queries.schedule_index(session, ids, q=q, limit=50, offset=offset)
    return render(request, "scheduling/index.html",
                  {"rows": rows, "total": total, "all": ids is None, "q": q or "", "offset": offset,
                   "params": {"q": q}}, block="results")


async def _context(session: SessionDep, principal: WebManager, instrument_id: int) -> dict[str, Any]:
    schedule = await editor.get_schedule(session, principal, instrument_id)
    return {
        "s": schedule, "inst": schedule.instrument,
        "quals": await quals.list_qualifications(session, principal, instrument_id),
        "blocks": await quals.blocks_for_instrument(session, principal, instrument_id),
        "errors": {}, "values": {}, "weekdays": editor.WEEKDAYS, "status_labels": STATUS_LABELS,
        "field_labels": FIELD_LABELS, "today": local_date(utcnow()),
    }


@router.get("/instruments/{instrument_id}/schedule")
async def schedule_page(request: Request, session: SessionDep, principal: WebManager, instrument_id: int
                        ) -> Response:
    return render(request, "scheduling/schedule.html", await _context(session, principal, instrument_id))


Action = Callable[[dict[str, str]], Awaitable[dict[str, Any]]]


async def _act(request: Request, session: SessionDep, principal: WebManager, instrument_id: int, section: str,
               action: Action) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    try:
        # A savepoint, so a refused change leaves nothing behind while the page is rendered again (the
        # boundary commits that response like any other).
        async with refusable(session):
            extra = await action(form)
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        # The failed change is rolled back by the boundary; the page shows what is stored and the errors.
        ctx = await _context(session, principal, instrument_id)
        ctx.update({"errors": {section: errors_by_field(exc.problems) or {"_form": exc.detail}},
                    "values": {section: form_values(form)}, "flash": exc.detail, "flash_kind": "error",
                    "problems": exc.problems, "open": section})
        return render(request, "scheduling/schedule.html", ctx, status_code=exc.status)
    ctx = await _context(session, principal, instrument_id)
    ctx.update(extra)
    ctx["open"] = section
    return render(request, "scheduling/schedule.html", ctx)


def _local_instant(value: str) -> str:
    """A datetime-local field is Beijing wall-clock time (the page says so): attach +08:00; leave anything that
    does not parse for the schema to report against its field."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return value
    return (parsed.replace(tzinfo=LOCAL_TZ) if parsed.tzinfo is None else parsed).isoformat()


@router.post("/instruments/{instrument_id}/schedule/windows")
async def add_window(request: Request, session: SessionDep, principal: WebManager, instrument_id: int) -> Response:
    async def action(form: dict[str, str]) -> dict[str, Any]:
        result = await editor.add_window(session, principal, instrument_id, parse_form(WindowIn, form))
        return {"flash": "已添加开放时段", "affected": result.affected}
    return await _act(request, session, principal, instrument_id, "window", action)


@router.post("/instruments/{instrument_id}/schedule/windows/{window_id}/delete")
async def delete_window(request: Request, session: SessionDep, principal: WebManager, instrument_id: int,
                        window_id: int) -> Response:
    async def action(form: dict[str, str]) -> dict[str, Any]:
        result = await editor.delete_window(session, principal, instrument_id, window_id)
        return {"flash": "已删除开放时段", "affected": result.affected}
    return await _act(request, session, principal, instrument_id, "window", action)


def _spans(text: str) -> list[dict[str, str]]:
    spans = []
    for part in re.split(r"[,，;；\s]+(?=\d)", text.strip()) if text.strip() else []:
        m = _SPAN.match(part)
        if not m:
            raise RuleViolation("开放时段格式不正确", problems=[Problem(
                "windows", "invalid_format", "格式应为 09:00-12:00，多个时段用逗号分隔；留空表示全天停开")])
        spans.append({"start": m.group(1).zfill(5), "end": m.group(2).zfill(5)})
    return spans


@router.post("/instruments/{instrument_id}/schedule/overrides")
async def set_override(request: Request, session: SessionDep, principal: WebManager, instrument_id: int) -> Response:
    async def action(form: dict[str, str]) -> dict[str, Any]:
        data = parse_form(OverrideIn, {"day": form.get("day", ""), "reason": form.get("reason", ""),
                                       "windows": _spans(form.get("windows", ""))})
        _, result = await editor.set_override(session, principal, instrument_id, data)
        return {"flash": f"已设置 {data.day} 的开放时间", "affected": result.affected}
    return await _act(request, session, principal, instrument_id, "override", action)


@router.post("/instruments/{instrument_id}/schedule/overrides/{override_id}/delete")
async def delete_override(request: Request, session: SessionDep, principal: WebManager, instrument_id: int,
                          override_id: int) -> Response:
    async def action(form: dict[str, str]) -> dict[str, Any]:
        await editor.delete_override(session, principal, instrument_id, override_id)
        return {"flash": "已删除特殊日期设置"}
    return await _act(request, session, principal, instrument_id, "override", action)


@router.post("/instruments/{instrument_id}/schedule/blackouts")
async def create_blackout(request: Request, session: SessionDep, principal: WebManager, instrument_id: int
                          ) -> Response:
    async def action(form: dict[str, str]) -> dict[str, Any]:
        weekly = form.get("kind") == "weekly"
        keys = ("weekday", "start_time", "end_time", "valid_from", "valid_to") if weekly else ("starts_at", "ends_at")
        data: dict[str, str] = {"reason": form.get("reason", "")}
        for key in keys:
            value = form.get(key, "")
            data[key] = _local_instant(value) if key in ("starts_at", "ends_at") and value else value
        result = await editor.create_blackout(session, principal, instrument_id, parse_form(BlackoutIn, data))
        n = len(result.colliding)
        flash = (f"已添加停机时段。与 {n} 个预约冲突，已通知相关用户；预约仍保留，请决定取消或改约。" if n
                 else "已添加停机时段，没有与之冲突的预约。")
        return {"flash": flash, "flash_kind": "info" if n else "ok", "colliding": result.colliding,
                "new_blackout": result.blackout}
    return await _act(request, session, principal, instrument_id, "blackout", action)


@router.post("/instruments/{instrument_id}/schedule/blackouts/{blackout_id}/delete")
async def delete_blackout(request: Request, session: SessionDep, principal: WebManager, instrument_id: int,
                          blackout_id: int) -> Response:
    async def action(form: dict[str, str]) -> dict[str, Any]:
        await editor.delete_blackout(session, principal, instrument_id, blackout_id)
        return {"flash": "已删除停机时段"}
    return await _act(request, session, principal, instrument_id, "blackout", action)


@router.post("/instruments/{instrument_id}/rules")
async def update_rules(request: Request, session: SessionDep, principal: WebManager, instrument_id: int) -> Response:
    async def action(form: dict[str, str]) -> dict[str, Any]:
        # An unticked checkbox is absent from the form: it means "no", not "keep the default".
        values = {**form, **{k: form.get(k, "false") for k in ("approval_required", "follow_holidays")}}
        await editor.update_rules(session, principal, instrument_id, parse_form(RulesIn, values))
        return {"flash": "预约规则已保存"}
    return await _act(request, session, principal, instrument_id, "rules", action)


@router.post("/instruments/{instrument_id}/qualifications")
async def grant_qualification(request: Request, session: SessionDep, principal: WebManager, instrument_id: int
                              ) -> Response:
    async def action(form: dict[str, str]) -> dict[str, Any]:
        who = form.get("user", "").strip()
        data = {"valid_until": form.get("valid_until", ""), **({"user_id": who} if who.isdigit() else {"email": who})}
        try:
            parsed = parse_form(QualificationIn, data)
        except RuleViolation as exc:
            exc.problems = [Problem("user", p.code, p.message) if p.field in ("user_id", "email") else p
                            for p in exc.problems]
            raise
        try:
            view = await quals.grant_qualification(session, principal, instrument_id, parsed)
        except RuleViolation as exc:
            exc.problems = [Problem("user", p.code, p.message) if p.field in ("user_id", "email") else p
                            for p in exc.problems]
            raise
        return {"flash": f"已授予 {view.user.name} 上机资格，有效期至 {view.qualification.valid_until}"}
    return await _act(request, session, principal, instrument_id, "qualification", action)


@router.post("/instruments/{instrument_id}/qualifications/{user_id}/revoke")
async def revoke_qualification(request: Request, session: SessionDep, principal: WebManager, instrument_id: int,
                               user_id: int) -> Response:
    async def action(form: dict[str, str]) -> dict[str, Any]:
        await quals.revoke_qualification(session, principal, instrument_id, user_id)
        return {"flash": "已撤销上机资格"}
    return await _act(request, session, principal, instrument_id, "qualification", action)


@router.post("/instruments/{instrument_id}/blocks/{user_id}/lift")
async def lift_block(request: Request, session: SessionDep, principal: WebManager, instrument_id: int,
                     user_id: int) -> Response:
    async def action(form: dict[str, str]) -> dict[str, Any]:
        await editor.managed_instrument(session, principal, instrument_id)
        data = parse_form(LiftBlockIn, form)
        await quals.lift(session, principal, user_id, data.reason)
        return {"flash": "已解除该用户的预约暂停"}
    return await _act(request, session, principal, instrument_id, f"block-{user_id}", action)


# ---- holidays -----------------------------------------------------------------------------------------------------

async def _holidays(request: Request, session: SessionDep, principal: WebAdmin, year: int, status_code: int = 200,
                    **extra: Any) -> Response:
    view = await editor.holiday_year(session, principal, year)
    ctx = {"v": view, "errors": {}, "values": {}, "field_labels": FIELD_LABELS, **extra}
    return render(request, "scheduling/holidays.html", ctx, status_code=status_code)


@router.get("/admin/holidays")
async def holidays(request: Request, session: SessionDep, principal: WebAdmin,
                   year: Annotated[int | None, Query(ge=2000, le=2100)] = None) -> Response:
    return await _holidays(request, session, principal, year or local_date(utcnow()).year)


@router.post("/admin/holidays")
async def set_holiday(request: Request, session: SessionDep, principal: WebAdmin) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    year = local_date(utcnow()).year
    try:
        data = parse_form(HolidayOverrideIn, form)
        year = data.day.year
        async with refusable(session):
            await editor.set_holiday_override(session, principal, data)
    except RuleViolation as exc:
        with contextlib.suppress(ValueError):
            year = date.fromisoformat(form.get("day", "")).year
        return await _holidays(request, session, principal, year if 2000 <= year <= 2100 else local_date(utcnow()).year,
                               status_code=422, errors=errors_by_field(exc.problems), values=form_values(form),
                               flash=exc.detail, flash_kind="error")
    return await _holidays(request, session, principal, year, flash=f"已保存 {data.day} 的设置")


@router.post("/admin/holidays/{day}/delete")
async def delete_holiday(request: Request, session: SessionDep, principal: WebAdmin, day: date) -> Response:
    await editor.delete_holiday_override(session, principal, day)
    return await _holidays(request, session, principal, day.year, flash=f"已删除 {day} 的管理员设置")
