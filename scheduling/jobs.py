"""The background jobs, registered with the runner (`booking scheduler`).

Each job is thin: the runner opens a unit of work and takes the job's advisory lock; the job calls one function
over everything that is due (see `scheduling.housekeeping`). Intervals are how often the range is checked,
not what is processed: a late run catches up.
"""

from __future__ import annotations

from booking.notify.mailer import flush_outbox
from instruments.jobs import promote_frequent_terms
from scheduling import flexible, housekeeping, waitlist, wiring
from scheduling.runner import register_job

# The runner changes bookings (expiries, no-shows, released holds): freed time must reach the waitlist here too.
wiring.install()

register_job("expire_pending", housekeeping.expire_overdue_requests, 60,
             "expire pending requests not decided before their start")
register_job("mark_no_shows", housekeeping.mark_no_shows, 60,
             "mark confirmed bookings without check-in as no-shows after the grace period")
register_job("send_reminders", housekeeping.send_reminders, 300,
             "remind users of bookings starting within reminder_before_h")
register_job("expire_qualifications", housekeeping.expire_qualifications, 3600,
             "notify users once when their qualification has expired")
register_job("release_holds", housekeeping.release_expired_holds, 60,
             "expire waitlist holds not taken up in time; the slot is offered to the next user in line")
register_job("waitlist_catch_up", waitlist.catch_up, 60,
             "close waitlist entries whose window passed; offer time freed without a booking transition")
register_job("place_flexible", flexible.place_due, 60,
             "place waiting flexible requests as capacity appears; expire those past their deadline")
register_job("email_outbox", flush_outbox, 30, "send the email outbox through SMTP")
register_job("promote_frequent_terms", promote_frequent_terms, 6 * 3600,
             "keep postings and facet counts for search terms found in thousands of instruments")
