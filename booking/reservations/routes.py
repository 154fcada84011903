"""HTML pages for booking: the week calendar, the booking form with live rule checks, my bookings, the
manager's queue. They call the same services as the JSON API, so the policy is the same on every path."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from booking import nav
from booking.accounts.models import Institution
from booking.auth.deps import CsrfDep, WebPrincipal, WebUser, load_web_principal
from booking.auth.principal import Principal
from booking.core.clock import LOCAL_TZ, to_local, utcnow
from booking.core.db import SessionDep, refusable
from booking.core.errors import Conflict, DomainError, Forbidden, NotFound, Problem, RuleViolation
from booking.core.forms import errors_by_field, form_count, form_note, parse_form
from booking.core.settings import get_settings
from booking.core.validation import problems_from_errors
from booking.core.web import redirect, render
from booking.reservations import service
from booking.reservations.models import SERVICE_MODE_LABELS, STATUS_LABELS
from booking.reservations.schemas import BookingCreate, PaymentIn, PaymentReason
from booking.reservations.week import Week, monday_of, week
from booking.usage import service as usage
from booking.usage.models import RATINGS
from booking.usage.rules import NO_FEE_BASIS, PAYMENT_METHODS, PAYMENT_STATE_LABELS, fee_known, payment_state
from instruments.models import Instrument
from instruments.service import get_visible, may_manage

router = APIRouter(include_in_schema=False, dependencies=[Depends(load_web_principal), CsrfDep])

FIELD_LABELS = {"start": "开始时间", "end": "结束时间", "date": "日期", "purpose": "用途", "user": "用户",
                "instrument_id": "仪器", "project_name": "项目名称", "funding_source": "经费来源",
                "service_mode": "服务方式", "sample_notes": "样品说明", "repeat_weekly": "每周重复次数",
                "override_reason": "越过规则的理由", "on_behalf_of": "预约用户", "status": "状态",
                "any_equivalent": "可用等效仪器", "preferred_cities": "优先市州", "method": "付款方式",
                "paid_at": "付款时间", "amount": "实收金额", "invoice_number": "发票号", "note": "备注", "reason": "原因"}


def _ctx(**kw: Any) -> dict[str, Any]:
    return {"STATUS_LABELS": STATUS_LABELS, "SERVICE_MODE_LABELS": SERVICE_MODE_LABELS, "RATINGS": RATINGS,
            "field_labels": FIELD_LABELS, "payment_state": payment_state, "NO_FEE_BASIS": NO_FEE_BASIS, **kw}


def _parse_day(value: str | None) -> date:
    try:
        return date.fromisoformat(value) if value else to_local(utcnow()).date()
    except ValueError:
        raise RuleViolation("日期格式不正确", problems=[Problem("start", "invalid_date", "日期格式应为 YYYY-MM-DD")]) from None


@router.get("/instruments/{instrument_id:int}/week")
async def week_view(request: Request, session: SessionDep, principal: WebPrincipal, instrument_id: int,
                    start: Annotated[str | None, Query(max_length=10)] = None) -> Response:
    inst = await get_visible(session, principal, instrument_id)
    if start:
        grid = await week(session, principal, instrument_id, monday_of(_parse_day(start)))
    else:
        grid = await _first_useful_week(session, principal, instrument_id, to_local(utcnow()).date())
    return render(request, "reservations/week_page.html", _ctx(inst=inst, week=grid), block="week")


async def _first_useful_week(session: SessionDep, principal: Principal | None, instrument_id: int, day: date) -> Week:
    """The week of `day`, or the next one when nothing is left to book in it (a Saturday afternoon): a first view
    of all-closed cells tells the user nothing."""
    grid = await week(session, principal, instrument_id, monday_of(day))
    if grid.bookable_count == 0:
        following = await week(session, principal, instrument_id, monday_of(day) + timedelta(days=7))
        if following.bookable_count:
            return following
    return grid


def _form_times(form: dict[str, str]) -> tuple[dict[str, Any], list[Problem]]:
    """The form asks for a local date and wall-clock times; turn them into aware instants (Asia/Shanghai)."""
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    try:
        day = date.fromisoformat(form.get("date", ""))
    except ValueError:
        problems.append(Problem("date", "invalid_date", "请选择日期（YYYY-MM-DD）"))
        return values, problems
    for name in ("start", "end"):
        try:
            t = time.fromisoformat(form.get(f"{name}_time", ""))
        except ValueError:
            problems.append(Problem(name, "invalid_time", "请填写时间（HH:MM）"))
            continue
        values[name] = datetime.combine(day, t, tzinfo=LOCAL_TZ)
    if "end" in values and form.get("end_time") == "00:00":
        values["end"] += timedelta(days=1)
    return values, problems


def _booking_data(instrument_id: int, form: dict[str, str]) -> tuple[BookingCreate | None, list[Problem]]:
    times, problems = _form_times(form)
    raw: dict[str, Any] = {"instrument_id": instrument_id, **times}
    for key in ("purpose", "project_name", "funding_source", "service_mode", "sample_notes", "override_reason",
                "on_behalf_of", "repeat_weekly"):
        if form.get(key, "").strip():
            raw[key] = form[key].strip()
    if raw.get("repeat_weekly") in ("1",):
        raw.pop("repeat_weekly")
    if "repeat_weekly" in raw:
        raw["on_conflict"] = form.get("on_conflict", "skip")
    if form.get("any_equivalent") in ("on", "true", "1"):
        raw["any_equivalent"] = True
    if form.get("preferred_city", "").strip():
        raw["preferred_cities"] = [form["preferred_city"].strip()]
    try:
        data = BookingCreate.model_validate(raw)
    except ValidationError as exc:
        return None, problems + [p for p in problems_from_errors(exc.errors())
                                 if p.field not in {q.field for q in problems}]
    return data, problems


async def _form_context(session: SessionDep, principal: WebUser, inst: Instrument, values: dict[str, Any]
                        ) -> dict[str, Any]:
    institution = await session.get(Institution, inst.institution_id)
    if values.get("date"):
        day = values["date"]
        grid = await week(session, principal, inst.id, monday_of(date.fromisoformat(day)))  # type: ignore[arg-type]
    else:
        tomorrow = to_local(utcnow() + timedelta(days=1)).date()
        grid = await _first_useful_week(session, principal, inst.id, tomorrow)  # type: ignore[arg-type]
        day = max(tomorrow, grid.monday).isoformat()
    is_manager = may_manage(principal, inst.institution_id, inst.facility_id)
    return _ctx(inst=inst, institution=institution, week=grid, values={"date": day, **values},
                is_manager=is_manager, errors={}, problems=[], alternatives=[], taken={})


@router.get("/instruments/{instrument_id:int}/book")
async def book_form(request: Request, session: SessionDep, principal: WebUser, instrument_id: int,
                    start: Annotated[str | None, Query(max_length=40)] = None,
                    end: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    inst = await get_visible(session, principal, instrument_id)
    values: dict[str, Any] = {}
    for name, raw in (("start", start), ("end", end)):
        if raw:
            try:
                at = to_local(datetime.fromisoformat(raw))
            except ValueError:
                continue
            values["date"] = at.date().isoformat()
            values[f"{name}_time"] = at.strftime("%H:%M")
    return render(request, "reservations/book.html", await _form_context(session, principal, inst, values))


@router.post("/instruments/{instrument_id:int}/book/check")
async def book_check(request: Request, session: SessionDep, principal: WebUser, instrument_id: int) -> Response:
    """Live feedback while the user picks times: every rule problem, and whether the slot is free."""
    inst = await get_visible(session, principal, instrument_id)
    form = {k: str(v) for k, v in (await request.form()).items()}
    if not (form.get("start_time") and form.get("end_time")):
        # Not both times picked yet: nothing to check, and no error to show while the user is still typing.
        return render(request, "reservations/_check.html",
                      _ctx(inst=inst, problems=[], free=None, alternatives=[], checked=False, slot={}))
    times, problems = _form_times(form)
    alternatives: list[dict[str, Any]] = []
    free: bool | None = None
    if not problems:
        start, end = times["start"], times["end"]
        ctx = await service.instrument_context(session, inst, start - timedelta(days=1), end + timedelta(days=1))
        problems = await service.rule_problems(session, ctx, principal.user, start, end)
        if end > start:
            free_ivs = await service.free_intervals(session, ctx, start - timedelta(hours=1), end + timedelta(hours=1))
            free = any(iv.start <= start and iv.end >= end for iv in free_ivs)
            if not free:
                city = form.get("preferred_city", "").strip()
                alternatives = await service.conflict_alternatives(session, ctx, principal.user, start, end,
                                                                   preferred_cities=(city,) if city else ())
    estimate = None
    if not problems and free:
        estimate = usage.fee_estimate(inst, principal.user.institution_id, times["start"], times["end"])
    return render(request, "reservations/_check.html",
                  _ctx(inst=inst, problems=problems, free=free, alternatives=alternatives, checked=not problems,
                       slot=times if not problems or free is False else {}, estimate=estimate))


@router.post("/instruments/{instrument_id:int}/book")
async def book(request: Request, session: SessionDep, principal: WebUser, instrument_id: int) -> Response:
    inst = await get_visible(session, principal, instrument_id)
    form = {k: str(v) for k, v in (await request.form()).items()}
    values = {k: v for k, v in form.items() if k != "csrf_token"}
    data, problems = _booking_data(instrument_id, form)
    status = 422
    alternatives: list[dict[str, Any]] = []
    taken: dict[str, str] = {}
    if data is not None and not problems:
        try:
            if data.repeat_weekly:
                _, created, skipped = await service.create_series(session, principal, data)
                target = f"/bookings?created={len(created)}&skipped={len(skipped)}"
                return redirect(request, target)
            booking = await service.create_booking(session, principal, data)
            return redirect(request, f"/bookings/{booking.id}?created=1")
        except Conflict as exc:
            problems, status = exc.problems, 409
            alternatives = list(exc.extra.get("alternatives", []))
            taken = {"start": data.start.isoformat(), "end": data.end.isoformat()}
        except RuleViolation as exc:
            problems, status = exc.problems, 422
    ctx = await _form_context(session, principal, inst, values)
    ctx.update(errors=errors_by_field(problems), problems=problems, alternatives=alternatives, taken=taken)
    return render(request, "reservations/book.html", ctx, status_code=status)


# Rows per page of a user's bookings.
MINE_PAGE = 50


@router.get("/bookings")
async def my_bookings(request: Request, session: SessionDep, principal: WebUser,
                      past: Annotated[int, Query(ge=0, le=1)] = 0,
                      offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
                      created: Annotated[int | None, Query(ge=0)] = None,
                      skipped: Annotated[int | None, Query(ge=0)] = None,
                      cancelled: Annotated[int, Query(ge=0, le=1)] = 0) -> Response:
    rows, total = await service.my_bookings(session, principal, status=None, upcoming=not past, limit=MINE_PAGE,
                                            offset=offset)
    flash = None
    if created is not None:
        flash = f"已创建 {created} 个预约" + (f"，{skipped} 个时段因冲突或规则被跳过" if skipped else "")
    elif cancelled:
        flash = "已取消该预约"
    return render(request, "reservations/mine.html",
                  _ctx(rows=await service.booking_rows(session, list(rows)), total=total, past=past, flash=flash, now=utcnow(),
                       offset=offset, page_size=MINE_PAGE, params={"past": past or None}))


@router.get("/bookings/{booking_id:int}.ics")
async def booking_ics(session: SessionDep, principal: WebUser, booking_id: int) -> Response:
    """The same calendar file as the API's, for a signed-in browser (the API takes bearer tokens only)."""
    from booking.reservations import calendars

    booking, inst = await service.get_booking(session, principal, booking_id)
    return Response(await calendars.booking_ics(session, booking, inst), media_type="text/calendar; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="booking-{booking_id}.ics"'})


# What the detail page says after each action (the action's redirect carries `did`).
_DONE = {"approve": "已批准该预约，预约人会收到通知", "reject": "已拒绝该预约，预约人会收到通知",
         "cancel": "已取消该预约", "check_in": "已签到上机", "check_out": "已签退，服务记录已生成",
         "no_show": "已记为爽约", "record_service": "已登记服务，服务记录已生成", "rate": "感谢评价，已记录",
         "paid": "已登记付款，预约人会收到通知", "waived": "已免收该服务的费用，预约人会收到通知",
         "payment_reset": "已撤销付款记录，该服务恢复为待付款"}


@router.get("/bookings/{booking_id:int}")
async def booking_detail(request: Request, session: SessionDep, principal: WebUser, booking_id: int,
                         created: int = 0,
                         did: Annotated[str | None, Query(pattern="^(" + "|".join(_DONE) + ")$")] = None
                         ) -> Response:
    return await _detail(request, session, principal, booking_id,
                         flash="预约已提交" if created else _DONE.get(did or ""))


async def _detail(request: Request, session: SessionDep, principal: Principal, booking_id: int, *,
                  status_code: int = 200, **extra: Any) -> Response:
    booking, inst = await service.get_booking(session, principal, booking_id)
    [row] = await service.booking_rows(session, [booking])
    is_manager = may_manage(principal, inst.institution_id, inst.facility_id)
    requester_institution = None
    if is_manager and row["user"] is not None and row["user"].institution_id is not None:
        requester = await service.institution_of(session, row["user"].institution_id)
        requester_institution = requester.name if requester is not None else None
    now = utcnow()
    early = timedelta(minutes=get_settings().check_in_early_min)
    rec = row["record"]
    if is_manager and booking.user_id != principal.id:
        # Someone else's booking is seen from the managers' list, whatever this page's address (or a refused
        # form's) would match.
        nav.mark_current(request, "booking-queue")
    return render(request, "reservations/detail.html",
                  _ctx(row=row, is_manager=is_manager, is_owner=booking.user_id == principal.id, now=now,
                       check_in_open=booking.start_at - early <= now < booking.end_at,
                       check_in_from=booking.start_at - early, per_sample=inst.fee_unit == "sample",
                       requester_institution=requester_institution,
                       blackouts=service.closures_text(await service.blackouts_over(session, booking, inst)),
                       estimate=usage.fee_estimate(inst, row["user"].institution_id, booking.start_at, booking.end_at)
                       if booking.status in ("pending", "confirmed", "held", "in_use") and row["user"] else None,
                       payment=payment_state(rec.amount, rec.payment_status, rec.fee_basis) if rec is not None else None,
                       fee_known=fee_known(rec.fee_basis) if rec is not None else True,
                       PAYMENT_STATE_LABELS=PAYMENT_STATE_LABELS, PAYMENT_METHODS=PAYMENT_METHODS,
                       **{"errors": {}, "values": {}, **extra}),
                  status_code=status_code)


_WEB_ACTIONS = {"approve", "reject", "cancel", "check_in", "check_out", "no_show", "record_service"}


@router.post("/bookings/{booking_id:int}/{action}")
async def booking_action(request: Request, session: SessionDep, principal: WebUser, booking_id: int,
                         action: str) -> Response:
    if action not in _WEB_ACTIONS:
        raise Forbidden("未知操作")
    form = await request.form()
    note = form_note(form, "note")
    samples = form_count(form, "samples", label="样品数")
    await service.transition(session, principal, booking_id, action, note=note, samples=samples)
    back = str(form.get("next") or f"/bookings/{booking_id}?did={action}")
    return redirect(request, back if back.startswith("/") and not back.startswith("//") else "/bookings")


@router.post("/service-records/{record_id:int}/rate")
async def rate(request: Request, session: SessionDep, principal: WebUser, record_id: int) -> Response:
    form = await request.form()
    raw = str(form.get("rating") or "")
    if raw not in {"1", "2", "3", "4", "5"}:
        raise RuleViolation("请选择评价", problems=[Problem("rating", "missing", "请选择满意度")])
    rec = await usage.rate(session, principal, record_id, int(raw), form_note(form, "comment"))
    return redirect(request, f"/bookings/{rec.booking_id}?did=rate" if rec.booking_id else "/bookings")


@router.post("/service-records/{record_id:int}/{action}")
async def settle(request: Request, session: SessionDep, principal: WebUser, record_id: int, action: str
                 ) -> Response:
    """Record a payment, waive the fee or take either back, from the booking page; a refusal shows the page again
    with the problem beside the field."""
    if action not in ("payment", "waive", "payment-reset"):
        raise NotFound("未知操作")
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    record_ = await usage.record_of_id(session, principal, record_id)
    try:
        async with refusable(session):
            if action == "payment":
                data = parse_form(PaymentIn, {"method": form.get("method", ""), "amount": form.get("amount", ""),
                                              "invoice_number": form.get("invoice_number", ""),
                                              "note": form.get("note", ""), "paid_at": _local_datetime(form.get("paid_at"))})
                await usage.record_payment(session, principal, record_id, method=data.method, paid_at=data.paid_at,
                                           amount=data.amount, invoice_number=data.invoice_number, note=data.note)
                done = "paid"
            else:
                reason = parse_form(PaymentReason, {"reason": form.get("reason", "")}).reason
                settle_ = usage.waive_payment if action == "waive" else usage.reset_payment
                await settle_(session, principal, record_id, reason=reason)
                done = "waived" if action == "waive" else "payment_reset"
    except DomainError as exc:
        if exc.status in (403, 404) or record_.booking_id is None:
            raise
        return await _detail(request, session, principal, record_.booking_id, status_code=exc.status,
                             errors={action: errors_by_field(exc.problems) or {"_form": exc.detail}},
                             values={action: form}, flash=exc.detail, flash_kind="error")
    target = f"/bookings/{record_.booking_id}?did={done}#payment" if record_.booking_id else "/bookings"
    return redirect(request, target)


def _local_datetime(value: str | None) -> datetime | str | None:
    """A datetime-local field (Beijing time, no offset) as an aware datetime; empty stays empty, and what does not
    parse goes on as typed, for the model to refuse by field."""
    value = (value or "").strip()
    try:
        return datetime.fromisoformat(value).replace(tzinfo=LOCAL_TZ) if value else None
    except ValueError:
        return value


# Rows per page of the approval queue.
QUEUE_PAGE = 100


@router.get("/manage/bookings")
async def queue(request: Request, session: SessionDep, principal: WebUser,
                view: Annotated[str, Query(pattern="^(pending|today|upcoming|unpaid)$")] = "pending",
                offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
                done: Annotated[int, Query(ge=0, le=10_000)] = 0,
                did: Annotated[str, Query(pattern="^(approve|reject)?$")] = "",
                skipped: Annotated[str, Query(pattern=r"^[0-9,]*$", max_length=2600)] = "") -> Response:
    now = utcnow()
    if view == "pending":
        rows, total = await service.managed_bookings(session, principal, status="pending", start=None, end=None,
                                                     limit=QUEUE_PAGE, offset=offset)
    elif view == "unpaid":
        rows, total = await service.managed_unpaid(session, principal, limit=QUEUE_PAGE, offset=offset)
    else:
        day_start = datetime.combine(to_local(now).date(), time(0), tzinfo=LOCAL_TZ)
        end = day_start + timedelta(days=1 if view == "today" else 14)
        rows, total = await service.managed_bookings(session, principal, status=None, start=day_start, end=end,
                                                     limit=QUEUE_PAGE, offset=offset)
    verb = "批准" if did == "approve" else "拒绝"
    parts = [f"已{verb} {done} 个预约"] if done and did else []
    not_done = [i for i in skipped.split(",") if i]
    if not_done and did:
        listed = "、".join(f"#{i}" for i in not_done)
        parts.append(f"{len(not_done)} 个未能{verb}（{listed}），请打开该预约查看原因")
    flash = "；".join(parts) or None
    return render(request, "reservations/queue.html",
                  _ctx(rows=await service.booking_rows(session, list(rows)), total=total, view=view, now=now, flash=flash,
                       flash_kind="info" if not_done else "ok",
                       offset=offset, page_size=QUEUE_PAGE, params={"view": view}),
                  block="queue")


@router.post("/manage/bookings/bulk")
async def bulk(request: Request, session: SessionDep, principal: WebUser) -> Response:
    form = await request.form()
    action = str(form.get("action") or "")
    if action not in ("approve", "reject"):
        raise RuleViolation("请选择操作", problems=[Problem("action", "invalid", "请选择批准或拒绝")])
    ids = [int(v) for v in form.getlist("booking_id") if str(v).isdigit()]
    if not ids:
        raise RuleViolation("未选择预约", problems=[Problem("booking_id", "missing", "请至少选择一个预约")])
    note = form_note(form, "note")
    skipped: list[int] = []
    for booking_id in ids:
        # One booking that cannot be decided (a blackout over it, decided meanwhile) does not undo the others.
        try:
            async with refusable(session):
                await service.transition(session, principal, booking_id, action, note=note)
        except DomainError as exc:
            if exc.status in (401, 403, 404):
                raise
            skipped.append(booking_id)
    done = len(ids) - len(skipped)
    rest = f"&skipped={','.join(map(str, skipped))}" if skipped else ""
    return redirect(request, f"/manage/bookings?view=pending&done={done}&did={action}{rest}")


