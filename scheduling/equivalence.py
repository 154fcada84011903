"""Equivalence groups: instruments that can serve the same request, and what follows from them.

* Managers and platform administrators group instruments. One classification 小类 per group unless an explicit
  override states why (recorded in the activity log); capability tags say what the group can do.
* Who may book what: `eligibility_problems` answers the slot-independent part ("may this user ever book this
  instrument?") for the waitlist, flexible requests and alternatives alike.
* Alternatives on conflict: `provide_alternatives` is installed as reservations' alternatives provider (see
  `booking.reservations.hooks`): the nearest free slots on the same instrument and on equivalent instruments the
  user may book, ranked by time shift plus a distance penalty (same 市州 first).

Authorisation of groups: whoever manages *every* member (or a platform administrator) may edit a group; an
instrument enters a group only by someone who manages it. So a facility manager groups their own instruments,
and cross-institution groups (the same capability in several cities) are made by administrators.
"""

from __future__ import annotations

import asyncio
import time as monotonic
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import User
from booking.activity.service import record, snapshot
from booking.auth.principal import Principal
from booking.core.clock import to_local, utcnow
from booking.core.errors import Forbidden, NotFound, Problem, RuleViolation
from booking.core.regions import CITIES
from booking.core.settings import get_settings
from booking.reservations import hooks
from booking.reservations import repository as booking_repo
from booking.reservations import service as reservations
from instruments.models import STATUS_LABELS as INSTRUMENT_STATUS_LABELS
from instruments.models import Instrument, SharingMode
from instruments.service import can_see, get_visible, may_manage
from scheduling import conflict_repository as repo
from scheduling.conflict_models import EquivalenceGroup, EquivalenceMember
from scheduling.conflict_schemas import GroupIn, GroupUpdate, MemberIn
from scheduling.intervals import local_date
from scheduling.rules import DEFAULT_UNBOOKABLE_STATUSES, BookingRules
from scheduling.slots import bookable_slots, nearest_alternatives

# How far from the wanted slot alternatives are looked for on equivalent instruments (the same instrument uses
# the reservations service's own, wider window).
EQUIVALENT_REACH = timedelta(days=7)


async def principal_of(session: AsyncSession, user: User) -> Principal:
    """The user as a principal with their grants, for acting on their behalf (jobs, the waitlist)."""
    from booking.auth.repository import grants_for

    return Principal(user=user, grants=tuple(await grants_for(session, user.id)))  # type: ignore[arg-type]


# ---- who may book what --------------------------------------------------------------------------------------------


async def eligibility_problems(session: AsyncSession, principal: Principal, instruments: Sequence[Instrument]
                               ) -> dict[int, list[Problem]]:
    """For each instrument, why `principal`'s user may not book it at all, whatever the time (empty = may book).

    Visibility, 停用, sharing mode, 运行状态, qualification (valid today) and a no-show block. Time rules (opening
    hours, lead time, quotas) are left to the booking check of a concrete slot."""
    user = principal.user
    qualified = await repo.qualified_instrument_ids(session, user.id, [i.id for i in instruments  # type: ignore[arg-type]
                                                                       if i.qualification_required],
                                                    local_date(utcnow()))
    blocked = await booking_repo.active_block(session, user.id) is not None  # type: ignore[arg-type]
    out: dict[int, list[Problem]] = {}
    for inst in instruments:
        problems: list[Problem] = []
        if not await can_see(session, principal, inst):
            problems.append(Problem("instrument_id", "not_visible", f"仪器 {inst.id} 不存在或您无权查看"))
        elif inst.retired_at is not None:
            problems.append(Problem("instrument_id", "instrument_retired", f"仪器「{inst.name}」已停用"))
        else:
            internal = user.institution_id == inst.institution_id
            if inst.sharing_mode == SharingMode.none:
                problems.append(Problem("instrument_id", "not_shared", f"仪器「{inst.name}」不对外共享，不接受预约"))
            elif inst.sharing_mode == SharingMode.internal and not internal:
                problems.append(Problem("instrument_id", "internal_only", f"仪器「{inst.name}」仅对本单位用户开放"))
            label = INSTRUMENT_STATUS_LABELS.get(inst.status, inst.status)
            if label in DEFAULT_UNBOOKABLE_STATUSES:
                problems.append(Problem("instrument_id", "instrument_unavailable",
                                        f"仪器「{inst.name}」当前状态为「{label}」，不接受预约"))
            if inst.qualification_required and inst.id not in qualified:
                problems.append(Problem("instrument_id", "not_qualified",
                                        f"预约「{inst.name}」需要有效的上机资格，请先联系仪器管理员培训考核"))
        if blocked:
            problems.append(Problem("user", "user_blocked", "您的预约资格因多次爽约已暂停，请联系仪器管理员解除"))
        out[inst.id] = problems  # type: ignore[index]
    return out


