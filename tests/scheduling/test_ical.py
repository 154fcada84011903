from __future__ import annotations

from datetime import UTC, datetime, timedelta

import icalendar
import pytest

from scheduling.ical import (
    booking_calendar_text,
    booking_event,
    busy_feed_text,
    calendar_text,
    fold_line,
    ical_status,
)
from tests.scheduling.clock import MONDAY, local, span

HOST = "booking.example.cn"
STAMP = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
LONG_ADDRESS = ("四川省成都市武侯区人民南路四段9号 四川省分析测试服务中心 3楼 301室"
                "（刷卡进入，联系电话 028-12345678）")


def parse_strictly(text: str) -> icalendar.Calendar:
    """Parse with `icalendar`, failing on anything it had to tolerate; check RFC 5545 §3.1 line rules."""
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "")
    for line in text.split("\r\n"):
        assert len(line.encode()) <= 75, line
    calendar = icalendar.Calendar.from_ical(text)
    calendar.validate()
    for component in calendar.walk():
        assert not component.errors, (component.name, component.errors)
    for event in calendar.walk("VEVENT"):
        for required in ("UID", "DTSTAMP", "DTSTART", "DTEND"):
            assert required in event, required
    return calendar


def event_text(status: str = "confirmed", sequence: int = 0, **changes: object) -> str:
    values: dict[str, object] = {
        "booking_id": 42,
        "host": HOST,
        "start": local(MONDAY, "09:00"),
        "end": local(MONDAY, "11:30"),
        "status": status,
        "sequence": sequence,
        "instrument_name": "高分辨质谱仪 Orbitrap Exploris 480",
        "location": LONG_ADDRESS,
        "description": "用途：蛋白质组学分析；样品 12 个\n项目：国家自然科学基金, 面上项目; 经费：中央财政",
        "stamp": STAMP,
    }
    values.update(changes)
    return booking_calendar_text(booking_event(**values), name="我的预约")  # type: ignore[arg-type]


class TestIcalStatus:
    @pytest.mark.parametrize(
        ("status", "expected"),
        [("pending", "TENTATIVE"), ("confirmed", "CONFIRMED"), ("in_use", "CONFIRMED"),
         ("completed", "CONFIRMED"), ("cancelled", "CANCELLED"), ("rejected", "CANCELLED"),
         ("no_show", "CANCELLED"), ("tentative", "TENTATIVE")],
    )
    def test_mapping(self, status: str, expected: str) -> None:
        assert ical_status(status) == expected

    def test_unknown(self) -> None:
        with pytest.raises(ValueError):
            ical_status("maybe")


class TestBookingEvent:
    @pytest.mark.parametrize(
        ("status", "sequence", "expected_status"),
        [("pending", 0, "TENTATIVE"), ("confirmed", 1, "CONFIRMED"), ("cancelled", 3, "CANCELLED")],
    )
    def test_fields_survive_a_strict_parser(self, status: str, sequence: int, expected_status: str) -> None:
        calendar = parse_strictly(event_text(status, sequence))
        (event,) = calendar.walk("VEVENT")
        assert str(event["UID"]) == "booking-42@booking.example.cn"
        assert int(event["SEQUENCE"]) == sequence
        assert str(event["STATUS"]) == expected_status
        assert event.decoded("DTSTART") == datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
        assert event.decoded("DTEND") == datetime(2026, 12, 7, 3, 30, tzinfo=UTC)
        assert event.decoded("DTSTAMP") == STAMP
        assert "高分辨质谱仪 Orbitrap Exploris 480" in str(event["SUMMARY"])
        assert str(event["LOCATION"]) == LONG_ADDRESS
        assert str(event["DESCRIPTION"]).splitlines()[1] == "项目：国家自然科学基金, 面上项目; 经费：中央财政"

    @pytest.mark.parametrize(("status", "transparency"),
                             [("confirmed", "OPAQUE"), ("cancelled", "TRANSPARENT")])
    def test_cancelled_bookings_do_not_block_time(self, status: str, transparency: str) -> None:
        (event,) = parse_strictly(event_text(status)).walk("VEVENT")
        assert str(event["TRANSP"]) == transparency

    def test_uid_is_stable_across_changes(self) -> None:
        first = parse_strictly(event_text("pending", 0)).walk("VEVENT")[0]
        later = parse_strictly(event_text("cancelled", 4, start=local(MONDAY, "14:00"),
                                          end=local(MONDAY, "15:00"))).walk("VEVENT")[0]
        assert first["UID"] == later["UID"]
        assert int(later["SEQUENCE"]) > int(first["SEQUENCE"])

    def test_same_input_same_text(self) -> None:
        assert event_text() == event_text()

    def test_carriage_returns_are_not_emitted(self) -> None:
        calendar = parse_strictly(event_text(description="第一行\r\n第二行\r第三行"))
        assert str(calendar.walk("VEVENT")[0]["DESCRIPTION"]).splitlines() == ["第一行", "第二行", "第三行"]

    def test_calendar_names_the_time_zone(self) -> None:
        calendar = parse_strictly(event_text())
        assert str(calendar["X-WR-TIMEZONE"]) == "Asia/Shanghai"
        assert [str(tz["TZID"]) for tz in calendar.walk("VTIMEZONE")] == ["Asia/Shanghai"]
        assert str(calendar["X-WR-CALNAME"]) == "我的预约"

    @pytest.mark.parametrize(
        "changes",
        [{"sequence": -1}, {"start": datetime(2026, 12, 7, 9)}, {"end": local(MONDAY, "08:00")}],
        ids=["negative sequence", "naive start", "end before start"],
    )
    def test_rejects(self, changes: dict[str, object]) -> None:
        with pytest.raises(ValueError):
            event_text(**changes)  # type: ignore[arg-type]


