"""Service records (服务记录): one per use of an instrument, in the national platform's shape. Every statistic the
audit reports is computed from these rows."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Column, ForeignKey, Integer, Numeric, String, Text
from sqlmodel import Field, SQLModel

from booking.core.base import fk_column, now, ts_column

RATINGS = {5: "非常满意", 4: "基本满意", 3: "一般", 2: "不满意", 1: "极差"}
SERVICE_TYPES = {"research": "科学研究", "development": "科技开发", "teaching": "教学", "other": "其他"}


# A paid record says when, how and how much; a waived one says why; an unsettled one carries none of it. (Revision
# 0012 writes the same text.)
CONSISTENT_PAYMENT = (
    "(payment_status = 'paid' AND paid_at IS NOT NULL AND payment_method IS NOT NULL AND paid_amount IS NOT NULL)"
    " OR (payment_status = 'waived' AND paid_at IS NULL AND payment_method IS NULL AND paid_amount IS NULL"
    " AND invoice_number IS NULL AND payment_note IS NOT NULL)"
    " OR (payment_status IN ('unpaid', 'untracked') AND paid_at IS NULL AND payment_method IS NULL"
    " AND paid_amount IS NULL AND invoice_number IS NULL)"
)


class ServiceRecord(SQLModel, table=True):
    __tablename__ = "service_records"
    __table_args__ = (
        CheckConstraint("started_at < ended_at", name="order"),
        CheckConstraint("hours > 0", name="hours"),
        CheckConstraint("amount >= 0", name="amount"),
        CheckConstraint("paid_amount IS NULL OR paid_amount >= 0", name="paid_amount"),
        CheckConstraint("service_mode IN ('occupancy', 'technical', 'entrusted', 'remote', 'other')",
                        name="service_mode"),
        CheckConstraint("service_type IN ('research', 'development', 'teaching', 'other')", name="service_type"),
        CheckConstraint("rating IS NULL OR rating BETWEEN 1 AND 5", name="rating"),
        CheckConstraint("payment_status IN ('unpaid', 'paid', 'waived', 'untracked')", name="payment_status"),
        CheckConstraint("payment_method IS NULL OR payment_method IN ('transfer', 'online', 'internal', 'cash', 'other')",
                        name="payment_method"),
        CheckConstraint(
            CONSISTENT_PAYMENT,
            name="payment_consistent",
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    instrument_id: int = Field(sa_column=Column(Integer, ForeignKey("instruments.id"), nullable=False, index=True))
    booking_id: int | None = Field(default=None, sa_column=Column(BigInteger, ForeignKey("bookings.id"),
                                                                  unique=True))
    user_id: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True))
    # Frozen at the time of service so later moves of people or instruments do not rewrite history.
    user_institution_id: int | None = Field(default=None, sa_column=fk_column("institutions.id", nullable=True))
    provider_institution_id: int = Field(sa_column=fk_column("institutions.id"))
    is_external: bool = Field(sa_column=Column(Boolean, nullable=False))
    started_at: datetime = Field(sa_column=ts_column(index=True))
    ended_at: datetime = Field(sa_column=ts_column())
    hours: Decimal = Field(sa_column=Column(Numeric(8, 2), nullable=False))
    samples: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    service_mode: str = Field(sa_column=Column(Text, nullable=False))
    service_type: str = Field(default="research", sa_column=Column(Text, nullable=False, server_default="research"))
    project_name: str | None = Field(default=None, sa_column=Column(String(200)))
    funding_source: str | None = Field(default=None, sa_column=Column(String(200)))
    applicant_name: str | None = Field(default=None, sa_column=Column(String(100)))
    amount: Decimal = Field(sa_column=Column(Numeric(12, 2), nullable=False))
    fee_basis: str | None = Field(default=None, sa_column=Column(String(300)))
    rating: int | None = Field(default=None, sa_column=Column(Integer))
    rating_comment: str | None = Field(default=None, sa_column=Column(String(500)))
    rated_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    recorded_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    payment_status: str = Field(default="unpaid", sa_column=Column(Text, nullable=False, server_default="unpaid"))
    paid_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    payment_method: str | None = Field(default=None, sa_column=Column(Text))
    paid_amount: Decimal | None = Field(default=None, sa_column=Column(Numeric(12, 2)))
    invoice_number: str | None = Field(default=None, sa_column=Column(String(64)))
    payment_note: str | None = Field(default=None, sa_column=Column(String(300)))
    payment_recorded_by: int | None = Field(default=None,
                                            sa_column=fk_column("users.id", nullable=True, index=False))
    payment_recorded_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
