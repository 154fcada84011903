"""The search tables: instrument_search and the facet-count cube stay exactly in step with instruments and
institutions through every kind of write (triggers in the writing transaction), and the common searches use the
intended indexes, also as generic plans of prepared statements (asyncpg)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.core.clock import utcnow
from instruments import repository as repo
from instruments.models import VALUE_CLASS_BOUNDS, Instrument
from instruments.repository import SearchFilters, Viewer
from instruments.search_sql import SearchSQL, search_sql, value_bounds, value_split
from tests.factories import make_institution, make_instrument

pytestmark = pytest.mark.asyncio

# What instrument_search must hold: one row per live instrument, computed here from scratch.
EXPECTED_SEARCH_ROWS = r"""
SELECT i.id AS instrument_id, i.institution_id, n.kind AS institution_kind, i.city_code, i.category_code,
       i.sharing_mode, i.status, i.original_value, i.accepts_vouchers, i.restricted, i.name, t.search_text,
       text_bigram_codes(t.search_text) AS bigrams
FROM instruments AS i JOIN institutions AS n ON n.id = i.institution_id,
     LATERAL (SELECT lower(concat_ws(E'\n', i.name, i.name_en, i.model, i.manufacturer, i.functions)) || E'\n'
                     || lower(n.name) AS search_text) AS t
WHERE i.retired_at IS NULL
"""
SEARCH_COLUMNS = (
    "instrument_id, institution_id, institution_kind, city_code, category_code, sharing_mode, status,"
    " original_value, accepts_vouchers, restricted, name, search_text, bigrams"
)
# What the cube must hold: instrument_search counted into every cell, recounted here from scratch.
EXPECTED_CUBE = """
SELECT 31 - GROUPING(city_code, institution_kind, category_code, sharing_mode, status) AS dims, restricted,
       coalesce(city_code, '') AS city_code, coalesce(institution_kind, '') AS institution_kind,
       coalesce(category_code, '') AS category_code, coalesce(sharing_mode, '') AS sharing_mode,
       coalesce(status, '') AS status, count(*)::int AS n
FROM instrument_search
GROUP BY restricted, CUBE (city_code, institution_kind, category_code, sharing_mode, status)
"""
CUBE_COLUMNS = "dims, restricted, city_code, institution_kind, category_code, sharing_mode, status, n"


async def _differences(session: AsyncSession, expected: str, table: str, columns: str, where: str = "TRUE") -> int:
    stored = f"SELECT {columns} FROM {table} WHERE {where}"  # noqa: S608 (fixed fragments of this module)
    return int(
        await session.scalar(
            text(f"SELECT count(*) FROM (({expected} EXCEPT {stored}) UNION ALL ({stored} EXCEPT {expected})) AS d")  # noqa: S608
        )
        or 0
    )


# What search_term_postings and search_term_counts must hold for the frequent terms, recomputed here from scratch by
# plain substring tests (the triggers use bigram containment and LIKE).
EXPECTED_POSTINGS = """
SELECT t.id AS term_id, s.instrument_id, strpos(lower(s.name), t.term) > 0 AS name_hit, s.restricted,
       s.original_value, s.city_code, s.institution_kind, s.category_code, s.sharing_mode, s.status,
       s.accepts_vouchers,
       coalesce((SELECT array_agg(c.chain_id ORDER BY c.chain_id) FROM instrument_chains AS c
                 WHERE c.instrument_id = s.instrument_id), '{}') AS chain_ids
FROM instrument_search AS s JOIN search_frequent_terms AS t ON strpos(s.search_text, t.term) > 0
"""
POSTING_COLUMNS = (
    "term_id, instrument_id, name_hit, restricted, original_value, city_code, institution_kind, category_code,"
    " sharing_mode, status, accepts_vouchers, chain_ids"
)
_CELL = "restricted, value_class, vouchers, city_code, institution_kind, category_code, sharing_mode, status"
_VALUE_CLASS = f"width_bucket(original_value, ARRAY[{', '.join(str(b) for b in VALUE_CLASS_BOUNDS)}]::numeric[])"
EXPECTED_TERM_COUNTS = f"""
SELECT term_id, {_CELL}, count(*)::int AS n
FROM (SELECT *, {_VALUE_CLASS} AS value_class, accepts_vouchers AS vouchers FROM ({EXPECTED_POSTINGS}) AS e) AS p
GROUP BY term_id, {_CELL}
"""  # noqa: S608 (fixed fragments)
TERM_COUNT_COLUMNS = f"term_id, {_CELL}, n"
# Per chain: each instrument counted in each of its chains, from instrument_chains itself.
EXPECTED_CHAIN_COUNTS = f"""
SELECT term_id, c.chain_id, {_CELL}, count(*)::int AS n
FROM (SELECT *, {_VALUE_CLASS} AS value_class, accepts_vouchers AS vouchers FROM ({EXPECTED_POSTINGS}) AS e) AS p
JOIN instrument_chains AS c ON c.instrument_id = p.instrument_id
GROUP BY term_id, c.chain_id, {_CELL}
"""  # noqa: S608 (fixed fragments)
CHAIN_COUNT_COLUMNS = f"term_id, chain_id, {_CELL}, n"
# Per facet value alone (category: its first two digits).
_MARGINALS_BY_FACET = [
    f"""SELECT term_id, restricted, {_VALUE_CLASS} AS value_class, accepts_vouchers AS vouchers,
       '{facet}' AS facet, {value}::text AS value, count(*)::int AS n
