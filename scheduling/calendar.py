"""Chinese statutory holidays and adjusted working days (调休), from the `holidays` package plus admin
overrides.

The calendar answers questions about local (Asia/Shanghai) dates only:

* a **closed day** is a statutory holiday or a day off moved by 调休 (both are holidays in the package), or a
  day an administrator marked closed;
* an **adjusted working day** is a Saturday or Sunday the State Council declares a working day (调休上班), or
  one an administrator marked open;
* ordinary weekends are *not* the calendar's business: whether an instrument opens on a Saturday is decided by
  its weekly windows (`scheduling.availability`).

An adjusted working day stands in for the weekday whose work it carries (Sunday 2026-01-04 carries Friday
2026-01-02's work). `stands_in_for` returns that weekday so that availability can open the instrument with
that weekday's windows. When the source does not say which weekday is replaced, it is Monday, the first
working day of the week.

Administrator overrides win over the package for the dates they name. They exist because a year's schedule is
announced only weeks before it starts, and a package release may lag behind: in `holidays` 0.109 the official
schedules end with 2026; for 2027 and later the package computes the statutory days and moves weekend holidays
to the next weekday by rule, but lists no adjusted working days. `package_has_schedule(year)` tells the caller
whether to warn an administrator.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import holidays

DayKind = Literal["closed", "open"]

MONDAY = 0
_SATURDAY = 5
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class DayOverride:
    """An administrator's decision for one local date, which wins over the package.

    `kind="closed"` closes the day (a holiday the package does not know yet, or a local closure for all
    instruments); `kind="open"` makes it a working day: on a Saturday or Sunday that is an adjusted working
    day, on a weekday it cancels a holiday the package listed. `as_weekday` (0 = Monday … 6 = Sunday) names
    the weekday whose work an opened weekend day carries; None means Monday.
    """

    day: date
    kind: DayKind
    name: str
    as_weekday: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("closed", "open"):
            raise ValueError(f"override kind must be 'closed' or 'open', got {self.kind!r}")
        if self.as_weekday is not None and not 0 <= self.as_weekday <= 6:
            raise ValueError(f"as_weekday must be 0..6, got {self.as_weekday}")


@dataclass(frozen=True)
class AdjustedWorkday:
    """A weekend day that is a working day, and the weekday (0 = Monday) whose work it carries."""

    day: date
    stands_in_for: int
    name: str


@dataclass(frozen=True)
class HolidayCalendar:
    """Closed days and adjusted working days for a set of years; immutable, so it can be cached and shared.

    Build it with `HolidayCalendar.from_package(years, overrides)`; the plain constructor takes
    already-resolved data (useful in tests and when the data comes from the database).
    """

    closed_days: Mapping[date, str] = field(default_factory=dict)
    adjusted_workdays: Mapping[date, AdjustedWorkday] = field(default_factory=dict)
    # Years for which the package carried an official schedule (at least one adjusted working day).
    scheduled_years: frozenset[int] = frozenset()
    overrides: tuple[DayOverride, ...] = ()

    @classmethod
    def from_package(cls, years: Iterable[int], overrides: Iterable[DayOverride] = ()) -> HolidayCalendar:
        """Calendar for `years` from `holidays.China` (Chinese names), with `overrides` applied on top.

        Overrides for dates outside `years` are applied too: an administrator's word needs no package year.
        """
        year_list = sorted(set(years))
        package = holidays.China(years=year_list, language="zh_CN") if year_list else None
        closed: dict[date, str] = {}
        adjusted: dict[date, AdjustedWorkday] = {}
        if package is not None:
            wanted = set(year_list)
            closed = {day: str(name) for day, name in package.items() if day.year in wanted}
            replaced = _replaced_weekdays(closed)
            for day in sorted(package.weekend_workdays):
                # The package keeps working days of neighbouring years it saw in cross-year substitutions.
                if day.year in wanted:
                    adjusted[day] = AdjustedWorkday(day, replaced.get(day, MONDAY), "调休上班")
        scheduled = frozenset(day.year for day in adjusted)
        return cls.resolved(closed, adjusted, scheduled, tuple(overrides))

    @classmethod
    def resolved(
        cls,
        closed: Mapping[date, str],
        adjusted: Mapping[date, AdjustedWorkday],
        scheduled_years: frozenset[int],
        overrides: tuple[DayOverride, ...],
    ) -> HolidayCalendar:
        """Apply `overrides` (later ones win over earlier ones for the same date) to package data."""
        closed_days = dict(closed)
        adjusted_days = dict(adjusted)
        for override in overrides:
            day = override.day
            closed_days.pop(day, None)
            adjusted_days.pop(day, None)
            if override.kind == "closed":
                closed_days[day] = override.name
            elif day.weekday() >= _SATURDAY:
                weekday = MONDAY if override.as_weekday is None else override.as_weekday
                adjusted_days[day] = AdjustedWorkday(day, weekday, override.name)
            # An "open" weekday needs no entry: removing the package's holiday makes it an ordinary working
            # day.
        return cls(closed_days, adjusted_days, scheduled_years, overrides)

    def with_overrides(self, overrides: Iterable[DayOverride]) -> HolidayCalendar:
        """A copy with more overrides applied after the existing ones."""
        # Re-applying the earlier overrides to already-resolved data is idempotent, and keeps them on record.
        return HolidayCalendar.resolved(
            self.closed_days, self.adjusted_workdays, self.scheduled_years, self.overrides + tuple(overrides)
        )

    def is_closed_day(self, day: date) -> bool:
        """True on a statutory holiday, a 调休 day off, or an administrator's closed day."""
        return day in self.closed_days

    def is_adjusted_workday(self, day: date) -> bool:
        """True on a weekend day declared a working day (调休上班), by the package or an administrator."""
        return day in self.adjusted_workdays

    def stands_in_for(self, day: date) -> int | None:
        """For an adjusted working day, the weekday (0 = Monday) whose windows apply; otherwise None."""
        entry = self.adjusted_workdays.get(day)
        return entry.stands_in_for if entry else None

    def name_of(self, day: date) -> str | None:
        """The holiday's or the adjusted working day's name in Chinese; None for an ordinary day."""
        if day in self.closed_days:
            return self.closed_days[day]
        entry = self.adjusted_workdays.get(day)
        return entry.name if entry else None

    def package_has_schedule(self, year: int) -> bool:
        """True when the package listed an official 调休 schedule for `year`; False: estimated data only."""
        return year in self.scheduled_years


def _replaced_weekdays(closed: Mapping[date, str]) -> dict[date, int]:
    """Adjusted working day -> weekday of the day off it pays for, read from the package's day-off names.

    The package names a moved day off "休息日（由 2026-01-04 调休）": the working day's ISO date inside the
    name of the day off. Should the label change format, nothing matches and callers fall back to Monday.
    """
    replaced: dict[date, int] = {}
    for day_off, name in sorted(closed.items()):
        for text in _ISO_DATE.findall(name):
            try:
                working_day = date.fromisoformat(text)
            except ValueError:
                continue
            replaced.setdefault(working_day, day_off.weekday())
    return replaced
