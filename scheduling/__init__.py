"""Time for the booking service: the pure layer (calendar, availability, rules, slots, fees, iCalendar, the
allocation optimiser) takes plain data and returns answers, with no database and no I/O. Services that act
on bookings (waitlist offers, flexible placement, allocation rounds) build on it and live beside it."""