FROM ({EXPECTED_POSTINGS}) AS e GROUP BY 1, 2, 3, 4, 5, 6"""  # noqa: S608 (fixed fragments)
    for facet, value in (("city", "city_code"), ("institution_kind", "institution_kind"),
                         ("category", "left(category_code, 2)"), ("sharing_mode", "sharing_mode"), ("status", "status"))
]
EXPECTED_MARGINALS = f"SELECT * FROM ({' UNION ALL '.join(_MARGINALS_BY_FACET)}) AS m"  # noqa: S608 (fixed fragments)
MARGINAL_COLUMNS = "term_id, restricted, value_class, vouchers, facet, value, n"


async def assert_in_sync(session: AsyncSession) -> None:
    await session.flush()
    assert await _differences(session, EXPECTED_SEARCH_ROWS, "instrument_search", SEARCH_COLUMNS) == 0
    # Cells that dropped to zero may stay behind; every other cell must match a recount.
    assert await _differences(session, EXPECTED_CUBE, "instrument_facet_counts", CUBE_COLUMNS, "n > 0") == 0
    assert await _differences(session, EXPECTED_POSTINGS, "search_term_postings", POSTING_COLUMNS) == 0
    assert await _differences(session, EXPECTED_TERM_COUNTS, "search_term_counts", TERM_COUNT_COLUMNS, "n > 0") == 0
    assert (
        await _differences(session, EXPECTED_CHAIN_COUNTS, "search_term_chain_counts", CHAIN_COUNT_COLUMNS, "n > 0")
        == 0
    )
    assert (
        await _differences(session, EXPECTED_MARGINALS, "search_term_marginals", MARGINAL_COLUMNS, "n > 0") == 0
    )


async def add_frequent_terms(session: AsyncSession, *terms: str) -> int:
    added = await session.scalar(text("SELECT search_terms_add(CAST(:t AS text[]))"), {"t": list(terms)})
    repo.forget_frequent_terms()  # as the promoting process does (service.promote_frequent_terms)
    return int(added or 0)


async def write_in_sync(session: AsyncSession, sql: str, **params: Any) -> None:
    """Run one write statement, then check that every kept table still matches a recount."""
    await session.execute(text(sql), params)
    await assert_in_sync(session)


async def search_row(session: AsyncSession, instrument_id: int) -> Any:
    return (
        await session.execute(text("SELECT * FROM instrument_search WHERE instrument_id = :id"), {"id": instrument_id})
    ).one_or_none()


async def found(session: AsyncSession, q: str, viewer: Viewer | None = None, **filters: Any) -> set[int]:
    page = await repo.search(
        session, SearchFilters(q=q, **filters), viewer or Viewer(), sort="newest", limit=200, offset=0
    )
    return {row["id"] for row in page.rows}


def codes(*bigrams: str) -> set[int]:
    """text_bigram_codes' encoding, written again: 16 bits a character, signed 32-bit result."""

    def code(ch: str) -> int:
        return ord(ch) if ord(ch) < 0x10000 else 0xD800 + ord(ch) % 0x800

    out = set()
    for b in bigrams:
        value = (code(b[0]) << 16) | code(b[1])
        out.add(value - (1 << 32) if value >= 1 << 31 else value)
    return out


async def test_bigram_codes(session: AsyncSession) -> None:
    async def of(t: str) -> set[int]:
        got = await session.scalar(text("SELECT text_bigram_codes(:t)"), {"t": t})
        assert len(got) == len(set(got))  # distinct
        return set(got)

    assert await of("质谱 LC-MS") == codes("质谱", "lc", "c-", "-m", "ms")
    # Pieces across whitespace are skipped; letters are lowercased.
    assert await of(" a\tb  质谱仪\nX ") == codes("质谱", "谱仪")
    assert await of("") == set() and await of("单") == set()
    # Outside the Basic Multilingual Plane: codes in the surrogate range, which no BMP character reaches.
    rare = "\U00020000"  # 𠀀, CJK Extension B
    assert await of(f"{rare}谱") == codes(f"{rare}谱")
    assert all(0xD800 <= (c >> 16) & 0xFFFF < 0xE000 for c in codes(f"{rare}谱"))


# Terms in the texts the tests below write, two characters and longer, Chinese and Latin: every write then also
# exercises the frequent-term triggers, and assert_in_sync checks their postings and counts.
SYNC_TERMS = (
    "仪器", "测试", "质谱", "光谱", "拉曼", "核磁", "电子", "批量", "交换", "名字", "同步", "大学", "研究",
    "光谱仪", "质谱仪", "批量仪器", "测试仪器厂", "abc", "ms", "avance", "分析仪", "解析仪",
)


