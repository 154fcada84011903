"""A service record as the national export writes it: the payment as it stands, in words and local time."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from booking.audit.exports import record_row
from booking.usage.rules import NO_FEE_BASIS

BASE: dict[str, Any] = {
    "started_at": datetime(2026, 11, 30, 1, tzinfo=UTC), "ended_at": datetime(2026, 11, 30, 3, tzinfo=UTC),
    "service_mode": "occupancy", "service_type": "research", "is_external": True, "rating": None,
    "amount": Decimal("480.00"), "fee_basis": "外部 240 元/小时 × 2", "payment_status": "unpaid", "paid_at": None,
}


@pytest.mark.parametrize(("changes", "label", "paid"), [
    ({}, "待付款", ""),
    ({"amount": Decimal("0.00"), "fee_basis": "内部 0 元/小时 × 2"}, "无需付费", ""),
    ({"amount": Decimal("0.00"), "fee_basis": NO_FEE_BASIS}, "待付款", ""),
    ({"payment_status": "paid", "paid_at": datetime(2026, 12, 1, 7, 30, tzinfo=UTC)}, "已付款", "2026-12-01 15:30"),
    ({"payment_status": "waived"}, "已免收", ""),
    ({"payment_status": "untracked"}, "付款情况未登记", ""),
])
def test_payment_columns(changes: dict[str, Any], label: str, paid: str) -> None:
    row = record_row({**BASE, **changes})
    assert (row["payment_label"], row["paid"]) == (label, paid)
