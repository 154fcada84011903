"""Imports every domain's models so the metadata is complete (Alembic and the tests import this)."""

from booking.accounts.models import City, Facility, Institution, RoleGrant, RoleRequest, User
from booking.activity.models import ActivityEntry
from booking.audit.models import MonthlyFigures, PublishedSpan, UsageMonthly
from booking.auth.models import ApiToken, LoginFailure, WebSession
from booking.notify.models import Notification, OutboxEmail
from booking.reservations.models import Booking, BookingBlock, BookingSeries, CalendarToken
from booking.usage.models import ServiceRecord
from instruments.models import Category, Chain, Instrument, InstrumentAccess, InstrumentChain, InstrumentHistory
from scheduling.conflict_models import (
    AllocationRound,
    EquivalenceGroup,
    EquivalenceMember,
    FlexibleBooking,
    WaitlistEntry,
    WaitlistOffer,
)
from scheduling.models import Blackout, HolidayOverride, InstrumentRules, OpeningWindow, Qualification, ScheduleOverride

__all__ = [
    "ActivityEntry",
    "AllocationRound",
    "ApiToken",
    "Blackout",
    "Booking",
    "BookingBlock",
    "BookingSeries",
    "CalendarToken",
    "Category",
    "Chain",
    "City",
    "EquivalenceGroup",
    "EquivalenceMember",
    "Facility",
    "FlexibleBooking",
    "HolidayOverride",
    "Institution",
    "Instrument",
    "InstrumentAccess",
    "InstrumentChain",
    "InstrumentHistory",
    "InstrumentRules",
    "LoginFailure",
    "MonthlyFigures",
    "Notification",
    "OpeningWindow",
    "OutboxEmail",
    "PublishedSpan",
    "Qualification",
    "RoleGrant",
    "RoleRequest",
    "ScheduleOverride",
    "ServiceRecord",
    "UsageMonthly",
    "User",
    "WaitlistEntry",
    "WaitlistOffer",
    "WebSession",
]
