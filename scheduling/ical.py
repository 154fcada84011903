"""iCalendar (RFC 5545) text for bookings and busy-time feeds, built with the `ics` package (0.7).

Choices:

* Times are written in UTC (`DTSTART:20261201T010000Z`): `ics` 0.7 always does so and every client converts.
  Each calendar also carries `X-WR-TIMEZONE` and a `VTIMEZONE` for Asia/Shanghai (UTC+8, no daylight saving
  since 1991), so clients that honour them show Beijing time, and so that a calendar without events still
  holds the one component RFC 5545 requires.
* UIDs are stable: `booking-{id}@{host}` for a booking; `busy-{instrument_id}-{start}@{host}` for a block of
  busy time. `SEQUENCE` is the booking's revision number, raised by the caller on every change. `ics` 0.7 has
  no `SEQUENCE` attribute, so it is added as an extra content line; `STATUS` is native.
* `DTSTAMP` is the booking's last change (`stamp`), not the time of the request, so the same booking always
  yields the same text (cacheable, testable).
* Busy feeds carry no personal data: adjacent busy intervals are merged, and events say only "已占用".
* Lines are folded at 75 octets without splitting a UTF-8 character, as RFC 5545 §3.1 asks; Chinese text would
  otherwise make lines of several hundred octets.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import ics
from ics.grammar.parse import ContentLine

from scheduling.intervals import Interval, merge, require_aware

PRODID = "-//Sichuan Instrument Sharing//Booking//ZH"
MAX_LINE_OCTETS = 75
CRLF = "\r\n"

# Booking lifecycle status -> iCalendar VEVENT STATUS.
ICAL_STATUS: dict[str, str] = {
    "pending": "TENTATIVE",
    "confirmed": "CONFIRMED",
    "in_use": "CONFIRMED",
    "completed": "CONFIRMED",
    "cancelled": "CANCELLED",
    "rejected": "CANCELLED",
    "no_show": "CANCELLED",
    "expired": "CANCELLED",
    # A waitlist offer held for one user: not yet theirs.
    "held": "TENTATIVE",
}
_ICAL_VALUES = frozenset(ICAL_STATUS.values())

_SHANGHAI_VTIMEZONE = CRLF.join([
    "BEGIN:VTIMEZONE",
    "TZID:Asia/Shanghai",
    "BEGIN:STANDARD",
    "DTSTART:19700101T000000",
    "TZOFFSETFROM:+0800",
    "TZOFFSETTO:+0800",
    "TZNAME:CST",
    "END:STANDARD",
    "END:VTIMEZONE",
])


def ical_status(status: str) -> str:
    """The VEVENT STATUS for a booking status (`pending` → TENTATIVE …); iCalendar values pass through."""
    if status in ICAL_STATUS:
        return ICAL_STATUS[status]
    if status.upper() in _ICAL_VALUES:
        return status.upper()
    raise ValueError(f"unknown booking status {status!r}")


def booking_uid(booking_id: int, host: str) -> str:
    """The stable UID of a booking's event: the same for every revision, so clients update in place."""
    return f"booking-{booking_id}@{host}"


def _plain(text: str) -> str:
    # RFC 5545 text has no escape for a bare CR; keep line breaks as LF, which `ics` escapes as \n.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def booking_event(
    *,
    booking_id: int,
    host: str,
    start: datetime,
    end: datetime,
    status: str,
    sequence: int,
    instrument_name: str,
    location: str,
    description: str,
    stamp: datetime,
    url: str | None = None,
) -> ics.Event:
    """One booking as a VEVENT. `start`, `end`, `stamp` are aware instants (written in UTC); `status` a
    booking status or an iCalendar STATUS; `sequence` >= 0, raised by the caller on every change; `stamp` the
    last change."""
    if sequence < 0:
        raise ValueError("sequence must not be negative")
    span = Interval(start, end)
    event = ics.Event(
        name=f"仪器预约：{_plain(instrument_name)}",
        begin=span.start,
        end=span.end,
        uid=booking_uid(booking_id, host),
        description=_plain(description) or None,
        location=_plain(location) or None,
        created=require_aware(stamp, "stamp"),
        last_modified=require_aware(stamp, "stamp"),
        status=ical_status(status),
        url=url,
        # A cancelled booking no longer blocks the user's time in free/busy lookups.
        transparent=ical_status(status) == "CANCELLED",
    )
    event.extra.append(ContentLine(name="SEQUENCE", value=str(sequence)))
    return event