class TestInSync:
    @pytest.fixture(autouse=True)
    async def _frequent_terms(self, session: AsyncSession) -> None:
        assert await add_frequent_terms(session, *SYNC_TERMS) == len(SYNC_TERMS)

    async def test_insert_fills_the_row(self, session: AsyncSession) -> None:
        uni = await make_institution(session, name="同步测试大学", kind="高校")
        inst = await make_instrument(session, uni, name="核磁共振", model="AVANCE NEO", manufacturer="布鲁克")
        row = await search_row(session, inst.id)  # type: ignore[arg-type]
        assert row.search_text == "核磁共振\navance neo\n布鲁克\n同步测试大学"
        assert (row.institution_kind, row.city_code, row.restricted) == ("高校", uni.city_code, False)
        assert await found(session, "核磁共振") == {inst.id}
        await assert_in_sync(session)

    async def test_updates_follow(self, session: AsyncSession) -> None:
        inst = await make_instrument(session, name="旧名称仪器")
        await assert_in_sync(session)
        inst.name = "拉曼光谱仪"
        inst.functions = "晶型鉴别"
        await assert_in_sync(session)
        assert await found(session, "拉曼") == {inst.id}
        assert await found(session, "旧名称") == set()
        assert await found(session, "晶型") == {inst.id}
        for field, value in (
            ("status", "awaiting_repair"),
            ("sharing_mode", "internal"),
            ("city_code", "510700"),
            ("category_code", "010600"),
            ("original_value", Decimal("123.45")),
            ("accepts_vouchers", True),
        ):
            setattr(inst, field, value)
            await assert_in_sync(session)
        row = await search_row(session, inst.id)  # type: ignore[arg-type]
        assert (row.status, row.sharing_mode, row.city_code, row.category_code) == (
            "awaiting_repair",
            "internal",
            "510700",
            "010600",
        )
        assert row.original_value == Decimal("123.45") and row.accepts_vouchers is True

    async def test_a_text_change_that_keeps_the_bigrams(self, session: AsyncSession) -> None:
        # The same set of bigrams, another text: 分析仪 leaves, 解析仪 arrives (longer terms are matched by text).
        inst = await make_instrument(session, name="测试平台", functions="分析仪 解析")
        await assert_in_sync(session)
        inst.functions = "分析 解析仪"
        await assert_in_sync(session)
        inst.original_value = Decimal("10")  # then a value change alone: the postings move in place
        inst.status = "standby"
        await assert_in_sync(session)

    async def test_an_update_that_changes_nothing_searched_leaves_the_row(self, session: AsyncSession) -> None:
        inst = await make_instrument(session)
        where = text("SELECT ctid::text FROM instrument_search WHERE instrument_id = :id")
        before = await session.scalar(where, {"id": inst.id})
        inst.contact_phone = "028-12345678"
        inst.updated_at = utcnow()
        await session.flush()
        # No new row version: the upsert skips rows whose searched values did not change.
        assert await session.scalar(where, {"id": inst.id}) == before
        await assert_in_sync(session)

    async def test_restrict_and_unrestrict(self, session: AsyncSession) -> None:
        inst = await make_instrument(session, name="军工光谱仪")
        assert await found(session, "军工光谱") == {inst.id}
        inst.restricted = True
        await assert_in_sync(session)
        assert await found(session, "军工光谱") == set()
        assert await found(session, "军工光谱", Viewer(is_admin=True)) == {inst.id}
        assert await found(session, "军工光谱", Viewer(managed_institution_ids=frozenset({inst.institution_id})))
        inst.restricted = False
        await assert_in_sync(session)
        assert await found(session, "军工光谱") == {inst.id}

    async def test_chain_tags_follow(self, session: AsyncSession) -> None:
        # Kept by the triggers on instrument_chains (postings' chain_ids, chain counts) and on instrument_search
        # (a new, moved or re-texted posting takes or keeps the instrument's chains).
        ids = await repo.chain_ids_by_name(session)
        inst = await make_instrument(session, name="质谱分析仪", chains=["先进材料"])
        other = await make_instrument(session, name="光谱测试仪", chains=["先进材料", "医药健康"])
        await assert_in_sync(session)
        await repo.set_chains(session, inst.id, [ids["医药健康"], ids["先进材料"]])  # type: ignore[arg-type]
        await assert_in_sync(session)
        await repo.set_chains(session, inst.id, [])  # type: ignore[arg-type]
        await assert_in_sync(session)
        await repo.set_chains(session, inst.id, [ids["电子信息"], ids["能源化工"]])  # type: ignore[arg-type]
        inst.city_code, inst.accepts_vouchers, inst.original_value = "510700", True, Decimal("100")
        await assert_in_sync(session)  # moved in place, chains kept
        inst.name = "拉曼光谱仪"
        await assert_in_sync(session)  # re-texted: deleted and added with its chains
        await write_in_sync(
            session,
            "UPDATE instrument_chains SET chain_id = :c WHERE instrument_id = :i AND chain_id = :old",
            c=ids["食品轻纺"], i=inst.id, old=ids["电子信息"],
        )
        # A chain deleted: its links go by cascade.
        chain_id = await session.scalar(text("INSERT INTO chains (name) VALUES ('临时链') RETURNING id"))
        await write_in_sync(
            session,
            "INSERT INTO instrument_chains (instrument_id, chain_id) VALUES (:a, :c), (:b, :c)",
            a=inst.id, b=other.id, c=chain_id,
        )
        await session.execute(text("DELETE FROM chains WHERE id = :c"), {"c": chain_id})
        await assert_in_sync(session)
        # Retired with its chains still linked, then unlinked: the postings went with the search row.
        inst.retired_at, inst.retired_reason = utcnow(), "报废"
        await assert_in_sync(session)
        await repo.set_chains(session, inst.id, [])  # type: ignore[arg-type]
        await assert_in_sync(session)
        # Deleted outright: the search row and the links go by cascade within one statement, in either order.
        await session.execute(delete(Instrument).where(Instrument.id == other.id))  # type: ignore[arg-type]
        await assert_in_sync(session)

    async def test_bulk_chain_links(self, session: AsyncSession) -> None:
        uni = await make_institution(session)
        for n in range(30):
            await make_instrument(session, uni, name=f"批量仪器{n}", accepts_vouchers=n % 2 == 0)
        await session.execute(
            text(
                "INSERT INTO instrument_chains (instrument_id, chain_id)"
                " SELECT i.id, c.id FROM instruments AS i JOIN chains AS c ON (i.id + c.id) % 3 = 0"
                " WHERE i.institution_id = :u"
            ),
            {"u": uni.id},
        )
        await assert_in_sync(session)
        await write_in_sync(
            session,
            "DELETE FROM instrument_chains WHERE chain_id % 2 = 0 AND instrument_id IN"
            " (SELECT id FROM instruments WHERE institution_id = :u)",
            u=uni.id,
        )
        await write_in_sync(
            session,
            "UPDATE instruments SET accepts_vouchers = NOT accepts_vouchers WHERE institution_id = :u",
            u=uni.id,
        )

    async def test_retire_removes_the_row(self, session: AsyncSession) -> None:
        inst = await make_instrument(session, name="待退役质谱仪")
        inst.retired_at = utcnow()
        inst.retired_reason = "报废"
        await assert_in_sync(session)
        assert await search_row(session, inst.id) is None  # type: ignore[arg-type]
        assert await found(session, "待退役", Viewer(is_admin=True)) == set()
        # Brought back (not something the service does, but the index follows whatever the table holds).
        inst.retired_at = None
        inst.retired_reason = None
        await assert_in_sync(session)
        assert await found(session, "待退役") == {inst.id}

    async def test_move_to_another_institution(self, session: AsyncSession) -> None:
        a = await make_institution(session, name="甲搜索大学", kind="高校")
        b = await make_institution(session, name="乙搜索研究院", kind="科研院所")
        inst = await make_instrument(session, a, name="搬迁质谱仪")
        inst.institution_id = b.id  # type: ignore[assignment]
        await assert_in_sync(session)
        row = await search_row(session, inst.id)  # type: ignore[arg-type]
        assert row.institution_kind == "科研院所" and row.search_text.endswith("\n乙搜索研究院")
        assert await found(session, "乙搜索") == {inst.id}
        assert await found(session, "甲搜索") == set()

    async def test_institution_rename_and_kind_change(self, session: AsyncSession) -> None:
        inst_a = await make_institution(session, name="Old Name 研究所", kind="科研院所")
        one = await make_instrument(session, inst_a, name="电子显微镜")
        two = await make_instrument(session, inst_a, name="X射线衍射仪", functions="物相分析")
        other = await make_instrument(session, name="电子天平")
        inst_a.name = "新名字材料研究院"
        await assert_in_sync(session)
        row = await search_row(session, two.id)  # type: ignore[arg-type]
        assert row.search_text == f"x射线衍射仪\n{two.model.lower()}\n测试仪器厂\n物相分析\n新名字材料研究院"  # type: ignore[union-attr]
        assert await found(session, "新名字") == {one.id, two.id}
        assert await found(session, "old name") == set()
        assert other.id in await found(session, "电子")
        inst_a.kind = "企业"
        await assert_in_sync(session)
        assert await found(session, "新名字", institution_kind="企业") == {one.id, two.id}
        # A name that ends like the old one, and one with Latin capitals.
        inst_a.name = "名字"
        await assert_in_sync(session)
        inst_a.name = "ABC 中心"
        await assert_in_sync(session)
        assert await found(session, "abc") == {one.id, two.id}

    async def test_bulk_insert_update_and_delete(self, session: AsyncSession) -> None:
        uni = await make_institution(session)
        await session.execute(
            text(
                "INSERT INTO instruments (institution_id, asset_number, name, category_code, original_value,"
                " city_code, sharing_mode, status, restricted, retired_at, retired_reason)"
                " SELECT :inst, 'B-' || g, '批量仪器' || g, CASE WHEN g % 2 = 0 THEN '010200' ELSE '140000' END,"
                " g * 1000, CASE WHEN g % 3 = 0 THEN '510700' ELSE '510100' END, 'external',"
                " CASE WHEN g % 4 = 0 THEN 'standby' ELSE 'normal' END, g % 5 = 0,"
                " CASE WHEN g % 7 = 0 THEN now() END, CASE WHEN g % 7 = 0 THEN '报废' END"
                " FROM generate_series(1, 300) AS g"
            ),
            {"inst": uni.id},
        )
        await assert_in_sync(session)
        await write_in_sync(
            session,
            "UPDATE instruments SET status = 'remote', restricted = NOT restricted WHERE institution_id = :i",
            i=uni.id,
        )
        await session.execute(delete(Instrument).where(Instrument.institution_id == uni.id))  # type: ignore[arg-type]
        await assert_in_sync(session)
        assert await found(session, "批量仪器", Viewer(is_admin=True)) == set()

    async def test_bulk_updates_that_swap_or_keep_facets(self, session: AsyncSession) -> None:
        # The update check compares the multisets of facet tuples (revision 0007): a swap between rows changes
        # no count, a one-sided change does, and a rename changes none.
        uni = await make_institution(session)
        await session.execute(
            text(
                "INSERT INTO instruments (institution_id, asset_number, name, category_code, original_value,"
                " city_code, sharing_mode, status)"
                " SELECT :inst, 'S-' || g, '交换仪器' || g, '010200', 1000,"
                " CASE WHEN g % 2 = 0 THEN '510700' ELSE '510100' END, 'external', 'normal'"
                " FROM generate_series(1, 40) AS g"
            ),
            {"inst": uni.id},
        )
        await assert_in_sync(session)
        swap = ("UPDATE instruments SET city_code = CASE city_code WHEN '510700' THEN '510100' ELSE '510700' END"
                " WHERE institution_id = :i")
        await session.execute(text(swap), {"i": uni.id})
        await assert_in_sync(session)
        await session.execute(text("UPDATE instruments SET name = name || '改' WHERE institution_id = :i"),
                              {"i": uni.id})
        await assert_in_sync(session)
        await session.execute(
            text("UPDATE instruments SET status = 'standby' WHERE institution_id = :i AND city_code = '510700'"),
            {"i": uni.id})
        await assert_in_sync(session)
        # Old {A, B}, new {B, B}: the same set of tuples, a different multiset (EXCEPT without ALL would miss it).
        pair = list(await session.scalars(text(
            "SELECT min(id) FROM instruments WHERE institution_id = :i GROUP BY city_code ORDER BY city_code"),
            {"i": uni.id}))
        await session.execute(text("UPDATE instruments SET city_code = '510700', status = 'standby'"
                                   " WHERE id = ANY(:ids)"), {"ids": pair})
        await assert_in_sync(session)

    async def test_api_writes_stay_in_sync(self, session: AsyncSession, client: Any) -> None:
        from tests.factories import bearer_headers, make_user

        uni = await make_institution(session, name="接口同步大学")
        headers = await bearer_headers(session, await make_user(session, role="facility_manager", grant_institution=uni))
        r = await client.post(
            "/api/v1/instruments",
            headers=headers,
            json={
                "asset_number": "SYNC-1",
                "name": "同步流式细胞仪",
                "category_code": "011000",
                "original_value": "900000",
                "sharing_mode": "external",
                "status": "normal",
            },
        )
        assert r.status_code == 201, r.text
        iid = r.json()["id"]
        await assert_in_sync(session)
        r = await client.patch(f"/api/v1/instruments/{iid}", headers=headers, json={"status": "standby"})
        assert r.status_code == 200, r.text
        await assert_in_sync(session)
        r = await client.post(f"/api/v1/instruments/{iid}/retire", headers=headers, json={"reason": "设备报废"})
        assert r.status_code == 200, r.text
        await assert_in_sync(session)
        assert await search_row(session, iid) is None

    async def test_truncate_clears_the_cube(self, session: AsyncSession) -> None:
        await make_instrument(session)
        assert await session.scalar(text("SELECT count(*) FROM search_term_postings")) > 0
        await session.execute(text("TRUNCATE instrument_search"))
        assert await session.scalar(text("SELECT count(*) FROM instrument_facet_counts")) == 0
        assert await session.scalar(text("SELECT count(*) FROM search_term_postings")) == 0
        assert await session.scalar(text("SELECT count(*) FROM search_term_counts")) == 0
        assert await session.scalar(text("SELECT count(*) FROM search_term_marginals")) == 0

    async def test_the_cube_refuses_to_go_negative(self, session: AsyncSession) -> None:
        from sqlalchemy.exc import IntegrityError

        inst = await make_instrument(session, status="standby")
        await session.execute(
            text("UPDATE instrument_facet_counts SET n = 0 WHERE dims = 1 AND status = 'standby' AND NOT restricted")
        )
        nested = await session.begin_nested()
        inst.status = "normal"
        with pytest.raises(IntegrityError, match="ck_instrument_facet_counts_n"):
            await session.flush()
        await nested.rollback()


