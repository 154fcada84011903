"""Sending the email outbox through SMTP (stdlib smtplib, in a worker thread).

Rows are written by `notify` in the transaction of the change they describe, so a rolled-back change leaves no
row and nothing is ever sent for it. The outbox job reads committed rows only, sends each, and marks it sent in
its own transaction. Delivery is at-least-once: if that transaction failed to commit after a send, the row
would be sent again on the next run, which is the safe side for reminders and decisions.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from sqlalchemy.ext.asyncio import AsyncSession

from booking.core.settings import Settings, get_settings
from booking.notify import repository as repo
from booking.notify.models import OutboxEmail

Sender = Callable[[OutboxEmail], None]


def build_message(row: OutboxEmail, settings: Settings) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = row.to_address
    msg["Subject"] = row.subject
    msg["Date"] = formatdate(localtime=False)
    # A stable Message-ID per outbox row lets a receiving server drop a duplicate of an at-least-once resend.
    domain = settings.smtp_from.rsplit("@", 1)[-1] or "localhost"
    msg["Message-ID"] = make_msgid(idstring=f"outbox-{row.id}", domain=domain)
    msg.set_content(row.body, charset="utf-8")
    return msg


def smtp_sender(settings: Settings) -> Sender:
    """A blocking sender for one row; run it in a thread."""

    def send(row: OutboxEmail) -> None:
        assert settings.smtp_host
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password or "")
            smtp.send_message(build_message(row, settings))

    return send


async def flush_outbox(session: AsyncSession, now: datetime, *, sender: Sender | None = None,
                       settings: Settings | None = None) -> int:
    """Attempt every due outbox row; returns how many were attempted (sent or failed).

    Without an SMTP host nothing is attempted: rows wait until one is configured."""
    settings = settings or get_settings()
    if sender is None:
        if not settings.smtp_host:
            return 0
        sender = smtp_sender(settings)
    attempted = 0
    while True:
        batch = await repo.due_emails(session, now, max_attempts=settings.email_max_attempts,
                                      base_s=settings.email_retry_base_s, limit=100)
        for row in batch:
            row.attempts += 1
            try:
                await asyncio.to_thread(sender, row)
            except (OSError, smtplib.SMTPException) as exc:
                row.last_error = f"{type(exc).__name__}: {exc}"[:500]
            else:
                row.sent_at = now
                row.last_error = None
        await session.flush()
        attempted += len(batch)
        if len(batch) < 100:
            return attempted
