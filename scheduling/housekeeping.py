"""What the background jobs do, one function per job, each over the whole range that is due.

Each function takes `now` (so jobs are testable under a frozen clock), selects what is due and not yet processed
with `FOR UPDATE SKIP LOCKED`, and changes it so that it is no longer due: running it again processes nothing,
running it after downtime processes everything missed, and two processes never process the same row (the
runner's advisory lock already keeps a second process out; the row locks keep the guarantee on their own).

Status changes go through `booking.reservations.service.transition` with no principal (the system actor).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from booking.activity.service import record
from booking.core.clock import to_local
from booking.core.settings import get_settings
from booking.notify.service import notify
from booking.reservations import repository as booking_repo
from booking.reservations.models import Booking
from booking.reservations.service import transition
from instruments.models import Instrument
from scheduling import queries
from scheduling.intervals import local_date

BATCH = 500


def _when(booking: Booking) -> str:
    return f"{to_local(booking.start_at):%Y-%m-%d %H:%M}–{to_local(booking.end_at):%H:%M}"


async def _transition_due(session: AsyncSession, now: datetime, due: Any, action: str) -> int:
    """Apply the system `action` to every booking `due` returns, batch by batch, until none is left (catch-up)."""
    done = 0
    while True:
        batch = await due(session, now, limit=BATCH)
        for booking in batch:
            await transition(session, None, booking.id, action, booking=booking, now=now)
        done += len(batch)
        if len(batch) < BATCH:
            return done


async def expire_overdue_requests(session: AsyncSession, now: datetime) -> int:
    """Pending requests nobody decided before their start become `expired` (the slot is freed)."""
    return await _transition_due(session, now, booking_repo.due_pending, "expire")


async def mark_no_shows(session: AsyncSession, now: datetime) -> int:
    """Confirmed bookings without check-in once the instrument's grace period has passed become `no_show`;
    the transition blocks the user after the configured number of no-shows."""
    return await _transition_due(session, now, booking_repo.due_no_shows, "no_show")


async def send_reminders(session: AsyncSession, now: datetime) -> int:
    """One reminder per confirmed booking starting within `reminder_before_h`, through `notify` (in-app and
    email outbox); `reminder_sent_at` marks it done."""
    until = now + timedelta(hours=get_settings().reminder_before_h)
    done = 0
    while True:
        batch = await booking_repo.due_reminders(session, now, until, limit=BATCH)
        for booking in batch:
            inst = await session.get(Instrument, booking.instrument_id)
            name = inst.name if inst else f"仪器 {booking.instrument_id}"
            booking.reminder_sent_at = now
            await notify(session, booking.user_id, kind="booking.reminder", title=f"预约提醒：{name}",
                         body=f"您预约的 {name} 将于 {_when(booking)}（北京时间）开始，请按时签到上机。"
                              "如不能到场，请提前取消，以免记为爽约。",
                         link=f"/bookings/{booking.id}")
        await session.flush()
        done += len(batch)
        if len(batch) < BATCH:
            return done


async def expire_qualifications(session: AsyncSession, now: datetime) -> int:
    """Qualifications whose last valid day has passed: tell the user once (`expired_notified_at`)."""
    today = local_date(now)
    done = 0
    while True:
        batch = await queries.due_expired_qualifications(session, today, limit=BATCH)
        for qual in batch:
            inst = await session.get(Instrument, qual.instrument_id)
            name = inst.name if inst else f"仪器 {qual.instrument_id}"
            qual.expired_notified_at = now
            record(session, actor_id=None, action="qualification.expired", target_type="qualification",
                   target_id=qual.id, after={"instrument_id": qual.instrument_id, "user_id": qual.user_id,
                                             "valid_until": qual.valid_until})
            await notify(session, qual.user_id, kind="qualification.expired", title=f"上机资格已到期：{name}",
                         body=f"您在 {name} 上的上机资格已于 {qual.valid_until} 到期，需重新培训考核后才能预约。"
                              "请联系仪器管理员续期。",
                         link=None)
        await session.flush()
        done += len(batch)
        if len(batch) < BATCH:
            return done


async def release_expired_holds(session: AsyncSession, now: datetime) -> int:
    """Waitlist offers (`held`) not taken up by `hold_expires_at` become `expired` through `transition`
    ("expire_hold", the system actor), which frees the slot: the waitlist's freed-time listener then offers it to
    the next user in line in this same transaction (scheduling.waitlist)."""
    done = 0
    while True:
        batch = await queries.due_holds(session, now, limit=BATCH)
        for booking in batch:
            await transition(session, None, booking.id, "expire_hold", booking=booking, now=now)  # type: ignore[arg-type]
        done += len(batch)
        if len(batch) < BATCH:
            return done
