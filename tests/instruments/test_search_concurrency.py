"""The search tables under concurrent, committed writers: the cube's writers take turns instead of deadlocking, and
an institution renamed while its instruments are written never leaves an old name in the searched text."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from booking.core.locks import lock_key
from tests.db import TestDatabase
from tests.instruments.test_search_index import (
    CHAIN_COUNT_COLUMNS,
    CUBE_COLUMNS,
    EXPECTED_CHAIN_COUNTS,
    EXPECTED_CUBE,
    EXPECTED_MARGINALS,
    EXPECTED_POSTINGS,
    EXPECTED_SEARCH_ROWS,
    EXPECTED_TERM_COUNTS,
    MARGINAL_COLUMNS,
    POSTING_COLUMNS,
    SEARCH_COLUMNS,
    TERM_COUNT_COLUMNS,
)
from tests.live import Scratch

pytestmark = [pytest.mark.race, pytest.mark.asyncio]


# Frequent terms in the texts these tests write, so their triggers run under the concurrent writers too.
RACE_TERMS = ["并发", "仪器", "并发仪器", "改名", "研究所", "测试", "光谱仪"]


@pytest.fixture(scope="module")
def scratch(test_database: TestDatabase) -> Iterator[Scratch]:
    db = Scratch.create(test_database, f"booking_search_race_{id(test_database) % 100000}")

    async def promote() -> None:
        conn = await asyncpg.connect(db.url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            await conn.execute("SELECT search_terms_add($1::text[])", RACE_TERMS)
        finally:
            await conn.close()

    asyncio.run(promote())
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
async def connect(scratch: Scratch) -> AsyncIterator[object]:
    dsn = scratch.url.replace("postgresql+asyncpg://", "postgresql://", 1)
    opened: list[asyncpg.Connection] = []

    async def open_one() -> asyncpg.Connection:
        conn = await asyncpg.connect(dsn)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        await conn.close()


async def _differences(conn: asyncpg.Connection, expected: str, table: str, columns: str, where: str) -> int:
    stored = f"SELECT {columns} FROM {table} WHERE {where}"  # noqa: S608 (fixed fragments)
    both = f"({expected} EXCEPT {stored}) UNION ALL ({stored} EXCEPT {expected})"
    return int(await conn.fetchval(f"SELECT count(*) FROM ({both}) AS d"))  # noqa: S608


async def _assert_in_sync(conn: asyncpg.Connection) -> None:
    assert await _differences(conn, EXPECTED_SEARCH_ROWS, "instrument_search", SEARCH_COLUMNS, "TRUE") == 0
    assert await _differences(conn, EXPECTED_CUBE, "instrument_facet_counts", CUBE_COLUMNS, "n > 0") == 0
    assert await _differences(conn, EXPECTED_POSTINGS, "search_term_postings", POSTING_COLUMNS, "TRUE") == 0
    assert await _differences(conn, EXPECTED_TERM_COUNTS, "search_term_counts", TERM_COUNT_COLUMNS, "n > 0") == 0
    chain_counts = await _differences(
        conn, EXPECTED_CHAIN_COUNTS, "search_term_chain_counts", CHAIN_COUNT_COLUMNS, "n > 0"
    )
    assert chain_counts == 0
    assert await _differences(conn, EXPECTED_MARGINALS, "search_term_marginals", MARGINAL_COLUMNS, "n > 0") == 0
    assert await conn.fetchval("SELECT count(*) FROM search_term_postings") > 0


async def _institution(conn: asyncpg.Connection, name: str, kind: str = "高校") -> int:
    return int(
        await conn.fetchval(
            "INSERT INTO institutions (name, kind, city_code) VALUES ($1, $2, '510100') RETURNING id", name, kind
        )
    )


# Writers here are plain SQL, and like every writer they keep instrument_history in step with the instruments (the
# database checks it at commit): an insert opens each instrument's history, RESYNC_HISTORY follows a change.
INSERT = (
    "WITH i AS (INSERT INTO instruments (institution_id, asset_number, name, category_code, original_value, city_code,"
    " sharing_mode, status) SELECT $1, $2 || g, $3 || g, (ARRAY['010200', '140000', '010600'])[1 + g % 3],"
    " 1000 * g, (ARRAY['510100', '510700'])[1 + g % 2], 'external', 'normal' FROM generate_series(1, $4) AS g"
    " RETURNING id, sharing_mode, status, original_value, institution_id, city_code),"
    " h AS (INSERT INTO instrument_history (instrument_id, valid_from, sharing_mode, status, original_value, institution_id, city_code)"
    " SELECT id, now(), sharing_mode, status, original_value, institution_id, city_code FROM i)"
    " SELECT id FROM i"
)
# clock_timestamp(), not now(): a transaction that waited for another's row locks must not close that one's newer
# row at its own (earlier) start time.
RESYNC_HISTORY = (
    "UPDATE instrument_history SET valid_to = clock_timestamp()"
    " WHERE instrument_id = ANY($1::int[]) AND valid_to IS NULL;"
    " INSERT INTO instrument_history (instrument_id, valid_from, sharing_mode, status, original_value, institution_id, city_code)"
    " SELECT id, clock_timestamp(), sharing_mode, status, original_value, institution_id, city_code FROM instruments"
    " WHERE id = ANY($1::int[]) AND retired_at IS NULL"
)


async def _resync_history(conn: asyncpg.Connection, ids: list[int]) -> None:
    for statement in RESYNC_HISTORY.split("; "):
        await conn.execute(statement, ids)


async def test_concurrent_writers_keep_the_cube_exact(connect: object) -> None:
    setup = await connect()  # type: ignore[operator]
    institutions = [await _institution(setup, f"并发写入单位{i}") for i in range(3)]

    async def writer(n: int) -> None:
        rng = random.Random(n)
        conn = await connect()  # type: ignore[operator]
        async with conn.transaction():
            ids = [r["id"] for r in await conn.fetch(INSERT, rng.choice(institutions), f"W{n}-", f"并发仪器{n}-", 15)]
            await conn.execute(
                "INSERT INTO instrument_chains (instrument_id, chain_id) SELECT i, 1 + i % 6 FROM unnest($1::int[]) AS i",
                ids[::2],
            )
            await asyncio.sleep(rng.random() / 50)
            await conn.execute(
                "UPDATE instruments SET status = $2, sharing_mode = 'internal', accepts_vouchers = TRUE"
                " WHERE id = ANY($1::int[])",
                ids[::2],
                rng.choice(["standby", "remote"]),
            )
            await _resync_history(conn, ids[::2])
            await asyncio.sleep(rng.random() / 50)
            await conn.execute(
                "UPDATE instruments SET retired_at = now(), retired_reason = '报废' WHERE id = ANY($1::int[])", ids[:3]
            )
            await _resync_history(conn, ids[:3])

    async def reclassify(n: int) -> None:
        # An administrator changing an institution's kind (which moves its instruments between cube cells).
        rng = random.Random(100 + n)
        conn = await connect()  # type: ignore[operator]
        await asyncio.sleep(rng.random() / 20)
        await conn.execute(
            "UPDATE institutions SET kind = $2 WHERE id = $1", rng.choice(institutions), rng.choice(["企业", "高校"])
        )

    tagged = [r["id"] for r in await setup.fetch(INSERT, institutions[0], "T-", "并发测试仪器", 12)]

    async def retag(n: int) -> None:
        # A manager re-tagging committed instruments while they are renamed and moved (both tables' triggers).
        rng = random.Random(200 + n)
        conn = await connect()  # type: ignore[operator]
        async with conn.transaction():
            # Two statements over rows other re-taggings also touch: the catalogue lock first. (The triggers take it
            # after a statement has locked its rows and keep it until commit; a transaction that then needed rows
            # locked by a writer waiting for the lock would deadlock. Single statements, and transactions over rows
            # of their own, are safe without it.)
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("instrument_facet_counts"))
            chosen = rng.sample(tagged, 4)
            await conn.execute("DELETE FROM instrument_chains WHERE instrument_id = ANY($1::int[])", chosen)
            await asyncio.sleep(rng.random() / 50)
            await conn.execute(
                "INSERT INTO instrument_chains (instrument_id, chain_id) SELECT i, $2 FROM unnest($1::int[]) AS i"
                " ON CONFLICT DO NOTHING",  # another re-tagging may have linked the same pair meanwhile
                chosen, rng.randint(1, 6),
            )
        async with conn.transaction():
            moved = rng.sample(tagged, 3)
            await conn.execute(
                "UPDATE instruments SET name = name || '改', city_code = $2 WHERE id = ANY($1::int[])",
                moved, rng.choice(["510100", "510700"]),
            )
            await _resync_history(conn, moved)

    await asyncio.wait_for(
        asyncio.gather(
            *(writer(n) for n in range(8)), *(reclassify(n) for n in range(4)), *(retag(n) for n in range(4))
        ),
        timeout=60,
    )
    await _assert_in_sync(setup)
    assert await setup.fetchval("SELECT count(*) FROM instrument_search WHERE name LIKE '并发仪器%'") == 8 * 12


async def test_rename_while_instruments_are_written(connect: object) -> None:
    a, b = await connect(), await connect()  # type: ignore[operator]
    inst = await _institution(a, "改名前研究所", "科研院所")
    [existing] = [r["id"] for r in await a.fetch(INSERT, inst, "R-", "改名测试仪器", 1)]

    # The rename first, the new instrument waiting for it: the new row gets the new name.
    rename = a.transaction()
    await rename.start()
    await a.execute("UPDATE institutions SET name = '改名后研究所甲' WHERE id = $1", inst)
    insert = asyncio.create_task(b.fetch(INSERT, inst, "R2-", "改名等待仪器", 1))
    await asyncio.sleep(0.3)
    assert not insert.done()  # waiting for the rename (FOR SHARE on the institution)
    await rename.commit()
    [new_id] = [r["id"] for r in await asyncio.wait_for(insert, 10)]
    text_of = "SELECT search_text FROM instrument_search WHERE instrument_id = $1"
    assert (await a.fetchval(text_of, new_id)).endswith("\n改名后研究所甲")

    # An instrument edited first, the rename waiting for it: the rename lands on the edited text.
    edit = b.transaction()
    await edit.start()
    await b.execute("UPDATE instruments SET name = '编辑后的仪器名' WHERE id = $1", existing)
    renamed = asyncio.create_task(a.execute("UPDATE institutions SET name = '改名后研究所乙' WHERE id = $1", inst))
    await asyncio.sleep(0.3)
    assert not renamed.done()
    await edit.commit()
    await asyncio.wait_for(renamed, 10)
    assert await a.fetchval(text_of, existing) == "编辑后的仪器名\n改名后研究所乙"
    await _assert_in_sync(a)


EXPECTED_POSTINGS_RACE = """
SELECT t.id AS term_id, s.instrument_id FROM instrument_search AS s
JOIN search_frequent_terms AS t ON strpos(s.search_text, t.term) > 0
"""


async def test_a_promotion_and_concurrent_writers_miss_nothing(connect: object) -> None:
    """Writers that add instruments containing a term while it is being promoted: whichever commits first, every
    instrument ends up with its posting (the promotion reads the rows committed before it, the writers' triggers
    see the term once it is committed), and the counts match a recount."""
    setup = await connect()  # type: ignore[operator]
    inst = await _institution(setup, "晋升并发单位")
    await setup.fetch(INSERT, inst, "P0-", "晋升测试光谱仪", 30)
    first = await connect()  # type: ignore[operator]
    # A writer holds its instruments uncommitted while the promotion starts: the promotion waits for it.
    writer = first.transaction()
    await writer.start()
    await first.fetch(INSERT, inst, "P1-", "晋升测试光谱仪甲", 10)
    promote = asyncio.create_task(setup.fetchval("SELECT search_terms_add(ARRAY['晋升测试', '光谱仪甲'])"))
    await asyncio.sleep(0.3)
    assert not promote.done()
    await writer.commit()
    assert await asyncio.wait_for(promote, 10) == 2

    # And the other way round: a promotion uncommitted while writers add instruments: they wait for it.
    promoter = await connect()  # type: ignore[operator]
    promotion = promoter.transaction()
    await promotion.start()
    await promoter.fetchval("SELECT search_terms_add(ARRAY['测试光谱'])")
    writers = [
        asyncio.create_task((await connect()).fetch(INSERT, inst, f"P{n}-", f"晋升测试光谱仪{n}", 5))  # type: ignore[operator]
        for n in range(2, 6)
    ]
    await asyncio.sleep(0.3)
    assert not any(w.done() for w in writers)
    await promotion.commit()
    await asyncio.wait_for(asyncio.gather(*writers), 20)

    stored = "SELECT term_id, instrument_id FROM search_term_postings"
    both = f"({EXPECTED_POSTINGS_RACE} EXCEPT {stored}) UNION ALL ({stored} EXCEPT {EXPECTED_POSTINGS_RACE})"
    assert await setup.fetchval(f"SELECT count(*) FROM ({both}) AS d") == 0  # noqa: S608
    counted = "SELECT term_id, sum(n) FROM search_term_counts GROUP BY 1 HAVING sum(n) > 0"
    recount = f"SELECT term_id, count(*) FROM ({EXPECTED_POSTINGS_RACE}) AS p GROUP BY 1"  # noqa: S608
    assert sorted(await setup.fetch(counted)) == sorted(await setup.fetch(recount))
    assert await setup.fetchval(
        "SELECT n FROM (SELECT sum(c.n) AS n FROM search_term_counts c JOIN search_frequent_terms t"
        " ON t.id = c.term_id WHERE t.term = '晋升测试') AS x"
    ) == 30 + 10 + 4 * 5
    await _assert_in_sync(setup)


async def test_edits_that_change_nothing_searched_take_no_lock(connect: object) -> None:
    """A fee or contact edit changes no search row, count or posting: it must not take the lock every catalogue
    writer takes (two such edits in opposite order would otherwise deadlock)."""
    a, b = await connect(), await connect()  # type: ignore[operator]
    inst = await _institution(a, "无锁编辑单位")
    first, second = [r["id"] for r in await a.fetch(INSERT, inst, "L-", "无锁编辑仪器", 2)]
    advisory = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    ta, tb = a.transaction(), b.transaction()
    await ta.start()
    await tb.start()
    await a.execute("UPDATE instruments SET fee_text = '每小时 100 元' WHERE id = $1", first)
    # Not queued behind the first edit's transaction.
    await asyncio.wait_for(b.execute("UPDATE instruments SET contact_phone = '028-1' WHERE id = $1", second), 5)
    assert await a.fetchval(advisory) == 0 and await b.fetchval(advisory) == 0
    await ta.commit()
    await tb.commit()
