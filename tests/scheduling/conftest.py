"""Fixtures shared by the ops tests."""

from tests.ops_helpers import clock  # noqa: F401