def busy_events(
    *, instrument_id: int, instrument_name: str, busy: Iterable[Interval], host: str, stamp: datetime
) -> list[ics.Event]:
    """Busy time of one instrument as anonymous VEVENTs: touching intervals merged, no booking data."""
    events = []
    for block in merge(busy):
        key = block.start.strftime("%Y%m%dT%H%M%SZ")
        event = ics.Event(
            name=f"{_plain(instrument_name)}：已占用",
            begin=block.start,
            end=block.end,
            uid=f"busy-{instrument_id}-{key}@{host}",
            created=require_aware(stamp, "stamp"),
            status="CONFIRMED",
            transparent=False,
            classification="PUBLIC",
        )
        event.extra.append(ContentLine(name="SEQUENCE", value="0"))
        events.append(event)
    return events


def fold_line(line: str) -> str:
    """Fold one content line into CRLF-joined pieces of at most 75 octets, never inside a UTF-8 character."""
    if len(line.encode()) <= MAX_LINE_OCTETS:
        return line
    pieces: list[str] = []
    current = ""
    current_octets = 0
    for char in line:
        size = len(char.encode())
        # Continuation lines start with a space, which counts towards their 75 octets.
        limit = MAX_LINE_OCTETS if not pieces else MAX_LINE_OCTETS - 1
        if current_octets + size > limit:
            pieces.append(current)
            current, current_octets = "", 0
        current += char
        current_octets += size
    pieces.append(current)
    return (CRLF + " ").join(pieces)


def calendar_text(events: Iterable[ics.Event], *, name: str | None = None) -> str:
    """A VCALENDAR holding `events`, sorted by start then UID so equal input gives equal text; CRLF line ends,
    folded lines. `name` becomes X-WR-CALNAME."""
    calendar = ics.Calendar(creator=PRODID)
    calendar.method = "PUBLISH"
    calendar.scale = "GREGORIAN"
    if name:
        calendar.extra.append(ContentLine(name="X-WR-CALNAME", value=_escape_text(name)))
    calendar.extra.append(ContentLine(name="X-WR-TIMEZONE", value="Asia/Shanghai"))
    # ics 0.7 keeps events in a set and serialises them in hash order: serialise them ourselves, sorted, and
    # put them after the calendar's properties, where RFC 5545 wants components.
    envelope = calendar.serialize().split(CRLF)
    if envelope[-1] != "END:VCALENDAR":
        raise RuntimeError("unexpected ics serialisation of an empty calendar")
    ordered = sorted(events, key=lambda event: (event.begin, event.uid))
    body = [_SHANGHAI_VTIMEZONE, *(event.serialize() for event in ordered)]
    logical = CRLF.join([*envelope[:-1], *body, envelope[-1]]).split(CRLF)
    return CRLF.join(fold_line(line) for line in logical) + CRLF


def _escape_text(text: str) -> str:
    return (
        _plain(text).replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")
    )


def booking_calendar_text(event: ics.Event, *, name: str | None = None) -> str:
    """The `.ics` download of one booking."""
    return calendar_text([event], name=name)


def busy_feed_text(
    *, instrument_id: int, instrument_name: str, busy: Iterable[Interval], host: str, stamp: datetime
) -> str:
    """The public busy-time feed of one instrument (no personal data)."""
    events = busy_events(
        instrument_id=instrument_id, instrument_name=instrument_name, busy=busy, host=host, stamp=stamp
    )
    return calendar_text(events, name=f"{instrument_name} 占用时段")