def duration_allowed(rules: BookingRules, minutes: int) -> bool:
    """Whether an instrument's rules allow a booking of `minutes` (on its grid, within its min and max)."""
    return minutes % rules.slot_minutes == 0 and minutes >= rules.min_duration_minutes and (
        rules.max_duration_minutes is None or minutes <= rules.max_duration_minutes)


async def duration_problem(session: AsyncSession, instruments: Sequence[Instrument], minutes: int,
                           field: str = "duration_minutes") -> Problem | None:
    """A problem naming `field` unless the duration suits at least one of the instruments."""
    from scheduling import repository as schedule_repo

    for inst in instruments:
        rules = schedule_repo.rules_from_row(await schedule_repo.rules_row(session, inst.id),  # type: ignore[arg-type]
                                             qualification_required=False, external_allowed=True)
        if duration_allowed(rules, minutes):
            return None
    return Problem(field, "duration_not_allowed",
                   f"时长 {minutes} 分钟不符合候选仪器的时间粒度或最短/最长预约时长")


@dataclass
class Candidates:
    """The instruments a request may use, best first (the requested one, then same 市州, then by id), and why
    the others were left out."""

    instruments: list[Instrument]
    excluded: dict[int, list[Problem]]
    group: EquivalenceGroup | None


async def candidates(session: AsyncSession, principal: Principal, instrument: Instrument, any_equivalent: bool
                     ) -> Candidates:
    membership = await repo.membership(session, instrument.id)  # type: ignore[arg-type]
    group = membership[1] if membership else None
    pool = [instrument]
    if any_equivalent and group is not None:
        others = [i for _, i in await repo.members(session, [group.id]) if i.id != instrument.id]  # type: ignore[list-item]
        others.sort(key=lambda i: (i.city_code != instrument.city_code, i.id))
        pool += others
    problems = await eligibility_problems(session, principal, pool)
    return Candidates([i for i in pool if not problems[i.id]], {k: v for k, v in problems.items() if v},  # type: ignore[index]
                      group)


async def group_instrument_ids(session: AsyncSession, instrument_id: int) -> list[int]:
    """Every instrument of `instrument_id`'s group (itself included), or [] when it is in none."""
    membership = await repo.membership(session, instrument_id)
    if membership is None:
        return []
    return [i.id for _, i in await repo.members(session, [membership[1].id])]  # type: ignore[misc,list-item]


# ---- groups -------------------------------------------------------------------------------------------------------


@dataclass
class GroupView:
    group: EquivalenceGroup
    members: list[tuple[EquivalenceMember, Instrument]]
    category_name: str
    can_manage: bool


def _manages_all(principal: Principal, instruments: Sequence[Instrument]) -> bool:
    return principal.is_admin or all(may_manage(principal, i.institution_id, i.facility_id) for i in instruments)


async def _views(session: AsyncSession, principal: Principal, rows: Sequence[EquivalenceGroup]) -> list[GroupView]:
    members = await repo.members(session, [g.id for g in rows])  # type: ignore[misc]
    names = await repo.category_names(session, [g.category_code for g in rows])
    out = []
    for g in rows:
        mine = [(m, i) for m, i in members if m.group_id == g.id]
        visible = [(m, i) for m, i in mine if await can_see(session, principal, i)]
        out.append(GroupView(g, visible, names.get(g.category_code, g.category_code),
                             _manages_all(principal, [i for _, i in mine])))
    return out


async def list_groups(session: AsyncSession, principal: Principal, *, limit: int, offset: int
                      ) -> tuple[list[GroupView], int]:
    rows, total = await repo.groups(session, limit=limit, offset=offset)
    return await _views(session, principal, rows), total


