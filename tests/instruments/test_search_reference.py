"""The search answers exactly what the plain definition says, whichever way it counts (the cube for facet-only queries,
live for text and other filters): a reference computed in Python over every instrument is compared with the items,
order, total and facets of many random filter combinations, for anonymous, admin, manager and granted viewers."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.core.clock import utcnow
from instruments import repository as repo
from instruments.repository import FACETS, SearchFilters, Viewer
from instruments.rules import search_terms
from instruments.search_sql import ITEM_COLUMNS, search_sql, value_bounds, value_split
from tests.factories import grant_instrument_access, make_institution, make_instrument, make_user

pytestmark = pytest.mark.asyncio

NAMES = [
    "液相色谱-质谱联用仪",
    "气相色谱仪",
    "核磁共振波谱仪",
    "场发射扫描电子显微镜",
    "X射线衍射仪",
    "激光共聚焦显微镜",
    "ICP-MS 电感耦合等离子体质谱仪",
    "拉曼光谱仪",
    "高效液相色谱仪",
    "飞秒激光器",
]
FUNCTIONS = [None, "小分子定性定量", "超快光谱与质谱电离源研究", "物相分析", "细胞成像", "元素分析 ms 检测"]
MAKERS = [None, "安捷伦", "岛津", "布鲁克", "Thermo Fisher", "蔡司"]
CATEGORIES = ["010200", "010500", "010600", "010102", "010101", "140000", "990000"]
MODES = ["external", "internal", "none"]
# Values on, just below and inside the kept counts' value classes (instruments.models.VALUE_CLASS_BOUNDS), so that
# bounds on class edges, inside a class near either end, and at an instrument's exact value are all exercised.
VALUES = [100000, 110000, 120000, 150000, 300000, 499999, 500000, 880000, 1900000, 1950000, 2300000, 4500000]
STATUSES = ["normal", "normal", "standby", "awaiting_repair"]


@dataclass
class Row:
    id: int
    name: str
    text: str
    institution_id: int
    kind: str
    city: str
    category: str
    mode: str
    status: str
    value: Decimal
    vouchers: bool
    restricted: bool
    retired: bool
    chains: set[int]
    granted: set[int]


@pytest.fixture
async def catalogue(session: AsyncSession) -> dict[str, Any]:
    rng = random.Random(20261127)
    institutions = [
        await make_institution(session, name="参照检索大学", kind="高校", city_code="510100"),
        await make_institution(session, name="参照绵阳企业", kind="企业", city_code="510700"),
        await make_institution(session, name="参照研究院", kind="科研院所", city_code="510100"),
    ]
    chain_ids = [cid for (cid,) in (await session.execute(text("SELECT id FROM chains ORDER BY id"))).all()][:3]
    chain_names = {cid: name for cid, name in (await session.execute(text("SELECT id, name FROM chains"))).all()}
    granted_user = await make_user(session)
    manager = await make_user(session)
    restricted = []
    for n in range(90):
        inst = rng.choice(institutions)
        instrument = await make_instrument(
            session,
            inst,
            name=f"{rng.choice(NAMES)}{rng.choice(['', ' Pro', '-II', ''])}",
            functions=rng.choice(FUNCTIONS),
            manufacturer=rng.choice(MAKERS),
            model=f"M{rng.randint(1, 30)}",
            city_code=rng.choice([inst.city_code, inst.city_code, "510700", "510100"]),
            category_code=rng.choice(CATEGORIES),
            sharing_mode=rng.choice(MODES),
            status=rng.choice(STATUSES),
            original_value=Decimal(rng.choice(VALUES)),
            accepts_vouchers=rng.random() < 0.3,
            restricted=rng.random() < 0.15,
            chains=[chain_names[c] for c in chain_ids if rng.random() < 0.25],
        )
        if instrument.restricted:
            restricted.append(instrument)
        if n % 11 == 0:
            instrument.retired_at = utcnow()
            instrument.retired_reason = "报废"
    await session.flush()
    for instrument in restricted[::2]:
        await grant_instrument_access(session, instrument, granted_user)
    return {
        "institutions": institutions,
        "chain_ids": chain_ids,
        "viewers": [
            Viewer(),
            Viewer(is_admin=True, user_id=manager.id, signed_in=True),
            Viewer(user_id=manager.id, managed_institution_ids=frozenset({institutions[1].id}), signed_in=True),
            Viewer(user_id=granted_user.id, signed_in=True),
        ],
    }


async def load_rows(session: AsyncSession) -> list[Row]:
    result = await session.execute(
        text(
            "SELECT i.id, i.name, i.name_en, i.model, i.manufacturer, i.functions, n.name AS institution,"
            " i.institution_id, n.kind, i.city_code, i.category_code, i.sharing_mode, i.status, i.original_value,"
            " i.accepts_vouchers, i.restricted, i.retired_at IS NOT NULL AS retired,"
            " ARRAY(SELECT chain_id FROM instrument_chains c WHERE c.instrument_id = i.id) AS chains,"
            " ARRAY(SELECT user_id FROM instrument_access a WHERE a.instrument_id = i.id) AS granted"
            " FROM instruments i JOIN institutions n ON n.id = i.institution_id"
        )
    )
    rows = []
    for r in result.mappings():
        parts = [r["name"], r["name_en"], r["model"], r["manufacturer"], r["functions"]]
        searched = "\n".join(p.lower() for p in parts if p is not None) + "\n" + r["institution"].lower()
        rows.append(
            Row(r["id"], r["name"], searched, r["institution_id"], r["kind"], r["city_code"], r["category_code"],
                r["sharing_mode"], r["status"], r["original_value"], r["accepts_vouchers"], r["restricted"],
                r["retired"], set(r["chains"]), set(r["granted"]))
        )
    return rows


def visible(row: Row, viewer: Viewer) -> bool:
    if row.retired:
        return False
    if viewer.is_admin or not row.restricted:
        return True
    return row.institution_id in viewer.managed_institution_ids or (
        viewer.user_id is not None and viewer.user_id in row.granted
    )


def facet_value(row: Row, name: str) -> str:
    return {
        "city": row.city,
        "institution_kind": row.kind,
        "category": row.category[:2],
        "sharing_mode": row.mode,
        "status": row.status,
    }[name]


def facet_ok(row: Row, f: SearchFilters, name: str) -> bool:
    wanted = {
        "city": f.city,
        "institution_kind": f.institution_kind,
        "category": f.category,
        "sharing_mode": f.sharing_mode,
        "status": f.status,
    }[name]
    if wanted is None:
        return True
    if name == "category":
        return row.category.startswith(wanted)
    return facet_value(row, name) == wanted


def other_ok(row: Row, f: SearchFilters) -> bool:
    if any(term.lower() not in row.text for term in search_terms(f.q)):
        return False
    if f.institution_id is not None and row.institution_id != f.institution_id:
        return False
    if f.chain_id is not None and f.chain_id not in row.chains:
        return False
    if f.min_value is not None and row.value < f.min_value:
        return False
    if f.max_value is not None and row.value > f.max_value:
        return False
    if f.large is not None and (row.value >= f.threshold) != f.large:
        return False
    return f.vouchers is None or row.vouchers == f.vouchers


def reference(rows: list[Row], f: SearchFilters, viewer: Viewer, sort: str) -> tuple[list[int], dict[str, Any]]:
    base = [r for r in rows if visible(r, viewer) and other_ok(r, f)]
    matches = [r for r in base if all(facet_ok(r, f, name) for name in FACETS)]
    terms = search_terms(f.q)
    if sort == "name":
        matches.sort(key=lambda r: (r.name, r.id))
    elif sort == "value_desc":
        matches.sort(key=lambda r: (r.value, r.id), reverse=True)
    elif sort == "value_asc":
        matches.sort(key=lambda r: (r.value, r.id))
    elif sort == "relevance" and terms:
        matches.sort(key=lambda r: (terms[0].lower() in r.name.lower(), r.id), reverse=True)
    else:
        matches.sort(key=lambda r: r.id, reverse=True)
    facets = {}
    for name in FACETS:
        counted = Counter(
            facet_value(r, name) for r in base if all(facet_ok(r, f, other) for other in FACETS if other != name)
        )
        facets[name] = sorted(counted.items(), key=lambda item: (-item[1], item[0]))
    return [r.id for r in matches], facets


def random_filters(rng: random.Random, context: dict[str, Any]) -> SearchFilters:
    def maybe(values: list[Any], p: float = 0.35) -> Any:
        return rng.choice(values) if rng.random() < p else None

    plain = rng.random() < 0.35  # only facet filters: counted from the cube
    return SearchFilters(
        q=None if plain else maybe(["质谱", "色谱", "谱仪", "质谱仪", "色谱 质谱", "ms", "显微", "激光", "仪",
                                    "%", "ICP-MS", "研究院", "thermo", "m1", "pro 激光"], 0.8),
        city=maybe(["510100", "510700", "510300"]),
        institution_kind=maybe(["高校", "企业", "科研院所", "医疗机构"]),
        category=maybe(["01", "0102", "010200", "0101", "010102", "14", "99"]),
        sharing_mode=maybe(MODES),
        status=maybe(["normal", "standby", "awaiting_repair", "remote"]),
        institution_id=None if plain else maybe([i.id for i in context["institutions"]], 0.15),
        chain_id=None if plain else maybe(context["chain_ids"], 0.15),
        min_value=None if plain else maybe([Decimal(v) for v in (120000, 300000, 880000)], 0.15),
        max_value=None if plain else maybe([Decimal(v) for v in (500000, 1900000, 2300000)], 0.15),
        large=None if plain else maybe([True, False], 0.2),
        vouchers=None if plain else maybe([True, False], 0.15),
    )


async def assert_like_reference(
    session: AsyncSession, rows: list[Row], f: SearchFilters, viewer: Viewer, sort: str
) -> bool:
    """The search answers as the reference does, page and window; returns whether it found anything."""
    expected_ids, expected_facets = reference(rows, f, viewer, sort)
    context = (f, viewer, sort)
    page = await repo.search(session, f, viewer, sort=sort, limit=200, offset=0)
    assert [r["id"] for r in page.rows] == expected_ids, context
    assert page.total == len(expected_ids), context
    got = {name: [(value, n) for value, _label, n in values] for name, values in page.facets.items()}
    assert got == expected_facets, context
    # A later page is the same slice of the same order; without facets the total stays.
    window = await repo.search(session, f, viewer, sort=sort, limit=3, offset=2, with_facets=False)
    assert [r["id"] for r in window.rows] == expected_ids[2:5], context
    assert window.total == len(expected_ids) and window.facets == {}, context
    return bool(expected_ids)


async def test_search_matches_the_reference(session: AsyncSession, catalogue: dict[str, Any]) -> None:
    rows = await load_rows(session)
    frequent = await repo.frequent_terms(await repo.driver_connection(session))
    rng = random.Random(7)
    paths: Counter[str] = Counter()
    checked = 0
    for _ in range(70):
        f = random_filters(rng, catalogue)
        sort = rng.choice(["relevance", "newest", "name", "value_desc", "value_asc"])
        for viewer in catalogue["viewers"]:
            checked += await assert_like_reference(session, rows, f, viewer, sort)
            query = search_sql(f, viewer, sort=sort, limit=1, offset=0, frequent=frequent)
            paths["cube" if query.counted_from_cube else "kept" if query.frequent_term else "live"] += 1
    # Without text, vouchers, 原值 bounds or a chain are answered from the empty term's kept rows.
    for vouchers, chain_id, (low, high), city in itertools.product(
        (True, False, None), (None, catalogue["chain_ids"][0]), VALUE_BOUNDS[:4], (None, "510100")
    ):
        f = SearchFilters(vouchers=vouchers, chain_id=chain_id, min_value=low, max_value=high, city=city)
        sort = rng.choice(["relevance", "newest", "name", "value_desc", "value_asc"])
        for viewer in catalogue["viewers"]:
            checked += await assert_like_reference(session, rows, f, viewer, sort)
            query = search_sql(f, viewer, sort=sort, limit=1, offset=0, frequent=frequent)
            paths["cube" if query.counted_from_cube else "kept" if query.frequent_term else "live"] += 1
    # Every way of counting was exercised, and most combinations found something.
    assert paths["cube"] >= 40 and paths["live"] >= 100 and paths["kept"] >= 120, paths
    assert checked >= 200


async def test_items_carry_what_the_list_shows(session: AsyncSession, catalogue: dict[str, Any]) -> None:
    page = await repo.search(session, SearchFilters(q="质谱"), Viewer(), sort="newest", limit=1, offset=0)
    [row] = page.rows
    inst = (
        await session.execute(
            text(
                "SELECT i.*, n.name AS institution_name, n.kind AS institution_kind, c.name AS category_name"
                " FROM instruments i JOIN institutions n ON n.id = i.institution_id"
                " LEFT JOIN instrument_categories c ON c.code = i.category_code WHERE i.id = :id"
            ),
            {"id": row["id"]},
        )
    ).mappings().one()
    # The rows are the statement's records, handed on as they came: read by the item columns' names.
    assert set(row.keys()) == set(ITEM_COLUMNS) | {"part", "ord", "facet", "value", "n", "label"}
    assert set(ITEM_COLUMNS) == {
        "id", "name", "name_en", "model", "manufacturer", "institution_id", "institution_name", "institution_kind",
        "city_code", "category_code", "category_name", "sharing_mode", "status", "original_value",
        "accepts_vouchers", "restricted",
    }
    for key in ITEM_COLUMNS:
        assert inst[key] == row[key], key
    assert page.facets["category"][0][1] == "分析仪器"


# ---- frequent terms -----------------------------------------------------------------------------------------------

FREQUENT = ["质谱", "色谱", "谱仪", "质谱仪", "ms", "显微", "激光", "研究院", "thermo", "m1", "ICP-MS", "分析"]


# 原值 bounds on class edges, cutting a class near either end, or inside one class.
VALUE_BOUNDS = [
    (None if low is None else Decimal(low), None if high is None else Decimal(high))
    for low, high in [(120000, None), (150000, 1900000), (None, 110000), (300000, 500000), (110000, 150000),
                      (None, 1950000), (880000, None), (500000, 500000), (100000, 2000000)]
]


def one_term_filters(rng: random.Random, context: dict[str, Any]) -> SearchFilters:
    f = random_filters(rng, context)
    f.q = rng.choice(FREQUENT)
    if rng.random() < 0.85:  # mostly filters the kept postings and counts answer: all but the institution
        f.institution_id = None
    if rng.random() < 0.25:  # vouchers and a chain, which the kept rows answer too
        f.vouchers = rng.choice([True, False])
        f.chain_id = rng.choice(context["chain_ids"])
    if rng.random() < 0.5:
        f.min_value = f.max_value = f.large = None
    if rng.random() < 0.3:  # no facet filter: counted from the marginals
        f.city = f.institution_kind = f.category = f.sharing_mode = f.status = None
    if rng.random() < 0.3:
        f.min_value, f.max_value = rng.choice(VALUE_BOUNDS)
    if rng.random() < 0.2:  # a large threshold inside a value class of the kept counts
        f.threshold = Decimal(880000)
    return f


async def test_frequent_terms_answer_like_the_reference(session: AsyncSession, catalogue: dict[str, Any]) -> None:
    added = await session.scalar(text("SELECT search_terms_add(CAST(:t AS text[]))"), {"t": FREQUENT})
    assert added == len(FREQUENT)
    repo.forget_frequent_terms()  # as a promotion does in its own process (service.promote_frequent_terms)
    # Writes after the promotion reach the postings and counts through the triggers.
    ids = [i for (i,) in (await session.execute(text("SELECT id FROM instruments ORDER BY id"))).all()]
    await session.execute(text("UPDATE instruments SET name = name || ' 激光质谱' WHERE id = ANY(:ids)"),
                          {"ids": ids[::7]})
    await session.execute(text("UPDATE instruments SET city_code = '510300', status = 'standby' WHERE id = ANY(:ids)"),
                          {"ids": ids[1::5]})
    await session.execute(text("UPDATE instruments SET restricted = NOT restricted WHERE id = ANY(:ids)"),
                          {"ids": ids[2::9]})
    await session.execute(text("UPDATE instruments SET retired_at = now(), retired_reason = '报废'"
                               " WHERE id = ANY(:ids)"), {"ids": ids[3::13]})
    await session.execute(text("UPDATE institutions SET kind = '医疗机构', name = '参照质谱医院'"
                               " WHERE id = :id"), {"id": catalogue["institutions"][2].id})
    # Only searched text changing (no name, nothing counted): the postings of terms gained or lost move alone.
    await session.execute(text("UPDATE institutions SET name = '参照激光显微研究院' WHERE id = :id"),
                          {"id": catalogue["institutions"][1].id})
    await session.execute(text("UPDATE instruments SET functions = '色谱分离与 thermo 质谱' WHERE id = ANY(:ids)"),
                          {"ids": ids[7::8]})
    await make_instrument(session, catalogue["institutions"][0], name="新增激光显微质谱仪", city_code="510300")
    # Chain links and vouchers changed after the promotion (the triggers on instrument_chains and the moves).
    await session.execute(text("DELETE FROM instrument_chains WHERE instrument_id = ANY(:ids)"), {"ids": ids[4::6]})
    await session.execute(
        text("INSERT INTO instrument_chains (instrument_id, chain_id) SELECT i, :c FROM unnest(CAST(:ids AS int[])) AS i"
             " ON CONFLICT DO NOTHING"),
        {"ids": ids[5::4], "c": catalogue["chain_ids"][1]},
    )
    await session.execute(text("UPDATE instruments SET accepts_vouchers = NOT accepts_vouchers WHERE id = ANY(:ids)"),
                          {"ids": ids[6::5]})
    rows = await load_rows(session)
    frequent = await repo.frequent_terms(await repo.driver_connection(session))
    rng = random.Random(11)
    kept = kept_other = 0
    split_parts: Counter[str] = Counter()  # how value filters on the kept path were counted
    for _ in range(70):
        f = one_term_filters(rng, catalogue)
        sort = rng.choice(["relevance", "relevance", "newest", "value_desc", "value_asc", "name"])
        for viewer in catalogue["viewers"]:
            found = await assert_like_reference(session, rows, f, viewer, sort)
            frequent_path = search_sql(f, viewer, sort=sort, limit=1, offset=0, frequent=frequent).frequent_term
            kept += frequent_path is not None
            kept_other += frequent_path is not None and found and (f.chain_id or f.vouchers) is not None
            split = value_split(*value_bounds(f))
            facet_free = not any((f.city, f.institution_kind, f.category, f.sharing_mode, f.status, f.chain_id))
            split_parts["marginals"] += frequent_path is not None and found and facet_free and bool(split.classes)
    # Most of them were answered from the kept postings and counts, some with a chain or vouchers filter, some
    # without any facet filter (from the marginals).
    assert kept >= 140 and kept_other >= 25 and split_parts["marginals"] >= 8, (kept, kept_other, split_parts)
    # Every kind of value bound, on the marginals (no facet filter), the counts (a city) and the chain counts, with
    # the postings of a class a bound cuts added to whole classes or taken from its kept count.
    for low, high in VALUE_BOUNDS:
        for city, chain_id in ((None, None), ("510100", None), (None, catalogue["chain_ids"][1])):
            f = SearchFilters(q="质谱", min_value=low, max_value=high, city=city, chain_id=chain_id)
            assert search_sql(f, Viewer(), sort="newest", limit=1, offset=0, frequent=frequent).frequent_term
            split = value_split(*value_bounds(f))
            for viewer in catalogue["viewers"]:
                if await assert_like_reference(session, rows, f, viewer, rng.choice(["relevance", "value_asc"])):
                    split_parts["one class" if split.classes is None else "classes"] += 1
                    split_parts.update({1: "plus", -1: "minus"}[p.sign] for p in split.postings)
    assert min(split_parts[k] for k in ("one class", "classes", "plus", "minus")) >= 6, split_parts


async def test_a_stale_list_of_frequent_terms_falls_back(session: AsyncSession, catalogue: dict[str, Any]) -> None:
    rows = await load_rows(session)
    f = SearchFilters(q="激光", city="510100")
    nested = await session.begin_nested()
    await session.execute(text("SELECT search_terms_add(ARRAY['激光'])"))
    repo.forget_frequent_terms()
    await assert_like_reference(session, rows, f, Viewer(), "relevance")
    assert "激光" in await repo.frequent_terms(await repo.driver_connection(session))
    # The promotion is rolled back; this process still lists the term until it reloads.
    await nested.rollback()
    assert "激光" in await repo.frequent_terms(await repo.driver_connection(session))
    await assert_like_reference(session, rows, f, Viewer(), "relevance")
    # The statement reported the term gone, and the list is reloaded.
    assert "激光" not in await repo.frequent_terms(await repo.driver_connection(session))