class TestCalendarText:
    def test_events_sorted_by_start_then_uid(self) -> None:
        events = [
            booking_event(booking_id=n, host=HOST, start=local(MONDAY, start), end=local(MONDAY, end),
                          status="confirmed", sequence=0, instrument_name="电镜", location="成都",
                          description="", stamp=STAMP)
            for n, start, end in ((3, "14:00", "15:00"), (1, "09:00", "10:00"), (2, "09:00", "09:30"))
        ]
        text = calendar_text(events)
        calendar = parse_strictly(text)
        assert [str(event["UID"]).split("@")[0] for event in calendar.walk("VEVENT")] == [
            "booking-1", "booking-2", "booking-3"]
        assert calendar_text(list(reversed(events))) == text

    def test_empty_calendar_is_still_valid(self) -> None:
        calendar = parse_strictly(calendar_text([]))
        assert calendar.walk("VEVENT") == []


class TestBusyFeed:
    def test_merged_anonymous_blocks(self) -> None:
        busy = [span(MONDAY, "09:00", "10:00"), span(MONDAY, "10:00", "11:00"),
                span(MONDAY, "14:00", "15:00")]
        text = busy_feed_text(instrument_id=9, instrument_name="场发射扫描电镜", busy=busy, host=HOST,
                              stamp=STAMP)
        calendar = parse_strictly(text)
        events = calendar.walk("VEVENT")
        assert [(e.decoded("DTSTART"), e.decoded("DTEND")) for e in events] == [
            (local(MONDAY, "09:00"), local(MONDAY, "11:00")),
            (local(MONDAY, "14:00"), local(MONDAY, "15:00")),
        ]
        assert all(str(e["UID"]).startswith("busy-9-") for e in events)
        for event in events:
            assert "DESCRIPTION" not in event and "ORGANIZER" not in event and "ATTENDEE" not in event
            assert str(event["SUMMARY"]) == "场发射扫描电镜：已占用"

    def test_uid_follows_the_block(self) -> None:
        busy = [span(MONDAY, "09:00", "10:00")]
        first = busy_feed_text(instrument_id=9, instrument_name="电镜", busy=busy, host=HOST, stamp=STAMP)
        second = busy_feed_text(instrument_id=9, instrument_name="电镜", busy=busy, host=HOST,
                                stamp=STAMP + timedelta(days=1))
        uid = parse_strictly(first).walk("VEVENT")[0]["UID"]
        assert parse_strictly(second).walk("VEVENT")[0]["UID"] == uid


class TestFoldLine:
    @pytest.mark.parametrize("text", ["A" * 74, "A" * 75, "A" * 200, "质" * 80, "a" + "谱" * 30 + "b" * 40])
    def test_folds_without_splitting_characters(self, text: str) -> None:
        folded = fold_line(f"DESCRIPTION:{text}")
        pieces = folded.split("\r\n")
        assert all(len(piece.encode()) <= 75 for piece in pieces)
        assert all(piece.startswith(" ") for piece in pieces[1:])
        assert "".join([pieces[0], *(piece[1:] for piece in pieces[1:])]) == f"DESCRIPTION:{text}"
