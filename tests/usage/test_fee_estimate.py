"""The fee a researcher sees before booking, by the rules the service record will charge by."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from booking.usage.service import fee_estimate
from instruments.models import Instrument

START = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
OWNER = 7


def _inst(unit: str | None, internal: str | None = "150", external: str | None = "300",
          minimum: str | None = None) -> Instrument:
    return Instrument(institution_id=OWNER, fee_unit=unit,
                      fee_internal=Decimal(internal) if internal else None,
                      fee_external=Decimal(external) if external else None,
                      fee_minimum=Decimal(minimum) if minimum else None)


@pytest.mark.parametrize(
    ("inst", "user_institution", "minutes", "expected"),
    [
        (_inst("hour"), OWNER, 90, "预计费用 225.00 元：校内/单位内价格 150 元/小时 × 1.5 小时；按实际上机时间结算"),
        (_inst("hour"), 8, 90, "预计费用 450.00 元：校外/单位外价格 300 元/小时 × 1.5 小时"),
        (_inst("hour"), None, 70, "预计费用 375.00 元：校外/单位外价格 300 元/小时 × 1.25 小时"),  # quarter hours, up
        (_inst("hour", minimum="500"), OWNER, 60, "预计费用 500.00 元（按最低收费 500 元）：校内/单位内价格 150 元/小时"),
        (_inst("hour", external=None), 8, 60, "预计费用 150.00 元：校外/单位外价格 150 元/小时"),  # no external price
        (_inst("sample", minimum="200"), 8, 60, "按样品收费：校外/单位外价格 300 元/个样品，最低收费 200 元；按实际样品数结算"),
        (_inst("use"), OWNER, 240, "预计费用 150.00 元：校内/单位内价格 150 元/次"),
        (_inst(None), OWNER, 60, None),
    ],
)
def test_fee_estimate(inst: Instrument, user_institution: int | None, minutes: int, expected: str | None) -> None:
    text = fee_estimate(inst, user_institution, START, START + timedelta(minutes=minutes))
    if expected is None:
        assert text is None
    else:
        assert text is not None and text.startswith(expected), text
