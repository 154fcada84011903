"""Catalogue use cases. Each validates everything first, then writes, then records the activity, in the caller's
transaction: services only flush; the request, job or CLI command commits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Facility, Institution, InstitutionKind, User
from booking.activity.service import changed, record, snapshot
from booking.auth.principal import Principal
from booking.core.clock import to_local, utcnow
from booking.core.errors import Conflict, Forbidden, NotFound, Problem, RuleViolation, Unauthorized
from booking.core.regions import CITIES
from booking.core.settings import get_settings
from booking.notify.service import notify
from instruments import repository as repo
from instruments.models import (
    HISTORY_FIELDS,
    Category,
    Chain,
    Instrument,
    InstrumentAccess,
    InstrumentHistory,
    InstrumentStatus,
    SharingMode,
)
from instruments.repository import SearchFilters, SearchPage, Viewer
from instruments.rules import (
    MAX_SEARCH_TERMS,
    ReferenceData,
    category_code_problems,
    category_level,
    category_parent,
    category_prefix,
    history_changed,
    instrument_problems,
)
from instruments.schemas import CategoryCreate, ChainCreate, InstrumentCreate, InstrumentUpdate

# Fields the record snapshot in the activity log leaves out (bookkeeping, not content).
_SNAPSHOT_EXCLUDE = {"created_at", "updated_at", "created_by"}
_REQUIRED = ("asset_number", "name", "category_code", "original_value", "city_code", "sharing_mode", "status")


def today() -> date:
    """The local (Asia/Shanghai) date: a start-of-use date is a calendar date in China."""
    return to_local(utcnow()).date()


def threshold() -> Decimal:
    return get_settings().large_instrument_threshold_cny


def public_base_url() -> str:
    return get_settings().base_url.rstrip("/")


def public_url(instrument_id: int) -> str:
    """The stable public page: the national platform's 预约服务网址."""
    return f"{public_base_url()}/instruments/{instrument_id}"


def viewer_of(principal: Principal | None) -> Viewer:
    if principal is None:
        return Viewer()
    return Viewer(
        user_id=principal.id,
        is_admin=principal.is_admin,
        managed_institution_ids=frozenset(principal.managed_institution_ids),
        signed_in=True,
    )


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in values.items()}


def may_manage(actor: Principal | None, institution_id: int, facility_id: int | None) -> bool:
    """None is the operator at the CLI, who acts with full rights."""
    return actor is None or actor.manages_facility(institution_id, facility_id)


# ---- search -----------------------------------------------------------------------------------------------------


async def build_filters(
    source: repo.Reader,
    *,
    q: str | None = None,
    city: str | None = None,
    institution_kind: str | None = None,
    institution: int | None = None,
    category: str | None = None,
    sharing_mode: str | None = None,
    status: str | None = None,
    chain: str | None = None,
    min_value: Decimal | None = None,
    max_value: Decimal | None = None,
    large: bool | None = None,
    vouchers: bool | None = None,
) -> SearchFilters:
    """Check the search parameters and normalise them; every bad parameter is reported by name."""
    problems: list[Problem] = []
    if q and len(q.split()) > MAX_SEARCH_TERMS:
        problems.append(Problem("q", "too_many_terms", f"关键词最多 {MAX_SEARCH_TERMS} 个（以空格分隔）"))
    if city and city not in CITIES:
        problems.append(Problem("city", "unknown_city", f"未知的市州代码 {city}"))
    if institution_kind and institution_kind not in {k.value for k in InstitutionKind}:
        problems.append(
            Problem(
                "institution_kind",
                "unknown_kind",
                f"未知的单位类型（可选：{'、'.join(k.value for k in InstitutionKind)}）",
            )
        )
    prefix = category_prefix(category) if category else None
    if category and prefix is None:
        problems.append(Problem("category", "invalid_category", "分类编码应为 2、4 或 6 位数字"))
    if sharing_mode and sharing_mode not in {m.value for m in SharingMode}:
        problems.append(Problem("sharing_mode", "invalid", "共享模式应为 internal、external 或 none"))
    if status and status not in {s.value for s in InstrumentStatus}:
        problems.append(
            Problem("status", "invalid", f"运行状态应为 {'、'.join(s.value for s in InstrumentStatus)} 之一")
        )
    chain_id: int | None = None
    if chain:
        if chain.isascii() and chain.isdigit():
            chain_id = int(chain)
            if not 1 <= chain_id <= 2**31 - 1:  # not an id the table can hold (and not a literal the SQL may write)
                chain_id = None
                problems.append(Problem("chain", "unknown_chain", f"未知的产业链标签 {chain}"))
        else:
            chain_id = (await repo.chain_ids_by_name(source)).get(chain.strip())
            if chain_id is None:
                problems.append(Problem("chain", "unknown_chain", f"未知的产业链标签 {chain}"))
    if min_value is not None and max_value is not None and min_value > max_value:
        problems.append(Problem("min_value", "invalid_range", "原值下限不能大于上限"))
    if problems:
        raise RuleViolation("查询条件有误", problems=problems)
    return SearchFilters(
        q=(q or "").strip() or None,
        city=city or None,
        institution_kind=institution_kind or None,
        institution_id=institution,
        category=prefix,
        sharing_mode=sharing_mode or None,
        status=status or None,
        chain_id=chain_id,
        min_value=min_value,
        max_value=max_value,
        large=large,
        vouchers=vouchers,
        threshold=threshold(),
    )


