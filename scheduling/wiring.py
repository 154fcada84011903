"""Installs the scheduler's services into the reservations hooks (see `booking.reservations.hooks`).

Called by every entry point that changes bookings: `create_app` (web and API) and the job runner (through
`scheduling.jobs`). Idempotent. The order of the freed-time listeners is the order of precedence: users waiting
for a slot are offered freed time before waiting flexible requests are placed into it.
"""

from __future__ import annotations

from booking.reservations import hooks


def install() -> None:
    from scheduling import equivalence, flexible, rounds, waitlist

    hooks.set_alternatives_provider(equivalence.provide_alternatives)
    hooks.set_booking_policy(rounds.booking_policy)
    hooks.add_freed_listener(waitlist.on_time_freed)
    hooks.add_freed_listener(flexible.on_time_freed)


def uninstall() -> None:
    """Back to reservations on its own (tests of the plain reservations behaviour)."""
    from scheduling import flexible, waitlist

    hooks.set_alternatives_provider(None)
    hooks.set_booking_policy(None)
    hooks.remove_freed_listener(waitlist.on_time_freed)
    hooks.remove_freed_listener(flexible.on_time_freed)
