"""Imports every domain's models so the metadata is complete (Alembic and the tests import this)."""

from booking.accounts.models import City, Facility, Institution, RoleGrant, RoleRequest, User
from booking.activity.models import ActivityEntry
from booking.audit.models import MonthlyFigures, PublishedSpan, UsageMonthly
from booking.auth.models import ApiToken, LoginFailure, WebSession
from booking.notify.models import Notification, OutboxEmail
from booking.reservations.models import Booking, BookingBlock, BookingSeries, CalendarToken
from booking.usage.models import ServiceRecord
from instruments.models import Category, Chain, Instrument, InstrumentAccess, InstrumentChain, InstrumentHistory
from scheduling.models import Blackout, HolidayOverride, InstrumentRules, OpeningWindow, Qualification, ScheduleOverride

__all__ = [
    "MonthlyFigures",
    "PublishedSpan",
    "UsageMonthly",
    "Blackout",
    "Booking",
    "BookingBlock",
    "InstrumentRules",
    "BookingSeries",
    "CalendarToken",
    "HolidayOverride",
    "Notification",
    "OpeningWindow",
    "OutboxEmail",
    "Qualification",
    "ScheduleOverride",
    "ServiceRecord",
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
