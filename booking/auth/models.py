"""Web sessions, API tokens and failed-login records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Column, String, Text
from sqlmodel import Field, SQLModel

from booking.core.base import fk_column, now, ts_column


class WebSession(SQLModel, table=True):
    """Server-side session: the cookie holds a signed random id, the table its digest, so logout revokes it."""

    __tablename__ = "web_sessions"

    id: int | None = Field(default=None, primary_key=True)
    digest: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    user_id: int = Field(sa_column=fk_column("users.id", ondelete="CASCADE"))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    expires_at: datetime = Field(sa_column=ts_column())
    user_agent: str | None = Field(default=None, sa_column=Column(String(300)))
    address: str | None = Field(default=None, sa_column=Column(String(64)))


class ApiToken(SQLModel, table=True):
    """Bearer tokens, stored as SHA-256 digests. kind 'access' comes from /auth/token and expires;
    kind 'personal' is a named personal access token the user creates and revokes."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("kind IN ('access', 'personal')", name="kind"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=fk_column("users.id", ondelete="CASCADE"))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    name: str = Field(sa_column=Column(String(100), nullable=False))
    digest: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    prefix: str = Field(sa_column=Column(String(12), nullable=False))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    expires_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    last_used_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))


class LoginFailure(SQLModel, table=True):
    __tablename__ = "login_failures"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    email: str = Field(sa_column=Column(String(254), nullable=False, index=True))
    address: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    at: datetime = Field(default_factory=now, sa_column=ts_column(index=True))
