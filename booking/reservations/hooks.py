"""Extension points through which the layer above reservations reacts to booking events.

The dependency direction is fixed (see ../shared/style.md): scheduling's services that act on bookings (waitlist
offers, flexible placement, allocation rounds) sit *above* reservations and call this package to book, so this
package must never import them. Two things still need them:

* a conflict answer (409, booking form) should propose equivalent instruments, which only the scheduler knows;
* freed time (a cancellation, a rejection, an expired hold, an early check-out) should be offered to the waitlist
  at once, inside the transaction that freed it.

So reservations declares what it needs here, and the upper layer installs its implementations at start-up
(`scheduling.wiring.install`, called by `create_app` and by the job runner). Reservations only ever calls the
functions registered here; with nothing registered it falls back to its own same-instrument alternatives and
frees time silently, which is what a deployment without the scheduler gets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from booking.core.errors import Problem

if TYPE_CHECKING:
    from booking.accounts.models import User
    from booking.reservations.service import InstrumentContext


@dataclass(frozen=True)
class AlternativesQuery:
    """A taken slot and who wanted it: what a provider needs to propose the k best other slots."""

    ctx: InstrumentContext
    user: User
    start: datetime
    end: datetime
    k: int
    preferred_cities: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class FreedTime:
    """Time an active booking stopped occupying: from the later of its start and the moment it was freed, to
    its end. `action` is the transition that freed it (cancel, reject, expire, decline, expire_hold, …)."""

    booking_id: int
    instrument_id: int
    user_id: int
    start: datetime
    end: datetime
    action: str
    at: datetime


AlternativesProvider = Callable[[AsyncSession, AlternativesQuery], Awaitable[list[dict[str, Any]]]]
# Extra booking rules owned by the layer above (e.g. "this instrument is allocated by rounds"): given the
# instrument, the user booked for, and whether the actor manages the instrument, every problem found.
BookingPolicy = Callable[[AsyncSession, "InstrumentContext", "User", bool], Awaitable[list[Problem]]]
FreedTimeListener = Callable[[AsyncSession, FreedTime], Awaitable[None]]

_alternatives_provider: AlternativesProvider | None = None
_booking_policy: BookingPolicy | None = None
_freed_listeners: list[FreedTimeListener] = []


def set_alternatives_provider(provider: AlternativesProvider | None) -> None:
    """Install (or, with None, remove) the provider the conflict answer asks for alternatives."""
    global _alternatives_provider
    _alternatives_provider = provider


def alternatives_provider() -> AlternativesProvider | None:
    return _alternatives_provider


def set_booking_policy(policy: BookingPolicy | None) -> None:
    """Install (or remove) the upper layer's extra booking rules, checked with the instrument's own rules."""
    global _booking_policy
    _booking_policy = policy


def booking_policy() -> BookingPolicy | None:
    return _booking_policy


def add_freed_listener(listener: FreedTimeListener) -> None:
    """Register a coroutine called, in the freeing transaction, whenever an active booking frees time."""
    if listener not in _freed_listeners:
        _freed_listeners.append(listener)


def remove_freed_listener(listener: FreedTimeListener) -> None:
    if listener in _freed_listeners:
        _freed_listeners.remove(listener)


def freed_listeners() -> tuple[FreedTimeListener, ...]:
    return tuple(_freed_listeners)
