"""Managers qualify users on an instrument (training passed) until an expiry date, and lift no-show blocks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import User
from booking.activity.service import record
from booking.auth.principal import Principal
from booking.core.clock import utcnow
from booking.core.errors import Forbidden, NotFound, Problem, RuleViolation
from booking.notify.service import notify
from booking.reservations.models import BookingBlock
from booking.reservations.service import lift_block
from scheduling import queries
from scheduling.editor import managed_instrument
from scheduling.intervals import local_date
from scheduling.models import Qualification
from scheduling.schemas import QualificationIn

MAX_VALIDITY = timedelta(days=5 * 366)


@dataclass
class QualificationView:
    qualification: Qualification
    user: User
    expired: bool


def _expired(q: Qualification, today: date) -> bool:
    return q.valid_until is not None and q.valid_until < today


async def list_qualifications(session: AsyncSession, principal: Principal, instrument_id: int
                              ) -> list[QualificationView]:
    await managed_instrument(session, principal, instrument_id)
    today = local_date(utcnow())
    return [QualificationView(q, u, _expired(q, today)) for q, u in await queries.qualifications(session, instrument_id)]


async def grant_qualification(session: AsyncSession, principal: Principal, instrument_id: int, data: QualificationIn
                              ) -> QualificationView:
    """Qualify a user, or renew an existing qualification with a new expiry (which re-arms the expiry notice)."""
    inst = await managed_instrument(session, principal, instrument_id)
    problems: list[Problem] = []
    today = local_date(utcnow())
    user: User | None = None
    if data.user_id is None and data.email is None:
        problems.append(Problem("user_id", "missing", "请填写用户编号或邮箱"))
    elif data.user_id is not None and data.email is not None:
        problems.append(Problem("email", "one_of", "用户编号和邮箱只填一个"))
    elif data.user_id is not None:
        user = await session.get(User, data.user_id)
        if user is None or not user.is_active:
            problems.append(Problem("user_id", "unknown_user", f"用户 {data.user_id} 不存在"))
    else:
        user = await queries.user_by_email(session, str(data.email))
        if user is None or not user.is_active:
            problems.append(Problem("email", "unknown_user", f"没有邮箱为 {data.email} 的用户"))
    if data.valid_until < today:
        problems.append(Problem("valid_until", "in_past", "有效期不能早于今天"))
    elif data.valid_until > today + MAX_VALIDITY:
        problems.append(Problem("valid_until", "too_far", "有效期最长 5 年"))
    if problems:
        raise RuleViolation("上机资格设置有误", problems=problems)
    assert user is not None and user.id is not None
    row = await queries.qualification_of(session, instrument_id, user.id)
    before = {"valid_until": row.valid_until} if row else None
    if row is None:
        row = Qualification(instrument_id=instrument_id, user_id=user.id, valid_until=data.valid_until,
                            granted_by=principal.id, created_at=utcnow())
        session.add(row)
    else:
        row.valid_until = data.valid_until
        row.granted_by = principal.id
        row.expired_notified_at = None
    await session.flush()
    record(session, actor_id=principal.id, action="qualification.granted", target_type="qualification",
           target_id=row.id, before=before,
           after={"instrument_id": instrument_id, "user_id": user.id, "valid_until": data.valid_until})
    await notify(session, user.id, kind="qualification.granted", title=f"已取得上机资格：{inst.name}",
                 body=f"您已取得 {inst.name} 的上机资格，有效期至 {data.valid_until}。", link=None)
    return QualificationView(row, user, False)


async def revoke_qualification(session: AsyncSession, principal: Principal, instrument_id: int, user_id: int
                               ) -> None:
    inst = await managed_instrument(session, principal, instrument_id)
    row = await queries.qualification_of(session, instrument_id, user_id)
    if row is None:
        raise NotFound(f"用户 {user_id} 在该仪器上没有上机资格")
    record(session, actor_id=principal.id, action="qualification.revoked", target_type="qualification",
           target_id=row.id, before={"instrument_id": instrument_id, "user_id": user_id,
                                     "valid_until": row.valid_until})
    await session.delete(row)
    await session.flush()
    await notify(session, user_id, kind="qualification.revoked", title=f"上机资格已撤销：{inst.name}",
                 body=f"您在 {inst.name} 上的上机资格已被仪器管理员撤销。如有疑问请联系仪器管理员。", link=None)


async def blocks_for_instrument(session: AsyncSession, principal: Principal, instrument_id: int
                                ) -> list[tuple[BookingBlock, User]]:
    await managed_instrument(session, principal, instrument_id)
    return await queries.active_blocks_of_instrument_users(session, instrument_id)


async def lift(session: AsyncSession, principal: Principal, user_id: int, reason: str) -> BookingBlock:
    """Lift a user's no-show block (reservations owns the rule); the user is told they may book again."""
    if not (principal.is_admin or principal.managed_institution_ids):
        # Decided before looking the block up, so a researcher learns nothing about other users' blocks.
        raise Forbidden("只有仪器管理员可以解除暂停")
    block = await lift_block(session, principal, user_id, reason)
    await session.flush()
    await notify(session, user_id, kind="booking.unblocked", title="预约资格已恢复",
                 body=f"仪器管理员已解除您的预约暂停。说明：{reason}", link=None)
    return block
