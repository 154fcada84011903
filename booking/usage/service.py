"""Service records: created at check-out or by a manager's entry, in the national platform's shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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
from booking.usage.rules import NO_FEE_BASIS, PAYMENT_METHODS, PaymentAction, fee_known, payment_refusal, payment_state
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


def fee_of(inst: Instrument, *, hours: Decimal, samples: int, external: bool) -> tuple[Decimal, str]:
    """The fee of one service and how it was computed, in words; nil with NO_FEE_BASIS when the instrument has
    no structured fees."""
    schedule = fee_schedule(inst)
    if schedule is None:
        return Decimal("0.00"), NO_FEE_BASIS
    fee = fee_breakdown(schedule, hours=hours, samples=samples, uses=1, external=external)
    group = "校外/单位外价格" if external else "校内/单位内价格"
    basis = (f"{group} {fee.unit_price} 元/{_UNIT_TEXT[fee.unit]} × {fee.quantity} = {fee.subtotal:.2f} 元"
             + (f"，按最低收费 {fee.minimum_fee} 元" if fee.minimum_applied else ""))
    return fee.amount, basis


async def record_from_booking(session: AsyncSession, booking: Booking, inst: Instrument, *, started_at: datetime,
                              ended_at: datetime, samples: int, service_type: str, recorded_by: int | None
                              ) -> ServiceRecord:
    user = await session.get(User, booking.user_id)
    assert user is not None
    external = user.institution_id != inst.institution_id
    hours = billable_hours(started_at, ended_at)
    amount, basis = fee_of(inst, hours=hours, samples=samples, external=external)
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

_PAYMENT_FIELDS = ["payment_status", "paid_at", "payment_method", "paid_amount", "invoice_number", "payment_note"]


def _payment_of(rec: ServiceRecord) -> dict[str, object]:
    return {f: getattr(rec, f) for f in _PAYMENT_FIELDS}


_MAX_ID = 2**63 - 1


async def record_of_id(session: AsyncSession, actor: Principal, record_id: int) -> ServiceRecord:
    """A service record its user or a manager of its instrument may see; else 404."""
    rec = await session.get(ServiceRecord, record_id) if 0 < record_id <= _MAX_ID else None
    inst = await session.get(Instrument, rec.instrument_id) if rec is not None else None
    if rec is None or inst is None or not (rec.user_id == actor.id or _provides(actor, rec, inst)):
        raise NotFound(f"服务记录 {record_id} 不存在")
    return rec


def _provides(actor: Principal, rec: ServiceRecord, inst: Instrument) -> bool:
    """Whether the actor manages the provider of this service: the institution it was recorded for (an instrument
    moved to another institution since leaves its past services with the old one), and the instrument's facility
    while it is still there."""
    facility = inst.facility_id if inst.institution_id == rec.provider_institution_id else None
    return may_manage(actor, rec.provider_institution_id, facility)


async def _settleable(session: AsyncSession, actor: Principal, record_id: int, action: PaymentAction
                      ) -> tuple[ServiceRecord, Instrument]:
    """The record, locked, if the actor manages its instrument and `action` fits its payment state."""
    rec = (await session.get(ServiceRecord, record_id, with_for_update=True, populate_existing=True)
           if 0 < record_id <= _MAX_ID else None)
    inst = await session.get(Instrument, rec.instrument_id) if rec is not None else None
    if rec is None or inst is None:
        raise NotFound(f"服务记录 {record_id} 不存在")
    if not _provides(actor, rec, inst):
        if rec.user_id != actor.id:
            raise NotFound(f"服务记录 {record_id} 不存在")
        raise Forbidden("付款情况由仪器所属单位的管理员登记")
    if action != "pay" and rec.user_id == actor.id and not actor.is_admin:
        raise Forbidden("不能为自己使用的服务免收费用或撤销付款记录，请由本单位其他管理员办理")
    why = payment_refusal(payment_state(rec.amount, rec.payment_status, rec.fee_basis), action)
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


# Paid in advance is usual ("pay before the data is released"), a year ahead is not: an earlier date is a typo.
_PREPAID_AT_MOST = timedelta(days=366)


async def record_payment(session: AsyncSession, actor: Principal, record_id: int, *, method: str,
                         paid_at: datetime | None, amount: Decimal | None, invoice_number: str | None,
                         note: str | None) -> ServiceRecord:
    """The provider received the fee: when (default now; not later, nor over a year before the service), how,
    how much (default the computed fee; required when the instrument had no structured fee) and the invoice
    number if one was issued."""
    rec, inst = await _settleable(session, actor, record_id, "pay")
    now = utcnow()
    problems = []
    if paid_at is not None and paid_at > now:
        problems.append(Problem("paid_at", "future", "付款时间不能晚于现在"))
    elif paid_at is not None and paid_at < rec.started_at - _PREPAID_AT_MOST:
        problems.append(Problem("paid_at", "too_early", "付款时间早于服务开始一年以上，请核对"))
    if amount is None and not fee_known(rec.fee_basis):
        problems.append(Problem("amount", "missing", "该仪器没有结构化收费标准，请填写实收金额"))
    if problems:
        raise RuleViolation("；".join(p.message for p in problems), problems=problems)
    received = amount if amount is not None else rec.amount
    before = _payment_of(rec)
    rec.payment_status, rec.paid_at, rec.payment_method = "paid", (paid_at or now).astimezone(UTC), method
    rec.paid_amount, rec.invoice_number, rec.payment_note = received, invoice_number, note
    invoice = f"，发票号 {invoice_number}" if invoice_number else ""
    body = f"{inst.name} 的服务费用已确认收到 {received} 元（{PAYMENT_METHODS[method]}{invoice}）。"
    return await _settled(session, actor, rec, inst, before, "paid", "付款已确认", body)


async def waive_payment(session: AsyncSession, actor: Principal, record_id: int, *, reason: str) -> ServiceRecord:
    """The provider does not charge this service (a test run, a repeat after a fault …), with the reason."""
    rec, inst = await _settleable(session, actor, record_id, "waive")
    before = _payment_of(rec)
    rec.payment_status, rec.payment_note = "waived", reason
    body = f"{inst.name} 的服务费用已免收。原因：{reason}"
    return await _settled(session, actor, rec, inst, before, "waived", "服务费用已免收", body)


async def reset_payment(session: AsyncSession, actor: Principal, record_id: int, *, reason: str) -> ServiceRecord:
    """Take back a payment or waiver recorded by mistake: the record is unpaid again; the log keeps both."""
    rec, inst = await _settleable(session, actor, record_id, "reset")
    before = _payment_of(rec)
    rec.payment_status, rec.paid_at, rec.payment_method, rec.invoice_number = "unpaid", None, None, None
    rec.paid_amount = rec.payment_note = None  # the reason is in the activity log, with what was taken back
    body = f"{inst.name} 的服务费用的付款记录已撤销，当前为待付款。原因：{reason}"
    return await _settled(session, actor, rec, inst, before, "payment_reset", "付款记录已撤销", body)
