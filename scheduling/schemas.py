"""API shapes for the availability and rules editor, holiday overrides, qualifications and blocks.

Wall-clock times (`09:00`) are Asia/Shanghai local times without an offset; instants (`starts_at`) must carry
an offset, as everywhere in the API."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from booking.core.emails import Email


def _local_clock(value: time | None) -> time | None:
    if value is not None and value.tzinfo is not None:
        raise ValueError("请填写北京时间的钟点（如 09:00），不要带时区")
    return value


class WindowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weekday: int = Field(ge=0, le=6, description="0 = 周一 … 6 = 周日")
    start: time = Field(description="local wall-clock time, e.g. 09:00")
    end: time
    valid_from: date | None = Field(default=None, description="first day the window applies (inclusive)")
    valid_to: date | None = Field(default=None, description="last day the window applies (inclusive)")

    _clock = field_validator("start", "end")(_local_clock)


class WindowsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    windows: list[WindowIn] = Field(max_length=100)


class WindowPublic(WindowIn):
    model_config = ConfigDict(from_attributes=True)
    id: int


class Span(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: time
    end: time

    _clock = field_validator("start", "end")(_local_clock)


class OverrideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    day: date
    windows: list[Span] = Field(default_factory=list, max_length=10, description="empty = closed all day")
    reason: str | None = Field(default=None, max_length=200)


class OverridePublic(BaseModel):
    id: int
    day: date
    windows: list[Span]
    reason: str | None


class BlackoutIn(BaseModel):
    """One-off (`starts_at`, `ends_at`) or weekly recurring (`weekday`, `start_time`, `end_time`)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=2, max_length=200, description="维护、校准等原因")
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    weekday: int | None = Field(default=None, ge=0, le=6)
    start_time: time | None = None
    end_time: time | None = None
    valid_from: date | None = None
    valid_to: date | None = None

    _clock = field_validator("start_time", "end_time")(_local_clock)


class BlackoutPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    reason: str
    starts_at: datetime | None
    ends_at: datetime | None
    weekday: int | None
    start_time: time | None
    end_time: time | None
    valid_from: date | None
    valid_to: date | None
    created_at: datetime


class ClosurePublic(BaseModel):
    start: datetime
    end: datetime
    reason: str


class AffectedBooking(BaseModel):
    """An active booking a schedule change collides with. It is kept: the manager decides what to do."""

    booking_id: int
    status: str
    start: datetime
    end: datetime
    user_id: int
    user_name: str
    closures: list[ClosurePublic] = Field(default_factory=list)


class ScheduleOut(BaseModel):
    instrument_id: int
    windows: list[WindowPublic]
    overrides: list[OverridePublic]
    blackouts: list[BlackoutPublic]


class ScheduleChange(ScheduleOut):
    affected: list[AffectedBooking] = Field(description="active bookings now outside the opening hours")
    notified: int


class BlackoutCreated(BaseModel):
    blackout: BlackoutPublic
    colliding: list[AffectedBooking]
    notified: int = Field(description="users notified of the collision")


class RulesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    granularity_min: int = Field(default=30, description="时间粒度（分钟）：5、10、15、20、30、60、120、240")
    min_duration_min: int = Field(default=30, le=100_000)
    max_duration_min: int = Field(default=480, le=100_000)
    min_lead_min: int = Field(default=60, le=1_000_000)
    max_horizon_days: int = Field(default=60, le=3660)
    max_user_hours_week: int | None = Field(default=None, le=168)
    max_institution_hours_month: int | None = Field(default=None, le=100_000)
    approval_required: bool = True
    cancellation_deadline_h: int = Field(default=24, le=100_000)
    buffer_before_min: int = Field(default=0, le=10_000)
    buffer_after_min: int = Field(default=0, le=10_000)
    follow_holidays: bool = True
    no_show_grace_min: int = Field(default=60, le=10_000)


class RulesPublic(RulesIn):
    model_config = ConfigDict(from_attributes=True)
    instrument_id: int
    updated_by: int | None = None
    updated_at: datetime | None = None


class HolidayOverrideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    day: date
    kind: Literal["closed", "open"] = Field(description="closed = 放假; open = 上班（调休）")
    name: str = Field(min_length=1, max_length=100)


class HolidayDay(BaseModel):
    day: date
    kind: Literal["closed", "open"]
    name: str


class HolidayOverridePublic(HolidayDay):
    created_by: int | None
    created_at: datetime


class HolidayYear(BaseModel):
    year: int
    package_has_schedule: bool = Field(description="false: the package only estimates this year (no 调休 data)")
    package: list[HolidayDay]
    overrides: list[HolidayOverridePublic]
    effective: list[HolidayDay]


class QualificationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int | None = None
    email: Email | None = None
    valid_until: date = Field(description="last valid day (inclusive, local date)")


class QualificationPublic(BaseModel):
    id: int
    instrument_id: int
    user_id: int
    user_name: str
    user_email: str
    valid_until: date | None
    expired: bool
    granted_by: int | None
    created_at: datetime


class LiftBlockIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: str = Field(min_length=2, max_length=300)


class BlockPublic(BaseModel):
    id: int
    user_id: int
    user_name: str
    user_email: str
    reason: str
    created_at: datetime
    lifted_at: datetime | None = None
    lift_reason: str | None = None
