"""The booking lifecycle as data: which action moves which status to which, and who may take it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from booking.reservations.models import BookingStatus as S


class Actor(StrEnum):
    owner = "owner"  # the user the booking is for
    manager = "manager"  # a manager of the instrument (or a platform admin)
    system = "system"  # a background job


@dataclass(frozen=True)
class Transition:
    action: str
    sources: frozenset[S]
    target: S
    actors: frozenset[Actor]
    label: str


_T = Transition
TRANSITIONS: dict[str, Transition] = {t.action: t for t in (
    _T("approve", frozenset({S.pending}), S.confirmed, frozenset({Actor.manager}), "批准"),
    _T("reject", frozenset({S.pending}), S.rejected, frozenset({Actor.manager}), "拒绝"),
    _T("cancel", frozenset({S.pending, S.confirmed}), S.cancelled, frozenset({Actor.owner, Actor.manager}), "取消"),
    _T("check_in", frozenset({S.confirmed}), S.in_use, frozenset({Actor.owner, Actor.manager}), "签到上机"),
    _T("check_out", frozenset({S.in_use}), S.completed, frozenset({Actor.owner, Actor.manager}), "签退"),
    # A manager records a service that ran without check-in (samples dropped off, staff-operated).
    _T("record_service", frozenset({S.confirmed}), S.completed, frozenset({Actor.manager}), "登记服务"),
    _T("no_show", frozenset({S.confirmed}), S.no_show, frozenset({Actor.manager, Actor.system}), "记为爽约"),
    _T("expire", frozenset({S.pending}), S.expired, frozenset({Actor.system}), "过期"),
    # Waitlist offers (scheduling.waitlist): the user takes a held slot (confirmed, or pending where the
    # instrument requires approval), lets it go, or the hold runs out and the slot passes to the next in line.
    _T("accept", frozenset({S.held}), S.confirmed, frozenset({Actor.owner}), "接受保留的时段"),
    _T("accept_pending", frozenset({S.held}), S.pending, frozenset({Actor.owner}), "接受保留的时段"),
    _T("decline", frozenset({S.held}), S.cancelled, frozenset({Actor.owner, Actor.manager}), "放弃保留的时段"),
    _T("expire_hold", frozenset({S.held}), S.expired, frozenset({Actor.system}), "释放过期的保留"),
)}


def transition_problem(action: str, status: str, actor: Actor) -> str | None:
    """Why `actor` may not take `action` on a booking in `status`, in Chinese; None if allowed."""
    t = TRANSITIONS.get(action)
    if t is None:
        return f"未知操作 {action}"
    if actor not in t.actors:
        return f"无权{t.label}该预约"
    if status not in t.sources:
        from booking.reservations.models import STATUS_LABELS

        return f"预约当前为「{STATUS_LABELS.get(status, status)}」，不能{t.label}"
    return None
