"""frequent terms: kept postings and facet counts for the terms that match thousands of instruments

A one-term search finds its matches through the bigram GIN index on instrument_search, then ranks a page and counts
the facets over all of them. That is quick for a term with a few thousand matches, but a common one (分析 is in 43%
of a 100,000-instrument catalogue, 分析仪 in 13%) makes every search gather and group tens of thousands of rows
twice: 20 to 80 ms on two cores. For the terms in search_frequent_terms, triggers on instrument_search keep two
derived tables exact in the writing transaction:

- search_term_postings: one row per (frequent term, live instrument whose searched text contains it) with
  `name_hit` (the term is in the instrument's name: what relevance ranks first), restricted, the value and the five
  facet columns; its index (term_id, name_hit DESC, instrument_id DESC) hands out a relevance-ordered page with the
  facet filters applied while walking, without gathering anything, (term_id, original_value, instrument_id) a page
  by value; and a query that also filters by value counts over the term's postings alone, narrow rows side by side;
- search_term_counts: for each frequent term, the count of live instruments in each cell of the five facets by
  restricted and large (原值 ≥ 50万元); the total and every facet of a one-term query, also one filtered to large
  instruments, are sums over a few thousand rows.

A term matches a row exactly as the live search decides it: a two-character term (`bigram` set) when the row's
bigrams contain it, a longer one when they contain all of its bigrams and the searched text contains it (LIKE with
the escaped `pattern`). Terms are stored lowercased, as the searched text is.

Which terms are frequent is data: search_terms_candidates(min_rows, length) lists the substrings of that many
characters (within a word, without characters outside the Basic Multilingual Plane) found in at least min_rows live
instruments, and search_terms_add(terms) adds terms and builds their rows from the instruments there are; the
`promote_frequent_terms` job runs them length by length and batch by batch, the demo seed too. A term
is never demoted automatically: its rows stay exact, only no longer needed. (Postings and counts carry no foreign
key to their term: a promotion writes millions of them at 100,000 instruments, and a key check per row doubles
that; to drop a term, delete its postings and counts with it.)

Concurrency: the triggers and the promotion take the facet cube's transaction-scoped advisory lock before they
read the frequent set, so a promotion sees every instrument row committed before it and a writer after it sees the
promoted term; counts are updated and inserted in one statement under that lock, like the cube's.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# booking.core.locks.lock_key("instrument_facet_counts"), as in revision 0005.
CUBE_LOCK = 1703965787853911030

FACETS = "city_code, institution_kind, category_code, sharing_mode, status"
# The kept counts also split by `large` at the national definition of a large instrument (原值 ≥ 50万元,
# instruments.models.KEPT_LARGE_THRESHOLD), so the 大型 filter, the catalogue's common value filter, is answered
# from them too.
LARGE = 500000
KEY = f"term_id, restricted, large, {FACETS}"
KEY_MATCH = (
    "(c.term_id, c.restricted, c.large, c.city_code, c.institution_kind, c.category_code, c.sharing_mode, c.status)"
    " = (d.term_id, d.restricted, d.large, d.city_code, d.institution_kind, d.category_code, d.sharing_mode, d.status)"
)

# Postings of the frequent terms (`terms`: rows of search_frequent_terms) among a statement's rows (`source`,
# instrument_search-shaped): two-character terms through the row's bigrams (a hash join), longer ones by testing
# each against the row (bigram containment first, then LIKE).
POSTINGS_OF = """
    INSERT INTO search_term_postings (term_id, instrument_id, name_hit, restricted, original_value, {facets})
    SELECT t.id, r.instrument_id, lower(r.name) LIKE t.pattern, r.restricted, r.original_value, r.city_code,
           r.institution_kind, r.category_code, r.sharing_mode, r.status
    FROM {source} AS r CROSS JOIN LATERAL unnest(r.bigrams) AS u(bigram) JOIN {terms} AS t ON t.bigram = u.bigram
    UNION ALL
    SELECT t.id, r.instrument_id, lower(r.name) LIKE t.pattern, r.restricted, r.original_value, r.city_code,
           r.institution_kind, r.category_code, r.sharing_mode, r.status
    FROM {source} AS r JOIN {terms} AS t
      ON t.bigram IS NULL AND r.bigrams @> t.bigrams AND r.search_text LIKE t.pattern
    RETURNING term_id, restricted, original_value >= {large} AS large, {facets}"""

# Adds signed posting counts (`deltas`: rows of the key and d = +1 or -1) to search_term_counts: existing cells
# are updated and new ones inserted in one statement, under the cube's advisory lock.
COUNTS_APPLY = f"""
    deltas AS (
        SELECT {KEY}, sum(d) AS n FROM ({{deltas}}) AS x GROUP BY {KEY} HAVING sum(d) <> 0
    ), changed AS (
        UPDATE search_term_counts AS c SET n = c.n + d.n FROM deltas AS d WHERE {KEY_MATCH}
        RETURNING c.term_id, c.restricted, c.large, c.city_code, c.institution_kind, c.category_code, c.sharing_mode, c.status
    )
    INSERT INTO search_term_counts ({KEY}, n)
    SELECT {KEY}, d.n FROM deltas AS d WHERE NOT EXISTS (SELECT FROM changed AS c WHERE {KEY_MATCH})"""

# Postings of newly added terms (`terms`) over every live instrument: each term finds its rows through the bigram
# GIN index (the same lookup a live search makes), in index order so the rows of one term share pages.
POSTINGS_BUILD = """
    INSERT INTO search_term_postings (term_id, instrument_id, name_hit, restricted, original_value, {facets})
    SELECT t.id, r.instrument_id, lower(r.name) LIKE t.pattern, r.restricted, r.original_value, r.city_code,
           r.institution_kind, r.category_code, r.sharing_mode, r.status
    FROM {terms} AS t CROSS JOIN LATERAL (
        SELECT * FROM instrument_search AS s
        WHERE s.bigrams @> t.bigrams AND (t.bigram IS NOT NULL OR s.search_text LIKE t.pattern)) AS r
    ORDER BY 1, 3 DESC, 2 DESC
    RETURNING term_id, restricted, original_value >= {large} AS large, {facets}"""

# Rows of an update whose searched text or name changed: their postings are deleted and built again.
RETEXTED = """(SELECT {side}.* FROM new_rows AS n JOIN old_rows AS o ON o.instrument_id = n.instrument_id
               WHERE (n.search_text, n.name) IS DISTINCT FROM (o.search_text, o.name))"""
CAME = POSTINGS_OF.format(facets=FACETS, source="{source}", terms="search_frequent_terms", large=LARGE)
GONE = f"""
    DELETE FROM search_term_postings AS p USING {{source}} AS o WHERE p.instrument_id = o.instrument_id
    RETURNING p.term_id, p.restricted, p.original_value >= {LARGE} AS large, p.city_code, p.institution_kind,
              p.category_code, p.sharing_mode, p.status"""
# Rows of an update whose text and name stayed but whose value, restriction or a facet changed: their postings are
# updated in place, each count moves from the old cell to the new one.
MOVED = f"""
    UPDATE search_term_postings AS p
    SET restricted = n.restricted, original_value = n.original_value, city_code = n.city_code,
        institution_kind = n.institution_kind, category_code = n.category_code, sharing_mode = n.sharing_mode,
        status = n.status
    FROM new_rows AS n JOIN old_rows AS o ON o.instrument_id = n.instrument_id
    WHERE p.instrument_id = n.instrument_id AND (n.search_text, n.name) IS NOT DISTINCT FROM (o.search_text, o.name)
      AND (n.restricted, n.original_value, n.city_code, n.institution_kind, n.category_code, n.sharing_mode, n.status)
          IS DISTINCT FROM
          (o.restricted, o.original_value, o.city_code, o.institution_kind, o.category_code, o.sharing_mode, o.status)
    RETURNING p.term_id,
              n.restricted AS n_restricted, n.original_value >= {LARGE} AS n_large, n.city_code AS n_city_code,
              n.institution_kind AS n_institution_kind, n.category_code AS n_category_code,
              n.sharing_mode AS n_sharing_mode, n.status AS n_status,
              o.restricted AS o_restricted, o.original_value >= {LARGE} AS o_large, o.city_code AS o_city_code,
              o.institution_kind AS o_institution_kind, o.category_code AS o_category_code,
              o.sharing_mode AS o_sharing_mode, o.status AS o_status"""
def _moved_key(side: str) -> str:
    columns = ("restricted", "large", "city_code", "institution_kind", "category_code", "sharing_mode", "status")
    return "term_id, " + ", ".join(f"{side}_{c} AS {c}" for c in columns)


MOVED_DELTAS = f"SELECT {_moved_key('n')}, 1 AS d FROM moved UNION ALL SELECT {_moved_key('o')}, -1 FROM moved"


def _dynamic(statement: str) -> str:
    """The statement run through EXECUTE: planned afresh on each call, with the transition table's true size.
    (A plan plpgsql caches after a 4,000-row update joins the whole postings table for every later one-row edit.)"""
    return f"EXECUTE $statement${statement}$statement$;"


FUNCTIONS = [
    f"""