async def get_group(session: AsyncSession, principal: Principal, group_id: int) -> GroupView:
    row = await repo.group(session, group_id)
    if row is None:
        raise NotFound(f"等效仪器组 {group_id} 不存在")
    return (await _views(session, principal, [row]))[0]


async def managed_group(session: AsyncSession, principal: Principal, group_id: int, *, for_update: bool = False
                        ) -> tuple[EquivalenceGroup, list[Instrument]]:
    """The group and its instruments, if the principal manages every one of them; else 403."""
    row = await repo.group(session, group_id, for_update=for_update)
    if row is None:
        raise NotFound(f"等效仪器组 {group_id} 不存在")
    instruments = [i for _, i in await repo.members(session, [group_id])]
    if not _manages_all(principal, instruments):
        raise Forbidden("只有管理该组全部仪器的管理员或平台管理员可以修改此等效仪器组")
    return row, instruments


def _snapshot(row: EquivalenceGroup) -> dict[str, Any]:
    """The group for the activity record (the log stores JSON: the cutoff time as "HH:MM")."""
    data = snapshot(row, exclude={"created_at", "updated_at"})
    data["round_time"] = row.round_time.strftime("%H:%M")
    return data


def _clean_tags(tags: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in tags if t.strip()))


async def _member_problems(session: AsyncSession, principal: Principal, ids: Sequence[int], field: str,
                           *, group_id: int | None = None) -> tuple[list[Instrument], list[Problem], bool]:
    """Load the instruments to add; problems naming `field[i]`; whether one of them is not the caller's."""
    problems: list[Problem] = []
    loaded: list[Instrument] = []
    not_mine = False
    found = await repo.instruments(session, ids)
    groups = await repo.memberships(session, ids)
    for index, iid in enumerate(ids):
        name = f"{field}[{index}]" if field == "instrument_ids" else field
        inst = found.get(iid)
        if inst is None or not await can_see(session, principal, inst):
            problems.append(Problem(name, "unknown_instrument", f"仪器 {iid} 不存在"))
            continue
        if inst.retired_at is not None:
            problems.append(Problem(name, "instrument_retired", f"仪器「{inst.name}」已停用，不能加入等效组"))
        if not may_manage(principal, inst.institution_id, inst.facility_id):
            not_mine = True
            problems.append(Problem(name, "not_manager", f"您不是仪器「{inst.name}」的管理员，不能把它加入等效组"))
        other = groups.get(iid)
        if other is not None and other.id != group_id:
            problems.append(Problem(name, "already_grouped", f"仪器「{inst.name}」已属于等效组「{other.name}」"))
        elif other is not None:
            problems.append(Problem(name, "already_member", f"仪器「{inst.name}」已在本组中"))
        loaded.append(inst)
    return loaded, problems, not_mine


async def _classification_problem(session: AsyncSession, codes: Sequence[str], override: str | None
                                  ) -> Problem | None:
    distinct = sorted(set(codes))
    if len(distinct) <= 1 or (override and override.strip()):
        return None
    names = await repo.category_names(session, distinct)
    listed = "、".join(f"{c} {names.get(c, '')}".strip() for c in distinct)
    return Problem("override_reason", "mixed_classification",
                   f"所选仪器的分类编码不同（{listed}）。等效仪器须属同一小类；确需混合时请填写理由")


async def create_group(session: AsyncSession, principal: Principal, data: GroupIn) -> GroupView:
    ids = list(dict.fromkeys(data.instrument_ids))
    problems: list[Problem] = []
    if len(ids) < 2:
        problems.append(Problem("instrument_ids", "too_few", "等效仪器组至少需要两台不同的仪器"))
    if await repo.group_by_name(session, data.name.strip()) is not None:
        problems.append(Problem("name", "duplicate", f"已有名为「{data.name.strip()}」的等效仪器组"))
    instruments, member_problems, not_mine = await _member_problems(session, principal, ids, "instrument_ids")
    problems += member_problems
    mixed = await _classification_problem(session, [i.category_code for i in instruments], data.override_reason)
    if mixed:
        problems.append(mixed)
    if not_mine:
        raise Forbidden("只能把自己管理的仪器加入等效组", problems=problems)
    if problems:
        raise RuleViolation("等效仪器组有误", problems=problems)
    codes = [i.category_code for i in instruments]
    # The group's classification is its members' (the most common one when an override mixes them).
    category = max(sorted(set(codes)), key=codes.count)
    now = utcnow()
    row = EquivalenceGroup(name=data.name.strip(), category_code=category, description=data.description,
                           capability_tags=_clean_tags(data.capability_tags),
                           override_reason=(data.override_reason or "").strip() or None,
                           created_by=principal.id, created_at=now, updated_at=now)
    session.add(row)
    await session.flush()
    for inst in instruments:
        session.add(EquivalenceMember(instrument_id=inst.id, group_id=row.id, added_by=principal.id, added_at=now))  # type: ignore[arg-type]
    await session.flush()
    record(session, actor_id=principal.id, action="equivalence_group.created", target_type="equivalence_group",
           target_id=row.id, after={**_snapshot(row),
                                    "instrument_ids": [i.id for i in instruments]})
    return await get_group(session, principal, row.id)  # type: ignore[arg-type]


