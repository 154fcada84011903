"""iCalendar output for bookings (the `ics` package via scheduling.ical)."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Institution
from booking.core.regions import city_name
from booking.core.settings import get_settings
from booking.reservations.models import STATUS_LABELS, Booking
from instruments.models import Instrument
from scheduling.ical import booking_calendar_text, booking_event


def host() -> str:
    return urlsplit(get_settings().base_url).hostname or "localhost"


def location_of(inst: Instrument, institution: Institution | None) -> str:
    parts = [city_name(inst.city_code), institution.name if institution else "", inst.street or ""]
    return " ".join(p for p in parts if p)


async def booking_ics(session: AsyncSession, booking: Booking, inst: Instrument) -> str:
    institution = await session.get(Institution, inst.institution_id)
    base = get_settings().base_url.rstrip("/")
    event = booking_event(
        booking_id=booking.id, host=host(), start=booking.start_at, end=booking.end_at,  # type: ignore[arg-type]
        status=booking.status, sequence=booking.sequence, instrument_name=inst.name,
        location=location_of(inst, institution),
        description=(f"仪器：{inst.name}（{inst.model or ''}）\n状态：{STATUS_LABELS.get(booking.status, booking.status)}"
                     f"\n用途：{booking.purpose}\n预约详情：{base}/bookings/{booking.id}"),
        stamp=booking.updated_at, url=f"{base}/bookings/{booking.id}",
    )
    return booking_calendar_text(event, name=f"仪器预约 {inst.name}")
