"""The email outbox against a real SMTP server (aiosmtpd on 127.0.0.1): sent after commit, never for a
rolled-back change, retried with backoff up to the attempt limit."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.core.db import unit_of_work
from booking.core.settings import get_settings
from booking.notify.models import OutboxEmail
from booking.notify.service import notify
from scheduling.runner import load_jobs, registered_jobs, run_job_once
from tests.factories import make_user
from tests.ops_helpers import NOW, Clock, fresh


class Sink:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [str(make_header(decode_header(m["Subject"]))) for m in self.messages]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    sink = Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("BOOKING_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("BOOKING_SMTP_PORT", str(port))
    get_settings.cache_clear()
    try:
        yield sink
    finally:
        controller.stop()
        monkeypatch.undo()
        get_settings.cache_clear()


@pytest.fixture
def dead_smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("BOOKING_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("BOOKING_SMTP_PORT", str(_free_port()))  # nothing listens there
    monkeypatch.setenv("BOOKING_SMTP_TIMEOUT_S", "2")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def outbox_job():  # type: ignore[no-untyped-def]
    load_jobs()
    return {j.name: j for j in registered_jobs()}["email_outbox"]


async def _unsent(session: AsyncSession) -> list[OutboxEmail]:
    return list(await session.scalars(select(OutboxEmail).where(OutboxEmail.sent_at.is_(None))
                                      .execution_options(populate_existing=True)))


class TestOutbox:
    async def test_sends_committed_rows_once(self, session: AsyncSession, smtp: Sink, clock: Clock) -> None:
        user = await make_user(session, email="zhang.san@example.cn")
        async with unit_of_work() as s:
            await notify(s, user.id, kind="booking.reminder", title="预约提醒：核磁共振波谱仪",  # type: ignore[arg-type]
                         body="您的预约将于明天 09:00 开始。", link="/bookings/1")
        assert await run_job_once(outbox_job(), NOW) == 1
        assert smtp.subjects() == ["预约提醒：核磁共振波谱仪"]
        msg = smtp.messages[0]
        assert msg["To"] == "zhang.san@example.cn"
        body = msg.get_payload(decode=True).decode("utf-8")  # type: ignore[union-attr]
        assert "09:00" in body and "/bookings/1" in body
        row = (await session.scalars(select(OutboxEmail).where(OutboxEmail.to_address == user.email)
                                     .execution_options(populate_existing=True))).one()
        assert (row.sent_at, row.attempts, row.last_error) == (NOW, 1, None)
        assert await run_job_once(outbox_job(), NOW) == 0
        assert len(smtp.messages) == 1

    async def test_rolled_back_change_sends_nothing(self, session: AsyncSession, smtp: Sink, clock: Clock) -> None:
        user = await make_user(session)
        with pytest.raises(RuntimeError):
            async with unit_of_work() as s:
                await notify(s, user.id, kind="booking.approve", title="预约已批准：回滚的变更",  # type: ignore[arg-type]
                             body="不应发出")
                await s.flush()
                raise RuntimeError("the change fails after notifying")
        async with unit_of_work() as s:
            await notify(s, user.id, kind="booking.approve", title="预约已批准：提交的变更", body="应发出")  # type: ignore[arg-type]
        assert await run_job_once(outbox_job(), NOW) == 1
        assert smtp.subjects() == ["预约已批准：提交的变更"]

    async def test_catches_up_on_a_backlog(self, session: AsyncSession, smtp: Sink, clock: Clock) -> None:
        users = [await make_user(session) for _ in range(5)]
        async with unit_of_work() as s:
            for u in users:
                await notify(s, u.id, kind="x", title=f"通知 {u.id}", body="积压")  # type: ignore[arg-type]
        assert await run_job_once(outbox_job(), clock.advance(hours=6)) == 5
        assert len(smtp.messages) == 5

    async def test_without_smtp_host_nothing_is_attempted(self, session: AsyncSession, clock: Clock,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("BOOKING_SMTP_HOST", raising=False)
        get_settings.cache_clear()
        user = await make_user(session)
        async with unit_of_work() as s:
            await notify(s, user.id, kind="x", title="等待配置", body="…")  # type: ignore[arg-type]
        assert await run_job_once(outbox_job(), NOW) == 0
        row = (await _unsent(session))[-1]
        assert row.attempts == 0


class TestRetries:
    async def test_backoff_and_attempt_limit(self, session: AsyncSession, dead_smtp: None, clock: Clock) -> None:
        settings = get_settings()
        assert settings.email_max_attempts == 5 and settings.email_retry_base_s == 60
        user = await make_user(session)
        async with unit_of_work() as s:
            await notify(s, user.id, kind="x", title="发不出去", body="…")  # type: ignore[arg-type]
        row_id = (await _unsent(session))[-1].id
        created = (await fresh(session, OutboxEmail, row_id)).created_at
        assert await run_job_once(outbox_job(), created) == 1
        row = await fresh(session, OutboxEmail, row_id)
        assert row.attempts == 1 and row.sent_at is None and "ConnectionRefused" in (row.last_error or "")
        # Not due again until base * (2^1 - 1) = 60 s after creation, then 180 s, 420 s, 900 s.
        assert await run_job_once(outbox_job(), created + timedelta(seconds=59)) == 0
        for attempt, due_s in ((2, 60), (3, 180), (4, 420), (5, 900)):
            assert await run_job_once(outbox_job(), created + timedelta(seconds=due_s - 1)) == 0
            assert await run_job_once(outbox_job(), created + timedelta(seconds=due_s)) == 1
            assert (await fresh(session, OutboxEmail, row_id)).attempts == attempt
        # The limit reached, the row is left alone with its last error, for an operator to look at.
        assert await run_job_once(outbox_job(), created + timedelta(days=30)) == 0
        row = await fresh(session, OutboxEmail, row_id)
        assert row.attempts == 5 and row.sent_at is None and row.last_error
