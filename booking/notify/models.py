"""In-app notifications and the email outbox (written in the change's transaction, sent after commit)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Integer, String, Text
from sqlmodel import Field, SQLModel

from booking.core.base import fk_column, now, ts_column


class Notification(SQLModel, table=True):
    __tablename__ = "notifications"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    user_id: int = Field(sa_column=fk_column("users.id", ondelete="CASCADE"))
    kind: str = Field(sa_column=Column(String(50), nullable=False))
    title: str = Field(sa_column=Column(String(200), nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    link: str | None = Field(default=None, sa_column=Column(String(300)))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True, index=True))
    read_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))


class OutboxEmail(SQLModel, table=True):
    __tablename__ = "email_outbox"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    to_address: str = Field(sa_column=Column(String(254), nullable=False))
    subject: str = Field(sa_column=Column(String(200), nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    sent_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True, index=True))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    last_error: str | None = Field(default=None, sa_column=Column(String(500)))
