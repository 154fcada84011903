"""The two-character Chinese search is served by the bigram GIN index, also for prepared statements re-run
many times (asyncpg), and the trigger keeps the searched text current."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from instruments import repository as repo
from instruments.repository import SearchFilters, Viewer
from tests.factories import make_institution, make_instrument

pytestmark = pytest.mark.asyncio


def _plan_nodes(plan: dict) -> list[dict]:  # type: ignore[type-arg]
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


async def _explain(session: AsyncSession, stmt: object) -> list[dict]:  # type: ignore[type-arg]
    compiled = stmt.compile(session.bind, compile_kwargs={"literal_binds": True})  # type: ignore[attr-defined]
    raw = await session.scalar(text(f"EXPLAIN (FORMAT JSON) {compiled}"))
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    return _plan_nodes(plan)


@pytest.fixture
async def many(session: AsyncSession) -> None:
    """20,000 instruments with realistic text, 100 of them 质谱 (the trigger fills the search columns as in
    production); at this size the planner's own choice shows, without disabling anything."""
    inst = await make_institution(session)
    await session.execute(
        text(
            "INSERT INTO instruments (institution_id, asset_number, name, category_code, original_value, city_code,"
            " sharing_mode, status, manufacturer, model, functions)"
            " SELECT :inst, 'BULK-' || g, CASE WHEN g % 200 = 0 THEN '质谱仪' ELSE '高速冷冻离心机' END || g, '010200',"
            " 600000, '510100', 'external', 'normal', '某某科学仪器有限公司', 'XK-' || g,"
            " '用于生物样品的分离与纯化、细胞收集、蛋白沉淀、核酸提取，转速可达每分钟两万转，配备多种转头' || g"
            " FROM generate_series(1, 20000) AS g"
        ),
        {"inst": inst.id},
    )
    await session.execute(text("ANALYZE instruments"))


async def test_bigrams_function(session: AsyncSession) -> None:
    got = await session.scalar(text("SELECT text_bigrams('质谱 LC-MS')"))
    assert sorted(got) == sorted(["质谱", "lc", "c-", "-m", "ms"])


async def test_trigger_maintains_search_columns(session: AsyncSession) -> None:
    inst = await make_instrument(session, name="核磁共振", model="AVANCE NEO", manufacturer="布鲁克")
    row = (
        await session.execute(
            text("SELECT search_text, search_bigrams FROM instruments WHERE id = :id"), {"id": inst.id}
        )
    ).one()
    assert "核磁共振" in row.search_text and "avance neo" in row.search_text and "布鲁克" in row.search_text
    assert {"核磁", "磁共", "共振", "av"} <= set(row.search_bigrams)


async def test_search_uses_the_bigram_index_also_when_repeated(session: AsyncSession, many: None) -> None:
    # One test on one large fixture: building 20,000 rows takes seconds.
    for q in ("质谱", "核磁", "质谱仪", "质谱 离心"):
        f = SearchFilters(q=q, city="510100")
        for stmt in (
            repo.items_statement(f, Viewer(), sort="relevance", limit=20, offset=0),
            repo.facets_statement(f, Viewer()),
        ):
            nodes = await _explain(session, stmt)
            assert any(n.get("Index Name") == "ix_instruments_search_bigrams" for n in nodes), (q, nodes)
    await repo.use_custom_plans(session)
    assert await session.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
    # Run the same prepared search well past asyncpg's five-run threshold: results stay right.
    for _ in range(8):
        page = await repo.search(
            session, SearchFilters(q="质谱"), Viewer(), sort="newest", limit=20, offset=0
        )
        assert page.total == 100
        assert all("质谱" in row["name"] for row in page.rows)
