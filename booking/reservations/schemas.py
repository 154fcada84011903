"""API shapes for bookings. Times must carry an offset: a naive time is refused, never silently shifted."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from booking.reservations.models import ServiceMode
from booking.usage.rules import payment_state


class BookingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instrument_id: int
    start: AwareDatetime = Field(description="ISO 8601 with offset, e.g. 2026-12-01T09:00:00+08:00")
    end: AwareDatetime
    purpose: str = Field(min_length=2, max_length=500, description="用途")
    project_name: str | None = Field(default=None, max_length=200)
    funding_source: str | None = Field(default=None, max_length=200)
    service_mode: ServiceMode = ServiceMode.occupancy
    sample_notes: str | None = Field(default=None, max_length=500)
    on_behalf_of: int | None = Field(default=None, description="managers: the user the booking is for")
    override_reason: str | None = Field(default=None, min_length=4, max_length=500,
                                        description="managers: book despite rule problems, with a reason")
    repeat_weekly: int | None = Field(default=None, ge=2, le=52, description="recurring: number of weeks")
    repeat_until: date | None = Field(default=None, description="recurring: last date (inclusive)")
    on_conflict: Literal["skip", "fail"] = Field(
        default="fail", description="recurring: skip conflicting instances, or drop the whole series")
    any_equivalent: bool = Field(
        default=False, description="this instrument or an equivalent: when the slot is taken, book the same time "
                                   "on the nearest equivalent instrument the user may book")
    preferred_cities: list[str] = Field(
        default_factory=list, max_length=21,
        description="市州 codes (GB/T 2260) that alternatives on equivalent instruments must lie in; empty = any")

    @field_validator("preferred_cities")
    @classmethod
    def _known_cities(cls, value: list[str]) -> list[str]:
        from booking.core.regions import CITIES

        unknown = [code for code in value if code not in CITIES]
        if unknown:
            raise ValueError(f"未知的市州代码：{'、'.join(unknown)}")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _one_repeat(self) -> BookingCreate:
        if self.repeat_weekly is not None and self.repeat_until is not None:
            raise ValueError("repeat_weekly 与 repeat_until 只能填写一个")
        return self


class BookingPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    instrument_id: int
    user_id: int
    created_by: int
    series_id: int | None
    status: str
    start: datetime
    end: datetime
    purpose: str
    project_name: str | None
    funding_source: str | None
    service_mode: str
    sample_notes: str | None
    decision_note: str | None
    checked_in_at: datetime | None
    checked_out_at: datetime | None
    sequence: int
    created_at: datetime
    ics_url: str


class SeriesResult(BaseModel):
    series_id: int
    created: list[BookingPublic]
    skipped: list[dict[str, object]]


class Slot(BaseModel):
    start: datetime
    end: datetime


class AvailabilityOut(BaseModel):
    instrument_id: int
    from_: datetime = Field(alias="from")
    to: datetime
    slots: list[Slot]
    closed_days: dict[str, str]
    model_config = ConfigDict(populate_by_name=True)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=500)


class BulkDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    booking_ids: list[int] = Field(min_length=1, max_length=200)
    action: Literal["approve", "reject"]
    note: str | None = Field(default=None, max_length=500)


class CheckOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: int = Field(default=0, ge=0, le=100000)
    service_type: Literal["research", "development", "teaching", "other"] = "research"
    note: str | None = Field(default=None, max_length=500)


class ServiceEntry(BaseModel):
    """A manager's record of a service without check-in (samples dropped off, staff operated)."""

    model_config = ConfigDict(extra="forbid")
    started_at: AwareDatetime
    ended_at: AwareDatetime
    samples: int = Field(default=0, ge=0, le=100000)
    service_type: Literal["research", "development", "teaching", "other"] = "research"


class ServiceRecordPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    instrument_id: int
    booking_id: int | None
    user_id: int | None
    is_external: bool
    started_at: datetime
    ended_at: datetime
    hours: Decimal
    samples: int
    service_mode: str
    service_type: str
    project_name: str | None
    funding_source: str | None
    amount: Decimal
    fee_basis: str | None
    rating: int | None
    rating_comment: str | None
    payment_status: str = Field(
        description="free 无需付费 | unpaid 待付款 | paid 已付款 | waived 已免收 | untracked 付款情况未登记（早于付款登记）")
    paid_at: datetime | None
    payment_method: str | None
    paid_amount: Decimal | None
    invoice_number: str | None
    payment_note: str | None

    @model_validator(mode="before")
    @classmethod
    def _state(cls, data: Any) -> Any:
        # The stored status says "unpaid" for a record without a fee too; the API says what it means.
        if not isinstance(data, dict):
            data = {name: getattr(data, name) for name in cls.model_fields if hasattr(data, name)}
        return {**data, "payment_status": payment_state(data["amount"], data["payment_status"], data.get("fee_basis"))}


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rating: int = Field(ge=1, le=5, description="5 非常满意 … 1 极差")
    comment: str | None = Field(default=None, max_length=500)


class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    method: Literal["transfer", "online", "internal", "cash", "other"] = Field(
        description="transfer 银行转账 | online 线上支付 | internal 单位内部结算 | cash 现金 | other 其他")
    paid_at: AwareDatetime | None = Field(default=None, description="付款时间（默认现在，不能晚于现在）")
    amount: Decimal | None = Field(default=None, ge=0, le=Decimal("9999999999.99"), decimal_places=2,
                                   description="实收金额（元）；默认为应收费用，仪器没有结构化收费标准时必填")
    invoice_number: str | None = Field(default=None, min_length=1, max_length=64, description="发票号")
    note: str | None = Field(default=None, max_length=300, description="备注")


class PaymentReason(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: str = Field(min_length=2, max_length=300, description="原因")
