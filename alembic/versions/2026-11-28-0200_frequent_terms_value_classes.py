"""frequent terms: kept counts split by value class, not only by large; marginals per facet value

Revisions 0008 and 0009 keep, for each frequent term, its counts per facet cell, split by `large` (原值 ≥ 50万元).
The 大型 filter was answered from them, but any other 原值 bound counted every posting of the term in range: at
100,000 instruments 分析 with 原值 ≥ 10万 grouped 42,700 postings, 31 ms of SQL.

Now the counts (and the chain counts) are split by `value_class` = width_bucket(original_value, BOUNDS) instead:
seven round sums in 万元 (10, 20, 50, 100, 200, 500, 1000万), 50万 among them, so the 大型 filter is still whole
classes. A search sums the classes its bounds cover whole and counts only the postings of the class a bound cuts
(instruments.search_sql). The cells hold fewer instruments each: 分析 has 13,400 count rows instead of 9,900.

The empty term is made frequent: its postings are every live instrument, so a search without text but with a
filter the facet cube does not hold (vouchers, 原值, a chain) reads kept rows too.

A search without a facet filter or a chain (the commonest: 分析 alone, by any order, with 大型, vouchers or a 原值
bound) needs only each facet's counts on its own. search_term_marginals keeps them, per (term, restricted, value
class, vouchers, facet, value): 784 rows for 分析, summed in well under a millisecond, where the counts took 8.

An update that changes only an instrument's searched text (its institution renamed, a model or function text
edited) no longer deletes and rebuilds all its postings: only terms the text lost or gained move (renaming an
institution of 2,758 instruments at 100,000: 26 s -> 1.8 s).

The trigger functions are revision 0009's, with the cell's `large` (original_value >= 500000) replaced by the value
class and the marginals moved wherever the counts are: derived from its frozen text (each change asserted), so the
two cannot drift apart.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 02:00:00
"""

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# instruments.models.VALUE_CLASS_BOUNDS, frozen.
BOUNDS = "ARRAY[100000, 200000, 500000, 1000000, 2000000, 5000000, 10000000]::numeric[]"


