"""The payment states of a service record and what may happen next, table-driven."""

from __future__ import annotations

from decimal import Decimal

import pytest

from booking.usage.rules import NO_FEE_BASIS, payment_refusal, payment_state


@pytest.mark.parametrize(("amount", "stored", "basis", "state"), [
    (Decimal("480.00"), "unpaid", "外部 240 元/小时 × 2", "unpaid"),
    (Decimal("0.00"), "unpaid", "内部 0 元/小时 × 2", "free"),
    (Decimal("0.00"), "unpaid", NO_FEE_BASIS, "unpaid"),  # the fee is not known, not nil: the provider says
    (Decimal("480.00"), "paid", None, "paid"),
    (Decimal("480.00"), "waived", None, "waived"),
    (Decimal("0.00"), "waived", None, "waived"),  # settled before the fee was known to be nil: kept as settled
    (Decimal("480.00"), "untracked", None, "untracked"),
    (Decimal("0.00"), "untracked", None, "untracked"),
])
def test_state(amount: Decimal, stored: str, basis: str | None, state: str) -> None:
    assert payment_state(amount, stored, basis) == state


@pytest.mark.parametrize(("state", "action", "refused_with"), [
    ("unpaid", "pay", None),
    ("unpaid", "waive", None),
    ("unpaid", "reset", "尚未登记付款或免收"),
    ("paid", "pay", "已登记付款"),
    ("paid", "waive", "已登记付款"),
    ("paid", "reset", None),
    ("waived", "pay", "已免收"),
    ("waived", "waive", "已免收"),
    ("waived", "reset", None),
    ("free", "pay", "无需登记付款"),
    ("free", "waive", "无需登记付款"),
    ("free", "reset", "无需登记付款"),
    ("untracked", "pay", None),
    ("untracked", "waive", None),
    ("untracked", "reset", "尚未登记付款或免收"),
])
def test_refusal(state: str, action: str, refused_with: str | None) -> None:
    why = payment_refusal(state, action)  # type: ignore[arg-type]
    assert (why is None) if refused_with is None else (why is not None and refused_with in why)
