"""API shapes of the conflict-resolving scheduler. Instants carry an offset (a naive time is refused, never
shifted); preferred hours and cutoff times are Asia/Shanghai wall-clock times."""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from booking.reservations.models import ServiceMode
from scheduling.schemas import RulesIn, WindowIn


def _local_clock(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("请填写北京时间的钟点（如 09:00），不要带时区")
    return value


class _BookingFields(BaseModel):
    purpose: str = Field(min_length=2, max_length=500, description="用途")
    project_name: str | None = Field(default=None, max_length=200)
    funding_source: str | None = Field(default=None, max_length=200)
    service_mode: ServiceMode = ServiceMode.occupancy
    sample_notes: str | None = Field(default=None, max_length=500)


# ---- equivalence --------------------------------------------------------------------------------------------------

class GroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=2, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    capability_tags: list[str] = Field(default_factory=list, max_length=20,
                                       description="what the group can do, e.g. ESI, 分辨率≥60000")
    instrument_ids: list[int] = Field(min_length=1, max_length=200)
    override_reason: str | None = Field(default=None, max_length=500,
                                        description="required when the instruments' classifications differ")

    _tags = field_validator("capability_tags")(lambda v: [t[:50] for t in v])


class GroupUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=2, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    capability_tags: list[str] | None = Field(default=None, max_length=20)
    override_reason: str | None = Field(default=None, max_length=500)
    allocation_mode: Literal["immediate", "rounds"] | None = Field(
        default=None, description="immediate: flexible requests are placed at once; rounds: collected until the "
                                  "weekly cutoff and allocated together")
    round_weekday: int | None = Field(default=None, ge=0, le=6, description="cutoff weekday, 0 = 周一")
    round_time: time | None = Field(default=None, description="cutoff local time, e.g. 17:00")
    user_cap_hours: Decimal | None = Field(default=None, gt=0, le=10000, decimal_places=1)
    institution_cap_hours: Decimal | None = Field(default=None, gt=0, le=100000, decimal_places=1)
    external_min_share: Decimal | None = Field(default=None, ge=0, le=1, decimal_places=2)

    @field_validator("round_time")
    @classmethod
    def _clock(cls, value: time | None) -> time | None:
        return None if value is None else _local_clock(value)

    @field_validator("name", "allocation_mode", "round_weekday", "round_time", "external_min_share",
                     "capability_tags")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # These have no "empty" value: leave the field out to keep it.
        if value is None:
            raise ValueError("不能为空（不修改时请省略该字段）")
        return value


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instrument_id: int
    tags: list[str] = Field(default_factory=list, max_length=20)
    override_reason: str | None = Field(default=None, max_length=500)


class MemberPublic(BaseModel):
    instrument_id: int
    name: str
    city_code: str
    city: str
    institution_id: int
    category_code: str
    tags: list[str]


class GroupPublic(BaseModel):
    id: int
    name: str
    category_code: str
    category_name: str
    description: str | None
    capability_tags: list[str]
    override_reason: str | None
    allocation_mode: str
    round_weekday: int
    round_time: time
    user_cap_hours: Decimal | None
    institution_cap_hours: Decimal | None
    external_min_share: Decimal
    members: list[MemberPublic]
    can_manage: bool


class EquivalentPublic(BaseModel):
    instrument_id: int
    name: str
    city_code: str
    city: str
    bookable: bool
    problems: list[dict[str, Any]]


class EquivalentsOut(BaseModel):
    instrument_id: int
    group_id: int | None
    group_name: str | None
    equivalents: list[EquivalentPublic]


# ---- waitlist -----------------------------------------------------------------------------------------------------

class WaitlistIn(_BookingFields):
    model_config = ConfigDict(extra="forbid")
    instrument_id: int
    start: AwareDatetime = Field(description="the taken slot's start, or the window's start")
    end: AwareDatetime = Field(description="the taken slot's end, or the window's end")
    duration_minutes: int | None = Field(default=None, ge=5, le=7 * 1440,
                                         description="wait for any slot of this length in [start, end); "
                                                     "omit to wait for exactly [start, end)")
    any_equivalent: bool = Field(default=False, description="an equivalent instrument will do")
    auto_confirm: bool = Field(default=False, description="book at once when the instrument needs no approval, "
                                                          "instead of holding the slot for me to accept")


class OfferPublic(BaseModel):
    id: int
    booking_id: int
    instrument_id: int
    instrument_name: str
    start: datetime
    end: datetime
    offered_at: datetime
    expires_at: datetime | None
    outcome: str
    seconds_left: int | None


class WaitlistPublic(BaseModel):
    id: int
    user_id: int
    instrument_id: int
    instrument_name: str
    kind: str
    start: datetime
    end: datetime
    duration_minutes: int
    any_equivalent: bool
    auto_confirm: bool
    priority: int
    status: str
    position: int | None = Field(default=None, description="place in the queue of the instrument (1 = next)")
    created_at: datetime
    offer: OfferPublic | None
    offers: list[OfferPublic]


class PriorityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    priority: int = Field(ge=-10, le=10, description="higher first; equal priority: first come first served")


class WeightIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: int = Field(ge=1, le=10, description="priority weight in an allocation round")


# ---- flexible requests ----------------------------------------------------------------------------------------------

class HoursSpan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: time
    end: time = Field(description="00:00 means 24:00")

    _clock = field_validator("start", "end")(_local_clock)


class FlexibleIn(_BookingFields):
    model_config = ConfigDict(extra="forbid")
    instrument_id: int
    any_equivalent: bool = Field(default=False, description="this instrument or an equivalent")
    duration_minutes: int = Field(ge=5, le=7 * 1440)
    window_start: AwareDatetime
    window_end: AwareDatetime
    deadline: AwareDatetime | None = Field(
        default=None, description="decide by then (default: the latest start that still fits the window)")
    preferred_hours: list[HoursSpan] = Field(default_factory=list, max_length=4,
                                             description="local hours to prefer, e.g. 09:00-12:00")


class FlexiblePublic(BaseModel):
    id: int
    user_id: int
    instrument_id: int
    any_equivalent: bool
    duration_minutes: int
    window_start: datetime
    window_end: datetime
    deadline: datetime
    preferred_hours: list[list[str]]
    weight: int
    status: str
    decision_code: str | None
    reason: str | None
    booking_id: int | None
    placed_instrument_id: int | None
    placed_start: datetime | None
    placed_end: datetime | None
    round_id: int | None
    cutoff_at: datetime | None
    created_at: datetime


# ---- rounds ---------------------------------------------------------------------------------------------------------

class RoundDecision(BaseModel):
    request_id: int
    user_id: int
    granted: bool
    code: str
    reason: str
    instrument_id: int | None
    start: datetime | None
    end: datetime | None


class RoundPublic(BaseModel):
    id: int
    group_id: int
    group_name: str
    cutoff_at: datetime
    collecting: bool
    status: str
    requests: int
    preview: dict[str, Any] | None
    previewed_at: datetime | None
    published_at: datetime | None


class RoundDetail(RoundPublic):
    items: list[FlexiblePublic]


# ---- explain and simulate ---------------------------------------------------------------------------------------------

class BlockingBooking(BaseModel):
    booking_id: int | None = Field(description="shown to the booking's user and the instrument's managers only")
    status: str
    start: datetime
    end: datetime
    blocked_start: datetime
    blocked_end: datetime
    mine: bool
    user_name: str | None


class ClosureOut(BaseModel):
    start: datetime
    end: datetime
    reason: str


class Explanation(BaseModel):
    instrument_id: int
    start: datetime
    end: datetime
    bookable: bool
    summary: str
    rule_problems: list[dict[str, Any]]
    bookings: list[BlockingBooking]
    closures: list[ClosureOut]
    closed_days: dict[str, str]
    outside_opening_hours: bool


class SimulationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    windows: list[WindowIn] | None = Field(default=None, max_length=100,
                                           description="proposed weekly opening windows (replacing the current)")
    rules: RulesIn | None = Field(default=None, description="proposed booking rules (replacing the current)")
    days: int = Field(default=31, ge=1, le=92, description="how far ahead to look")


class AffectedOut(BaseModel):
    booking_id: int
    status: str
    start: datetime
    end: datetime
    user_id: int
    user_name: str
    reasons: list[str]


class SimulationOut(BaseModel):
    instrument_id: int
    from_: datetime = Field(alias="from")
    to: datetime
    checked: int
    affected: list[AffectedOut]
    model_config = ConfigDict(populate_by_name=True)