def _revision_0009() -> ModuleType:
    """Revision 0009's module, for its function definitions and statements: frozen like every revision."""
    path = Path(__file__).with_name("2026-11-28-0100_frequent_terms_vouchers_chains.py")
    spec = importlib.util.spec_from_file_location("revision_0009_frequent_terms_vouchers_chains", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PREVIOUS = _revision_0009()
_LARGE_CELL = re.compile(r"\b([\w.]*)original_value >= 500000 AS large\b")
_LARGE = re.compile(r"\blarge\b")


def _by_value_class(sql: str) -> str:
    """`sql` of revision 0009 with the cell's large replaced by the value class."""
    sql, cells = _LARGE_CELL.subn(rf"width_bucket(\1original_value, {BOUNDS})::smallint AS value_class", sql)
    sql, columns = _LARGE.subn("value_class", sql)
    assert cells + columns > 0, "revision 0009's cells are not what they were"
    assert "500000" not in sql.replace(BOUNDS, "")
    return sql


KEY = _by_value_class(PREVIOUS.KEY)
CHAIN_KEY = _by_value_class(PREVIOUS.CHAIN_KEY)
POSTING_CELLS = _by_value_class(PREVIOUS.POSTING_CELLS)

MARGINAL_KEY = "term_id, restricted, value_class, vouchers, facet, value"
# instruments.search_sql.EVERYTHING: term, bigram, bigrams, pattern.
EVERYTHING = "'', NULL, '{}', '%'"


def _marginals_of(rows: str) -> str:
    """Rows of counts (key KEY, count n) as signed marginals: each counted once under each of its five facet values
    (category: its 大类)."""
    return (
        f"SELECT x.term_id, x.restricted, x.value_class, x.vouchers, m.facet, m.value, x.n AS d FROM ({rows}) AS x"
        " CROSS JOIN LATERAL (VALUES ('city', x.city_code::text), ('institution_kind', x.institution_kind),"
        " ('category', left(x.category_code, 2)), ('sharing_mode', x.sharing_mode), ('status', x.status))"
        " AS m(facet, value)"
    )


# Wherever revision 0009 adds deltas to the counts (CTEs terms_deltas .. terms_added), the marginals take the same
# deltas.
_TERMS_APPLIED = re.compile(r"terms_added AS \(\n.*?\n    \)", re.DOTALL)
MARGINALS_APPLIED = PREVIOUS._apply(
    "search_term_marginals", MARGINAL_KEY, _marginals_of("SELECT * FROM terms_deltas"), "marginals"
)
# search_terms_add: the counts it builds for new terms, returned and summed into marginals.
_COUNTS_BUILT = f"SELECT {KEY}, count(*) FROM came GROUP BY {KEY} ORDER BY {KEY}\n        )"
_COUNTS_AND_MARGINALS_BUILT = f"""SELECT {KEY}, count(*) FROM came GROUP BY {KEY} ORDER BY {KEY}
            RETURNING {KEY}, n
        ), marginals AS (
            INSERT INTO search_term_marginals ({MARGINAL_KEY}, n)
            SELECT {MARGINAL_KEY}, sum(d) FROM ({_marginals_of("SELECT * FROM counted")}) AS y
            GROUP BY {MARGINAL_KEY} ORDER BY {MARGINAL_KEY}
        )"""
_COUNTS_CLEARED = "DELETE FROM search_term_counts;\n"


def _with_marginals(function: str) -> str:
    """A function of revision 0009 (by value class) that also keeps the marginals."""
    function, applied = _TERMS_APPLIED.subn(lambda m: m.group(0) + "," + MARGINALS_APPLIED, function)
    built, cleared = function.count(_COUNTS_BUILT), function.count(_COUNTS_CLEARED)
    function = function.replace(_COUNTS_BUILT, _COUNTS_AND_MARGINALS_BUILT)
    function = function.replace(_COUNTS_CLEARED, _COUNTS_CLEARED + "    DELETE FROM search_term_marginals;\n")
    assert (applied, built, cleared) in ((0, 0, 0), (7, 0, 0), (0, 1, 0), (0, 0, 1)), (applied, built, cleared)
    return function


# Each kept-count statement updates the cells that exist and inserts the others. Revision 0009 found the others by
# an anti-join against the UPDATE's returned rows, which the planner, misjudging their number, ran as a nested loop
# over a CTE: a bulk edit of 500 instruments at 100,000 compared 21,742 new cells with 10,383 updated ones one by
# one (25 s). The table itself, as the statement sees it (before its own changes; writers are serialised by the
# lock), answers the same question through its primary key.
_CELLS_UPDATED = re.compile(r"NOT EXISTS \(SELECT FROM (terms|chains|marginals)_changed AS c WHERE")
_KEPT_TABLES = {"terms": "search_term_counts", "chains": "search_term_chain_counts", "marginals": "search_term_marginals"}


def _existing_cells(function: str) -> str:
    return _CELLS_UPDATED.sub(lambda m: f"NOT EXISTS (SELECT FROM {_KEPT_TABLES[m.group(1)]} AS c WHERE", function)


# An update that changes an instrument's searched text but neither its name nor anything counted (an institution
# renamed, a model or function text edited): revision 0009 deleted all its postings and built them again (renaming
# an institution of 2,758 instruments at 100,000 moved 110,000 postings: 26 s). Now only the postings of terms the
# new text no longer contains are deleted, and those of terms it newly contains added (the others, name_hit and all,
# stay as they are). A changed name or count still rebuilds.
_COUNTED_SAME = (
    f"({', '.join(f'n.{c}' for c in PREVIOUS.COUNTED.split(', '))})"
    f" IS NOT DISTINCT FROM ({', '.join(f'o.{c}' for c in PREVIOUS.COUNTED.split(', '))})"
)
REWORDED = (
    f"n.search_text IS DISTINCT FROM o.search_text AND n.name IS NOT DISTINCT FROM o.name AND {_COUNTED_SAME}"
)
_REBUILT = PREVIOUS.RETEXTED.replace("IS DISTINCT FROM (o.search_text, o.name))", f"IS DISTINCT FROM (o.search_text, o.name)\n               AND NOT ({REWORDED}))")
assert _REBUILT != PREVIOUS.RETEXTED
_UNMATCHED = f"""
    DELETE FROM search_term_postings AS p
    USING new_rows AS n JOIN old_rows AS o ON o.instrument_id = n.instrument_id, search_frequent_terms AS t
    WHERE {REWORDED} AND p.instrument_id = n.instrument_id AND t.id = p.term_id
      AND NOT (n.bigrams @> t.bigrams AND (t.bigram IS NOT NULL OR n.search_text LIKE t.pattern))
    RETURNING {PREVIOUS._returned("p")}"""
_NEWLY_MATCHED = PREVIOUS.CAME.replace("\n    RETURNING", "\n    ON CONFLICT (instrument_id, term_id) DO NOTHING\n    RETURNING")
assert _NEWLY_MATCHED.count("ON CONFLICT") == 1
_REWORDED_ROWS = f"(SELECT n.* FROM new_rows AS n JOIN old_rows AS o ON o.instrument_id = n.instrument_id WHERE {REWORDED})"


def _rebuilt_or_reworded(function: str) -> str:
    """search_terms_refresh of revision 0009 with its rebuild of retexted rows narrowed to those whose name or counts
    changed, followed by the two statements for the reworded ones."""
    gone = PREVIOUS._dynamic(
        f"WITH gone AS ({PREVIOUS.GONE.format(source=PREVIOUS.RETEXTED.format(side='o'))}), "
        + PREVIOUS._apply_both("gone", -1)
    )
    came = PREVIOUS._dynamic(
        f"WITH came AS ({PREVIOUS.CAME.format(source=PREVIOUS.RETEXTED.format(side='n'))}), "
        + PREVIOUS._apply_both("came", 1)
    )
    assert function.count(gone) == 1 and function.count(came) == 1
    reworded = [
        PREVIOUS._dynamic(f"WITH gone AS ({_UNMATCHED}), " + PREVIOUS._apply_both("gone", -1)),
        PREVIOUS._dynamic(
            f"WITH came AS ({_NEWLY_MATCHED.format(source=_REWORDED_ROWS)}), " + PREVIOUS._apply_both("came", 1)
        ),
    ]
    function = function.replace(gone, gone.replace(PREVIOUS.RETEXTED.format(side="o"), _REBUILT.format(side="o")))
    came_rebuilt = came.replace(PREVIOUS.RETEXTED.format(side="n"), _REBUILT.format(side="n"))
    return function.replace(came, came_rebuilt + "\n        " + "\n        ".join(reworded))


def _version_0010(function: str) -> str:
    if "FUNCTION search_terms_refresh()" in function:
        function = _rebuilt_or_reworded(function)
    return _existing_cells(_with_marginals(_by_value_class(function) if _LARGE.search(function) else function))


FUNCTIONS = [_version_0010(f) for f in PREVIOUS.FUNCTIONS]
# search_terms_refresh, search_terms_chains_refresh, search_terms_clear, search_terms_add
assert sum(f != g for f, g in zip(FUNCTIONS, PREVIOUS.FUNCTIONS, strict=True)) == 4
assert not any("_changed AS c WHERE" in f for f in FUNCTIONS)


def _rekey(old: str, new: str, new_type: sa.types.TypeEngine[bool] | sa.types.TypeEngine[int], cells: str) -> None:
    """Both kept-count tables recounted from the postings under a key with `new` in place of `old`."""
    for table, leading in (("search_term_counts", ["term_id"]), ("search_term_chain_counts", ["term_id", "chain_id"])):
        op.execute(f"DELETE FROM {table}")
        op.drop_constraint(f"pk_{table}", table, type_="primary")
        op.drop_column(table, old)
        op.add_column(table, sa.Column(new, new_type, nullable=False))
        op.create_primary_key(
            f"pk_{table}", table, [*leading, "restricted", new, "vouchers", *PREVIOUS.FACETS.split(", ")]
        )
    key = KEY if new == "value_class" else PREVIOUS.KEY
    chain_key = CHAIN_KEY if new == "value_class" else PREVIOUS.CHAIN_KEY
    _count_into("search_term_counts", key, "count(*)", cells)
    _count_into(
        "search_term_chain_counts",
        chain_key,
        "count(*)",
        f"SELECT p.*, c.chain_id FROM ({cells}) AS p CROSS JOIN LATERAL unnest(p.chain_ids) AS c(chain_id)",
    )


def _count_into(table: str, key: str, counted: str, rows: str) -> None:
    """`table` filled with `rows` counted per `key`, in key order so that each term's rows share pages (a search
    reads all of a term's)."""
    op.execute(
        f"INSERT INTO {table} ({key}, n) SELECT {key}, {counted} FROM ({rows}) AS x GROUP BY {key} ORDER BY {key}"
    )


def upgrade() -> None:
    # Writers already running finish under the old triggers; later ones wait, then run the new ones.
    op.execute(PREVIOUS.QUIESCE)
    op.execute(f"SELECT pg_advisory_xact_lock({PREVIOUS.CUBE_LOCK})")
    op.create_table(
        "search_term_marginals",
        sa.Column("term_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("value_class", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("vouchers", sa.Boolean(), nullable=False),
        sa.Column("facet", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.CheckConstraint("n >= 0", name=op.f("ck_search_term_marginals_n")),
        sa.PrimaryKeyConstraint(*MARGINAL_KEY.split(", "), name=op.f("pk_search_term_marginals")),
    )
    for statement in FUNCTIONS:
        op.execute(statement)
    # The empty term: every live instrument is a posting of it (its pattern matches any text, it has no bigrams to
    # contain); counted below with every other term.
    op.execute(f"INSERT INTO search_frequent_terms (term, bigram, bigrams, pattern) VALUES ({EVERYTHING})")
    op.execute("CREATE TEMPORARY TABLE added_rows ON COMMIT DROP AS SELECT * FROM search_frequent_terms WHERE term = ''")
    op.execute(f"WITH came AS ({PREVIOUS.POSTINGS_BUILD}) SELECT count(*) FROM came")
    op.execute("DROP TABLE added_rows")
    _rekey("large", "value_class", sa.SmallInteger(), POSTING_CELLS)
    _count_into("search_term_marginals", MARGINAL_KEY, "sum(d)", _marginals_of("SELECT * FROM search_term_counts"))


def downgrade() -> None:
    op.execute(PREVIOUS.QUIESCE)
    op.execute(f"SELECT pg_advisory_xact_lock({PREVIOUS.CUBE_LOCK})")
    for statement in PREVIOUS.FUNCTIONS:
        op.execute(statement)
    op.drop_table("search_term_marginals")
    op.execute(
        "DELETE FROM search_term_postings WHERE term_id = (SELECT id FROM search_frequent_terms WHERE term = '')"
    )
    op.execute("DELETE FROM search_frequent_terms WHERE term = ''")
    _rekey("value_class", "large", sa.Boolean(), PREVIOUS.POSTING_CELLS)