# ---- plans --------------------------------------------------------------------------------------------------------


@pytest.fixture
async def many(session: AsyncSession) -> None:
    """20,000 instruments with realistic text, 100 of them 质谱, across two cities, three categories, the sharing
    modes and two statuses; at this size the planner's own choice shows, without disabling anything."""
    inst = await make_institution(session)
    await session.execute(
        text(
            "INSERT INTO instruments (institution_id, asset_number, name, category_code, original_value, city_code,"
            " sharing_mode, status, manufacturer, model, functions, accepts_vouchers)"
            " SELECT :inst, 'BULK-' || g, CASE WHEN g % 200 = 0 THEN '质谱仪' ELSE '高速冷冻离心机' END || g,"
            " (ARRAY['010200', '011000', '140000'])[g % 3 + 1], 1000 * (g % 2000), "
            " CASE WHEN g % 4 = 0 THEN '510700' ELSE '510100' END,"
            " (ARRAY['external', 'internal', 'none'])[g % 3 + 1], CASE WHEN g % 10 = 0 THEN 'standby' ELSE 'normal' END,"
            " '某某科学仪器有限公司', 'XK-' || g,"
            " '用于生物样品的分离与纯化、细胞收集、蛋白沉淀、核酸提取，转速可达每分钟两万转，配备多种转头' || g,"
            " g % 4 = 1"
            " FROM generate_series(1, 20000) AS g"
        ),
        {"inst": inst.id},
    )
    # A quarter accept vouchers (above); three in ten are tagged with chain 1, as in the demo.
    await session.execute(
        text("INSERT INTO instrument_chains (instrument_id, chain_id) SELECT id, 1 FROM instruments"
             " WHERE institution_id = :inst AND id % 10 < 3"),
        {"inst": inst.id},
    )
    await session.execute(text("ANALYZE instrument_search"))
    await session.execute(text("ANALYZE instrument_facet_counts"))


