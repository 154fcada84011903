"""Tables of the conflict-resolving scheduler: equivalence groups, the waitlist and its held offers, flexible
requests and allocation rounds.

These rows sit above the bookings they produce: an offer or a placement *is* a `Booking` (a held offer is a real
row in the exclusion constraint), and these tables only remember who asked for what and why they got it. Foreign
keys point from here to bookings and instruments, never back.
"""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    Time,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from booking.core.base import fk_column, now, ts_column

ALLOCATION_MODES = ("immediate", "rounds")
WAITLIST_STATUSES = ("waiting", "offered", "fulfilled", "cancelled", "lapsed")
OFFER_OUTCOMES = ("open", "accepted", "declined", "expired", "withdrawn", "auto_booked")
FLEXIBLE_STATUSES = ("waiting", "placed", "collected", "granted", "refused", "expired", "cancelled")
ROUND_STATUSES = ("open", "previewed", "published")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _tags() -> Any:
    return Column(ARRAY(String(50)), nullable=False, server_default=text("'{}'::varchar[]"))


class EquivalenceGroup(SQLModel, table=True):
    """Instruments that can serve the same request: one classification 小类 (unless an administrator or the
    managers state why not, in `override_reason`) and the capability tags they share.

    A group in `rounds` mode has its flexible requests collected until a weekly cutoff (local weekday and time)
    and resolved together by `scheduling.optimizer.allocate` under the caps and external share stored here."""

    __tablename__ = "equivalence_groups"
    __table_args__ = (
        CheckConstraint(_in("allocation_mode", ALLOCATION_MODES), name="allocation_mode"),
        CheckConstraint("round_weekday BETWEEN 0 AND 6", name="round_weekday"),
        CheckConstraint("external_min_share >= 0 AND external_min_share <= 1", name="external_min_share"),
        CheckConstraint("user_cap_hours > 0 AND institution_cap_hours > 0", name="caps"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(100), nullable=False, unique=True))
    category_code: str = Field(sa_column=Column(String(6), ForeignKey("instrument_categories.code"), nullable=False))
    description: str | None = Field(default=None, sa_column=Column(String(500)))
    capability_tags: list[str] = Field(default_factory=list, sa_column=_tags())
    override_reason: str | None = Field(default=None, sa_column=Column(String(500)))
    allocation_mode: str = Field(default="immediate", sa_column=Column(Text, nullable=False,
                                                                       server_default="immediate"))
    round_weekday: int = Field(default=4, sa_column=Column(SmallInteger, nullable=False, server_default="4"))
    round_time: time = Field(default=time(17, 0), sa_column=Column(Time, nullable=False,
                                                                   server_default=text("'17:00'")))
    user_cap_hours: Decimal | None = Field(default=None, sa_column=Column(Numeric(6, 1)))
    institution_cap_hours: Decimal | None = Field(default=None, sa_column=Column(Numeric(7, 1)))
    external_min_share: Decimal = Field(default=Decimal(0), sa_column=Column(Numeric(3, 2), nullable=False,
                                                                             server_default="0"))
    created_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    updated_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class EquivalenceMember(SQLModel, table=True):
    """An instrument's place in its group. One group per instrument: "its equivalents" must be one set, and an
    instrument cannot be allocated by two rounds at once."""

    __tablename__ = "equivalence_members"

    instrument_id: int = Field(sa_column=Column(Integer, ForeignKey("instruments.id", ondelete="CASCADE"),
                                                primary_key=True))
    group_id: int = Field(sa_column=fk_column("equivalence_groups.id", ondelete="CASCADE"))
    # Capabilities this instrument adds to the group's (e.g. a second detector).
    tags: list[str] = Field(default_factory=list, sa_column=_tags())
    added_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    added_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class WaitlistEntry(SQLModel, table=True):
    """A user waiting for a taken slot (`kind='slot'`: the window is the slot) or for any `duration_minutes`
    inside a window, on the instrument or (any_equivalent) on any instrument of its group.

    Offers go out in order of `priority` (higher first, set by the instrument's managers), then first come."""

    __tablename__ = "waitlist_entries"
    __table_args__ = (
        CheckConstraint("kind IN ('slot', 'window')", name="kind"),
        CheckConstraint(_in("status", WAITLIST_STATUSES), name="status"),
        CheckConstraint("window_start < window_end", name="window_order"),
        CheckConstraint("duration_minutes > 0 AND window_end - window_start >= make_interval(mins => duration_minutes)",
                        name="duration_fits"),
        CheckConstraint("service_mode IN ('occupancy', 'technical', 'entrusted', 'remote', 'other')",
                        name="service_mode"),
        Index("ix_waitlist_entries_queue", "instrument_id", "status", "priority", "created_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    user_id: int = Field(sa_column=fk_column("users.id", ondelete="CASCADE"))
    instrument_id: int = Field(sa_column=Column(Integer, ForeignKey("instruments.id", ondelete="CASCADE"),
                                                nullable=False))
    any_equivalent: bool = Field(default=False, sa_column=Column(Boolean, nullable=False,
                                                                 server_default=text("false")))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    window_start: datetime = Field(sa_column=ts_column())
    window_end: datetime = Field(sa_column=ts_column())
    duration_minutes: int = Field(sa_column=Column(Integer, nullable=False))
    priority: int = Field(default=0, sa_column=Column(SmallInteger, nullable=False, server_default="0"))
    # Opt-in: when the instrument confirms bookings without approval, book at once instead of holding.
    auto_confirm: bool = Field(default=False, sa_column=Column(Boolean, nullable=False,
                                                               server_default=text("false")))
    purpose: str = Field(sa_column=Column(String(500), nullable=False))
    project_name: str | None = Field(default=None, sa_column=Column(String(200)))
    funding_source: str | None = Field(default=None, sa_column=Column(String(200)))
    service_mode: str = Field(default="occupancy", sa_column=Column(Text, nullable=False,
                                                                    server_default="occupancy"))
    sample_notes: str | None = Field(default=None, sa_column=Column(String(500)))
    status: str = Field(default="waiting", sa_column=Column(Text, nullable=False, index=True))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    updated_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    closed_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))


