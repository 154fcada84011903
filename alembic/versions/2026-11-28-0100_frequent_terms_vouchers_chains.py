"""frequent terms: kept rows also answer the voucher and industrial-chain filters

Revision 0008 keeps, for each frequent term, its postings and its counts per facet cell (by restricted and large), so
a one-term search for 分析 neither gathers nor groups its 43,000 matches. A search that also filtered by 接受创新券
or by an industrial chain still went the live way, and at 100,000 instruments that took 25–65 ms. Now:

- search_term_postings also carry `accepts_vouchers` and `chain_ids` (the instrument's chain ids, sorted): the page
  walk applies both filters while walking the term's index;
- search_term_counts are also split by `vouchers` (20% more rows for 分析: most cells hold one or two instruments);
- search_term_chain_counts hold the same counts per (term, chain): the posting counted once in each of its chains.

Chains live in instrument_chains, not in instrument_search: the triggers on instrument_search copy an instrument's
chains into its new postings, and triggers on instrument_chains rewrite `chain_ids` of the instrument's postings and
move the chain counts from the old ids to the new ones. The chain counts are derived from the postings alone (each
change counts what the postings held and hold), so they stay exact in whatever order a transaction, or a cascade
deleting an instrument with its chains, changes the two tables. Both take the facet cube's advisory lock first, as in
revision 0008; the rewrite reads the postings' old chain ids under that lock.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 01:00:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# booking.core.locks.lock_key("instrument_facet_counts"), as in revisions 0005 and 0008.
CUBE_LOCK = 1703965787853911030
LARGE = 500000  # instruments.models.KEPT_LARGE_THRESHOLD, as in revision 0008

FACETS = "city_code, institution_kind, category_code, sharing_mode, status"
CELL = f"restricted, large, vouchers, {FACETS}"
KEY = f"term_id, {CELL}"
CHAIN_KEY = f"term_id, chain_id, {CELL}"
# What a posting statement returns: its term, its cell (the key of the counts) and its chains.
RETURNED = (
    "{p}.term_id, {p}.restricted, {p}.original_value >= {large} AS large, {p}.accepts_vouchers AS vouchers,"
    " {p}.city_code, {p}.institution_kind, {p}.category_code, {p}.sharing_mode, {p}.status, {p}.chain_ids"
)


def _returned(alias: str) -> str:
    return RETURNED.format(p=alias, large=LARGE)


def _match(key: str) -> str:
    columns = [c.strip() for c in key.split(",")]
    return f"({', '.join(f'c.{c}' for c in columns)}) = ({', '.join(f'd.{c}' for c in columns)})"


def _apply(table: str, key: str, deltas: str, name: str) -> str:
    """CTEs adding signed counts (`deltas`: rows of `key` and d = +1 or -1) to `table`: existing cells are updated
    and new ones inserted in the one statement, under the cube's advisory lock."""
    columns = ", ".join(f"c.{c.strip()}" for c in key.split(","))
    return f"""
    {name}_deltas AS (
        SELECT {key}, sum(d) AS n FROM ({deltas}) AS x GROUP BY {key} HAVING sum(d) <> 0
    ), {name}_changed AS (
        UPDATE {table} AS c SET n = c.n + d.n FROM {name}_deltas AS d WHERE {_match(key)} RETURNING {columns}
    ), {name}_added AS (
        INSERT INTO {table} ({key}, n)
        SELECT {key}, d.n FROM {name}_deltas AS d WHERE NOT EXISTS (SELECT FROM {name}_changed AS c WHERE {_match(key)})
    )"""


def _apply_both(source: str, sign: int) -> str:
    """The counts and the chain counts of the postings a CTE `source` returned (RETURNED), each counted `sign`."""
    return (
        _apply("search_term_counts", KEY, f"SELECT {KEY}, {sign} AS d FROM {source}", "terms")
        + ","
        + _apply(
            "search_term_chain_counts",
            CHAIN_KEY,
            f"SELECT term_id, unnest(chain_ids) AS chain_id, {CELL}, {sign} AS d FROM {source}",
            "chains",
        )
        + " SELECT 1"
    )