CREATE FUNCTION search_terms_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Nothing to do for an empty statement (the search table's upsert fires empty insert and update triggers) or
    -- an edit that changes neither the name, the searched text, the value nor a facet (a fee, a contact): return
    -- before the lock, which every catalogue writer would otherwise hold until commit.
    -- (Nested: a transition table that the trigger does not have may not even be named in a condition.)
    IF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT instrument_id, name, search_text, restricted, original_value, {FACETS} FROM new_rows
                       EXCEPT ALL
                       SELECT instrument_id, name, search_text, restricted, original_value, {FACETS} FROM old_rows) THEN
            RETURN NULL;
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT FROM new_rows) THEN
            RETURN NULL;
        END IF;
    ELSIF NOT EXISTS (SELECT FROM old_rows) THEN
        RETURN NULL;
    END IF;
    -- Before reading the frequent set: a promotion running now has either committed or will see these rows.
    PERFORM pg_advisory_xact_lock({CUBE_LOCK});
    IF NOT EXISTS (SELECT FROM search_frequent_terms) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        {_dynamic(f"WITH came AS ({CAME.format(source='new_rows')}), " + COUNTS_APPLY.format(deltas=f"SELECT {KEY}, 1 AS d FROM came"))}
    ELSIF TG_OP = 'DELETE' THEN
        {_dynamic(f"WITH gone AS ({GONE.format(source='old_rows')}), " + COUNTS_APPLY.format(deltas=f"SELECT {KEY}, -1 AS d FROM gone"))}
    ELSE
        {_dynamic(f"WITH moved AS ({MOVED}), " + COUNTS_APPLY.format(deltas=MOVED_DELTAS))}
        -- Deleted, then added again: two statements, because the sub-statements of one run in no guaranteed order
        -- and an insert before the delete would collide with the old posting.
        {_dynamic(f"WITH gone AS ({GONE.format(source=RETEXTED.format(side='o'))}), " + COUNTS_APPLY.format(deltas=f"SELECT {KEY}, -1 AS d FROM gone"))}
        {_dynamic(f"WITH came AS ({CAME.format(source=RETEXTED.format(side='n'))}), " + COUNTS_APPLY.format(deltas=f"SELECT {KEY}, 1 AS d FROM came"))}
    END IF;
    RETURN NULL;