class WaitlistOffer(SQLModel, table=True):
    """One offer of freed time to one waiting entry: the held (or, auto-confirmed, the confirmed) booking and
    what became of it. An expired or declined offer keeps the entry from being offered that time again."""

    __tablename__ = "waitlist_offers"
    __table_args__ = (
        CheckConstraint(_in("outcome", OFFER_OUTCOMES), name="outcome"),
        CheckConstraint("start_at < end_at", name="order"),
        # At most one open offer per entry: the database, not the matching loop, guarantees it.
        Index("uq_waitlist_offers_open_entry", "entry_id", unique=True, postgresql_where=text("outcome = 'open'")),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    entry_id: int = Field(sa_column=Column(BigInteger, ForeignKey("waitlist_entries.id", ondelete="CASCADE"),
                                           nullable=False, index=True))
    booking_id: int = Field(sa_column=Column(BigInteger, ForeignKey("bookings.id"), nullable=False, unique=True))
    instrument_id: int = Field(sa_column=fk_column("instruments.id", index=False))
    start_at: datetime = Field(sa_column=ts_column())
    end_at: datetime = Field(sa_column=ts_column())
    offered_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    expires_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    outcome: str = Field(default="open", sa_column=Column(Text, nullable=False))
    decided_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))


class AllocationRound(SQLModel, table=True):
    """Requests for a group in rounds mode collected until `cutoff_at`, then previewed (the optimiser's decisions
    stored in `preview`) and published (granted placements booked through the reservations service)."""

    __tablename__ = "allocation_rounds"
    __table_args__ = (
        CheckConstraint(_in("status", ROUND_STATUSES), name="status"),
        UniqueConstraint("group_id", "cutoff_at", name="uq_allocation_rounds_group_cutoff"),
    )

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(sa_column=fk_column("equivalence_groups.id", ondelete="CASCADE"))
    cutoff_at: datetime = Field(sa_column=ts_column())
    status: str = Field(default="open", sa_column=Column(Text, nullable=False, server_default="open"))
    preview: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    previewed_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    previewed_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    published_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    published_by: int | None = Field(default=None, sa_column=fk_column("users.id", nullable=True, index=False))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))


class FlexibleBooking(SQLModel, table=True):
    """"`duration_minutes` on the instrument (or, any_equivalent, on its group) anywhere in [window_start,
    window_end), preferably inside `preferred_hours`, decided by `deadline`". Placed at once when possible, else
    kept and placed when capacity appears; in a group in rounds mode collected into the open round instead.
    `reason` says why it got its slot, or why it is still waiting or was refused."""

    __tablename__ = "flexible_requests"
    __table_args__ = (
        CheckConstraint(_in("status", FLEXIBLE_STATUSES), name="status"),
        CheckConstraint("window_start < window_end", name="window_order"),
        CheckConstraint("duration_minutes > 0 AND window_end - window_start >= make_interval(mins => duration_minutes)",
                        name="duration_fits"),
        CheckConstraint("weight BETWEEN 1 AND 10", name="weight"),
        CheckConstraint("service_mode IN ('occupancy', 'technical', 'entrusted', 'remote', 'other')",
                        name="service_mode"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    user_id: int = Field(sa_column=fk_column("users.id", ondelete="CASCADE"))
    instrument_id: int = Field(sa_column=fk_column("instruments.id", ondelete="CASCADE"))
    any_equivalent: bool = Field(default=False, sa_column=Column(Boolean, nullable=False,
                                                                 server_default=text("false")))
    duration_minutes: int = Field(sa_column=Column(Integer, nullable=False))
    window_start: datetime = Field(sa_column=ts_column())
    window_end: datetime = Field(sa_column=ts_column())
    deadline: datetime = Field(sa_column=ts_column())
    # [["09:00", "12:00"], ...] local wall-clock windows.
    preferred_hours: list[list[str]] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False,
                                                                                    server_default="[]"))
    weight: int = Field(default=1, sa_column=Column(SmallInteger, nullable=False, server_default="1"))
    purpose: str = Field(sa_column=Column(String(500), nullable=False))
    project_name: str | None = Field(default=None, sa_column=Column(String(200)))
    funding_source: str | None = Field(default=None, sa_column=Column(String(200)))
    service_mode: str = Field(default="occupancy", sa_column=Column(Text, nullable=False,
                                                                    server_default="occupancy"))
    sample_notes: str | None = Field(default=None, sa_column=Column(String(500)))
    status: str = Field(sa_column=Column(Text, nullable=False, index=True))
    round_id: int | None = Field(default=None, sa_column=fk_column("allocation_rounds.id", nullable=True,
                                                                   ondelete="SET NULL"))
    booking_id: int | None = Field(default=None, sa_column=Column(BigInteger, ForeignKey("bookings.id"),
                                                                  nullable=True))
    decision_code: str | None = Field(default=None, sa_column=Column(Text))
    reason: str | None = Field(default=None, sa_column=Column(String(500)))
    created_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
    updated_at: datetime = Field(default_factory=now, sa_column=ts_column(default_now=True))