async def search(
    source: repo.Reader,
    principal: Principal | None,
    filters: SearchFilters,
    *,
    sort: str,
    limit: int,
    offset: int,
    with_facets: bool = True,
) -> SearchPage:
    """`source`: a session, or for an anonymous reader an asyncpg connection (booking.core.db.read_connection)."""
    return await repo.search(
        source, filters, viewer_of(principal), sort=sort, limit=limit, offset=offset, with_facets=with_facets
    )


async def frequent_term_candidates(session: AsyncSession) -> list[tuple[str, int]]:
    """The terms to make frequent now, with how many instruments have each: substrings of 2 to
    search_frequent_term_length characters found in at least search_frequent_term_rows live instruments and not
    frequent yet, most common first, at most search_frequent_terms_max of them. Length by length, each a statement
    of a few seconds at 100,000 instruments; a length with no common substring at all (frequent already or not)
    ends the search: a longer substring is never in more instruments than the shorter ones inside it."""
    settings = get_settings()
    found: list[tuple[str, int]] = []
    for length in range(2, settings.search_frequent_term_length + 1):
        common = await repo.frequent_term_candidates(
            session, min_rows=settings.search_frequent_term_rows, length=length
        )
        if not common:
            break
        found += [(term, n) for term, n, known in common if not known]
    found.sort(key=lambda item: (-item[1], item[0]))
    return found[: settings.search_frequent_terms_max]


def frequent_term_batches(candidates: list[tuple[str, int]]) -> list[list[str]]:
    """The candidates in batches of at most FREQUENT_TERMS_PER_BATCH terms and FREQUENT_POSTINGS_PER_BATCH postings
    (a term alone may exceed it): each batch is one statement, holding the catalogue writers' lock while it runs."""
    batches: list[list[str]] = []
    batch: list[str] = []
    postings = 0
    for term, n in candidates:
        if batch and (len(batch) >= FREQUENT_TERMS_PER_BATCH or postings + n > FREQUENT_POSTINGS_PER_BATCH):
            batches.append(batch)
            batch, postings = [], 0
        batch.append(term)
        postings += n
    if batch:
        batches.append(batch)
    return batches


async def add_frequent_terms(session: AsyncSession, terms: list[str]) -> int:
    return await repo.add_frequent_terms(session, terms)


async def analyze_frequent_terms(session: AsyncSession) -> None:
    await repo.analyze_frequent_terms(session)


