"""Fees as "minimum fee + unit price", with internal and external price groups, in exact CNY.

Rules (documented choices):

* The unit decides which quantity is charged: `hour` → hours of use, `sample` → samples, `use` → uses; the
  other quantities are ignored.
* Hours are billed in quarter hours, rounded **up**: 61 minutes of use bill as 1.25 h. Platforms report
  machine time to the hour or finer, and rounding up to 15 minutes is a common facility practice that never
  bills a started quarter as free. `billable_hours` applies this to a start and end; `compute_fee` applies it
  to the hours it is given.
* amount = max(minimum_fee, unit price × quantity): the minimum fee is a floor per service, not an extra
  charge. A service with quantity 0 (e.g. a cancelled sample run the facility still charges) costs the minimum
  fee.
* Amounts are rounded half up to 0.01 CNY (分) once, at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Literal

from scheduling.intervals import require_aware

FeeUnit = Literal["hour", "sample", "use"]

CENT = Decimal("0.01")
QUARTERS_PER_HOUR = 4


@dataclass(frozen=True)
class FeeSchedule:
    """An instrument's fee: CNY per `unit` for internal and external users, and a minimum fee per service."""

    unit: FeeUnit
    internal_price: Decimal
    external_price: Decimal
    minimum_fee: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if self.unit not in ("hour", "sample", "use"):
            raise ValueError(f"unit must be hour, sample or use, got {self.unit!r}")
        for name in ("internal_price", "external_price", "minimum_fee"):
            value = getattr(self, name)
            if not isinstance(value, Decimal):
                raise TypeError(f"{name} must be a Decimal (floats lose cents), got {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass(frozen=True)
class FeeBreakdown:
    """How an amount came about, for invoices and service records. CNY; `quantity` in the schedule's unit."""

    unit: FeeUnit
    quantity: Decimal
    unit_price: Decimal
    subtotal: Decimal
    minimum_fee: Decimal
    amount: Decimal

    @property
    def minimum_applied(self) -> bool:
        return self.subtotal < self.minimum_fee


def round_up_to_quarter_hour(hours: Decimal) -> Decimal:
    """`hours` rounded up to the next multiple of 0.25."""
    if hours < 0:
        raise ValueError("hours must not be negative")
    quarters = (hours * QUARTERS_PER_HOUR).to_integral_value(rounding=ROUND_CEILING)
    return quarters / QUARTERS_PER_HOUR


def billable_hours(start: datetime, end: datetime) -> Decimal:
    """Billable hours from `start` to `end` (aware instants): the duration rounded up to a quarter hour."""
    duration = require_aware(end) - require_aware(start)
    if duration < timedelta(0):
        raise ValueError("end is before start")
    return round_up_to_quarter_hour(Decimal(duration // timedelta(microseconds=1)) / Decimal(3_600_000_000))


def fee_breakdown(
    schedule: FeeSchedule, *, hours: Decimal = Decimal(0), samples: int = 0, uses: int = 0, external: bool
) -> FeeBreakdown:
    """The fee for one service with its parts; see the module docstring for the rules."""
    if hours < 0 or samples < 0 or uses < 0:
        raise ValueError("quantities must not be negative")
    quantity = {
        "hour": round_up_to_quarter_hour(Decimal(hours)),
        "sample": Decimal(samples),
        "use": Decimal(uses),
    }[schedule.unit]
    price = schedule.external_price if external else schedule.internal_price
    subtotal = price * quantity
    amount = max(schedule.minimum_fee, subtotal).quantize(CENT, rounding=ROUND_HALF_UP)
    return FeeBreakdown(schedule.unit, quantity, price, subtotal, schedule.minimum_fee, amount)


def compute_fee(schedule: FeeSchedule, hours: Decimal, samples: int, uses: int, external: bool) -> Decimal:
    """CNY rounded half up to 0.01: max(minimum_fee, price × quantity), hours rounded up to 0.25 h."""
    return fee_breakdown(schedule, hours=hours, samples=samples, uses=uses, external=external).amount