# The chain ids of instrument `r`, sorted: what its postings carry.
CHAINS_OF = (
    "coalesce((SELECT array_agg(ic.chain_id ORDER BY ic.chain_id) FROM instrument_chains AS ic"
    " WHERE ic.instrument_id = {r}.instrument_id), '{{}}')"
)
POSTING_COLUMNS = f"term_id, instrument_id, name_hit, restricted, original_value, accepts_vouchers, chain_ids, {FACETS}"
POSTING_VALUES = (
    "t.id, r.instrument_id, lower(r.name) LIKE t.pattern, r.restricted, r.original_value, r.accepts_vouchers, "
    + CHAINS_OF.format(r="r")
    + ", r.city_code, r.institution_kind, r.category_code, r.sharing_mode, r.status"
)


def _braced(sql: str) -> str:
    """`sql` inside a template that is formatted again: its braces (array literals) escaped."""
    return sql.replace("{", "{{").replace("}", "}}")


# Postings of the frequent terms among a statement's rows (`source`, instrument_search-shaped): two-character terms
# through the row's bigrams (a hash join), longer ones by testing each against the row (bigram containment first,
# then LIKE).
CAME = f"""
    INSERT INTO search_term_postings ({POSTING_COLUMNS})
    SELECT {_braced(POSTING_VALUES)}
    FROM {{source}} AS r CROSS JOIN LATERAL unnest(r.bigrams) AS u(bigram)
    JOIN search_frequent_terms AS t ON t.bigram = u.bigram
    UNION ALL
    SELECT {_braced(POSTING_VALUES)}
    FROM {{source}} AS r JOIN search_frequent_terms AS t
      ON t.bigram IS NULL AND r.bigrams @> t.bigrams AND r.search_text LIKE t.pattern
    RETURNING {_returned("search_term_postings")}"""

GONE = f"""
    DELETE FROM search_term_postings AS p USING {{source}} AS o WHERE p.instrument_id = o.instrument_id
    RETURNING {_returned("p")}"""

# Rows of an update whose searched text or name changed: their postings are deleted and built again.
RETEXTED = """(SELECT {side}.* FROM new_rows AS n JOIN old_rows AS o ON o.instrument_id = n.instrument_id
               WHERE (n.search_text, n.name) IS DISTINCT FROM (o.search_text, o.name))"""
COUNTED = "restricted, original_value, accepts_vouchers, city_code, institution_kind, category_code, sharing_mode, status"
# Rows of an update whose text and name stayed but whose value, restriction, vouchers or a facet changed: their
# postings are updated in place, each count moves from the old cell to the new one (the chains stay).
MOVED = f"""
    UPDATE search_term_postings AS p
    SET restricted = n.restricted, original_value = n.original_value, accepts_vouchers = n.accepts_vouchers,
        city_code = n.city_code, institution_kind = n.institution_kind, category_code = n.category_code,
        sharing_mode = n.sharing_mode, status = n.status
    FROM new_rows AS n JOIN old_rows AS o ON o.instrument_id = n.instrument_id
    WHERE p.instrument_id = n.instrument_id AND (n.search_text, n.name) IS NOT DISTINCT FROM (o.search_text, o.name)
      AND ({", ".join(f"n.{c}" for c in COUNTED.split(", "))}) IS DISTINCT FROM ({", ".join(f"o.{c}" for c in COUNTED.split(", "))})
    RETURNING p.term_id, p.chain_ids,
              {", ".join(f"n.{c} AS n_{c}" for c in COUNTED.split(", "))},
              {", ".join(f"o.{c} AS o_{c}" for c in COUNTED.split(", "))}"""


def _moved_side(side: str, sign: int) -> str:
    return (
        f"SELECT term_id, chain_ids, {side}_restricted AS restricted, {side}_original_value >= {LARGE} AS large,"
        f" {side}_accepts_vouchers AS vouchers, "
        + ", ".join(f"{side}_{c} AS {c}" for c in FACETS.split(", "))
        + f", {sign} AS d FROM moved"
    )


MOVED_DELTAS = _moved_side("n", 1) + " UNION ALL " + _moved_side("o", -1)
MOVED_STATEMENT = (
    f"WITH moved AS ({MOVED}), signed AS ({MOVED_DELTAS}),"
    + _apply("search_term_counts", KEY, f"SELECT {KEY}, d FROM signed", "terms")
    + ","
    + _apply(
        "search_term_chain_counts", CHAIN_KEY, f"SELECT term_id, unnest(chain_ids) AS chain_id, {CELL}, d FROM signed",
        "chains",
    )
    + " SELECT 1"
)