async def promote_frequent_terms(session: AsyncSession) -> int:
    """Make every term that is common enough now frequent, in this session's transaction (the demo seed); the
    background job (instruments.jobs) does the same in a transaction per batch. Returns how many were added."""
    added = 0
    for batch in frequent_term_batches(await frequent_term_candidates(session)):
        added += await add_frequent_terms(session, batch)
    return added


# A batch builds about 150,000 postings a second on the development machine (one term's postings found through the
# bigram index): 200,000 keep a batch near a second or two, far inside the statement timeout.
FREQUENT_TERMS_PER_BATCH = 25
FREQUENT_POSTINGS_PER_BATCH = 200_000


# ---- reading one instrument ---------------------------------------------------------------------------------------


async def can_see(session: AsyncSession, principal: Principal | None, inst: Instrument) -> bool:
    if inst.retired_at is not None and not (principal and principal.manages_institution(inst.institution_id)):
        return False
    if not inst.restricted:
        return True
    if principal is None:
        return False
    if principal.is_admin or principal.manages_institution(inst.institution_id):
        return True
    return await repo.has_access(session, inst.id, principal.id)  # type: ignore[arg-type]


async def get_visible(
    session: AsyncSession, principal: Principal | None, instrument_id: int, *, for_update: bool = False
) -> Instrument:
    """Load or 404. A restricted instrument the reader may not see does not exist for them."""
    inst = await repo.get(session, instrument_id, for_update=for_update)
    if inst is None or not await can_see(session, principal, inst):
        raise NotFound(f"仪器 {instrument_id} 不存在")
    return inst


@dataclass
class InstrumentView:
    instrument: Instrument
    institution: Institution
    facility: Facility | None
    category_path: list[Category]
    chains: list[str]
    can_manage: bool
    show_contact: bool


async def view(session: AsyncSession, principal: Principal | None, instrument_id: int) -> InstrumentView:
    inst = await get_visible(session, principal, instrument_id)
    institution = await session.get(Institution, inst.institution_id)
    assert institution is not None
    facility = await session.get(Facility, inst.facility_id) if inst.facility_id else None
    path: list[Category] = []
    code: str | None = inst.category_code
    while code:
        cat = await session.get(Category, code)
        if cat is None:
            break
        path.insert(0, cat)
        code = cat.parent_code
    chains = (await repo.chain_names_of(session, [instrument_id]))[instrument_id]
    return InstrumentView(
        inst,
        institution,
        facility,
        path,
        chains,
        can_manage=principal is not None
        and principal.manages_facility(inst.institution_id, inst.facility_id),
        show_contact=principal is not None,
    )


# ---- writing ----------------------------------------------------------------------------------------------------


async def reference_data(
    session: AsyncSession, institution_ids: list[int]
) -> tuple[ReferenceData, dict[int, set[int]]]:
    facilities = await repo.facilities_of(session, institution_ids)
    by_inst: dict[int, set[int]] = {i: set() for i in institution_ids}
    for f in facilities:
        by_inst.setdefault(f.institution_id, set()).add(f.id)  # type: ignore[arg-type]
    ref = ReferenceData(
        category_codes=await repo.category_codes(session),
        chain_names=frozenset((await repo.chain_ids_by_name(session)).keys()),
    )
    return ref, by_inst


def record_snapshot(inst: Instrument, chains: list[str]) -> dict[str, Any]:
    data = snapshot(inst, exclude=_SNAPSHOT_EXCLUDE)
    data["chains"] = sorted(chains)
    return data


def open_history(session: AsyncSession, inst: Instrument, at: datetime | None = None) -> None:
    """Open the row that holds from `at`; pass the same instant that closed the previous row."""
    session.add(
        InstrumentHistory(
            instrument_id=inst.id,  # type: ignore[arg-type]
            valid_from=at or utcnow(),
            sharing_mode=inst.sharing_mode,
            status=inst.status,
            original_value=inst.original_value,
            institution_id=inst.institution_id,
            city_code=inst.city_code,
        )
    )


