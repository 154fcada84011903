"""Imports every domain's models so the metadata is complete (Alembic and the tests import this)."""

from booking.accounts.models import City, Facility, Institution, RoleGrant, RoleRequest, User
from booking.activity.models import ActivityEntry
from booking.auth.models import ApiToken, LoginFailure, WebSession

__all__ = [
    "ActivityEntry",
    "ApiToken",
    "City",
    "Facility",
    "Institution",
    "LoginFailure",
    "RoleGrant",
    "RoleRequest",
    "User",
    "WebSession",
]