# The instruments whose chains a statement on instrument_chains changed (`changed`: its transition tables): each of
# their postings takes the instrument's chain ids now, and its chain counts move from the ids it held. `q` reads the
# postings' old ids; under the cube's lock nothing else changes them before this statement does.
RECHAINED = f"""
    WITH affected AS (
        SELECT a.instrument_id, {_braced(CHAINS_OF.format(r="a"))} AS chain_ids
        FROM (SELECT DISTINCT instrument_id FROM ({{changed}}) AS x) AS a
    ), rewritten AS (
        UPDATE search_term_postings AS p SET chain_ids = a.chain_ids
        FROM affected AS a JOIN search_term_postings AS q ON q.instrument_id = a.instrument_id
        WHERE p.instrument_id = q.instrument_id AND p.term_id = q.term_id AND q.chain_ids IS DISTINCT FROM a.chain_ids
        RETURNING {_returned("q")}, a.chain_ids AS new_chain_ids
    ), signed AS (
        SELECT term_id, unnest(new_chain_ids) AS chain_id, {CELL}, 1 AS d FROM rewritten
        UNION ALL
        SELECT term_id, unnest(chain_ids), {CELL}, -1 FROM rewritten
    ),{_apply("search_term_chain_counts", CHAIN_KEY, "SELECT * FROM signed", "chains")} SELECT 1"""

# Postings of newly added terms (`added_rows`) over every live instrument: each term finds its rows through the
# bigram GIN index (the same lookup a live search makes), in index order so the rows of one term share pages.
POSTINGS_BUILD = f"""
    INSERT INTO search_term_postings ({POSTING_COLUMNS})
    SELECT {POSTING_VALUES}
    FROM added_rows AS t CROSS JOIN LATERAL (
        SELECT * FROM instrument_search AS s
        WHERE s.bigrams @> t.bigrams AND (t.bigram IS NOT NULL OR s.search_text LIKE t.pattern)) AS r
    ORDER BY 1, 3 DESC, 2 DESC
    RETURNING {_returned("search_term_postings")}"""


def _dynamic(statement: str) -> str:
    """The statement run through EXECUTE: planned afresh on each call, with the transition table's true size.
    (A plan plpgsql caches after a 4,000-row update joins the whole postings table for every later one-row edit.)"""
    return f"EXECUTE $statement${statement}$statement$;"


SEARCHED = f"instrument_id, name, search_text, {COUNTED}"


def _unless_changed(columns: str) -> str:
    """The start of a trigger body: return at once for an empty statement or an update that changes none of
    `columns`, else take the cube's lock (before reading the frequent set: a promotion running now has either
    committed or will see these rows) and return if no term is frequent. (Nested: a transition table the trigger
    does not have may not even be named in a condition.)"""
    return f"""IF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT {columns} FROM new_rows EXCEPT ALL SELECT {columns} FROM old_rows) THEN
            RETURN NULL;
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT FROM new_rows) THEN
            RETURN NULL;
        END IF;
    ELSIF NOT EXISTS (SELECT FROM old_rows) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock({CUBE_LOCK});
    IF NOT EXISTS (SELECT FROM search_frequent_terms) THEN
        RETURN NULL;
    END IF;"""

