"""The background jobs under a frozen clock: each processes everything due, a second run processes nothing, and
a run after downtime catches up on several due items at once."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Role
from booking.activity.models import ActivityEntry
from booking.notify.models import OutboxEmail
from booking.reservations.models import Booking, BookingBlock
from scheduling.models import Qualification
from scheduling.runner import Job, load_jobs, registered_jobs, run_job_once
from tests.factories import make_institution, make_instrument, make_schedule, make_user
from tests.ops_helpers import NOW, Clock, count, fresh, make_booking, notifications_of


def job(name: str) -> Job:
    load_jobs()
    return {j.name: j for j in registered_jobs()}[name]


async def _world(session: AsyncSession, **rules: Any) -> dict[str, Any]:
    owner = await make_institution(session)
    inst = await make_instrument(session, owner, name="场发射扫描电镜")
    await make_schedule(session, inst, **rules)
    return {"inst": inst, "user": await make_user(session), "other": await make_user(session),
            "manager": await make_user(session, role=Role.facility_manager, grant_institution=owner)}


async def _actions(session: AsyncSession, booking_id: int) -> list[tuple[str, int | None]]:
    rows = await session.execute(select(ActivityEntry.action, ActivityEntry.actor_id).where(
        ActivityEntry.target_type == "booking", ActivityEntry.target_id == str(booking_id)))
    return [(a, b) for a, b in rows.all()]


class TestJobsRegistered:
    def test_every_job_is_registered(self) -> None:
        load_jobs()
        assert {j.name for j in registered_jobs()} >= {
            "expire_pending", "mark_no_shows", "send_reminders", "expire_qualifications", "release_holds",
            "email_outbox"}


class TestExpirePending:
    async def test_expires_overdue_requests_once_and_catches_up(self, session: AsyncSession, clock: Clock) -> None:
        w = await _world(session)
        # Downtime: three requests started while the scheduler was down, none decided.
        overdue = [await make_booking(session, w["inst"], w["user"], NOW - timedelta(hours=h), status="pending")
                   for h in (30, 5, 1)]
        future = await make_booking(session, w["inst"], w["user"], NOW + timedelta(hours=2), status="pending")
        confirmed = await make_booking(session, w["inst"], w["other"], NOW - timedelta(hours=3))
        assert await run_job_once(job("expire_pending"), NOW) == 3
        for b in overdue:
            row = await fresh(session, Booking, b.id)
            assert row.status == "expired" and row.sequence == 1
            assert ("booking.expire", None) in await _actions(session, b.id)
        assert (await fresh(session, Booking, future.id)).status == "pending"
        assert (await fresh(session, Booking, confirmed.id)).status == "confirmed"
        assert len(await notifications_of(session, w["user"].id, "booking.expire")) == 3
        assert await run_job_once(job("expire_pending"), NOW) == 0
        assert len(await notifications_of(session, w["user"].id, "booking.expire")) == 3
        # Time moves on: the future request is due now, and only it.
        assert await run_job_once(job("expire_pending"), clock.advance(hours=3)) == 1


class TestNoShows:
    async def test_grace_period_of_the_instrument(self, session: AsyncSession, clock: Clock) -> None:
        w = await _world(session, no_show_grace_min=30)
        late = await make_booking(session, w["inst"], w["user"], NOW - timedelta(minutes=31), hours=0.25)
        in_grace = await make_booking(session, w["inst"], w["other"], NOW - timedelta(minutes=15), hours=2)
        checked_in = await make_booking(session, w["inst"], w["other"], NOW - timedelta(hours=5), status="in_use",
                                        checked_in_at=NOW - timedelta(hours=5))
        assert await run_job_once(job("mark_no_shows"), NOW) == 1
        assert (await fresh(session, Booking, late.id)).status == "no_show"
        assert (await fresh(session, Booking, in_grace.id)).status == "confirmed"
        assert (await fresh(session, Booking, checked_in.id)).status == "in_use"
        assert ("booking.no_show", None) in await _actions(session, late.id)
        assert await run_job_once(job("mark_no_shows"), NOW) == 0
        assert await run_job_once(job("mark_no_shows"), clock.advance(minutes=14)) == 0
        assert await run_job_once(job("mark_no_shows"), clock.advance(minutes=1)) == 1

    async def test_blocks_the_user_after_the_limit_in_one_catch_up(self, session: AsyncSession, clock: Clock) -> None:
        w = await _world(session, no_show_grace_min=60)
        for days in (20, 10, 2):
            await make_booking(session, w["inst"], w["user"], NOW - timedelta(days=days))
        assert await count(session, BookingBlock, BookingBlock.user_id == w["user"].id) == 0
        assert await run_job_once(job("mark_no_shows"), NOW) == 3
        blocks = list(await session.scalars(select(BookingBlock).where(BookingBlock.user_id == w["user"].id)))
        assert len(blocks) == 1 and blocks[0].lifted_at is None
        assert len(await notifications_of(session, w["user"].id, "booking.blocked")) == 1
        assert await run_job_once(job("mark_no_shows"), NOW) == 0


class TestReminders:
    async def test_one_reminder_per_booking_within_the_window(self, session: AsyncSession, clock: Clock) -> None:
        w = await _world(session)
        soon = [await make_booking(session, w["inst"], w["user"], NOW + timedelta(hours=h)) for h in (1, 10, 23)]
        later = await make_booking(session, w["inst"], w["user"], NOW + timedelta(hours=30))
        pending = await make_booking(session, w["inst"], w["other"], NOW + timedelta(hours=2), status="pending")
        past = await make_booking(session, w["inst"], w["other"], NOW - timedelta(hours=2))
        assert await run_job_once(job("send_reminders"), NOW) == 3
        for b in soon:
            assert (await fresh(session, Booking, b.id)).reminder_sent_at == NOW
        for b in (later, pending, past):
            assert (await fresh(session, Booking, b.id)).reminder_sent_at is None
        notes = await notifications_of(session, w["user"].id, "booking.reminder")
        assert len(notes) == 3 and "场发射扫描电镜" in notes[0].title and "北京时间" in notes[0].body
        # Through notify: an email per reminder waits in the outbox, written in the job's transaction.
        assert await count(session, OutboxEmail, OutboxEmail.to_address == w["user"].email,
                           OutboxEmail.subject.like("预约提醒%")) == 3
        assert await run_job_once(job("send_reminders"), NOW) == 0
        assert await run_job_once(job("send_reminders"), clock.advance(hours=7)) == 1
        assert (await fresh(session, Booking, later.id)).reminder_sent_at == clock.now


class TestQualificationExpiry:
    async def test_notified_once_after_the_last_valid_day(self, session: AsyncSession, clock: Clock) -> None:
        w = await _world(session)
        today = date(2026, 12, 1)  # local date at NOW
        expired = [Qualification(instrument_id=w["inst"].id, user_id=u.id, valid_until=today - timedelta(days=d))
                   for u, d in ((w["user"], 1), (w["other"], 40))]
        still_valid = Qualification(instrument_id=w["inst"].id, user_id=w["manager"].id, valid_until=today)
        session.add_all([*expired, still_valid])
        await session.flush()
        assert await run_job_once(job("expire_qualifications"), NOW) == 2
        for q in expired:
            assert (await fresh(session, Qualification, q.id)).expired_notified_at == NOW
        assert (await fresh(session, Qualification, still_valid.id)).expired_notified_at is None
        assert len(await notifications_of(session, w["user"].id, "qualification.expired")) == 1
        assert await run_job_once(job("expire_qualifications"), NOW) == 0
        # The last valid day ends at local midnight: 16:00 UTC.
        assert await run_job_once(job("expire_qualifications"), clock.advance(hours=23, minutes=59)) == 0
        assert await run_job_once(job("expire_qualifications"), clock.advance(minutes=1)) == 1


class TestReleaseHolds:
    async def test_expired_holds_free_the_slot(self, session: AsyncSession, clock: Clock) -> None:
        w = await _world(session)
        lapsed = [await make_booking(session, w["inst"], w["user"], NOW + timedelta(days=1, hours=h), status="held",
                                     hold_expires_at=NOW - timedelta(minutes=m)) for h, m in ((0, 1), (2, 600))]
        live = await make_booking(session, w["inst"], w["other"], NOW + timedelta(days=1, hours=4), status="held",
                                  hold_expires_at=NOW + timedelta(minutes=30))
        assert await run_job_once(job("release_holds"), NOW) == 2
        for b in lapsed:
            row = await fresh(session, Booking, b.id)
            assert (row.status, row.hold_expires_at, row.sequence) == ("expired", None, 1)
            assert ("booking.expire_hold", None) in await _actions(session, b.id)
        assert (await fresh(session, Booking, live.id)).status == "held"
        assert len(await notifications_of(session, w["user"].id, "booking.expire_hold")) == 2
        assert await run_job_once(job("release_holds"), NOW) == 0
        # The freed slot can be booked again: the exclusion constraint no longer holds it.
        await make_booking(session, w["inst"], w["other"], lapsed[0].start_at)
        assert await run_job_once(job("release_holds"), clock.advance(minutes=30)) == 1
