"""Fixtures shared by the ops and scheduler tests."""

from collections.abc import Iterator

import pytest

from tests.ops_helpers import clock  # noqa: F401


@pytest.fixture(autouse=True)
def _scheduler_installed() -> Iterator[None]:
    """The scheduler's hooks as the app and the job runner install them; a fresh alternatives cache per test (a
    cached answer from an earlier step of the same test would hide what the step changed)."""
    from scheduling import equivalence, wiring

    wiring.install()
    equivalence.clear_cache()
    yield
    equivalence.clear_cache()