def _revision_0008() -> ModuleType:
    """Revision 0008's module, for its function definitions (restored on downgrade): frozen like every revision."""
    path = Path(__file__).with_name("2026-11-27-2100_frequent_terms.py")
    spec = importlib.util.spec_from_file_location("revision_0008_frequent_terms", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _terms_add() -> str:
    """search_terms_add() as revision 0008 wrote it, but its build step also writes the chain counts: the new
    postings (POSTINGS_BUILD, with vouchers and chains) counted per cell and per (chain, cell)."""
    previous = _revision_0008()
    [old] = [f for f in previous.FUNCTIONS if "FUNCTION search_terms_add(" in f]
    old_build = (
        f"WITH came AS ({previous.POSTINGS_BUILD.format(facets=previous.FACETS, terms='added_rows', large=LARGE)})\n"
        f"        INSERT INTO search_term_counts ({previous.KEY}, n) SELECT {previous.KEY}, count(*) FROM came"
        f" GROUP BY {previous.KEY} ORDER BY {previous.KEY};"
    )
    cell = ", ".join(f"came.{c.strip()}" for c in CELL.split(","))
    new_build = f"""WITH came AS ({POSTINGS_BUILD}), counted AS (
            INSERT INTO search_term_counts ({KEY}, n)
            SELECT {KEY}, count(*) FROM came GROUP BY {KEY} ORDER BY {KEY}
        )
        INSERT INTO search_term_chain_counts ({CHAIN_KEY}, n)
        SELECT came.term_id, c.chain_id, {cell}, count(*)
        FROM came CROSS JOIN LATERAL unnest(came.chain_ids) AS c(chain_id)
        GROUP BY came.term_id, c.chain_id, {cell}
        ORDER BY 1, 2;"""
    assert old.count(old_build) == 1, "revision 0008's build step is not where it was"
    return old.replace(old_build, new_build).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


FUNCTIONS = [
    f"""
CREATE OR REPLACE FUNCTION search_terms_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Nothing to do for an empty statement (the search table's upsert fires empty insert and update triggers) or
    -- an edit that changes neither the name, the searched text, the value, vouchers nor a facet (a fee, a
    -- contact): return before the lock, which every catalogue writer would otherwise hold until commit.
    {_unless_changed(SEARCHED)}
    IF TG_OP = 'INSERT' THEN
        {_dynamic(f"WITH came AS ({CAME.format(source='new_rows')}), " + _apply_both("came", 1))}
    ELSIF TG_OP = 'DELETE' THEN
        {_dynamic(f"WITH gone AS ({GONE.format(source='old_rows')}), " + _apply_both("gone", -1))}
    ELSE
        {_dynamic(MOVED_STATEMENT)}
        -- Deleted, then added again: two statements, because the sub-statements of one run in no guaranteed order
        -- and an insert before the delete would collide with the old posting.
        {_dynamic(f"WITH gone AS ({GONE.format(source=RETEXTED.format(side='o'))}), " + _apply_both("gone", -1))}
        {_dynamic(f"WITH came AS ({CAME.format(source=RETEXTED.format(side='n'))}), " + _apply_both("came", 1))}
    END IF;
    RETURN NULL;
END
$$
""",
    f"""
CREATE OR REPLACE FUNCTION search_terms_chains_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_unless_changed('*')}
    IF TG_OP = 'INSERT' THEN
        {_dynamic(RECHAINED.format(changed="SELECT instrument_id FROM new_rows"))}
    ELSIF TG_OP = 'DELETE' THEN
        {_dynamic(RECHAINED.format(changed="SELECT instrument_id FROM old_rows"))}
    ELSE
        {_dynamic(RECHAINED.format(changed="SELECT instrument_id FROM new_rows UNION ALL SELECT instrument_id FROM old_rows"))}
    END IF;
    RETURN NULL;
END
$$
""",
    f"""
CREATE OR REPLACE FUNCTION search_terms_chains_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({CUBE_LOCK});
    UPDATE search_term_postings SET chain_ids = '{{}}' WHERE chain_ids <> '{{}}';
    DELETE FROM search_term_chain_counts;
    RETURN NULL;
END
$$
""",
    f"""
CREATE OR REPLACE FUNCTION search_terms_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({CUBE_LOCK});
    DELETE FROM search_term_postings;
    DELETE FROM search_term_counts;
    DELETE FROM search_term_chain_counts;
    RETURN NULL;
END
$$
""",
    _terms_add(),
]

CHAIN_TRIGGERS = [
    "CREATE TRIGGER search_terms_chains_insert AFTER INSERT ON instrument_chains REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION search_terms_chains_refresh()",
    "CREATE TRIGGER search_terms_chains_update AFTER UPDATE ON instrument_chains"
    " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT"
    " EXECUTE FUNCTION search_terms_chains_refresh()",
    "CREATE TRIGGER search_terms_chains_delete AFTER DELETE ON instrument_chains REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION search_terms_chains_refresh()",
    "CREATE TRIGGER search_terms_chains_truncate AFTER TRUNCATE ON instrument_chains"
    " FOR EACH STATEMENT EXECUTE FUNCTION search_terms_chains_clear()",
]

# The counts of every frequent term, recounted from the postings (the upgrade and the downgrade rebuild them).
RECOUNT = "INSERT INTO search_term_counts ({key}, n) SELECT {key}, count(*) FROM ({postings}) AS p GROUP BY {key}"
POSTING_CELLS = (
    f"SELECT term_id, restricted, original_value >= {LARGE} AS large, accepts_vouchers AS vouchers, chain_ids, {FACETS}"
    " FROM search_term_postings"
)


# Taken first by the upgrade and the downgrade, until commit: writers already running finish under the old triggers
# and tables, later ones wait and then run the new ones. (Without it a writer waiting on the advisory lock would run
# the other revision's trigger body against these tables, and a chain linked between the backfill and the new
# triggers would keep its old chain ids.)
QUIESCE = "LOCK TABLE instruments, instrument_search, instrument_chains IN SHARE ROW EXCLUSIVE MODE"


def upgrade() -> None:
    op.execute(QUIESCE)
    op.execute(f"SELECT pg_advisory_xact_lock({CUBE_LOCK})")
    # ### commands auto generated by Alembic, then reviewed ###
    op.add_column("search_term_postings", sa.Column("accepts_vouchers", sa.Boolean(), nullable=True))
    op.add_column("search_term_postings", sa.Column("chain_ids", postgresql.ARRAY(sa.Integer()), nullable=True))
    op.create_table(
        "search_term_chain_counts",
        sa.Column("term_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("chain_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("large", sa.Boolean(), nullable=False),
        sa.Column("vouchers", sa.Boolean(), nullable=False),
        sa.Column("city_code", sa.String(length=6), nullable=False),
        sa.Column("institution_kind", sa.Text(), nullable=False),
        sa.Column("category_code", sa.String(length=6), nullable=False),
        sa.Column("sharing_mode", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.CheckConstraint("n >= 0", name=op.f("ck_search_term_chain_counts_n")),
        sa.PrimaryKeyConstraint(
            "term_id",
            "chain_id",
            "restricted",
            "large",
            "vouchers",
            "city_code",
            "institution_kind",
            "category_code",
            "sharing_mode",
            "status",
            name=op.f("pk_search_term_chain_counts"),
        ),
    )
    # ### end Alembic commands ###
    op.execute(
        "UPDATE search_term_postings AS p SET accepts_vouchers = s.accepts_vouchers, chain_ids = "
        + CHAINS_OF.format(r="s")
        + " FROM instrument_search AS s WHERE s.instrument_id = p.instrument_id"
    )
    op.alter_column("search_term_postings", "accepts_vouchers", nullable=False)
    op.alter_column("search_term_postings", "chain_ids", nullable=False)
    # The counts gain a key column: recounted from the postings.
    op.execute("DELETE FROM search_term_counts")
    op.drop_constraint("pk_search_term_counts", "search_term_counts", type_="primary")
    op.add_column("search_term_counts", sa.Column("vouchers", sa.Boolean(), nullable=False))
    op.create_primary_key(
        "pk_search_term_counts",
        "search_term_counts",
        ["term_id", "restricted", "large", "vouchers", *FACETS.split(", ")],
    )
    op.execute(RECOUNT.format(key=KEY, postings=POSTING_CELLS))
    op.execute(
        f"INSERT INTO search_term_chain_counts ({CHAIN_KEY}, n) SELECT {CHAIN_KEY}, count(*)"
        f" FROM (SELECT p.*, c.chain_id FROM ({POSTING_CELLS}) AS p CROSS JOIN LATERAL unnest(p.chain_ids) AS c(chain_id))"
        f" AS x GROUP BY {CHAIN_KEY}"
    )
    for statement in FUNCTIONS + CHAIN_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    op.execute(QUIESCE)
    op.execute(f"SELECT pg_advisory_xact_lock({CUBE_LOCK})")
    for trigger in (
        "search_terms_chains_truncate",
        "search_terms_chains_delete",
        "search_terms_chains_update",
        "search_terms_chains_insert",
    ):
        op.execute(f"DROP TRIGGER {trigger} ON instrument_chains")
    op.execute("DROP FUNCTION search_terms_chains_refresh()")
    op.execute("DROP FUNCTION search_terms_chains_clear()")
    previous = _revision_0008()
    for statement in previous.FUNCTIONS:
        if "search_terms_candidates" not in statement:  # unchanged by this revision
            op.execute(statement.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute("DELETE FROM search_term_counts")
    op.drop_constraint("pk_search_term_counts", "search_term_counts", type_="primary")
    op.drop_column("search_term_counts", "vouchers")
    op.create_primary_key(
        "pk_search_term_counts", "search_term_counts", ["term_id", "restricted", "large", *FACETS.split(", ")]
    )
    old_key = f"term_id, restricted, large, {FACETS}"
    op.execute(RECOUNT.format(key=old_key, postings=POSTING_CELLS))
    # ### commands auto generated by Alembic, then reviewed ###
    op.drop_table("search_term_chain_counts")
    op.drop_column("search_term_postings", "chain_ids")
    op.drop_column("search_term_postings", "accepts_vouchers")
    # ### end Alembic commands ###
