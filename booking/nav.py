"""Navigation by role. Each domain registers the pages it owns; the base template shows what the user may use."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from booking.accounts.models import ROLE_LABELS, Role
from booking.auth.principal import Principal

Visible = Callable[[Principal | None], bool]
Href = Callable[[Principal | None], str]


@dataclass(frozen=True)
class NavItem:
    key: str
    label: str
    href: Href
    visible: Visible
    order: int
    # A URL returning a small fragment (e.g. an unread count) that the header loads with htmx.
    badge: str | None = None
    # Pages of this entry that live under another entry's path (an instrument's schedule belongs to 排期管理).
    also: tuple[str, ...] = ()
    # A menu of the header holding this entry (its label), for pages used less often than daily: the header stays
    # one line at a laptop's width. None: the entry is shown in the bar itself.
    group: str | None = None


_items: dict[str, NavItem] = {}

# The header's menus (NavItem.group).
TOOLS = "管理工具"
SYSTEM = "系统管理"
ACCOUNT = "我的账户"


def register_nav(key: str, label: str, href: str | Href, visible: Visible, order: int = 50,
                 badge: str | None = None, also: tuple[str, ...] = (), group: str | None = None) -> None:
    resolved: Href = (lambda _p, h=href: h) if isinstance(href, str) else href  # type: ignore[misc]
    _items[key] = NavItem(key, label, resolved, visible, order, badge, also, group)


def _match(path: str, href: str, also: tuple[str, ...]) -> int:
    """How well a page's path matches an entry: an `also` pattern beats any prefix, a longer prefix a shorter."""
    if any(re.match(pattern, path) for pattern in also):
        return 10_000
    base = href.split("?")[0]
    if base == "/":
        return 1 if path == "/" else 0
    return len(base) if path == base or path.startswith(base.rstrip("/") + "/") else 0


def everyone(_: Principal | None) -> bool:
    return True


def signed_in(p: Principal | None) -> bool:
    return p is not None


def managers(p: Principal | None) -> bool:
    return p is not None and (p.is_admin or bool(p.managed_institution_ids))


def auditors(p: Principal | None) -> bool:
    return p is not None and (p.is_admin or p.is_auditor)


def admins(p: Principal | None) -> bool:
    return p is not None and p.is_admin


def primary_role_label(p: Principal | None) -> str:
    if p is None:
        return ""
    for role in (Role.platform_admin, Role.auditor, Role.institution_admin, Role.facility_manager):
        if p.has(role):
            if role == Role.auditor and not p.is_provincial_auditor:
                return "市州审计"
            if role == Role.auditor:
                return "省级审计（科技厅）"
            return ROLE_LABELS[role]
    return ROLE_LABELS[Role.researcher]


def mark_current(request: Request, key: str) -> None:
    """Say which entry a page belongs to when its address does not (a manager on a user's booking)."""
    request.state.nav_current = key


def nav_context(request: Request) -> Mapping[str, Any]:
    principal: Principal | None = getattr(request.state, "principal", None)
    path = request.url.path
    marked = getattr(request.state, "nav_current", None)
    items = []
    scores = []
    for item in sorted(_items.values(), key=lambda i: (i.order, i.key)):
        if item.visible(principal):
            href = item.href(principal)
            scores.append(20_000 if item.key == marked else _match(path, href, item.also))
            items.append({"key": item.key, "label": item.label, "href": href, "current": False,
                          "badge": item.badge, "group": item.group})
    # One entry is current: the best match.
    if scores and max(scores) > 0:
        items[scores.index(max(scores))]["current"] = True
    return {
        "nav": items,
        "nav_bar": nav_bar(items),
        "principal": principal,
        "role_label": primary_role_label(principal),
        "csrf_token": getattr(request.state, "csrf_token", ""),
    }


def nav_bar(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The header's bar: the entries in order, those of one group gathered into one menu where the group's first
    entry would be ({"menu": label, "items": [...], "current": whether one of them is}). A group with a single
    visible entry is shown as that entry."""
    members: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        if item["group"]:
            members.setdefault(item["group"], []).append(item)
    bar: list[dict[str, Any]] = []
    for item in items:
        group = item["group"]
        if not group or len(members[group]) == 1:
            bar.append(item)
        elif members[group][0] is item:
            entries = members[group]
            bar.append({"menu": group, "items": entries, "current": any(e["current"] for e in entries)})
    return bar
