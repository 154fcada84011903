from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from booking.core.clock import set_clock

# Tuesday 2026-12-01 00:00 in Asia/Shanghai.
NOW = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_now() -> Iterator[datetime]:
    set_clock(lambda: NOW)
    yield NOW
    set_clock(None)