def _plan_nodes(plan: dict) -> list[dict]:  # type: ignore[type-arg]
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


async def _plan(session: AsyncSession, query: SearchSQL, mode: str) -> list[dict]:  # type: ignore[type-arg]
    """The plan the server uses for the statement prepared as asyncpg prepares it, custom or generic."""
    pg = await repo.driver_connection(session)
    await pg.execute(f"SET LOCAL plan_cache_mode = {mode}")
    await pg.execute(f"PREPARE planned AS {query.sql}")
    try:
        # EXECUTE takes no bind parameters: the test's own values, quoted.
        args = ", ".join("'" + str(a).replace("'", "''") + "'" for a in query.args)
        raw = await pg.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE planned{f'({args})' if args else ''}")
    finally:
        await pg.execute("DEALLOCATE planned")
        await pg.execute("RESET plan_cache_mode")
    return _plan_nodes((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])


def _scans(nodes: list[dict], kind: str) -> set[str]:  # type: ignore[type-arg]
    return {n["Relation Name"] for n in nodes if n.get("Node Type") == kind and "Relation Name" in n}


def _indexes(nodes: list[dict]) -> set[str]:  # type: ignore[type-arg]
    return {n["Index Name"] for n in nodes if "Index Name" in n}


# (filters, sort, whether the term is selective): 质谱 is in 0.5% of the rows and must come from the bigram index;
# 离心 is in 99.5% of them, where reading the narrow table straight through is as good (but never `instruments`).
TEXT_QUERIES = [
    ({"q": "质谱"}, "relevance", True),
    ({"q": "电镜"}, "newest", True),
    ({"q": "质谱"}, "value_asc", True),
    ({"q": "质谱", "city": "510100"}, "relevance", True),
    ({"q": "质谱仪"}, "newest", True),
    ({"q": "质谱 离心"}, "relevance", True),
    ({"q": "质谱", "category": "0102", "status": "normal"}, "name", True),
    ({"q": "离心", "city": "510700", "sharing_mode": "external", "large": True}, "value_desc", False),
]
CUBE_QUERIES = [
    ({}, "relevance"),
    ({"city": "510700"}, "newest"),
    ({"category": "01", "city": "510100", "sharing_mode": "internal"}, "relevance"),
    ({"status": "standby"}, "name"),
    ({}, "value_desc"),
]


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
async def test_common_searches_use_the_intended_indexes(session: AsyncSession, many: None, mode: str) -> None:
    # One test per plan mode on one large fixture: building 20,000 rows takes seconds.
    for params, sort, selective in TEXT_QUERIES:
        f = SearchFilters(**params)  # type: ignore[arg-type]
        query = search_sql(f, Viewer(), sort=sort, limit=20, offset=0)
        assert not query.counted_from_cube
        nodes = await _plan(session, query, mode)
        assert "instruments" not in _scans(nodes, "Seq Scan"), (params, mode)
        # Never walked in an index's order testing row after row against the term (see search_sql._sort).
        assert not _indexes(nodes) & {"pk_instrument_search", "ix_instrument_search_name", "ix_instrument_search_value"}
        if selective:
            assert "ix_instrument_search_bigrams" in _indexes(nodes), (params, mode)
            assert "instrument_search" not in _scans(nodes, "Seq Scan"), (params, mode)
    for params, sort in CUBE_QUERIES:
        f = SearchFilters(**params)  # type: ignore[arg-type]
        query = search_sql(f, Viewer(), sort=sort, limit=20, offset=0)
        assert query.counted_from_cube
        nodes = await _plan(session, query, mode)
        relations = {n.get("Relation Name") for n in nodes}
        # Counted in the cube; the page read through an index, never by scanning 20,000 rows.
        assert "instrument_facet_counts" in relations, (params, mode)
        assert not _scans(nodes, "Seq Scan") & {"instrument_search", "instruments"}, (params, mode)
    names = await _plan(session, search_sql(SearchFilters(), Viewer(), sort="name", limit=20, offset=0), mode)
    assert "ix_instrument_search_name" in _indexes(names)
    values = await _plan(session, search_sql(SearchFilters(), Viewer(), sort="value_asc", limit=20, offset=0), mode)
    assert "ix_instrument_search_value" in _indexes(values)


