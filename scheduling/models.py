"""Time data that managers publish per instrument: opening windows, date overrides, blackouts, booking rules,
qualifications, and the administrator's holiday overrides. The pure logic in this package reads them as plain
dataclasses (see availability.py, rules.py)."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Integer,
    SmallInteger,
    String,
    Text,
    Time,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from booking.core.base import fk_column, now, ts_column


def _instrument_fk() -> Any:
    return Column(Integer, ForeignKey("instruments.id", ondelete="CASCADE"), nullable=False, index=True)


class OpeningWindow(SQLModel, table=True):
    """A weekly opening window in Asia/Shanghai wall-clock time; several per weekday are allowed."""

    __tablename__ = "opening_windows"
    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),
        # An end of 00:00 means midnight at the end of the day (24:00).
        CheckConstraint("start_time < end_time OR end_time = '00:00'", name="order"),
        CheckConstraint("valid_to IS NULL OR valid_from IS NULL OR valid_from <= valid_to", name="validity"),
    )

    id: int | None = Field(default=None, primary_key=True)
    instrument_id: int = Field(sa_column=_instrument_fk())
    weekday: int = Field(sa_column=Column(SmallInteger, nullable=False))
    start_time: time = Field(sa_column=Column(Time, nullable=False))
    end_time: time = Field(sa_column=Column(Time, nullable=False))
    valid_from: date | None = Field(default=None, sa_column=Column(Date))
    valid_to: date | None = Field(default=None, sa_column=Column(Date))


class ScheduleOverride(SQLModel, table=True):
    """A specific date with its own windows (or closed), e.g. an open Saturday for a training course."""

    __tablename__ = "schedule_overrides"
    __table_args__ = (UniqueConstraint("instrument_id", "day", name="uq_schedule_overrides_instrument_day"),)

    id: int | None = Field(default=None, primary_key=True)
    instrument_id: int = Field(sa_column=_instrument_fk())
    day: date = Field(sa_column=Column(Date, nullable=False))
    # [["09:00", "12:00"], ...]; an empty list means closed all day.
    windows: list[list[str]] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(String(200)))


class Blackout(SQLModel, table=True):
    """Maintenance or calibration: one-off (starts_at/ends_at) or weekly recurring (weekday + times)."""

    __tablename__ = "blackouts"
    __table_args__ = (
        CheckConstraint(
            "(starts_at IS NOT NULL AND ends_at IS NOT NULL AND starts_at < ends_at AND weekday IS NULL)"
            " OR (starts_at IS NULL AND ends_at IS NULL AND weekday BETWEEN 0 AND 6"
            " AND start_time IS NOT NULL AND end_time IS NOT NULL AND start_time < end_time)",
            name="shape",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    instrument_id: int = Field(sa_column=_instrument_fk())
    starts_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    ends_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    weekday: int | None = Field(default=None, sa_column=Column(SmallInteger))
    start_time: time | None = Field(default=None, sa_column=Column(Time))
    end_time: time | None = Field(default=None, sa_column=Column(Time))
    valid_from: date | None = Field(default=None, sa_column=Column(Date))
    valid_to: date | None = Field(default=None, sa_column=Column(Date))
    reason: str = Field(sa_column=Column(String(200), nullable=False))
    created_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class HolidayOverride(SQLModel, table=True):
    """An administrator's correction of the holiday package for a day (a year's schedule is announced late)."""

    __tablename__ = "holiday_overrides"
    __table_args__ = (CheckConstraint("kind IN ('closed', 'open')", name="kind"),)

    day: date = Field(sa_column=Column(Date, primary_key=True))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    name: str = Field(sa_column=Column(String(100), nullable=False))
    created_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class InstrumentRules(SQLModel, table=True):
    """Per-instrument booking rules, edited by managers. One row per instrument; defaults are sensible."""

    __tablename__ = "booking_rules"
    __table_args__ = (
        CheckConstraint("granularity_min IN (5, 10, 15, 20, 30, 60, 120, 240)", name="granularity"),
        CheckConstraint("min_duration_min > 0 AND max_duration_min >= min_duration_min", name="durations"),
        CheckConstraint("min_lead_min >= 0 AND max_horizon_days > 0", name="window"),
        CheckConstraint("buffer_before_min >= 0 AND buffer_after_min >= 0", name="buffers"),
        CheckConstraint("cancellation_deadline_h >= 0 AND no_show_grace_min > 0", name="deadlines"),
    )

    instrument_id: int = Field(sa_column=Column(Integer, ForeignKey("instruments.id", ondelete="CASCADE"),
                                                primary_key=True))
    granularity_min: int = Field(default=30, sa_column=Column(SmallInteger, nullable=False, server_default="30"))
    min_duration_min: int = Field(default=30, sa_column=Column(Integer, nullable=False, server_default="30"))
    max_duration_min: int = Field(default=480, sa_column=Column(Integer, nullable=False, server_default="480"))
    min_lead_min: int = Field(default=60, sa_column=Column(Integer, nullable=False, server_default="60"))
    max_horizon_days: int = Field(default=60, sa_column=Column(Integer, nullable=False, server_default="60"))
    max_user_hours_week: int | None = Field(default=None, sa_column=Column(Integer))
    max_institution_hours_month: int | None = Field(default=None, sa_column=Column(Integer))
    approval_required: bool = Field(default=True, sa_column=Column(Boolean, nullable=False,
                                                                   server_default=text("true")))
    cancellation_deadline_h: int = Field(default=24, sa_column=Column(Integer, nullable=False, server_default="24"))
    buffer_before_min: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    buffer_after_min: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    follow_holidays: bool = Field(default=True, sa_column=Column(Boolean, nullable=False,
                                                                 server_default=text("true")))
    no_show_grace_min: int = Field(default=60, sa_column=Column(Integer, nullable=False, server_default="60"))
    updated_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    updated_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class Qualification(SQLModel, table=True):
    """A manager's statement that a user may operate an instrument, until an expiry date."""

    __tablename__ = "qualifications"
    __table_args__ = (UniqueConstraint("instrument_id", "user_id", name="uq_qualifications_instrument_user"),)

    id: int | None = Field(default=None, primary_key=True)
    instrument_id: int = Field(sa_column=_instrument_fk())
    user_id: int = Field(sa_column=fk_column("users.id", ondelete="CASCADE"))
    valid_until: date | None = Field(default=None, sa_column=Column(Date))
    granted_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    expired_notified_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