def _raise(problems: list[Problem], detail: str) -> None:
    if not problems:
        return
    if all(p.code == "duplicate" for p in problems):
        raise Conflict(problems[0].message, problems=problems)
    raise RuleViolation(detail, problems=problems)


async def _flush(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:  # the database's guarantee behind the friendly pre-checks
        if "uq_instruments_institution_asset_number" in str(exc.orig):
            raise Conflict(
                "本单位已有相同内部编码的仪器",
                problems=[Problem("asset_number", "duplicate", "本单位已有相同内部编码的仪器")],
            ) from None
        raise


async def _institution(
    session: AsyncSession, actor: Principal | None, institution_id: int | None
) -> Institution:
    if institution_id is None and actor is not None and len(actor.managed_institution_ids) == 1:
        institution_id = next(iter(actor.managed_institution_ids))
    if institution_id is None:
        raise RuleViolation("请指定所属单位", problems=[Problem("institution_id", "missing", "必填")])
    institution = await session.get(Institution, institution_id)
    if institution is None:
        raise RuleViolation(
            "单位不存在",
            problems=[Problem("institution_id", "unknown_institution", f"单位 {institution_id} 不存在")],
        )
    return institution


async def create_instrument(
    session: AsyncSession, actor: Principal | None, data: InstrumentCreate
) -> Instrument:
    if actor is not None and not (actor.is_admin or actor.managed_institution_ids):
        raise Forbidden("只有仪器管理员和平台管理员可以发布仪器")
    institution = await _institution(session, actor, data.institution_id)
    assert institution.id is not None
    if not may_manage(actor, institution.id, data.facility_id):
        raise Forbidden("只能为本单位（本实验室/平台）发布仪器")
    values = _plain(data.model_dump(exclude={"institution_id"}))
    values["city_code"] = values.get("city_code") or institution.city_code
    chain_names: list[str] = values.pop("chains") or []
    values["subjects"] = values.get("subjects") or []
    ref, facilities = await reference_data(session, [institution.id])
    problems = instrument_problems(
        {**values, "chains": chain_names},
        ReferenceData(ref.category_codes, ref.chain_names, frozenset(facilities[institution.id])),
        today=today(),
    )
    if await repo.by_asset_number(session, institution.id, values["asset_number"]) is not None:
        problems.append(
            Problem("asset_number", "duplicate", f"本单位已有内部编码为 {values['asset_number']} 的仪器")
        )
    _raise(problems, "仪器信息有误")
    inst = Instrument(**values, institution_id=institution.id, created_by=actor.id if actor else None)
    session.add(inst)
    await _flush(session)
    assert inst.id is not None
    await _set_chains(session, inst.id, chain_names)
    open_history(session, inst)
    record(
        session,
        actor_id=actor.id if actor else None,
        action="instrument.created",
        target_type="instrument",
        target_id=inst.id,
        after=record_snapshot(inst, chain_names),
    )
    await session.flush()
    return inst


def _chains_gone(names: list[str]) -> RuleViolation:
    which = f"产业链标签{'、'.join(f'「{n}」' for n in names)}" if names else "所选的产业链标签中有标签"
    message = f"{which}刚被管理员删除或改名，请重新选择产业链标签"
    return RuleViolation(message, problems=[Problem("chains", "unknown_chain", message)])


async def _set_chains(session: AsyncSession, instrument_id: int, names: list[str]) -> None:
    ids = await repo.chain_ids_by_name(session)
    gone = sorted(set(names) - ids.keys())  # validated a moment ago, deleted since
    if gone:
        raise _chains_gone(gone)
    await repo.clear_chains(session, [instrument_id])
    await _link_chains(session, [{"instrument_id": instrument_id, "chain_id": ids[n]} for n in sorted(set(names))])


def _chain_id(ids: Mapping[str, int], name: str) -> int:
    if name not in ids:  # checked a moment ago, deleted or renamed since
        raise _chains_gone([name])
    return ids[name]


async def _link_chains(session: AsyncSession, links: list[dict[str, int | None]]) -> None:
    """Link instruments to chain tags. A tag an admin deletes meanwhile (delete_chain holds its row locked, the
    link's foreign key waits for it and then finds it gone) is the user's 422, not a 500."""
    if not links:
        return
    try:
        async with session.begin_nested():
            await repo.add_chain_links(session, links)
    except IntegrityError as exc:
        if "fk_instrument_chains_chain_id_chains" in str(exc.orig):
            raise _chains_gone([]) from None
        raise


async def _managed_live(session: AsyncSession, actor: Principal, instrument_id: int, verb: str) -> Instrument:
    """The instrument, locked, if the actor manages its facility and it is not retired; else 404/403/409."""
    inst = await get_visible(session, actor, instrument_id, for_update=True)
    if not actor.manages_facility(inst.institution_id, inst.facility_id):
        raise Forbidden(f"只有该仪器所属单位（实验室/平台）的管理员可以{verb}")
    if inst.retired_at is not None:
        message = f"仪器已退役，不能{verb}"
        raise Conflict(message, problems=[Problem(None, "retired", message)])
    return inst


async def update_instrument(
    session: AsyncSession, actor: Principal, instrument_id: int, data: InstrumentUpdate
) -> Instrument:
    inst = await _managed_live(session, actor, instrument_id, "修改")
    changes = _plain(data.model_dump(exclude_unset=True))
    problems = [Problem(k, "missing", "必填") for k in _REQUIRED if k in changes and changes[k] is None]
    if "institution_id" in changes and changes["institution_id"] is None:
        problems.append(Problem("institution_id", "missing", "必填"))
    _raise(problems, "仪器信息有误")
    new_institution = await _institution(session, actor, changes.get("institution_id", inst.institution_id))
    assert new_institution.id is not None
    if not actor.manages_facility(new_institution.id, changes.get("facility_id", inst.facility_id)):
        raise Forbidden("只能把仪器归入本人管理的单位和实验室/平台")
    current_chains = (await repo.chain_names_of(session, [instrument_id]))[instrument_id]
    chain_names: list[str] | None = changes.pop("chains", None)
    if "subjects" in changes and changes["subjects"] is None:
        changes["subjects"] = []
    merged = {
        **inst.model_dump(),
        **changes,
        "chains": chain_names if chain_names is not None else current_chains,
    }
    ref, facilities = await reference_data(session, [new_institution.id])
    problems = instrument_problems(
        merged,
        ReferenceData(ref.category_codes, ref.chain_names, frozenset(facilities[new_institution.id])),
        today=today(),
    )
    if (merged["asset_number"], new_institution.id) != (inst.asset_number, inst.institution_id):
        clash = await repo.by_asset_number(session, new_institution.id, merged["asset_number"])
        if clash is not None and clash.id != inst.id:
            problems.append(
                Problem("asset_number", "duplicate", f"本单位已有内部编码为 {merged['asset_number']} 的仪器")
            )
    _raise(problems, "仪器信息有误")
    before = record_snapshot(inst, current_chains)
    history_before = {f: getattr(inst, f) for f in HISTORY_FIELDS}
    for key, value in changes.items():
        setattr(inst, key, value)
    after = record_snapshot(inst, chain_names if chain_names is not None else current_chains)
    b, a = changed(before, after)
    if not a:
        return inst
    inst.updated_at = utcnow()
    await _flush(session)
    if chain_names is not None and sorted(chain_names) != sorted(current_chains):
        await _set_chains(session, instrument_id, chain_names)
    if history_changed(history_before, {f: getattr(inst, f) for f in HISTORY_FIELDS}):
        at = utcnow()
        await repo.close_history(session, instrument_id, at)
        open_history(session, inst, at)
    record(
        session,
        actor_id=actor.id,
        action="instrument.updated",
        target_type="instrument",
        target_id=inst.id,
        before=b,
        after=a,
    )
    await session.flush()
    return inst


async def retire_instrument(
    session: AsyncSession, actor: Principal, instrument_id: int, reason: str
) -> Instrument:
    inst = await _managed_live(session, actor, instrument_id, "办理退役")
    reason = reason.strip()
    if len(reason) < 2:
        raise RuleViolation(
            "请填写退役原因", problems=[Problem("reason", "missing", "请填写退役原因（至少 2 个字）")]
        )
    now = utcnow()
    inst.retired_at = now
    inst.retired_reason = reason
    inst.updated_at = now
    await repo.close_history(session, instrument_id, now)
    record(
        session,
        actor_id=actor.id,
        action="instrument.retired",
        target_type="instrument",
        target_id=inst.id,
        before={"retired_at": None},
        after={"retired_at": now, "retired_reason": reason},
    )
    await session.flush()
    return inst


@dataclass
class AccessView:
    access: InstrumentAccess
    user: User
    granted_by: User | None


async def _managed_for_access(session: AsyncSession, actor: Principal, instrument_id: int) -> Instrument:
    inst = await get_visible(session, actor, instrument_id)
    if not actor.manages_facility(inst.institution_id, inst.facility_id):
        raise Forbidden("只有该仪器所属单位的管理员可以管理授权")
    return inst


async def list_access(session: AsyncSession, actor: Principal, instrument_id: int
                      ) -> tuple[Instrument, list[AccessView]]:
    """The users authorised to see a restricted instrument (managers of the owner only)."""
    inst = await _managed_for_access(session, actor, instrument_id)
    return inst, [AccessView(a, u, g) for a, u, g in await repo.access_with_users(session, instrument_id)]


async def grant_access(session: AsyncSession, actor: Principal, instrument_id: int, user_id: int | None = None,
                       *, email: str | None = None) -> tuple[InstrumentAccess, User]:
    """Authorise one user (by id or email) to see the instrument; granting twice changes nothing."""
    inst = await _managed_for_access(session, actor, instrument_id)
    user: User | None
    if user_id is not None:
        user = await session.get(User, user_id) if 0 < user_id < 2**31 else None
        field, label = "user_id", f"用户 {user_id} 不存在"
    else:
        from booking.accounts.repository import user_by_email

        user = await user_by_email(session, (email or "").strip())
        field, label = "email", f"没有邮箱为 {email} 的用户"
    if user is None or not user.is_active:
        raise RuleViolation("用户不存在", problems=[Problem(field, "unknown_user", label)])
    # Two managers granting at once: the second finds the row and changes nothing.
    grant = await repo.add_access(session, instrument_id, user.id, actor.id)  # type: ignore[arg-type]
    if grant is None:
        existing = await session.get(InstrumentAccess, (instrument_id, user.id))
        assert existing is not None
        return existing, user
    record(session, actor_id=actor.id, action="instrument.access_granted", target_type="instrument",
           target_id=instrument_id, after={"user_id": user.id})
    await notify(session, user.id, kind="instrument.access_granted", title=f"已获授权查看仪器：{inst.name}",  # type: ignore[arg-type]
                 body=f"您现在可以在目录中查看并预约受限仪器 {inst.name}。" if inst.restricted
                 else f"{inst.name} 改为受限仪器后，您仍可以查看并预约它。", link=f"/instruments/{instrument_id}")
    return grant, user


async def revoke_access(session: AsyncSession, actor: Principal, instrument_id: int, user_id: int) -> None:
    await _managed_for_access(session, actor, instrument_id)
    existing = await session.get(InstrumentAccess, (instrument_id, user_id)) if 0 < user_id < 2**31 else None
    if existing is None:
        raise NotFound(f"用户 {user_id} 没有该仪器的授权")
    await session.delete(existing)
    record(session, actor_id=actor.id, action="instrument.access_revoked", target_type="instrument",
           target_id=instrument_id, before={"user_id": user_id})
    await session.flush()


# ---- classification codes and chains ----------------------------------------------------------------------------


def _require_admin(actor: Principal | None) -> None:
    if actor is None:
        raise Unauthorized("请先登录")
    if not actor.is_admin:
        raise Forbidden("只有平台管理员可以维护分类编码和产业链标签")


async def add_category(session: AsyncSession, actor: Principal, data: CategoryCreate) -> Category:
    _require_admin(actor)
    problems = category_code_problems(data.code, await repo.category_codes(session))
    _raise(problems, "分类编码有误")
    cat = Category(
        code=data.code,
        name=data.name,
        level=category_level(data.code),
        parent_code=category_parent(data.code),
    )
    session.add(cat)
    await session.flush()
    record(
        session,
        actor_id=actor.id,
        action="instrument_category.created",
        target_type="instrument_category",
        target_id=cat.code,
        after=snapshot(cat, ["code", "name", "level", "parent_code"]),
    )
    return cat


def _duplicate_chain(name: str) -> Conflict:
    return Conflict(f"已有名为「{name}」的产业链标签",
                    problems=[Problem("name", "duplicate", "已有同名产业链标签")])


async def _chain(session: AsyncSession, chain_id: int, *, for_update: bool = False) -> Chain:
    # An id the column cannot hold is simply not there (asyncpg would refuse it as a parameter: a 500).
    chain = (
        # populate_existing: a locked read must not keep a name loaded earlier in this session
        await session.get(Chain, chain_id, with_for_update=for_update, populate_existing=for_update)
        if 0 < chain_id < 2**31
        else None
    )
    if chain is None:
        raise NotFound(f"产业链标签 {chain_id} 不存在")
    return chain


async def _flush_chain(session: AsyncSession, name: str) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:  # the unique name, taken meanwhile by another admin: same answer as the pre-check
        if "uq_chains_name" in str(exc.orig):
            raise _duplicate_chain(name) from None
        raise


async def add_chain(session: AsyncSession, actor: Principal, data: ChainCreate) -> Chain:
    _require_admin(actor)
    if data.name in await repo.chain_ids_by_name(session):
        raise _duplicate_chain(data.name)
    chain = Chain(name=data.name)
    session.add(chain)
    await _flush_chain(session, data.name)
    record(
        session,
        actor_id=actor.id,
        action="chain.created",
        target_type="chain",
        target_id=chain.id,
        after={"name": chain.name},
    )
    return chain


async def rename_chain(
    session: AsyncSession, actor: Principal, chain_id: int, data: ChainCreate
) -> tuple[Chain, bool]:
    """Rename a chain tag (validated as when adding one); returns the tag and whether its name changed.
    Instruments link the tag by id, so they carry the new name at once; the search counts are kept by id and do
    not change. The same name again changes nothing and records nothing."""
    _require_admin(actor)
    chain = await _chain(session, chain_id, for_update=True)  # locked: `before` is the name this rename replaces
    if data.name == chain.name:
        return chain, False
    clash = (await repo.chain_ids_by_name(session)).get(data.name)
    if clash is not None and clash != chain_id:
        raise _duplicate_chain(data.name)
    before = chain.name
    chain.name = data.name
    await _flush_chain(session, data.name)
    record(
        session,
        actor_id=actor.id,
        action="chain.renamed",
        target_type="chain",
        target_id=chain.id,
        before={"name": before},
        after={"name": chain.name},
    )
    return chain, True


async def delete_chain(session: AsyncSession, actor: Principal, chain_id: int) -> int:
    """Delete an industrial-chain tag with its links to instruments (the instruments stay, without the tag).
    Returns how many instruments carried it, which the activity record keeps with the name."""
    _require_admin(actor)
    # Locked first: an instrument edit linking the tag now waits for this delete (and then finds it gone), so the
    # links removed are all there were.
    chain = await _chain(session, chain_id, for_update=True)
    name = chain.name
    carried = await repo.delete_chain(session, chain_id)
    session.expunge(chain)  # deleted by a statement, not through the session
    record(
        session,
        actor_id=actor.id,
        action="chain.deleted",
        target_type="chain",
        target_id=chain_id,
        before={"name": name, "instruments": carried},
    )
    return carried


ProgressFn = Callable[[int, int], None]


async def import_rows(
    session: AsyncSession,
    actor: Principal | None,
    rows: list[Any],
    progress: Callable[[str, int, int], None] | None = None,
) -> Any:
    """Write validated import rows: create new (institution, asset number) pairs, update existing ones.
    Rows come from instruments.importer.validate, which has already checked everything including permissions."""
    from instruments.schemas import ImportResult

    actor_id = actor.id if actor else None
    chain_ids = await repo.chain_ids_by_name(session)
    existing_ids = [r.existing_id for r in rows if r.existing_id is not None]
    current: dict[int, Instrument] = {}
    for start in range(0, len(existing_ids), 5000):
        for inst in await repo.get_many(session, existing_ids[start : start + 5000]):
            current[inst.id] = inst  # type: ignore[index]
    current_chains = await repo.chain_names_of(session, existing_ids)
    created: list[tuple[Instrument, list[str]]] = []
    updated: list[tuple[Instrument, dict[str, Any], dict[str, Any], bool, list[str] | None]] = []
    unchanged = 0
    for index, row in enumerate(rows):
        if progress and index % 200 == 0:
            progress("写入", index, len(rows))
        if row.existing_id is None:
            values = {"status": InstrumentStatus.normal.value, **row.values}
            inst = Instrument(**values, institution_id=row.institution_id, created_by=actor_id)
            session.add(inst)
            created.append((inst, row.chains or []))
            continue
        inst = current[row.existing_id]
        chains_before = current_chains.get(inst.id, [])  # type: ignore[arg-type]
        before = record_snapshot(inst, chains_before)
        history_before = {f: getattr(inst, f) for f in HISTORY_FIELDS}
        for key, value in row.values.items():
            setattr(inst, key, value)
        after = record_snapshot(inst, row.chains if row.chains is not None else chains_before)
        b, a = changed(before, after)
        if not a:
            unchanged += 1
            continue
        inst.updated_at = utcnow()
        new_chains = (
            row.chains if row.chains is not None and sorted(row.chains) != sorted(chains_before) else None
        )
        updated.append(
            (
                inst,
                b,
                a,
                history_changed(history_before, {f: getattr(inst, f) for f in HISTORY_FIELDS}),
                new_chains,
            )
        )
    await repo.update_many(session, [inst for inst, _b, _a, _h, _c in updated])
    await _flush(session)
    if progress:
        progress("写入", len(rows), len(rows))
    links: list[dict[str, int | None]] = []
    for inst, names in created:
        links += [{"instrument_id": inst.id, "chain_id": _chain_id(chain_ids, n)} for n in sorted(set(names))]
        open_history(session, inst)
        record(
            session,
            actor_id=actor_id,
            action="instrument.created",
            target_type="instrument",
            target_id=inst.id,
            after=record_snapshot(inst, names),
        )
    rechained = [(inst, new_chains) for inst, _b, _a, _h, new_chains in updated if new_chains is not None]
    if rechained:
        await repo.clear_chains(session, [inst.id for inst, _c in rechained])  # type: ignore[misc]
    for inst, new_chains in rechained:
        links += [{"instrument_id": inst.id, "chain_id": _chain_id(chain_ids, n)} for n in sorted(set(new_chains))]
    await _link_chains(session, links)
    moved = [inst for inst, _b, _a, history, _c in updated if history]
    if moved:
        at = utcnow()
        await repo.close_history_many(session, [i.id for i in moved], at)  # type: ignore[misc]
        for inst in moved:
            open_history(session, inst, at)
    for inst, b, a, _h, _c in updated:
        record(
            session,
            actor_id=actor_id,
            action="instrument.updated",
            target_type="instrument",
            target_id=inst.id,
            before=b,
            after=a,
        )
    record(
        session,
        actor_id=actor_id,
        action="instrument.imported",
        target_type="instrument",
        target_id=None,
        after={"rows": len(rows), "created": len(created), "updated": len(updated), "unchanged": unchanged},
    )
    await session.flush()
    return ImportResult(rows=len(rows), created=len(created), updated=len(updated), unchanged=unchanged)