END
$$
""",
    f"""
CREATE FUNCTION search_terms_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({CUBE_LOCK});
    DELETE FROM search_term_postings;
    DELETE FROM search_term_counts;
    RETURN NULL;
END
$$
""",
    rf"""
CREATE FUNCTION search_terms_add(terms text[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    added integer;
BEGIN
    PERFORM pg_advisory_xact_lock({CUBE_LOCK});
    -- Lowercased as the searched text is; what no search can ask for is skipped: one character, whitespace,
    -- characters outside the Basic Multilingual Plane (see instruments.rules.frequent_key).
    CREATE TEMPORARY TABLE added_terms ON COMMIT DROP AS
        WITH candidates AS (SELECT DISTINCT lower(t) AS term FROM unnest(terms) AS t)
        SELECT c.term FROM candidates AS c
        WHERE char_length(c.term) >= 2 AND c.term !~ '\s' AND c.term !~ '[\U00010000-\U0010FFFF]'
          AND NOT EXISTS (SELECT FROM search_frequent_terms AS f WHERE f.term = c.term);
    INSERT INTO search_frequent_terms (term, bigram, bigrams, pattern)
    SELECT a.term, CASE WHEN char_length(a.term) = 2 THEN (text_bigram_codes(a.term))[1] END,
           text_bigram_codes(a.term), '%' || replace(replace(replace(a.term, '\', '\\'), '%', '\%'), '_', '\_') || '%'
    FROM added_terms AS a ORDER BY a.term;
    GET DIAGNOSTICS added = ROW_COUNT;
    IF added > 0 THEN
        CREATE TEMPORARY TABLE added_rows ON COMMIT DROP AS
            SELECT f.* FROM search_frequent_terms AS f JOIN added_terms AS a ON a.term = f.term;
        WITH came AS ({POSTINGS_BUILD.format(facets=FACETS, terms="added_rows", large=LARGE)})
        INSERT INTO search_term_counts ({KEY}, n) SELECT {KEY}, count(*) FROM came GROUP BY {KEY} ORDER BY {KEY};
        DROP TABLE added_rows;
    END IF;
    DROP TABLE added_terms;
    RETURN added;
END
$$
""",
    r"""
CREATE FUNCTION search_terms_candidates(min_rows integer, term_length integer)
RETURNS TABLE (term text, instruments bigint, known boolean) LANGUAGE sql STABLE AS $$
    -- The substrings of term_length characters within a word of the searched text that are found in at least
    -- min_rows live instruments (counted once per instrument), and whether each is a frequent term already. Left
    -- out: what a search never looks up in the kept rows (characters outside the Basic Multilingual Plane, cased
    -- letters beyond ASCII, see instruments.rules.frequent_key).
    SELECT c.term, c.instruments, EXISTS (SELECT FROM search_frequent_terms AS f WHERE f.term = c.term)
    FROM (
        SELECT g.term, count(*) AS instruments FROM (
            SELECT DISTINCT s.instrument_id, substr(w.word, i, term_length) AS term
            FROM instrument_search AS s
            CROSS JOIN LATERAL regexp_split_to_table(s.search_text, '\s+') AS w(word)
            CROSS JOIN LATERAL generate_series(1, char_length(w.word) - term_length + 1) AS i
        ) AS g
        GROUP BY g.term HAVING count(*) >= min_rows
    ) AS c
    WHERE c.term !~ '[\U00010000-\U0010FFFF]'
      AND lower(regexp_replace(c.term, '[\x01-\x7f]', '', 'g')) = upper(regexp_replace(c.term, '[\x01-\x7f]', '', 'g'))
$$
""",
]

TRIGGERS = [
    "CREATE TRIGGER search_terms_insert AFTER INSERT ON instrument_search REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION search_terms_refresh()",
    "CREATE TRIGGER search_terms_update AFTER UPDATE ON instrument_search"
    " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION search_terms_refresh()",
    "CREATE TRIGGER search_terms_delete AFTER DELETE ON instrument_search REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION search_terms_refresh()",
    "CREATE TRIGGER search_terms_truncate AFTER TRUNCATE ON instrument_search"
    " FOR EACH STATEMENT EXECUTE FUNCTION search_terms_clear()",
]


def upgrade() -> None:
    # ### commands auto generated by Alembic, then reviewed ###
    op.create_table(
        "search_frequent_terms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("term", sa.Text(), nullable=False),
        sa.Column("bigram", sa.Integer(), nullable=True),
        sa.Column("bigrams", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("pattern", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_frequent_terms")),
        sa.UniqueConstraint("term", name=op.f("uq_search_frequent_terms_term")),
        sa.UniqueConstraint("bigram", name=op.f("uq_search_frequent_terms_bigram")),
    )
    op.create_table(
        "search_term_postings",
        sa.Column("instrument_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("term_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name_hit", sa.Boolean(), nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("original_value", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("city_code", sa.String(length=6), nullable=False),
        sa.Column("institution_kind", sa.Text(), nullable=False),
        sa.Column("category_code", sa.String(length=6), nullable=False),
        sa.Column("sharing_mode", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("instrument_id", "term_id", name=op.f("pk_search_term_postings")),
    )
    op.create_index(
        "ix_search_term_postings_value",
        "search_term_postings",
        ["term_id", "original_value", "instrument_id"],
        unique=False,
    )
    op.create_index(
        "ix_search_term_postings_page",
        "search_term_postings",
        ["term_id", sa.text("name_hit DESC"), sa.text("instrument_id DESC")],
        unique=False,
    )
    op.create_table(
        "search_term_counts",
        sa.Column("term_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("large", sa.Boolean(), nullable=False),
        sa.Column("city_code", sa.String(length=6), nullable=False),
        sa.Column("institution_kind", sa.Text(), nullable=False),
        sa.Column("category_code", sa.String(length=6), nullable=False),
        sa.Column("sharing_mode", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.CheckConstraint("n >= 0", name=op.f("ck_search_term_counts_n")),
        sa.PrimaryKeyConstraint(
            "term_id",
            "restricted",
            "large",
            "city_code",
            "institution_kind",
            "category_code",
            "sharing_mode",
            "status",
            name=op.f("pk_search_term_counts"),
        ),
    )
    # ### end Alembic commands ###
    for statement in FUNCTIONS + TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    for trigger in ("search_terms_truncate", "search_terms_delete", "search_terms_update", "search_terms_insert"):
        op.execute(f"DROP TRIGGER {trigger} ON instrument_search")
    for function in (
        "search_terms_candidates(integer, integer)",
        "search_terms_add(text[])",
        "search_terms_clear()",
        "search_terms_refresh()",
    ):
        op.execute(f"DROP FUNCTION {function}")
    # ### commands auto generated by Alembic, then reviewed ###
    op.drop_table("search_term_counts")
    op.drop_index("ix_search_term_postings_value", table_name="search_term_postings")
    op.drop_index("ix_search_term_postings_page", table_name="search_term_postings")
    op.drop_table("search_term_postings")
    op.drop_table("search_frequent_terms")
    # ### end Alembic commands ###