async def update_group(session: AsyncSession, principal: Principal, group_id: int, data: GroupUpdate) -> GroupView:
    row, instruments = await managed_group(session, principal, group_id, for_update=True)
    changes = data.model_dump(exclude_unset=True)
    problems: list[Problem] = []
    if "name" in changes:
        other = await repo.group_by_name(session, changes["name"].strip())
        if other is not None and other.id != row.id:
            problems.append(Problem("name", "duplicate", f"已有名为「{changes['name'].strip()}」的等效仪器组"))
    if "override_reason" in changes and not (changes["override_reason"] or "").strip():
        mixed = await _classification_problem(session, [i.category_code for i in instruments], None)
        if mixed:
            problems.append(Problem("override_reason", "override_required",
                                    "组内仪器分类不同，不能删除混合分类的理由"))
    if changes.get("allocation_mode") == "immediate" and row.allocation_mode == "rounds" \
            and await repo.open_rounds_with_requests(session, row.id):  # type: ignore[arg-type]
        problems.append(Problem("allocation_mode", "round_pending",
                                "本组仍有未发布轮次中的申请，请先发布该轮次再改回即时预约"))
    if problems:
        raise RuleViolation("等效仪器组有误", problems=problems)
    before = _snapshot(row)
    for key, value in changes.items():
        if key == "capability_tags":
            value = _clean_tags(value or [])
        elif key in ("name", "description", "override_reason") and isinstance(value, str):
            value = value.strip() or None if key != "name" else value.strip()
        setattr(row, key, value)
    row.updated_at = utcnow()
    await session.flush()
    after = _snapshot(row)
    record(session, actor_id=principal.id, action="equivalence_group.updated", target_type="equivalence_group",
           target_id=row.id, before={k: before.get(k) for k in changes}, after={k: after.get(k) for k in changes})
    return await get_group(session, principal, group_id)


async def add_member(session: AsyncSession, principal: Principal, group_id: int, data: MemberIn) -> GroupView:
    row, _instruments = await managed_group(session, principal, group_id, for_update=True)
    loaded, problems, not_mine = await _member_problems(session, principal, [data.instrument_id], "instrument_id",
                                                        group_id=group_id)
    if loaded and not row.override_reason:
        mixed = await _classification_problem(session, [row.category_code, loaded[0].category_code],
                                              data.override_reason)
        if mixed:
            problems.append(mixed)
    if not_mine:
        raise Forbidden("只能把自己管理的仪器加入等效组", problems=problems)
    if problems:
        raise RuleViolation("不能加入该仪器", problems=problems)
    inst = loaded[0]
    if data.override_reason and data.override_reason.strip() and inst.category_code != row.category_code:
        row.override_reason = data.override_reason.strip()
    session.add(EquivalenceMember(instrument_id=inst.id, group_id=row.id, tags=_clean_tags(data.tags),  # type: ignore[arg-type]
                                  added_by=principal.id, added_at=utcnow()))
    row.updated_at = utcnow()
    await session.flush()
    record(session, actor_id=principal.id, action="equivalence_group.member_added", target_type="equivalence_group",
           target_id=row.id, after={"instrument_id": inst.id, "tags": _clean_tags(data.tags),
                                    "override_reason": data.override_reason})
    return await get_group(session, principal, group_id)


