"""Audit summary tables.

- `audit_usage_monthly`: service-record facts summed per instrument, per month the service ended (Asia/Shanghai)
  and per month the fact became known (a record when it was stored, a rating when it was given). Kept exact at
  all times by statement-level triggers on `service_records` (see the 0004 migration), so a figure as of a past
  date read from it equals the figure computed from the raw rows.
- `audit_published_spans`: the days on which an instrument had availability published for the next N days,
  recorded by the `audit.snapshot` job. Opening windows carry no publication date, so this is what lets the
  "open" count as of a past date stay what it was.
- `audit_monthly_figures`: registered / open / shared per 市州 at each complete month's end, frozen by the same job
  for the dashboard's trend (the live computation gives the same numbers; the test checks it).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Column, Date, ForeignKey, Index, Integer, Numeric, String, text
from sqlmodel import Field, SQLModel

from booking.core.base import now, ts_column
from booking.usage.models import ServiceRecord


class UsageMonthly(SQLModel, table=True):
    __tablename__ = "audit_usage_monthly"
    __table_args__ = (
        Index("ix_audit_usage_monthly_month", "month", "known_month"),
        # "Actually shared" asks only which instruments had external services in a span of months.
        Index("ix_audit_usage_monthly_external", "month", "known_month", "instrument_id",
              postgresql_where=text("external_records > 0")),
    )

    instrument_id: int = Field(sa_column=Column(Integer, primary_key=True))
    month: date = Field(sa_column=Column(Date, primary_key=True))
    known_month: date = Field(sa_column=Column(Date, primary_key=True))
    records: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    external_records: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    hours: Decimal = Field(default=Decimal(0), sa_column=Column(Numeric(14, 2), nullable=False, server_default="0"))
    external_hours: Decimal = Field(default=Decimal(0), sa_column=Column(Numeric(14, 2), nullable=False,
                                                                         server_default="0"))
    amount: Decimal = Field(default=Decimal(0), sa_column=Column(Numeric(16, 2), nullable=False, server_default="0"))
    external_amount: Decimal = Field(default=Decimal(0), sa_column=Column(Numeric(16, 2), nullable=False,
                                                                          server_default="0"))
    rating_count: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    rating_sum: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    rating_1: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    rating_2: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    rating_3: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    rating_4: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    rating_5: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class PublishedSpan(SQLModel, table=True):
    __tablename__ = "audit_published_spans"
    __table_args__ = (
        Index("uq_audit_published_spans_open", "instrument_id", unique=True, postgresql_where=text("valid_to IS NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    instrument_id: int = Field(sa_column=Column(Integer, ForeignKey("instruments.id", ondelete="CASCADE"),
                                                nullable=False, index=True))
    valid_from: date = Field(sa_column=Column(Date, nullable=False))
    valid_to: date | None = Field(default=None, sa_column=Column(Date))


class MonthlyFigures(SQLModel, table=True):
    __tablename__ = "audit_monthly_figures"

    month: date = Field(sa_column=Column(Date, primary_key=True))
    city_code: str = Field(sa_column=Column(String(6), primary_key=True))
    registered: int = Field(sa_column=Column(Integer, nullable=False))
    open: int = Field(sa_column=Column(Integer, nullable=False))
    shared: int = Field(sa_column=Column(Integer, nullable=False))
    computed_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


# Indexes the audit's as-of queries need on the booking domain's table, owned here because only the audit uses
# them: services ended in a window, and facts that became known in the current month.
_SR = ServiceRecord.__table__  # type: ignore[attr-defined]
Index("ix_service_records_ended_at", _SR.c.ended_at, _SR.c.instrument_id)
Index("ix_service_records_created_at", _SR.c.created_at)
Index("ix_service_records_rated_at", _SR.c.rated_at)
# External services only, covering what "actually shared" reads, so the partial months need no table access.
Index("ix_service_records_external_ended", _SR.c.ended_at, _SR.c.instrument_id,
      postgresql_include=["created_at"], postgresql_where=_SR.c.is_external)
Index("ix_service_records_external_created", _SR.c.created_at, _SR.c.instrument_id,
      postgresql_include=["ended_at"], postgresql_where=_SR.c.is_external)
