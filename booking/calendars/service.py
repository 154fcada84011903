"""Subscribable iCalendar feeds: my bookings (secret-token URL), an instrument's busy times (public, anonymous),
a facility's bookings (its managers).

Every event of a booking uses the booking's stable UID and its SEQUENCE, so the single `.ics` download, the
personal feed and the facility feed describe the same event and a client updates it in place. Feeds reach back
`PAST` so recent cancellations still reach subscribers as STATUS:CANCELLED.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import ics
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Facility, Institution, User
from booking.auth.principal import Principal
from booking.calendars import repository as repo
from booking.core.clock import utcnow
from booking.core.errors import Forbidden, NotFound
from booking.core.security import new_token, token_digest
from booking.core.settings import get_settings
from booking.reservations.calendars import host, location_of
from booking.reservations.models import STATUS_LABELS, Booking, CalendarToken
from instruments.models import Instrument
from instruments.service import get_visible
from scheduling.ical import booking_event, busy_feed_text, calendar_text
from scheduling.intervals import Interval

PAST = timedelta(days=90)
BUSY_AHEAD = timedelta(days=180)


def feed_url(token: str) -> str:
    return f"{get_settings().base_url.rstrip('/')}/calendar/my/{token}.ics"


def _ical_status(status: str) -> str:
    # A waitlist hold is an offer the user has not taken yet: tentative, like a pending request.
    return "TENTATIVE" if status == "held" else status


async def _event(session: AsyncSession, booking: Booking, inst: Instrument, cache: dict[int, Institution | None],
                 user: User | None = None) -> ics.Event:
    if inst.institution_id not in cache:
        cache[inst.institution_id] = await session.get(Institution, inst.institution_id)
    base = get_settings().base_url.rstrip("/")
    lines = [f"仪器：{inst.name}" + (f"（{inst.model}）" if inst.model else ""),
             f"状态：{STATUS_LABELS.get(booking.status, booking.status)}"]
    if user is not None:  # the facility feed is for its managers: who booked, and why
        lines += [f"预约人：{user.name}（{user.email}）", f"用途：{booking.purpose}"]
    lines.append(f"预约详情：{base}/bookings/{booking.id}")
    return booking_event(
        booking_id=booking.id, host=host(), start=booking.start_at, end=booking.end_at,  # type: ignore[arg-type]
        status=_ical_status(booking.status), sequence=booking.sequence, instrument_name=inst.name,
        location=location_of(inst, cache[inst.institution_id]), description="\n".join(lines),
        stamp=booking.updated_at, url=f"{base}/bookings/{booking.id}",
    )


# ---- my bookings ------------------------------------------------------------------------------------------------

@dataclass
class TokenCreated:
    token: CalendarToken
    url: str


async def create_token(session: AsyncSession, principal: Principal) -> TokenCreated:
    """A new secret feed URL, shown once; any earlier one stops working (one live feed per user)."""
    from booking.activity.service import record

    now = utcnow()
    revoked = await repo.revoke_tokens(session, principal.id, now)
    secret = new_token(32)
    row = CalendarToken(user_id=principal.id, digest=token_digest(secret), created_at=now)
    session.add(row)
    await session.flush()
    record(session, actor_id=principal.id, action="calendar_token.created", target_type="user",
           target_id=principal.id, after={"replaced": revoked})
    return TokenCreated(row, feed_url(secret))


async def revoke_token(session: AsyncSession, principal: Principal) -> int:
    from booking.activity.service import record

    revoked = await repo.revoke_tokens(session, principal.id, utcnow())
    if not revoked:
        raise NotFound("没有有效的日历订阅地址")
    record(session, actor_id=principal.id, action="calendar_token.revoked", target_type="user",
           target_id=principal.id, after={"revoked": revoked})
    return revoked


async def token_status(session: AsyncSession, principal: Principal) -> CalendarToken | None:
    return await repo.active_token(session, principal.id)


async def my_feed(session: AsyncSession, token: str) -> str:
    """The feed behind a secret URL; an unknown or revoked token (or an inactive user) is a 404."""
    row = await repo.token_by_digest(session, token_digest(token))
    user = await session.get(User, row.user_id) if row else None
    if row is None or user is None or not user.is_active:
        raise NotFound("日历订阅地址无效或已撤销")
    cache: dict[int, Institution | None] = {}
    rows = await repo.bookings_of_user(session, user.id, utcnow() - PAST)  # type: ignore[arg-type]
    events = [await _event(session, b, i, cache) for b, i in rows]
    return calendar_text(events, name=f"我的仪器预约（{user.name}）")


# ---- one instrument's busy time -----------------------------------------------------------------------------------

async def instrument_busy_feed(session: AsyncSession, principal: Principal | None, instrument_id: int) -> str:
    """Public busy times: when the instrument is taken, nothing about by whom or why. Restricted instruments
    the reader may not see are 404, as everywhere else."""
    inst = await get_visible(session, principal, instrument_id)
    now = utcnow()
    rows = await repo.busy_of_instrument(session, instrument_id, now - PAST, now + BUSY_AHEAD)
    busy = [Interval(b.start_at, b.end_at) for b in rows]
    stamp = await repo.latest_change(rows) or inst.updated_at
    return busy_feed_text(instrument_id=instrument_id, instrument_name=inst.name, busy=busy, host=host(),
                          stamp=stamp)


# ---- a facility's bookings, for its managers ------------------------------------------------------------------------

async def facility_feed(session: AsyncSession, principal: Principal, facility_id: int) -> str:
    facility = await session.get(Facility, facility_id)
    if facility is None:
        raise NotFound(f"平台/实验室 {facility_id} 不存在")
    if not principal.manages_facility(facility.institution_id, facility.id):
        raise Forbidden("只有该平台/实验室的管理员可以订阅其预约日历")
    cache: dict[int, Institution | None] = {}
    rows = await repo.bookings_of_facility(session, facility_id, utcnow() - PAST)
    events = [await _event(session, b, i, cache, user=u) for b, i, u in rows]
    return calendar_text(events, name=f"{facility.name} 仪器预约")