async def remove_member(session: AsyncSession, principal: Principal, group_id: int, instrument_id: int
                        ) -> GroupView:
    """The group's managers, or the instrument's own manager (who can always take it back out)."""
    row = await repo.group(session, group_id, for_update=True)
    if row is None:
        raise NotFound(f"等效仪器组 {group_id} 不存在")
    membership = await repo.membership(session, instrument_id)
    if membership is None or membership[1].id != group_id:
        raise NotFound(f"仪器 {instrument_id} 不在该等效组中")
    inst = await session.get(Instrument, instrument_id)
    assert inst is not None
    instruments = [i for _, i in await repo.members(session, [group_id])]
    if not (_manages_all(principal, instruments) or may_manage(principal, inst.institution_id, inst.facility_id)):
        raise Forbidden("只有该仪器或该组的管理员可以移出仪器")
    await session.delete(membership[0])
    row.updated_at = utcnow()
    await session.flush()
    record(session, actor_id=principal.id, action="equivalence_group.member_removed",
           target_type="equivalence_group", target_id=row.id, before={"instrument_id": instrument_id})
    return await get_group(session, principal, group_id)


async def equivalents_of(session: AsyncSession, principal: Principal, instrument_id: int
                         ) -> tuple[Instrument, EquivalenceGroup | None, list[tuple[Instrument, list[Problem]]]]:
    """The instrument's group and its other members, each with why this user may not book it (empty = may)."""
    inst = await get_visible(session, principal, instrument_id)
    membership = await repo.membership(session, instrument_id)
    if membership is None:
        return inst, None, []
    others = [i for _, i in await repo.members(session, [membership[1].id]) if i.id != instrument_id]  # type: ignore[list-item]
    problems = await eligibility_problems(session, principal, others)
    visible = [(i, problems[i.id]) for i in others if not any(p.code == "not_visible" for p in problems[i.id])]  # type: ignore[index]
    return inst, membership[1], visible


# ---- alternatives on conflict -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Raw:
    instrument_id: int
    name: str
    city_code: str
    start: datetime
    end: datetime


_Key = tuple[int, datetime, datetime, int]
_cache: dict[_Key, tuple[float, list[_Raw]]] = {}
_inflight: dict[_Key, asyncio.Future[list[_Raw]]] = {}


def clear_cache() -> None:
    _cache.clear()


