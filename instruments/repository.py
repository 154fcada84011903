"""Every catalogue query. Search, facets and exports are written in SQLAlchemy Core against the tables, so a page of
results costs two statements and no ORM object loading; single records use the ORM."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Text,
    and_,
    cast,
    delete,
    exists,
    func,
    literal_column,
    not_,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from booking.accounts.models import Facility, Institution
from instruments.models import (
    Category,
    Chain,
    Instrument,
    InstrumentAccess,
    InstrumentChain,
    InstrumentHistory,
)
from instruments.rules import has_bigram, like_pattern, search_terms

I = Instrument.__table__  # type: ignore[attr-defined]  # noqa: E741
INST = Institution.__table__  # type: ignore[attr-defined]
CAT = Category.__table__  # type: ignore[attr-defined]
IC = InstrumentChain.__table__  # type: ignore[attr-defined]
IA = InstrumentAccess.__table__  # type: ignore[attr-defined]
FAC = Facility.__table__  # type: ignore[attr-defined]
CH = Chain.__table__  # type: ignore[attr-defined]

FACETS = ("city", "institution_kind", "category", "sharing_mode", "status")
SORTS = ("relevance", "newest", "name", "value_desc", "value_asc")


@dataclass(frozen=True)
class Viewer:
    """Who is searching, reduced to what visibility depends on."""

    user_id: int | None = None
    is_admin: bool = False
    managed_institution_ids: frozenset[int] = frozenset()
    signed_in: bool = False


@dataclass
class SearchFilters:
    q: str | None = None
    city: str | None = None
    institution_kind: str | None = None
    institution_id: int | None = None
    category: str | None = None  # a normalised prefix: '01', '0102' or '010201'
    sharing_mode: str | None = None
    status: str | None = None
    chain_id: int | None = None
    min_value: Decimal | None = None
    max_value: Decimal | None = None
    large: bool | None = None
    vouchers: bool | None = None
    threshold: Decimal = Decimal("500000")


@dataclass
class SearchPage:
    rows: list[RowMapping]
    total: int
    facets: dict[str, list[tuple[str, str | None, int]]] = field(default_factory=dict)


def visibility(viewer: Viewer) -> ColumnElement[bool]:
    """Live instruments the viewer may see at all: restricted ones only for platform admins, the owner's
    managers and explicitly authorised users."""
    live = I.c.retired_at.is_(None)
    if viewer.is_admin:
        return live
    allowed: list[ColumnElement[bool]] = [not_(I.c.restricted)]
    if viewer.managed_institution_ids:
        allowed.append(I.c.institution_id.in_(sorted(viewer.managed_institution_ids)))
    if viewer.user_id is not None:
        allowed.append(exists().where(IA.c.instrument_id == I.c.id, IA.c.user_id == viewer.user_id))
    return and_(live, or_(*allowed))


def _common_conditions(f: SearchFilters, viewer: Viewer) -> list[ColumnElement[bool]]:
    """Visibility and every filter that is not a facet."""
    conds: list[ColumnElement[bool]] = [visibility(viewer)]
    terms = search_terms(f.q)
    if terms and has_bigram(terms):
        # The GIN index answers the bigram containment; the LIKE below rechecks adjacency and order.
        conds.append(I.c.search_bigrams.op("@>")(func.text_bigrams(" ".join(terms), type_=ARRAY(Text))))
    for term in terms:
        # A two-character term is exactly one bigram: containment already proves the substring, so the LIKE
        # recheck (which reads search_text of every match) is only needed for one character or three and more.
        if len(term) != 2:
            conds.append(I.c.search_text.like(like_pattern(term), escape="\\"))
    if f.institution_id is not None:
        conds.append(I.c.institution_id == f.institution_id)
    if f.chain_id is not None:
        conds.append(exists().where(IC.c.instrument_id == I.c.id, IC.c.chain_id == f.chain_id))
    if f.min_value is not None:
        conds.append(I.c.original_value >= f.min_value)
    if f.max_value is not None:
        conds.append(I.c.original_value <= f.max_value)
    if f.large is True:
        conds.append(I.c.original_value >= f.threshold)
    elif f.large is False:
        conds.append(I.c.original_value < f.threshold)
    if f.vouchers is not None:
        conds.append(I.c.accepts_vouchers.is_(f.vouchers))
    return conds


def _prefix_range(column: Any, prefix: str) -> ColumnElement[bool]:
    # A range rather than LIKE 'p%' so a plain btree index serves it under any collation.
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return and_(column >= prefix, column < upper)


def _facet_conditions(f: SearchFilters, cols: dict[str, Any]) -> dict[str, ColumnElement[bool]]:
    conds: dict[str, ColumnElement[bool]] = {}
    if f.city:
        conds["city"] = cols["city"] == f.city
    if f.institution_kind:
        conds["institution_kind"] = cols["institution_kind"] == f.institution_kind
    if f.category:
        conds["category"] = _prefix_range(cols["category"], f.category)
    if f.sharing_mode:
        conds["sharing_mode"] = cols["sharing_mode"] == f.sharing_mode
    if f.status:
        conds["status"] = cols["status"] == f.status
    return conds


def _order(sort: str, f: SearchFilters) -> list[Any]:
    if sort == "name":
        return [I.c.name, I.c.id]
    if sort == "value_desc":
        return [I.c.original_value.desc(), I.c.id.desc()]
    if sort == "value_asc":
        return [I.c.original_value, I.c.id]
    terms = search_terms(f.q)
    if sort == "relevance" and terms:
        # Name matches first, then the rest; newest first within each group.
        return [I.c.name.ilike(like_pattern(terms[0]), escape="\\").desc(), I.c.id.desc()]
    return [I.c.id.desc()]


_ITEM_COLUMNS = (
    I.c.id,
    I.c.name,
    I.c.name_en,
    I.c.model,
    I.c.manufacturer,
    I.c.institution_id,
    INST.c.name.label("institution_name"),
    INST.c.kind.label("institution_kind"),
    I.c.city_code,
    I.c.category_code,
    CAT.c.name.label("category_name"),
    I.c.sharing_mode,
    I.c.status,
    I.c.original_value,
    I.c.accepts_vouchers,
    I.c.restricted,
)


def items_statement(f: SearchFilters, viewer: Viewer, *, sort: str, limit: int, offset: int) -> Select[Any]:
    table_cols = {
        "city": I.c.city_code,
        "institution_kind": INST.c.kind,
        "category": I.c.category_code,
        "sharing_mode": I.c.sharing_mode,
        "status": I.c.status,
    }
    conds = _common_conditions(f, viewer) + list(_facet_conditions(f, table_cols).values())
    return (
        select(*_ITEM_COLUMNS)
        .select_from(
            I.join(INST, INST.c.id == I.c.institution_id).outerjoin(CAT, CAT.c.code == I.c.category_code)
        )
        .where(*conds)
        .order_by(*_order(sort, f))
        .limit(limit)
        .offset(offset)
    )


def facets_statement(f: SearchFilters, viewer: Viewer) -> Any:
    """One statement: the matching rows (all filters but the facets) are materialised once; each facet counts them
    under every *other* facet filter, so a chosen 市州 still shows how many results the other 市州 would give; the
    last part is the total under all filters."""
    base = (
        select(
            I.c.city_code.label("city"),
            INST.c.kind.label("institution_kind"),
            I.c.category_code.label("category"),
            I.c.sharing_mode,
            I.c.status,
        )
        .select_from(I.join(INST, INST.c.id == I.c.institution_id))
        .where(*_common_conditions(f, viewer))
        .cte("base")
        .prefix_with("MATERIALIZED")
    )
    cols = {name: base.c[name] for name in FACETS}
    fconds = _facet_conditions(f, cols)
    parts: list[Any] = []
    for name in FACETS:
        others = [c for other, c in fconds.items() if other != name]
        if name == "category":
            # Count per 大类 first, then label the (at most 15) groups: joining before grouping costs a hash
            # probe for every matching row.
            major = func.left(base.c.category, literal_column("2"))
            counted = (
                select(major.label("value"), func.count().label("n"))
                .select_from(base)
                .where(*others)
                .group_by(literal_column("1"))
                .subquery("majors")
            )
            parts.append(
                select(
                    literal_column("'category'").label("facet"),
                    cast(counted.c.value, Text).label("value"),
                    counted.c.n,
                    CAT.c.name.label("label"),
                ).select_from(
                    counted.outerjoin(CAT, CAT.c.code == counted.c.value.concat(literal_column("'0000'")))
                )
            )
        else:
            parts.append(
                select(
                    literal_column(f"'{name}'").label("facet"),
                    cast(cols[name], Text).label("value"),
                    func.count().label("n"),
                    cast(literal_column("NULL"), Text).label("label"),
                )
                .select_from(base)
                .where(*others)
                .group_by(literal_column("2"))
            )
    parts.append(
        select(
            literal_column("'_total'").label("facet"),
            cast(literal_column("NULL"), Text).label("value"),
            func.count().label("n"),
            cast(literal_column("NULL"), Text).label("label"),
        )
        .select_from(base)
        .where(*fconds.values())
    )
    return union_all(*parts)


def count_statement(f: SearchFilters, viewer: Viewer) -> Select[Any]:
    table_cols = {
        "city": I.c.city_code,
        "institution_kind": INST.c.kind,
        "category": I.c.category_code,
        "sharing_mode": I.c.sharing_mode,
        "status": I.c.status,
    }
    conds = _common_conditions(f, viewer) + list(_facet_conditions(f, table_cols).values())
    return select(func.count()).select_from(I.join(INST, INST.c.id == I.c.institution_id)).where(*conds)


async def use_custom_plans(session: AsyncSession) -> None:
    """asyncpg prepares statements; after five runs PostgreSQL may switch a prepared statement to a generic plan,
    which for a LIKE '%质谱%' search scans the whole index. Search plans depend on their values, so plan each time."""
    await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


async def search(
    session: AsyncSession,
    f: SearchFilters,
    viewer: Viewer,
    *,
    sort: str,
    limit: int,
    offset: int,
    with_facets: bool = True,
) -> SearchPage:
    await use_custom_plans(session)
    rows = list(
        (await session.execute(items_statement(f, viewer, sort=sort, limit=limit, offset=offset))).mappings()
    )
    if not with_facets:
        total = int(await session.scalar(count_statement(f, viewer)) or 0)
        return SearchPage(rows=rows, total=total)
    facets: dict[str, list[tuple[str, str | None, int]]] = {name: [] for name in FACETS}
    total = 0
    for facet, value, n, label in (await session.execute(facets_statement(f, viewer))).all():
        if facet == "_total":
            total = int(n)
        else:
            facets[facet].append((value, label, int(n)))
    for values in facets.values():
        values.sort(key=lambda v: (-v[2], v[0] or ""))
    return SearchPage(rows=rows, total=total, facets=facets)


def export_statement(f: SearchFilters, viewer: Viewer, *, sort: str = "newest") -> Select[Any]:
    table_cols = {
        "city": I.c.city_code,
        "institution_kind": INST.c.kind,
        "category": I.c.category_code,
        "sharing_mode": I.c.sharing_mode,
        "status": I.c.status,
    }
    conds = _common_conditions(f, viewer) + list(_facet_conditions(f, table_cols).values())
    chains = (
        select(func.coalesce(func.array_agg(CH.c.name), literal_column("'{}'::text[]")))
        .select_from(IC.join(CH, CH.c.id == IC.c.chain_id))
        .where(IC.c.instrument_id == I.c.id)
        .scalar_subquery()
    )
    mapped = [c for c in I.c if c.name not in ("search_text", "search_bigrams")]
    return (
        select(
            *mapped,
            INST.c.name.label("institution_name"),
            FAC.c.name.label("facility_name"),
            chains.label("chain_names"),
        )
        .select_from(
            I.join(INST, INST.c.id == I.c.institution_id).outerjoin(FAC, FAC.c.id == I.c.facility_id)
        )
        .where(*conds)
        .order_by(*_order(sort, f))
    )


async def stream_export(session: AsyncSession, f: SearchFilters, viewer: Viewer) -> AsyncIterator[RowMapping]:
    await use_custom_plans(session)
    result = await session.stream(export_statement(f, viewer).execution_options(yield_per=500))
    async for row in result.mappings():
        yield row


# ---- single instruments -----------------------------------------------------------------------------------------


async def get(session: AsyncSession, instrument_id: int, *, for_update: bool = False) -> Instrument | None:
    return await session.get(Instrument, instrument_id, with_for_update=for_update)


async def has_access(session: AsyncSession, instrument_id: int, user_id: int) -> bool:
    found = await session.scalar(
        select(IA.c.user_id).where(IA.c.instrument_id == instrument_id, IA.c.user_id == user_id)
    )
    return found is not None


async def by_asset_number(session: AsyncSession, institution_id: int, asset_number: str) -> Instrument | None:
    stmt = select(Instrument).where(
        col(Instrument.institution_id) == institution_id, col(Instrument.asset_number) == asset_number
    )
    return (await session.scalars(stmt)).first()


async def by_asset_numbers(
    session: AsyncSession, keys: Iterable[tuple[int, str]]
) -> dict[tuple[int, str], Instrument]:
    keys = list(keys)
    if not keys:
        return {}
    by_inst: dict[int, list[str]] = {}
    for inst_id, number in keys:
        by_inst.setdefault(inst_id, []).append(number)
    out: dict[tuple[int, str], Instrument] = {}
    for inst_id, numbers in by_inst.items():
        for start in range(0, len(numbers), 5000):
            stmt = select(Instrument).where(
                col(Instrument.institution_id) == inst_id,
                col(Instrument.asset_number).in_(numbers[start : start + 5000]),
            )
            for inst in await session.scalars(stmt):
                out[(inst.institution_id, inst.asset_number)] = inst
    return out


async def chain_names_of(session: AsyncSession, instrument_ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {i: [] for i in instrument_ids}
    if not instrument_ids:
        return out
    stmt = (
        select(IC.c.instrument_id, CH.c.name)
        .select_from(IC.join(CH, CH.c.id == IC.c.chain_id))
        .where(IC.c.instrument_id.in_(list(instrument_ids)))
        .order_by(CH.c.name)
    )
    for instrument_id, name in await session.execute(stmt):
        out[instrument_id].append(name)
    return out


async def set_chains(session: AsyncSession, instrument_id: int, chain_ids: Sequence[int]) -> None:
    await session.execute(delete(IC).where(IC.c.instrument_id == instrument_id))
    if chain_ids:
        await session.execute(
            IC.insert(), [{"instrument_id": instrument_id, "chain_id": c} for c in chain_ids]
        )


async def close_history(session: AsyncSession, instrument_id: int, at: datetime) -> None:
    await session.execute(
        update(InstrumentHistory.__table__)  # type: ignore[attr-defined]
        .where(
            InstrumentHistory.__table__.c.instrument_id == instrument_id,  # type: ignore[attr-defined]
            InstrumentHistory.__table__.c.valid_to.is_(None),  # type: ignore[attr-defined]
        )
        .values(valid_to=at)
    )


async def history_of(session: AsyncSession, instrument_id: int) -> list[InstrumentHistory]:
    stmt = (
        select(InstrumentHistory)
        .where(col(InstrumentHistory.instrument_id) == instrument_id)
        .order_by(col(InstrumentHistory.valid_from), col(InstrumentHistory.id))
    )
    return list(await session.scalars(stmt))


async def access_list(session: AsyncSession, instrument_id: int) -> list[InstrumentAccess]:
    stmt = select(InstrumentAccess).where(col(InstrumentAccess.instrument_id) == instrument_id)
    return list(await session.scalars(stmt))


async def institutions_by_name(session: AsyncSession, names: Iterable[str]) -> dict[str, Institution]:
    names = list(set(names))
    if not names:
        return {}
    rows = await session.scalars(select(Institution).where(Institution.name.in_(names)))  # type: ignore[attr-defined]
    return {i.name: i for i in rows}


async def facilities_of(session: AsyncSession, institution_ids: Iterable[int]) -> list[Facility]:
    ids = list(set(institution_ids))
    if not ids:
        return []
    rows = await session.scalars(select(Facility).where(Facility.institution_id.in_(ids)))  # type: ignore[attr-defined]
    return list(rows)


async def counts(session: AsyncSession, threshold: Decimal) -> dict[str, int]:
    stmt = select(func.count(), func.count().filter(I.c.original_value >= threshold)).where(
        I.c.retired_at.is_(None), not_(I.c.restricted)
    )
    total, large = (await session.execute(stmt)).one()
    return {"instruments": int(total), "large": int(large)}


# ---- classification codes and chains ----------------------------------------------------------------------------


async def categories(session: AsyncSession) -> list[Category]:
    return list(await session.scalars(select(Category).order_by(Category.code)))


async def category_codes(session: AsyncSession) -> frozenset[str]:
    return frozenset(await session.scalars(select(CAT.c.code)))


async def children(session: AsyncSession, parent_code: str | None) -> list[Category]:
    stmt = select(Category).order_by(Category.code)
    parent = col(Category.parent_code)
    stmt = stmt.where(parent.is_(None) if parent_code is None else parent == parent_code)
    return list(await session.scalars(stmt))


async def chains(session: AsyncSession) -> list[Chain]:
    return list(await session.scalars(select(Chain).order_by(col(Chain.id))))


async def chain_ids_by_name(session: AsyncSession) -> dict[str, int]:
    return {name: cid for cid, name in await session.execute(select(CH.c.id, CH.c.name))}


async def get_many(session: AsyncSession, ids: Sequence[int]) -> list[Instrument]:
    if not ids:
        return []
    return list(await session.scalars(select(Instrument).where(Instrument.id.in_(list(ids)))))  # type: ignore[union-attr]


async def add_chain_links(session: AsyncSession, links: list[dict[str, int | None]]) -> None:
    await session.execute(IC.insert(), links)


async def close_history_many(session: AsyncSession, instrument_ids: Sequence[int], at: datetime) -> None:
    h = InstrumentHistory.__table__  # type: ignore[attr-defined]
    await session.execute(
        update(h)
        .where(h.c.instrument_id.in_(list(instrument_ids)), h.c.valid_to.is_(None))
        .values(valid_to=at)
    )
