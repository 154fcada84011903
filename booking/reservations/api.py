"""JSON API for availability, bookings and service records."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import Response
from pydantic import AwareDatetime

from booking.auth.deps import ApiPrincipal, ApiUser
from booking.core.db import SessionDep
from booking.core.errors import Problem, RuleViolation
from booking.core.pagination import Page, PageDep
from booking.reservations import calendars, service
from booking.reservations.models import Booking
from booking.reservations.schemas import (
    AvailabilityOut,
    BookingCreate,
    BookingPublic,
    BulkDecision,
    CheckOut,
    Decision,
    PaymentIn,
    PaymentReason,
    RatingIn,
    SeriesResult,
    ServiceRecordPublic,
    Slot,
)
from booking.usage import service as usage

router = APIRouter(prefix="/api/v1", tags=["bookings"])


def public(b: Booking) -> BookingPublic:
    return BookingPublic(
        id=b.id, instrument_id=b.instrument_id, user_id=b.user_id, created_by=b.created_by,  # type: ignore[arg-type]
        series_id=b.series_id, status=b.status, start=b.start_at, end=b.end_at, purpose=b.purpose,
        project_name=b.project_name, funding_source=b.funding_source, service_mode=b.service_mode,
        sample_notes=b.sample_notes, decision_note=b.decision_note, checked_in_at=b.checked_in_at,
        checked_out_at=b.checked_out_at, sequence=b.sequence, created_at=b.created_at,
        ics_url=service.ics_url(b.id),  # type: ignore[arg-type]
    )


@router.get("/instruments/{instrument_id}/availability", response_model=AvailabilityOut, response_model_by_alias=True,
            summary="Bookable intervals honouring every rule and existing booking")
async def availability(
    session: SessionDep, principal: ApiPrincipal, instrument_id: int,
    from_: Annotated[AwareDatetime, Query(alias="from", description="ISO 8601 with offset")],
    to: Annotated[AwareDatetime, Query(description="ISO 8601 with offset")],
) -> AvailabilityOut:
    slots, closed, _ = await service.bookable(session, principal, instrument_id, from_, to)
    return AvailabilityOut(instrument_id=instrument_id, **{"from": from_}, to=to,
                           slots=[Slot(start=s.start, end=s.end) for s in slots],
                           closed_days={d.isoformat(): reason for d, reason in closed.items()})


@router.post("/bookings", status_code=status.HTTP_201_CREATED, response_model=BookingPublic | SeriesResult,
             responses={409: {"description": "slot taken: problem+json with `conflicts` and `alternatives`"},
                        422: {"description": "every rule problem, each with a code and a Chinese message"}})
async def create_booking(session: SessionDep, principal: ApiUser, data: BookingCreate) -> Any:
    if data.repeat_weekly or data.repeat_until:
        series, created, skipped = await service.create_series(session, principal, data)
        return SeriesResult(series_id=series.id, created=[public(b) for b in created], skipped=skipped)  # type: ignore[arg-type]
    return public(await service.create_booking(session, principal, data))


@router.get("/bookings", response_model=Page[BookingPublic], summary="My bookings, or (scope=managed) a manager's")
async def list_bookings(
    session: SessionDep, principal: ApiUser, page: PageDep,
    scope: Annotated[str, Query(pattern="^(mine|managed)$")] = "mine",
    status_filter: Annotated[str | None, Query(alias="status", pattern="^[a-z_]+$")] = None,
    upcoming: bool | None = None,
    unpaid: Annotated[bool, Query(description="scope=managed：只列服务费用尚未登记付款（或免收）的预约")] = False,
) -> Page[BookingPublic]:
    if unpaid:
        if scope != "managed" or status_filter or upcoming is not None:
            raise RuleViolation("unpaid 只能单独与 scope=managed 一起使用", problems=[Problem(
                "unpaid", "scope", "unpaid 只能单独与 scope=managed 一起使用（我的服务费用见 /api/v1/service-records）")])
        rows, total = await service.managed_unpaid(session, principal, limit=page.limit, offset=page.offset)
    elif scope == "managed":
        rows, total = await service.managed_bookings(session, principal, status=status_filter, start=None, end=None,
                                                     limit=page.limit, offset=page.offset)
    else:
        rows, total = await service.my_bookings(session, principal, status=status_filter, upcoming=upcoming,
                                                limit=page.limit, offset=page.offset)
    return Page(items=[public(b) for b in rows], total=total, limit=page.limit, offset=page.offset)


@router.get("/bookings/{booking_id}.ics", summary="The booking as an iCalendar file",
            response_class=Response, responses={200: {"content": {"text/calendar": {}}}})
async def booking_ics(session: SessionDep, principal: ApiUser, booking_id: int) -> Response:
    booking, inst = await service.get_booking(session, principal, booking_id)
    text = await calendars.booking_ics(session, booking, inst)
    return Response(text, media_type="text/calendar; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="booking-{booking_id}.ics"'})


@router.get("/bookings/{booking_id}", response_model=BookingPublic)
async def get_booking(session: SessionDep, principal: ApiUser, booking_id: int) -> BookingPublic:
    booking, _ = await service.get_booking(session, principal, booking_id)
    return public(booking)


_ACTIONS = {"approve": "approve", "reject": "reject", "cancel": "cancel", "check-in": "check_in",
            "no-show": "no_show"}


@router.post("/bookings/bulk-decision", summary="Approve or reject several pending requests at once")
async def bulk_decision(session: SessionDep, principal: ApiUser, data: BulkDecision) -> dict[str, Any]:
    done = []
    for booking_id in data.booking_ids:
        done.append(public(await service.transition(session, principal, booking_id, data.action, note=data.note)))
    return {"items": done, "total": len(done)}


@router.post("/bookings/{booking_id}/check-out", response_model=ServiceRecordPublic,
             summary="Check out; creates the service record")
async def check_out(session: SessionDep, principal: ApiUser, booking_id: int, data: CheckOut | None = None
                    ) -> ServiceRecordPublic:
    data = data or CheckOut()
    booking = await service.transition(session, principal, booking_id, "check_out", note=data.note,
                                       samples=data.samples, service_type=data.service_type)
    return await _record_of(session, booking.id)  # type: ignore[arg-type]


@router.post("/bookings/{booking_id}/record-service", response_model=ServiceRecordPublic,
             summary="Managers: record a service that ran without check-in (e.g. samples sent in)")
async def record_service(session: SessionDep, principal: ApiUser, booking_id: int, data: CheckOut | None = None
                         ) -> ServiceRecordPublic:
    data = data or CheckOut()
    booking = await service.transition(session, principal, booking_id, "record_service", note=data.note,
                                       samples=data.samples, service_type=data.service_type)
    return await _record_of(session, booking.id)  # type: ignore[arg-type]


async def _record_of(session: SessionDep, booking_id: int) -> ServiceRecordPublic:
    return ServiceRecordPublic.model_validate(await usage.record_of_booking(session, booking_id))


@router.post("/bookings/{booking_id}/{action}", response_model=BookingPublic,
             summary="approve | reject | cancel | check-in | no-show")
async def act(session: SessionDep, principal: ApiUser, booking_id: int, action: str,
              data: Decision | None = None) -> BookingPublic:
    if action not in _ACTIONS:
        raise RuleViolation("未知操作", problems=[Problem("action", "unknown_action",
                                                       f"未知操作 {action}；可用：{', '.join(_ACTIONS)}")])
    booking = await service.transition(session, principal, booking_id, _ACTIONS[action],
                                       note=data.note if data else None)
    return public(booking)


@router.get("/service-records", response_model=Page[ServiceRecordPublic], summary="My service records")
async def my_records(session: SessionDep, principal: ApiUser, page: PageDep) -> Page[ServiceRecordPublic]:
    rows, total = await usage.my_records(session, principal, limit=page.limit, offset=page.offset)
    return Page(items=[ServiceRecordPublic.model_validate(r) for r in rows], total=total,
                limit=page.limit, offset=page.offset)


@router.post("/service-records/{record_id}/payment", response_model=ServiceRecordPublic,
             summary="Providers: the fee was paid (when, how, invoice number)")
async def record_payment(session: SessionDep, principal: ApiUser, record_id: int, data: PaymentIn
                         ) -> ServiceRecordPublic:
    rec = await usage.record_payment(session, principal, record_id, method=data.method, paid_at=data.paid_at,
                                     amount=data.amount, invoice_number=data.invoice_number, note=data.note)
    return ServiceRecordPublic.model_validate(rec)


@router.post("/service-records/{record_id}/waive", response_model=ServiceRecordPublic,
             summary="Providers: waive the fee, with the reason")
async def waive_payment(session: SessionDep, principal: ApiUser, record_id: int, data: PaymentReason
                        ) -> ServiceRecordPublic:
    return ServiceRecordPublic.model_validate(await usage.waive_payment(session, principal, record_id,
                                                                        reason=data.reason))


@router.post("/service-records/{record_id}/payment/reset", response_model=ServiceRecordPublic,
             summary="Providers: take back a payment or waiver recorded by mistake")
async def reset_payment(session: SessionDep, principal: ApiUser, record_id: int, data: PaymentReason
                        ) -> ServiceRecordPublic:
    return ServiceRecordPublic.model_validate(await usage.reset_payment(session, principal, record_id,
                                                                        reason=data.reason))


@router.post("/service-records/{record_id}/rating", response_model=ServiceRecordPublic)
async def rate(session: SessionDep, principal: ApiUser, record_id: int, data: RatingIn) -> ServiceRecordPublic:
    return ServiceRecordPublic.model_validate(await usage.rate(session, principal, record_id, data.rating,
                                                               data.comment))


