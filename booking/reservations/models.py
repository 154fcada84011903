"""Bookings. PostgreSQL guarantees the central invariant: no two active bookings of one instrument overlap,
buffers included (an exclusion constraint over `blocked`, created in the migration)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import TSTZRANGE, ExcludeConstraint, Range
from sqlmodel import Field, SQLModel

from booking.core.base import fk_column, now, ts_column


class BookingStatus(StrEnum):
    pending = "pending"
    confirmed = "confirmed"
    rejected = "rejected"
    cancelled = "cancelled"
    in_use = "in_use"
    completed = "completed"
    no_show = "no_show"
    expired = "expired"
    # A waitlist offer: the freed slot is held for one user until hold_expires_at (scheduling.waitlist).
    held = "held"


# A pending request holds its slot; an instrument in use is busy. These rows take part in the constraint.
# A held offer is real: nobody else can take the slot while it is held.
ACTIVE_STATUSES = (BookingStatus.pending, BookingStatus.confirmed, BookingStatus.in_use, BookingStatus.held)
ACTIVE_SQL = "status IN ('pending', 'confirmed', 'in_use', 'held')"

STATUS_LABELS = {
    "pending": "待审批", "confirmed": "已确认", "rejected": "已拒绝", "cancelled": "已取消", "in_use": "使用中",
    "completed": "已完成", "no_show": "爽约", "expired": "已过期", "held": "保留中",
}


class ServiceMode(StrEnum):
    """服务方式 in the national shape."""

    occupancy = "occupancy"  # 占用共享: the user operates
    technical = "technical"  # 技术共享: staff operate
    entrusted = "entrusted"  # 委托共享: samples sent in
    remote = "remote"  # 远程共享
    other = "other"


SERVICE_MODE_LABELS = {"occupancy": "占用共享", "technical": "技术共享", "entrusted": "委托共享",
                       "remote": "远程共享", "other": "其他"}


class BookingSeries(SQLModel, table=True):
    """A weekly recurring request; each instance is a Booking checked on its own."""

    __tablename__ = "booking_series"

    id: int | None = Field(default=None, primary_key=True)
    instrument_id: int = Field(sa_column=fk_column("instruments.id"))
    user_id: int = Field(sa_column=fk_column("users.id"))
    created_by: int = Field(sa_column=fk_column("users.id", index=False))
    count: int = Field(sa_column=Column(Integer, nullable=False))
    conflict_policy: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class Booking(SQLModel, table=True):
    __tablename__ = "bookings"
    __table_args__ = (
        CheckConstraint("start_at < end_at", name="order"),
        CheckConstraint("lower(blocked) <= start_at AND upper(blocked) >= end_at", name="blocked_covers"),
        CheckConstraint(
            "status IN ('pending', 'confirmed', 'rejected', 'cancelled', 'in_use', 'completed', 'no_show',"
            " 'expired', 'held')", name="status"),
        CheckConstraint("(status = 'held') = (hold_expires_at IS NOT NULL)", name="hold_expiry"),
        CheckConstraint("service_mode IN ('occupancy', 'technical', 'entrusted', 'remote', 'other')",
                        name="service_mode"),
        ExcludeConstraint(
            (Column("instrument_id"), "="), (Column("blocked"), "&&"),
            where=text(ACTIVE_SQL), using="gist", name="ex_bookings_no_overlap",
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    instrument_id: int = Field(sa_column=Column(Integer, ForeignKey("instruments.id"), nullable=False))
    user_id: int = Field(sa_column=fk_column("users.id"))
    created_by: int = Field(sa_column=fk_column("users.id", index=False))
    series_id: int | None = Field(default=None, sa_column=fk_column("booking_series.id", nullable=True))
    status: str = Field(sa_column=Column(Text, nullable=False, index=True))
    start_at: datetime = Field(sa_column=ts_column(index=True))
    end_at: datetime = Field(sa_column=ts_column())
    # The time the instrument is unavailable: the booking plus its set-up and cool-down buffers.
    blocked: Range[datetime] = Field(sa_column=Column(TSTZRANGE, nullable=False))
    purpose: str = Field(sa_column=Column(String(500), nullable=False))
    project_name: str | None = Field(default=None, sa_column=Column(String(200)))
    funding_source: str | None = Field(default=None, sa_column=Column(String(200)))
    service_mode: str = Field(default=ServiceMode.occupancy, sa_column=Column(Text, nullable=False,
                                                                             server_default="occupancy"))
    sample_notes: str | None = Field(default=None, sa_column=Column(String(500)))
    override_reason: str | None = Field(default=None, sa_column=Column(String(500)))
    decided_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    decided_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    decision_note: str | None = Field(default=None, sa_column=Column(String(500)))
    checked_in_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    checked_out_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    cancelled_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    cancel_reason: str | None = Field(default=None, sa_column=Column(String(500)))
    reminder_sent_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    hold_expires_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    # iCalendar SEQUENCE: raised on every change a calendar client should see.
    sequence: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    updated_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class BookingBlock(SQLModel, table=True):
    """A user barred from booking after repeated no-shows, until a manager lifts it."""

    __tablename__ = "booking_blocks"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=fk_column("users.id", ondelete="CASCADE"))
    reason: str = Field(sa_column=Column(String(300), nullable=False))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    lifted_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    lifted_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    lift_reason: str | None = Field(default=None, sa_column=Column(String(300)))


class CalendarToken(SQLModel, table=True):
    """The secret in a user's subscribable "my bookings" feed URL; revocable."""

    __tablename__ = "calendar_tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=fk_column("users.id", ondelete="CASCADE"))
    digest: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    revoked_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