async def test_repeated_prepared_searches_stay_right(session: AsyncSession, many: None) -> None:
    # The same prepared statement well past asyncpg's five-run threshold, with different terms: results stay right.
    for q, total in [("质谱", 100), ("离心", 19900), ("质谱", 100), ("电镜", 0)] * 3:
        page = await repo.search(session, SearchFilters(q=q), Viewer(), sort="newest", limit=20, offset=0)
        assert page.total == total
        assert all(q in row["name"] for row in page.rows)
        assert sum(n for _, _, n in page.facets["city"]) == total


async def test_the_page_total_and_facets_are_one_round_trip(
    session: AsyncSession, many: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = await repo.driver_connection(session)
    calls: list[str] = []

    class Counting:
        async def fetch(self, query: str, *args: Any) -> Any:
            calls.append(query)
            return await pg.fetch(query, *args)

    async def counting_connection(_: AsyncSession) -> Counting:
        return Counting()

    await repo.frequent_terms(pg)  # the process's cache of frequent terms, loaded now and then, not per search
    monkeypatch.setattr(repo, "driver_connection", counting_connection)
    expected = await session.scalar(
        text("SELECT count(*) FROM instruments WHERE name LIKE '%质谱%' AND city_code = '510700'")
    )
    for filters in (SearchFilters(q="质谱", city="510700"), SearchFilters(city="510700")):
        page = await repo.search(session, filters, Viewer(), sort="relevance", limit=5, offset=0)
        assert len(page.rows) == 5 and page.facets["status"]
    assert page.total == await session.scalar(text("SELECT count(*) FROM instruments WHERE city_code = '510700'"))
    assert expected and len(calls) == 2


async def test_literals_are_checked() -> None:
    from instruments.search_sql import literal

    with pytest.raises(ValueError, match="not a code"):
        literal("510100' OR TRUE --")
    with pytest.raises(ValueError, match="not a code"):
        search_sql(SearchFilters(city="x'y"), Viewer(), sort="newest", limit=20, offset=0)
    # Free text never reaches the statement: it is a parameter.
    query = search_sql(SearchFilters(q="质谱'; DROP TABLE instruments; --"), Viewer(), sort="newest", limit=20, offset=0)
    assert "DROP TABLE" not in query.sql and any("DROP TABLE" in str(a) for a in query.args)



# ---- frequent terms -----------------------------------------------------------------------------------------------


async def test_the_job_promotes_the_common_terms(session: AsyncSession, monkeypatch: pytest.MonkeyPatch) -> None:
    from booking.core.settings import get_settings
    from scheduling.runner import load_jobs, registered_jobs, run_job_once

    monkeypatch.setenv("BOOKING_SEARCH_FREQUENT_TERM_ROWS", "6")
    monkeypatch.setenv("BOOKING_SEARCH_FREQUENT_TERM_LENGTH", "6")
    get_settings.cache_clear()
    uni = await make_institution(session, name="晋升检索大学")
    for n in range(6):
        await make_instrument(session, uni, name=f"常见词质谱仪 {n}", functions="Common 𠀀𠀀 功能 色谱 谱仪")
    await make_instrument(session, uni, name="罕见仪器")
    load_jobs()
    job = {j.name: j for j in registered_jobs()}["promote_frequent_terms"]
    assert await run_job_once(job) > 0
    terms = set(await session.scalars(text("SELECT term FROM search_frequent_terms")))
    # Substrings within words of two to six characters, lowercased, found in at least six instruments.
    assert {"常见", "质谱", "常见词质谱仪", "晋升检索大学", "common", "co"} <= terms
    assert not {"罕见", "常见词质谱仪 0", "𠀀𠀀"} & terms
    assert max(len(t) for t in terms) <= 6
    # Idempotent: nothing new the second time.
    assert await run_job_once(job) == 0
    await assert_in_sync(session)
    # A later run finds a longer term that became common since, though each of its two-character pieces (色谱,
    # 谱仪) was frequent already and nothing new turns up at two characters.
    for n in range(6):
        await make_instrument(session, uni, name=f"色谱仪 {n}")
    assert "色谱仪" not in set(await session.scalars(text("SELECT term FROM search_frequent_terms")))
    assert await run_job_once(job) > 0
    assert "色谱仪" in set(await session.scalars(text("SELECT term FROM search_frequent_terms")))
    await assert_in_sync(session)
    # One-term searches for them read the kept postings and counts.
    page = await repo.search(session, SearchFilters(q="常见词"), Viewer(), sort="relevance", limit=3, offset=0)
    assert page.total == 6 and len(page.rows) == 3
    frequent = await repo.frequent_terms(await repo.driver_connection(session))
    assert search_sql(SearchFilters(q="常见词"), Viewer(), sort="relevance", limit=3, offset=0,
                      frequent=frequent).frequent_term == frequent["常见词"]


async def test_frequent_term_searches_read_the_kept_rows(session: AsyncSession, many: None) -> None:
    # The page walks the postings' index; the counts come from the kept counts; 20,000 rows are never gathered.
    assert await add_frequent_terms(session, "离心", "离心机") == 2
    frequent = await repo.frequent_terms(await repo.driver_connection(session))
    await session.execute(text("ANALYZE search_term_postings"))
    await session.execute(text("ANALYZE search_term_counts"))
    await session.execute(text("ANALYZE search_term_chain_counts"))
    await session.execute(text("ANALYZE search_term_marginals"))
    for params, sort in (
        ({"q": "离心"}, "relevance"),
        ({"q": "离心机", "city": "510700", "sharing_mode": "external"}, "relevance"),
        ({"q": "离心", "category": "0102", "status": "standby"}, "newest"),
        ({"q": "离心", "city": "510700"}, "value_desc"),
        ({"q": "离心", "large": True, "city": "510700"}, "relevance"),
        ({"q": "离心机", "min_value": Decimal(1000), "max_value": Decimal(50000)}, "value_asc"),
        ({"q": "离心", "min_value": Decimal(100000)}, "relevance"),
        ({"q": "离心机", "min_value": Decimal(150000), "max_value": Decimal(2500000)}, "value_desc"),
        ({"q": "离心", "max_value": Decimal(1900000), "city": "510700"}, "newest"),
        ({"q": "离心", "vouchers": True}, "relevance"),
        ({"q": "离心", "chain_id": 1, "vouchers": False, "city": "510700"}, "newest"),
        ({"q": "离心", "city": "510700"}, "name"),
        ({"q": "离心"}, "name"),
        # No text: the empty term's kept rows.
        ({"vouchers": True}, "newest"),
        ({"chain_id": 1, "city": "510700"}, "relevance"),
        ({"min_value": Decimal(150000)}, "value_desc"),
    ):
        query = search_sql(SearchFilters(**params), Viewer(), sort=sort, limit=20, offset=0, frequent=frequent)  # type: ignore[arg-type]
        assert query.frequent_term is not None
        # Value filters sum whole value classes from the kept counts, except a range inside one class.
        f = SearchFilters(**params)  # type: ignore[arg-type]
        value_filtered = value_split(*value_bounds(f)).classes is None
        for mode in ("force_custom_plan", "force_generic_plan"):
            nodes = await _plan(session, query, mode)
            relations = {n.get("Relation Name") for n in nodes}
            # Without a facet filter or a chain, each facet's marginals.
            if "chain_id" in params:
                kept_counts = "search_term_chain_counts"
            elif set(params) & {"city", "category", "status", "sharing_mode", "institution_kind"}:
                kept_counts = "search_term_counts"
            else:
                kept_counts = "search_term_marginals"
            if sort == "name":  # the page walks the name index, testing each row against the postings
                assert "ix_instrument_search_name" in _indexes(nodes), (params, mode)
                assert "pk_search_term_postings" in _indexes(nodes), (params, mode)
                assert kept_counts in relations, (params, mode)
                continue
            assert "instrument_search" not in relations, (params, mode)
            # Counted from the kept counts, or, for a value range inside one class, over the term's postings.
            assert (kept_counts in relations) is not value_filtered, (params, mode)
            assert not relations & {"search_term_counts", "search_term_chain_counts", "search_term_marginals"} - {
                kept_counts
            }, (params, mode)
            # (or, for a chain, its instruments through instrument_chains, each posting found by primary key)
            walked = {"ix_search_term_postings_page", "ix_search_term_postings_value"}
            assert _indexes(nodes) & (walked | {"pk_search_term_postings"} if "chain_id" in params else walked), (
                params, mode
            )
            if not value_filtered:  # (counting over the postings reads all of the term's: here, half the table)
                assert "search_term_postings" not in _scans(nodes, "Seq Scan"), (params, mode)
    # Several terms, or the institution filter: answered live.
    for params, sort in (({"q": "离心 质谱"}, "relevance"),
                         ({"q": "离心", "institution_id": 1}, "newest")):
        query = search_sql(SearchFilters(**params), Viewer(), sort=sort, limit=20, offset=0, frequent=frequent)  # type: ignore[arg-type]
        assert query.frequent_term is None, params
