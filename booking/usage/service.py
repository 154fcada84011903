"""Service records: created at check-out or by a manager's entry, in the national platform's shape."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import User
from booking.activity.service import record
from booking.auth.principal import Principal
from booking.core.clock import utcnow
from booking.core.errors import Conflict, Forbidden, NotFound, Problem, RuleViolation
from booking.notify.service import notify
from booking.reservations.models import Booking
from booking.usage import repository as repo
from booking.usage.models import ServiceRecord
from booking.usage.rules import PAYMENT_METHODS, PaymentAction, payment_refusal, payment_state
from instruments.models import Instrument
from instruments.service import may_manage
from scheduling.fees import FeeSchedule, billable_hours, fee_breakdown

_UNIT_TEXT = {"hour": "小时", "sample": "个样品", "use": "次"}


def fee_schedule(inst: Instrument) -> FeeSchedule | None:
    if not inst.fee_unit:
        return None
    internal = inst.fee_internal if inst.fee_internal is not None else Decimal(0)
    external = inst.fee_external if inst.fee_external is not None else internal
    return FeeSchedule(unit=inst.fee_unit, internal_price=Decimal(internal), external_price=Decimal(external),  # type: ignore[arg-type]
                       minimum_fee=Decimal(inst.fee_minimum or 0))


def fee_estimate(inst: Instrument, user_institution_id: int | None, start: datetime, end: datetime) -> str | None:
    """What a booking of [start, end) is expected to cost this user, in words, before it is made: by the rules the
    service record will charge by (the price group, the quarter-hour rounding, the minimum fee). None when the
    instrument has no structured fee."""
    schedule = fee_schedule(inst)
    if schedule is None:
        return None
    external = user_institution_id != inst.institution_id
    group = "校外/单位外价格" if external else "校内/单位内价格"
    price = schedule.external_price if external else schedule.internal_price
    minimum = f"，最低收费 {schedule.minimum_fee} 元" if schedule.minimum_fee else ""
    if schedule.unit == "hour":
        fee = fee_breakdown(schedule, hours=billable_hours(start, end), external=external)
        floor = f"（按最低收费 {fee.minimum_fee} 元）" if fee.minimum_applied else ""
        return (f"预计费用 {fee.amount} 元{floor}：{group} {price} 元/小时 × {fee.quantity} 小时；"
                "按实际上机时间结算")
    if schedule.unit == "sample":
        return f"按样品收费：{group} {price} 元/个样品{minimum}；按实际样品数结算"
    fee = fee_breakdown(schedule, uses=1, external=external)
    return f"预计费用 {fee.amount} 元：{group} {price} 元/次{minimum}"


async def record_from_booking(session: AsyncSession, booking: Booking, inst: Instrument, *, started_at: datetime,
                              ended_at: datetime, samples: int, service_type: str, recorded_by: int | None
                              ) -> ServiceRecord:
    user = await session.get(User, booking.user_id)
    assert user is not None
    external = user.institution_id != inst.institution_id
    hours = billable_hours(started_at, ended_at)
    schedule = fee_schedule(inst)
    if schedule is None:
        amount, basis = Decimal("0.00"), "未设置结构化收费标准"
    else:
        fee = fee_breakdown(schedule, hours=hours, samples=samples, uses=1, external=external)
        amount = fee.amount
        group = "校外/单位外价格" if external else "校内/单位内价格"
        basis = (f"{group} {fee.unit_price} 元/{_UNIT_TEXT[fee.unit]} × {fee.quantity} = {fee.subtotal:.2f} 元"
                 + (f"，按最低收费 {fee.minimum_fee} 元" if fee.minimum_applied else ""))
    rec = ServiceRecord(
        instrument_id=inst.id, booking_id=booking.id, user_id=user.id,  # type: ignore[arg-type]
        user_institution_id=user.institution_id, provider_institution_id=inst.institution_id, is_external=external,
        started_at=started_at, ended_at=ended_at, hours=hours, samples=samples, service_mode=booking.service_mode,
        service_type=service_type, project_name=booking.project_name, funding_source=booking.funding_source,
        applicant_name=user.name, amount=amount, fee_basis=basis, recorded_by=recorded_by,
    )
    session.add(rec)
    await session.flush()
    record(session, actor_id=recorded_by, action="service_record.created", target_type="service_record",
           target_id=rec.id, after={"booking_id": booking.id, "hours": hours, "amount": amount,
                                    "is_external": external})
    return rec


async def rate(session: AsyncSession, actor: Principal, record_id: int, rating: int, comment: str | None
               ) -> ServiceRecord:
    rec = await session.get(ServiceRecord, record_id, with_for_update=True)
    if rec is None or rec.user_id != actor.id:
        raise NotFound(f"服务记录 {record_id} 不存在")
    if rec.rating is not None:
        raise Conflict("已评价过该服务")
    rec.rating = rating
    rec.rating_comment = comment
    rec.rated_at = utcnow()
    record(session, actor_id=actor.id, action="service_record.rated", target_type="service_record",
           target_id=rec.id, after={"rating": rating, "comment": comment})
    return rec


async def records_of_bookings(session: AsyncSession, booking_ids: list[int]) -> dict[int, ServiceRecord]:
    """Booking id -> its service record, for the bookings that have one."""
    return await repo.by_booking(session, booking_ids)


async def record_of_booking(session: AsyncSession, booking_id: int) -> ServiceRecord:
    rec = (await repo.by_booking(session, [booking_id])).get(booking_id)
    if rec is None:
        raise NotFound(f"预约 {booking_id} 没有服务记录")
    return rec


async def my_records(session: AsyncSession, actor: Principal, *, limit: int, offset: int
                     ) -> tuple[list[ServiceRecord], int]:
    return await repo.of_user(session, actor.id, limit=limit, offset=offset)


# ---- payment -------------------------------------------------------------------------------------------------------

_PAYMENT_FIELDS = ["payment_status", "paid_at", "payment_method", "invoice_number", "payment_note"]


def _payment_of(rec: ServiceRecord) -> dict[str, object]:
    return {f: getattr(rec, f) for f in _PAYMENT_FIELDS}


_MAX_ID = 2**63 - 1


async def record_of_id(session: AsyncSession, actor: Principal, record_id: int) -> ServiceRecord:
    """A service record its user or a manager of its instrument may see; else 404."""
    rec = await session.get(ServiceRecord, record_id) if 0 < record_id <= _MAX_ID else None
    inst = await session.get(Instrument, rec.instrument_id) if rec is not None else None
    if rec is None or inst is None or not (rec.user_id == actor.id
                                           or may_manage(actor, inst.institution_id, inst.facility_id)):
        raise NotFound(f"服务记录 {record_id} 不存在")
    return rec


async def _settleable(session: AsyncSession, actor: Principal, record_id: int, action: PaymentAction
                      ) -> tuple[ServiceRecord, Instrument]:
    """The record, locked, if the actor manages its instrument and `action` fits its payment state."""
    rec = (await session.get(ServiceRecord, record_id, with_for_update=True, populate_existing=True)
           if 0 < record_id <= _MAX_ID else None)
    inst = await session.get(Instrument, rec.instrument_id) if rec is not None else None
    if rec is None or inst is None:
        raise NotFound(f"服务记录 {record_id} 不存在")
    if not may_manage(actor, inst.institution_id, inst.facility_id):
        if rec.user_id != actor.id:
            raise NotFound(f"服务记录 {record_id} 不存在")
        raise Forbidden("付款情况由仪器所属单位的管理员登记")
    why = payment_refusal(payment_state(rec.amount, rec.payment_status), action)
    if why is not None:
        raise Conflict(why, problems=[Problem(None, "payment_state", why)])
    return rec, inst


async def _settled(session: AsyncSession, actor: Principal, rec: ServiceRecord, inst: Instrument,
                   before: dict[str, object], action: str, title: str, body: str) -> ServiceRecord:
    rec.payment_recorded_by = actor.id
    rec.payment_recorded_at = utcnow()
    record(session, actor_id=actor.id, action=f"service_record.{action}", target_type="service_record",
           target_id=rec.id, before=before, after=_payment_of(rec))
    if rec.user_id is not None:
        await notify(session, rec.user_id, kind=f"service_record.{action}", title=f"{title}：{inst.name}", body=body,
                     link=f"/bookings/{rec.booking_id}" if rec.booking_id else None)
    await session.flush()
    return rec


async def record_payment(session: AsyncSession, actor: Principal, record_id: int, *, method: str,
                         paid_at: datetime | None, invoice_number: str | None, note: str | None) -> ServiceRecord:
    """The provider received the fee: when (default now, never later), how, and the invoice number if one was
    issued."""
    rec, inst = await _settleable(session, actor, record_id, "pay")
    now = utcnow()
    if paid_at is not None and paid_at > now:
        raise RuleViolation("付款时间不能晚于现在", problems=[Problem("paid_at", "future", "付款时间不能晚于现在")])
    before = _payment_of(rec)
    rec.payment_status, rec.paid_at, rec.payment_method = "paid", (paid_at or now).astimezone(UTC), method
    rec.invoice_number, rec.payment_note = invoice_number, note
    invoice = f"，发票号 {invoice_number}" if invoice_number else ""
    body = f"{inst.name} 的服务费用 {rec.amount} 元已确认收到（{PAYMENT_METHODS[method]}{invoice}）。"
    return await _settled(session, actor, rec, inst, before, "paid", "付款已确认", body)


async def waive_payment(session: AsyncSession, actor: Principal, record_id: int, *, reason: str) -> ServiceRecord:
    """The provider does not charge this service (a test run, a repeat after a fault …), with the reason."""
    rec, inst = await _settleable(session, actor, record_id, "waive")
    before = _payment_of(rec)
    rec.payment_status, rec.payment_note = "waived", reason
    body = f"{inst.name} 的服务费用 {rec.amount} 元已免收。原因：{reason}"
    return await _settled(session, actor, rec, inst, before, "waived", "服务费用已免收", body)


async def reset_payment(session: AsyncSession, actor: Principal, record_id: int, *, reason: str) -> ServiceRecord:
    """Take back a payment or waiver recorded by mistake: the record is unpaid again; the log keeps both."""
    rec, inst = await _settleable(session, actor, record_id, "reset")
    before = _payment_of(rec)
    rec.payment_status, rec.paid_at, rec.payment_method, rec.invoice_number = "unpaid", None, None, None
    rec.payment_note = reason
    body = f"{inst.name} 的服务费用 {rec.amount} 元的付款记录已撤销，当前为待付款。原因：{reason}"
    return await _settled(session, actor, rec, inst, before, "payment_reset", "付款记录已撤销", body)
