"""Fixtures shared by the usage tests."""

from tests.ops_helpers import clock  # noqa: F401
