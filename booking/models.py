"""Imports every domain's models so the metadata is complete (Alembic and the tests import this)."""

from booking.accounts.models import City, Facility, Institution, RoleGrant, RoleRequest, User
from booking.activity.models import ActivityEntry
from booking.auth.models import ApiToken, LoginFailure, WebSession
from instruments.models import (
    Category,
    Chain,
    Instrument,
    InstrumentAccess,
    InstrumentChain,
    InstrumentHistory,
)

__all__ = [
    "ActivityEntry",
    "ApiToken",
    "Category",
    "Chain",
    "City",
    "Facility",
    "Institution",
    "Instrument",
    "InstrumentAccess",
    "InstrumentChain",
    "InstrumentHistory",
    "LoginFailure",
    "RoleGrant",
    "RoleRequest",
    "User",
    "WebSession",
]
