from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from scheduling.fees import FeeSchedule, billable_hours, compute_fee, fee_breakdown, round_up_to_quarter_hour
from tests.scheduling.clock import MONDAY, local

PER_HOUR = FeeSchedule("hour", internal_price=Decimal("200"), external_price=Decimal("350"),
                       minimum_fee=Decimal("100"))
PER_SAMPLE = FeeSchedule("sample", internal_price=Decimal("80.5"), external_price=Decimal("120"),
                         minimum_fee=Decimal("300"))
PER_USE = FeeSchedule("use", internal_price=Decimal("66.665"), external_price=Decimal("99.995"))


class TestComputeFee:
    @pytest.mark.parametrize(
        ("schedule", "quantities", "external", "expected"),
        [
            (PER_HOUR, {"hours": Decimal(2)}, False, "400.00"),
            (PER_HOUR, {"hours": Decimal(2)}, True, "700.00"),
            (PER_HOUR, {"hours": Decimal("1.01")}, False, "250.00"),  # billed as 1.25 h
            (PER_HOUR, {"hours": Decimal("1.25")}, False, "250.00"),
            (PER_HOUR, {"hours": Decimal("0.25")}, False, "100.00"),  # 50 CNY is below the minimum fee
            (PER_HOUR, {"hours": Decimal(0)}, False, "100.00"),
            (PER_HOUR, {"hours": Decimal(2), "samples": 40, "uses": 3}, False, "400.00"),
            (PER_SAMPLE, {"samples": 3}, False, "300.00"),  # 241.50 is below the minimum
            (PER_SAMPLE, {"samples": 10}, False, "805.00"),
            (PER_SAMPLE, {"samples": 10}, True, "1200.00"),
            (PER_USE, {"uses": 1}, False, "66.67"),  # 66.665 rounds half up
            (PER_USE, {"uses": 1}, True, "100.00"),  # 99.995 rounds half up
            (PER_USE, {"uses": 3}, False, "200.00"),  # 199.995
        ],
        ids=["internal hours", "external hours", "hours round up to a quarter", "exact quarter",
             "minimum applies", "nothing used costs the minimum", "other quantities ignored",
             "sample minimum",
             "samples", "external samples", "half up", "half up external", "half up after multiplying"],
    )
    def test_amount(self, schedule: FeeSchedule, quantities: dict[str, Any], external: bool,
                    expected: str) -> None:
        values: dict[str, Any] = {"hours": Decimal(0), "samples": 0, "uses": 0}
        values.update(quantities)
        amount = compute_fee(schedule, values["hours"], values["samples"], values["uses"], external)
        assert amount == Decimal(expected)
        assert amount.as_tuple().exponent == -2

    @pytest.mark.parametrize("quantities", [{"hours": Decimal(-1)}, {"samples": -1}, {"uses": -2}])
    def test_rejects_negative_quantities(self, quantities: dict[str, Any]) -> None:
        with pytest.raises(ValueError):
            fee_breakdown(PER_HOUR, external=False, **quantities)


class TestFeeBreakdown:
    def test_parts(self) -> None:
        breakdown = fee_breakdown(PER_HOUR, hours=Decimal("0.2"), external=True)
        assert (breakdown.quantity, breakdown.unit_price, breakdown.subtotal) == (
            Decimal("0.25"), Decimal(350), Decimal("87.50"))
        assert breakdown.amount == Decimal("100.00") and breakdown.minimum_applied

    def test_minimum_not_applied(self) -> None:
        assert not fee_breakdown(PER_HOUR, hours=Decimal(3), external=False).minimum_applied


class TestFeeSchedule:
    @pytest.mark.parametrize(
        ("arguments", "error"),
        [
            (("hour", 200.0, Decimal(1)), TypeError),
            (("hour", Decimal(-1), Decimal(1)), ValueError),
            (("day", Decimal(1), Decimal(1)), ValueError),
        ],
        ids=["float price", "negative price", "unknown unit"],
    )
    def test_rejects(self, arguments: tuple[Any, ...], error: type[Exception]) -> None:
        with pytest.raises(error):
            FeeSchedule(*arguments)


class TestBillableHours:
    @pytest.mark.parametrize(
        ("minutes", "expected"),
        [(0, "0"), (1, "0.25"), (15, "0.25"), (16, "0.5"), (60, "1"), (61, "1.25"), (135, "2.25")],
    )
    def test_quarter_hours_rounded_up(self, minutes: int, expected: str) -> None:
        start = local(MONDAY, "09:00")
        assert billable_hours(start, start + timedelta(minutes=minutes)) == Decimal(expected)

    def test_seconds_count(self) -> None:
        start = local(MONDAY, "09:00")
        assert billable_hours(start, start + timedelta(minutes=60, seconds=1)) == Decimal("1.25")

    def test_round_up_to_quarter_hour(self) -> None:
        assert round_up_to_quarter_hour(Decimal("2.5")) == Decimal("2.5")
        with pytest.raises(ValueError):
            round_up_to_quarter_hour(Decimal("-0.1"))