async def _compute_raw(session: AsyncSession, ctx: reservations.InstrumentContext, start: datetime, end: datetime,
                       k: int) -> list[_Raw]:
    """Up to k nearest slots on the instrument and on each bookable equivalent (not yet filtered per user)."""
    inst = ctx.instrument
    out = [_Raw(inst.id, inst.name, inst.city_code, datetime.fromisoformat(a["start"]),  # type: ignore[arg-type]
                datetime.fromisoformat(a["end"])) for a in await reservations.alternatives(session, ctx, start, end, k)]
    membership = await repo.membership(session, inst.id)  # type: ignore[arg-type]
    if membership is None:
        return out
    others = [i for _, i in await repo.members(session, [membership[1].id])  # type: ignore[list-item]
              if i.id != inst.id and i.retired_at is None and i.sharing_mode != SharingMode.none]
    others.sort(key=lambda i: (i.city_code != inst.city_code, i.id))
    now = utcnow()
    window_start, window_end = max(now, start - EQUIVALENT_REACH), end + EQUIVALENT_REACH
    duration = end - start
    for other in others[:get_settings().alternatives_max_equivalents]:
        other_ctx = await reservations.instrument_context(session, other, window_start, window_end)
        rules = other_ctx.rules
        if not duration_allowed(rules, int(duration.total_seconds() // 60)):
            continue
        free = await reservations.free_intervals(session, other_ctx, window_start, window_end)
        slots = bookable_slots(free, rules, now, window_start, window_end)
        for iv in nearest_alternatives(slots, start, duration, k, rules.slot_minutes):
            out.append(_Raw(other.id, other.name, other.city_code, iv.start, iv.end))  # type: ignore[arg-type]
    return out


async def _raw_alternatives(session: AsyncSession, ctx: reservations.InstrumentContext, start: datetime,
                            end: datetime, k: int) -> list[_Raw]:
    """Computed once per (instrument, slot, k) for `alternatives_cache_s` seconds, in this process: when 200
    requests lose the same slot at once, the first computes and the other 199 await its result (single flight)
    instead of each loading every equivalent instrument's calendar. A cached slot may have been taken within
    those seconds; booking it then simply gets a fresh 409."""
    ttl = get_settings().alternatives_cache_s
    key: _Key = (ctx.instrument.id, start, end, k)  # type: ignore[assignment]
    clock = monotonic.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] > clock:
        return hit[1]
    pending = _inflight.get(key)
    if pending is not None:
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            if not pending.cancelled():
                raise  # this request itself was cancelled
            return await _compute_raw(session, ctx, start, end, k)
        except Exception:  # the first caller failed: compute on our own session
            return await _compute_raw(session, ctx, start, end, k)
    future: asyncio.Future[list[_Raw]] = asyncio.get_running_loop().create_future()
    _inflight[key] = future
    try:
        raw = await _compute_raw(session, ctx, start, end, k)
    except asyncio.CancelledError:
        future.cancel()  # the waiters compute on their own
        raise
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # marked as retrieved: there may be nobody waiting
        raise
    finally:
        _inflight.pop(key, None)
    future.set_result(raw)
    if ttl > 0:
        if len(_cache) > 2000:
            for stale in [k_ for k_, (until, _) in _cache.items() if until <= clock]:
                _cache.pop(stale, None)
        _cache[key] = (clock + ttl, raw)
    return raw


def _shift_text(minutes: int) -> str:
    if minutes == 0:
        return "时间相同"
    hours, rest = divmod(abs(minutes), 60)
    amount = (f"{hours} 小时" if hours else "") + (f" {rest} 分钟" if rest else "")
    return f"{'推迟' if minutes > 0 else '提前'} {amount.strip()}"


async def provide_alternatives(session: AsyncSession, query: hooks.AlternativesQuery) -> list[dict[str, Any]]:
    """The k best alternatives to a taken slot for this user (installed as reservations' provider).

    Ranked by cost = |time shift| in minutes + a distance penalty: none on the requested instrument, the same-市州
    penalty for an equivalent in the user's 市州 (the requested instrument's when the user has no institution),
    the other-市州 penalty otherwise (settings). Ties: smaller shift, the requested instrument, earlier start."""
    settings = get_settings()
    ctx = query.ctx
    inst = ctx.instrument
    raw = await _raw_alternatives(session, ctx, query.start, query.end, query.k)
    other_ids = list({r.instrument_id for r in raw if r.instrument_id != inst.id})
    problems: dict[int, list[Problem]] = {}
    if other_ids:
        # Who may book the equivalents is the user's own business: checked per request, never cached.
        others = await repo.instruments(session, other_ids)
        problems = await eligibility_problems(session, await principal_of(session, query.user),
                                              list(others.values()))
    home_city = inst.city_code
    if other_ids and query.user.institution_id is not None:
        from booking.accounts.models import Institution

        institution = await session.get(Institution, query.user.institution_id)
        if institution is not None:
            home_city = institution.city_code
    ranked: list[tuple[tuple[int, int, int, datetime, int], dict[str, Any]]] = []
    for r in raw:
        same = r.instrument_id == inst.id
        if not same and (problems.get(r.instrument_id) or (query.preferred_cities
                                                           and r.city_code not in query.preferred_cities)):
            continue
        shift = int((r.start - query.start).total_seconds() // 60)
        if same:
            penalty, where = 0, "同一仪器"
        elif r.city_code == home_city:
            penalty = settings.alternatives_same_city_penalty_min
            where = f"等效仪器，同在{CITIES.get(r.city_code, r.city_code)}"
        else:
            penalty = settings.alternatives_other_city_penalty_min
            where = f"等效仪器，位于{CITIES.get(r.city_code, r.city_code)}"
        item = {"instrument_id": r.instrument_id, "start": r.start.isoformat(), "end": r.end.isoformat(),
                "reason": f"{where}，{_shift_text(shift)}", "instrument_name": r.name, "city_code": r.city_code,
                "city": CITIES.get(r.city_code, r.city_code), "shift_minutes": shift,
                "kind": "same_instrument" if same else "equivalent",
                "local": f"{to_local(r.start):%Y-%m-%d %H:%M}–{to_local(r.end):%H:%M}"}
        ranked.append(((abs(shift) + penalty, abs(shift), 0 if same else 1, r.start, r.instrument_id), item))
    ranked.sort(key=lambda pair: pair[0])
    return [item for _, item in ranked[:query.k]]
