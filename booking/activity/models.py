"""The activity log: append-only, hash-chained. The migration installs the triggers that refuse UPDATE, DELETE
and TRUNCATE (except sealing), so the guarantee holds for every writer, not only this code.

Rows are written unsealed (seq, prev_hash, hash NULL) in the transaction of the change they describe, and
`activity_seal()` chains them a few seconds later: a chain lock taken by every writer would serialise every
booking in the province behind one lock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from booking.core.base import now, ts_column


class ActivityEntry(SQLModel, table=True):
    __tablename__ = "activity_log"
    __table_args__ = (
        Index("ix_activity_log_target", "target_type", "target_id"),
        Index("ix_activity_log_unsealed", "id", postgresql_where=text("seq IS NULL")),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    # Set by activity_seal() under an advisory lock: gapless order of the chain (ids may have gaps).
    seq: int | None = Field(default=None, sa_column=Column(BigInteger, unique=True))
    at: datetime = Field(default_factory=now, sa_column=ts_column(index=True))
    actor_id: int | None = Field(default=None, sa_column=Column(BigInteger, index=True))
    action: str = Field(sa_column=Column(String(80), nullable=False, index=True))
    target_type: str = Field(sa_column=Column(String(40), nullable=False))
    target_id: str | None = Field(default=None, sa_column=Column(String(80)))
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    request_id: str | None = Field(default=None, sa_column=Column(String(64)))
    prev_hash: str | None = Field(default=None, sa_column=Column(String(64)))
    hash: str | None = Field(default=None, sa_column=Column(String(64)))
