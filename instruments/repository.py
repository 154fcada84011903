"""Every catalogue query. Search and export run the statements instruments.search_sql writes against the narrow,
trigger-maintained search tables (a page of results with its total and facets is one statement); the rest is
SQLAlchemy Core, and single records use the ORM."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeAlias

import asyncpg
from sqlalchemy import (
    delete,
    func,
    not_,
    select,
    text,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col

from booking.accounts.models import Facility, Institution, User
from booking.core.clock import utcnow
from instruments.models import (
    Category,
    Chain,
    Instrument,
    InstrumentAccess,
    InstrumentChain,
    InstrumentHistory,
    search_term_chain_counts,
)
from instruments.search_sql import (
    FACETS,
    SORTS,
    SearchFilters,
    Viewer,
    export_sql,
    frequent_term,
    search_sql,
)

__all__ = ["FACETS", "SORTS", "SearchFilters", "SearchPage", "Viewer"]

I = Instrument.__table__  # type: ignore[attr-defined]  # noqa: E741
INST = Institution.__table__  # type: ignore[attr-defined]
CAT = Category.__table__  # type: ignore[attr-defined]
IC = InstrumentChain.__table__  # type: ignore[attr-defined]
IA = InstrumentAccess.__table__  # type: ignore[attr-defined]
FAC = Facility.__table__  # type: ignore[attr-defined]
CH = Chain.__table__  # type: ignore[attr-defined]

@dataclass
class SearchPage:
    rows: list[Mapping[str, Any]]  # with the columns search_sql.ITEM_COLUMNS
    total: int
    facets: dict[str, list[tuple[str, str | None, int]]] = field(default_factory=dict)


# What the search reads through: a session (inside whatever transaction it has), or an asyncpg connection taken
# straight from the pool (booking.core.db.read_connection) by the anonymous API search.
Reader: TypeAlias = AsyncSession | asyncpg.Connection


async def driver_connection(source: Reader) -> Any:
    """The asyncpg connection of a session (inside its transaction), or the asyncpg connection given."""
    if not isinstance(source, AsyncSession):
        return source
    conn = await source.connection()
    raw = await conn.get_raw_connection()
    return raw.driver_connection


# The frequent terms (search_frequent_terms) as term -> id, cached per process: the set only grows (a promotion adds
# to it, nothing removes from it in normal operation), so a stale cache costs a newly promoted term the slower live
# path for a minute; a term that did leave the set (a rolled-back promotion, a manual purge) is caught by the
# statement itself, which reports whether the term is still frequent under that id.
_FREQUENT_TTL_S = 60.0
_frequent: tuple[float, dict[str, int]] = (float("-inf"), {})


def forget_frequent_terms() -> None:
    global _frequent
    _frequent = (float("-inf"), {})


async def frequent_terms(conn: Any) -> dict[str, int]:
    global _frequent
    loaded_at, terms = _frequent
    if time.monotonic() - loaded_at > _FREQUENT_TTL_S:
        terms = {r["term"]: r["id"] for r in await conn.fetch("SELECT term, id FROM search_frequent_terms")}
        _frequent = (time.monotonic(), terms)
    return terms


async def search(
    source: Reader,
    f: SearchFilters,
    viewer: Viewer,
    *,
    sort: str,
    limit: int,
    offset: int,
    with_facets: bool = True,
) -> SearchPage:
    """One statement, one round trip: the page, the total and the facets (see instruments.search_sql). It goes to
    asyncpg directly: a page of 20 plain rows needs none of the ORM's or Core's result machinery."""
    conn = await driver_connection(source)
    frequent = await frequent_terms(conn) if frequent_term(f, sort) is not None else None
    query = search_sql(f, viewer, sort=sort, limit=limit, offset=offset, with_facets=with_facets, frequent=frequent)
    records = await conn.fetch(query.sql, *query.args)
    if query.frequent_term is not None and not any(
        r["part"] == 1 and r["facet"] == "_frequent" and r["n"] for r in records
    ):
        # The cached set was stale: answer from the live path and reload the set next time.
        forget_frequent_terms()
        query = search_sql(f, viewer, sort=sort, limit=limit, offset=offset, with_facets=with_facets)
        records = await conn.fetch(query.sql, *query.args)
    # The item rows are handed on as they came, read by column name (search_sql.ITEM_COLUMNS): copying them into
    # dicts was a tenth of a fast search's time.
    items: list[tuple[int, Mapping[str, Any]]] = []
    facets: dict[str, list[tuple[str, str | None, int]]] = {name: [] for name in FACETS} if with_facets else {}
    total = 0
    for r in records:
        if r["part"] == 0:
            items.append((r["ord"], r))
            continue
        facet = r["facet"]
        if facet == "_total":
            total = int(r["n"])
        elif facet in facets:
            facets[facet].append((r["value"], r["label"], int(r["n"])))
    for values in facets.values():
        values.sort(key=_facet_order)
    items.sort(key=_first)
    return SearchPage(rows=[row for _, row in items], total=total, facets=facets)


def _facet_order(v: tuple[str, str | None, int]) -> tuple[int, str]:
    return -v[2], v[0] or ""


def _first(item: tuple[int, Any]) -> int:
    return item[0]


async def frequent_term_candidates(
    session: AsyncSession, *, min_rows: int, length: int
) -> list[tuple[str, int, bool]]:
    """Substrings of `length` characters found in at least `min_rows` live instruments: (term, how many instruments
    have it, whether it is a frequent term already)."""
    result = await session.execute(
        text("SELECT term, instruments, known FROM search_terms_candidates(:min_rows, :length)"),
        {"min_rows": min_rows, "length": length},
    )
    return [(term, int(n), bool(known)) for term, n, known in result.all()]


async def analyze_frequent_terms(session: AsyncSession) -> None:
    """Fresh planner statistics after many postings and counts were added."""
    for table in ("search_term_postings", "search_term_counts", "search_term_chain_counts", "search_term_marginals"):
        await session.execute(text(f"ANALYZE {table}"))


async def add_frequent_terms(session: AsyncSession, terms: Sequence[str]) -> int:
    """Make these terms frequent and build their postings and counts; returns how many were new."""
    added = int(await session.scalar(text("SELECT search_terms_add(CAST(:terms AS text[]))"), {"terms": list(terms)}) or 0)
    if added:
        forget_frequent_terms()
    return added


async def stream_export(session: AsyncSession, f: SearchFilters, viewer: Viewer) -> AsyncIterator[RowMapping]:
    sql, params = export_sql(f, viewer)
    result = await session.stream(text(sql).bindparams(**params).execution_options(yield_per=500))
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
        await add_chain_links(session, [{"instrument_id": instrument_id, "chain_id": c} for c in chain_ids])


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


async def add_access(session: AsyncSession, instrument_id: int, user_id: int, granted_by: int | None
                     ) -> InstrumentAccess | None:
    """The new grant, or None when the user already had one."""
    stmt = (pg_insert(InstrumentAccess)
            .values(instrument_id=instrument_id, user_id=user_id, granted_by=granted_by, created_at=utcnow())
            .on_conflict_do_nothing().returning(InstrumentAccess))
    return (await session.scalars(stmt)).one_or_none()


async def access_with_users(session: AsyncSession, instrument_id: int
                            ) -> list[tuple[InstrumentAccess, User, User | None]]:
    """Each authorised user with who granted it, oldest grant first."""
    granter = aliased(User)
    stmt = (select(InstrumentAccess, User, granter)
            .join(User, col(User.id) == col(InstrumentAccess.user_id))
            .outerjoin(granter, col(granter.id) == col(InstrumentAccess.granted_by))
            .where(col(InstrumentAccess.instrument_id) == instrument_id)
            .order_by(col(InstrumentAccess.created_at), col(InstrumentAccess.user_id)))
    return [(a, u, g) for a, u, g in (await session.execute(stmt)).all()]


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


async def chain_usage_all(session: AsyncSession) -> dict[int, int]:
    """Chain id -> how many instruments carry it (tags nobody carries are absent)."""
    rows = await session.execute(select(IC.c.chain_id, func.count()).group_by(IC.c.chain_id))
    return {int(cid): int(n) for cid, n in rows}


async def delete_chain(session: AsyncSession, chain_id: int) -> int:
    """Delete a chain tag and its links; returns how many instruments carried it.

    The links go first, in one plain DELETE, rather than by the foreign key's cascade: the statement triggers on
    instrument_chains then see every removed link in one transition table and, in one pass, rewrite those
    instruments' kept postings (`chain_ids`) and move their per-chain counts off this chain. Its rows in
    search_term_chain_counts are all zero after that; they go too, so nothing is kept for an id no chain has (the
    kept counts are keyed by id and outlive a tag otherwise). No other writer can touch them meanwhile: only a
    posting carrying this chain moves them, none is left, and a new link waits on the chain row the caller locked
    and then fails on the foreign key."""
    removed = await session.execute(delete(IC).where(IC.c.chain_id == chain_id))
    await session.execute(delete(search_term_chain_counts).where(search_term_chain_counts.c.chain_id == chain_id))
    await session.execute(delete(CH).where(CH.c.id == chain_id))
    return int(removed.rowcount or 0)  # type: ignore[attr-defined]


async def chain_ids_by_name(source: Reader) -> dict[str, int]:
    if isinstance(source, AsyncSession):
        return {name: cid for cid, name in await source.execute(select(CH.c.id, CH.c.name))}
    return {r["name"]: r["id"] for r in await source.fetch("SELECT id, name FROM chains")}


async def get_many(session: AsyncSession, ids: Sequence[int]) -> list[Instrument]:
    if not ids:
        return []
    return list(await session.scalars(select(Instrument).where(Instrument.id.in_(list(ids)))))  # type: ignore[union-attr]


async def add_chain_links(session: AsyncSession, links: list[dict[str, int | None]]) -> None:
    # One statement, not one per link: each statement on instrument_chains runs the kept postings' trigger once.
    await session.execute(
        text(
            "INSERT INTO instrument_chains (instrument_id, chain_id)"
            " SELECT * FROM unnest(CAST(:instruments AS int[]), CAST(:chains AS int[]))"
        ),
        {"instruments": [link["instrument_id"] for link in links], "chains": [link["chain_id"] for link in links]},
    )


async def update_many(session: AsyncSession, instruments: Sequence[Instrument]) -> None:
    """Write the changed attributes of these loaded instruments in one UPDATE per 500 (the unit of work would send
    one per instrument, and every statement on instruments runs the search triggers once: 1,000 changed rows of an
    import at 100,000 instruments took 20-25 s that way), then mark them clean so the next flush sends nothing."""
    table = Instrument.__table__  # type: ignore[attr-defined]
    changed: set[str] = set()
    for inst in instruments:
        state = sa_inspect(inst)
        changed |= {attr.key for attr in state.attrs if attr.history.has_changes()}
    if not changed:
        return
    columns = [c.name for c in table.columns if c.name in changed and c.name != "id"]
    assignments = ", ".join(f'"{c}" = v."{c}"' for c in columns)
    statement = text(
        f"UPDATE instruments AS i SET {assignments}"  # noqa: S608 (column names from the table's metadata)
        " FROM jsonb_populate_recordset(NULL::instruments, CAST(:rows AS jsonb)) AS v WHERE i.id = v.id"
    )
    with session.no_autoflush:  # (an autoflush would send the one-by-one updates first)
        for start in range(0, len(instruments), 500):
            batch = instruments[start : start + 500]
            rows = [{"id": inst.id, **{c: _json_value(getattr(inst, c)) for c in columns}} for inst in batch]
            await session.execute(statement, {"rows": json.dumps(rows, ensure_ascii=False)})
    for inst in instruments:
        for key in columns:
            set_committed_value(inst, key, getattr(inst, key))


def _json_value(value: Any) -> Any:
    """A column value as jsonb_populate_recordset reads it back: amounts and times as text, exact."""
    if isinstance(value, Decimal | date | datetime):
        return value.isoformat() if not isinstance(value, Decimal) else str(value)
    return value


async def clear_chains(session: AsyncSession, instrument_ids: Sequence[int]) -> None:
    await session.execute(delete(IC).where(IC.c.instrument_id.in_(list(instrument_ids))))


async def close_history_many(session: AsyncSession, instrument_ids: Sequence[int], at: datetime) -> None:
    h = InstrumentHistory.__table__  # type: ignore[attr-defined]
    await session.execute(
        update(h)
        .where(h.c.instrument_id.in_(list(instrument_ids)), h.c.valid_to.is_(None))
        .values(valid_to=at)
    )
