"""search: a narrow, trigger-maintained search table and a facet-count cube

The catalogue search read the 1.3 kB instrument rows: counting and faceting the thousands of matches of a two-character
term touched thousands of heap pages, and a page without a text query counted all 100,000 rows five times. This
revision moves what search reads into two tables that triggers keep exact in the writing transaction:

- instrument_search: one narrow row (about 450 bytes) per live instrument (retired ones have none) with the filter,
  facet and sort columns, search_text and its character bigrams as int4 codes (4 bytes a bigram instead of about 11
  as text), GIN-indexed with a short pending list (256 kB instead of 4 MB: every search scans the pending list and
  the planner shuns a GIN index with a long one, while merging 256 kB at a time keeps bulk inserts about twice as
  fast as without a pending list); btree indexes for the other filters and sorts. instruments loses search_text,
  search_bigrams, their GIN index and trigger, and text_bigrams() goes with them.
- instrument_facet_counts: the cube of live-instrument counts over the five facets (city, institution kind, category,
  sharing mode, status) by restricted; `dims` says which facets a row is broken down by. Facets and totals of a
  query without text or other filters read a few rows of it.

Hand-written parts (autogenerate cannot see them):
- text_bigram_codes(text): the distinct two-character pieces of the lowercased text that contain no whitespace, each
  as one int4: the two characters' code points side by side (16 bits each). A character outside the Basic
  Multilingual Plane gets a code in the surrogate range, which no real character has: pieces of BMP characters map
  one to one, so containment proves a two-character term exactly; a term with a rarer character is rechecked with
  LIKE (see instruments.search_sql). (A GIN expression index over the text would keep rows narrower still, but the
  planner charges its expensive function on every row of any plan and then prefers other indexes for common terms,
  evaluating the function per row for real.)
- instrument_search_text(...): the searched text; the institution's name is always its last line, which lets a
  rename replace it in place;
- statement-level triggers (transition tables, so COPY and bulk inserts cost one set-based statement) that keep
  instrument_search in step with instruments, a row trigger that follows institution renames and kind changes, and
  statement-level triggers that apply instrument_search's changes to the cube under a transaction-scoped advisory
  lock (writers that change counts queue instead of deadlocking on the cube's shared rows);
- the backfill of both tables and ANALYZE.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 15:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# booking.core.locks.lock_key("instrument_facet_counts"), frozen here so the migration means the same thing forever.
CUBE_LOCK = 1703965787853911030

SEARCH_COLUMNS = (
    "instrument_id, institution_id, institution_kind, city_code, category_code, sharing_mode, status,"
    " original_value, accepts_vouchers, restricted, name, search_text, bigrams"
)
FACETS = "city_code, institution_kind, category_code, sharing_mode, status"

# The rows of instrument_search for the live instruments in `source` (an instruments-shaped relation aliased i),
# with the institution's kind and name. FOR SHARE waits for a concurrent rename of the institution to commit and
# then reads the new name, so a row can never keep an old one. Rows go in by category and name: instruments that
# share words share pages (the 7,453 matches of 质谱 fill about 600 pages instead of 4,300), and a search reads
# fewer pages; the backfill clusters the whole table, and each bulk insert (import, demo seed) its own rows.
SEARCH_ROWS = """
    SELECT i.id, i.institution_id, n.kind, i.city_code, i.category_code, i.sharing_mode, i.status, i.original_value,
           i.accepts_vouchers, i.restricted, i.name, t.search_text, text_bigram_codes(t.search_text)
    FROM {source} AS i JOIN institutions AS n ON n.id = i.institution_id
    CROSS JOIN LATERAL (SELECT instrument_search_text(i.name, i.name_en, i.model, i.manufacturer, i.functions,
                                                      n.name) AS search_text) AS t
    WHERE i.retired_at IS NULL
    ORDER BY i.category_code, i.name, i.id
    FOR SHARE OF n"""

# Adds the signed counts of `deltas` (rows of restricted, the five facets and d = +1 or -1) to every cell of the cube
# they fall in. Cells whose count does not change are left alone. Existing cells are updated and new ones inserted
# in one statement (an upsert would check n >= 0 on the row it proposes before finding the conflict); the advisory
# lock makes the cube's writers take turns, so no other transaction can add a cell in between.
CUBE_APPLY = f"""
        PERFORM pg_advisory_xact_lock({CUBE_LOCK});
        WITH deltas AS (
            SELECT 31 - GROUPING({FACETS}) AS dims, restricted, coalesce(city_code, '') AS city_code,
                   coalesce(institution_kind, '') AS institution_kind, coalesce(category_code, '') AS category_code,
                   coalesce(sharing_mode, '') AS sharing_mode, coalesce(status, '') AS status, sum(d) AS n
            FROM ({{deltas}}) AS deltas
            GROUP BY restricted, CUBE ({FACETS})
            HAVING sum(d) <> 0
        ), changed AS (
            UPDATE instrument_facet_counts AS c SET n = c.n + d.n FROM deltas AS d
            WHERE (c.dims, c.restricted, c.city_code, c.institution_kind, c.category_code, c.sharing_mode, c.status)
                = (d.dims, d.restricted, d.city_code, d.institution_kind, d.category_code, d.sharing_mode, d.status)
            RETURNING c.dims, c.restricted, c.city_code, c.institution_kind, c.category_code, c.sharing_mode, c.status
        )
        INSERT INTO instrument_facet_counts (dims, restricted, {FACETS}, n)
        SELECT d.dims, d.restricted, d.city_code, d.institution_kind, d.category_code, d.sharing_mode, d.status, d.n
        FROM deltas AS d
        WHERE NOT EXISTS (
            SELECT FROM changed AS c
            WHERE (c.dims, c.restricted, c.city_code, c.institution_kind, c.category_code, c.sharing_mode, c.status)
                = (d.dims, d.restricted, d.city_code, d.institution_kind, d.category_code, d.sharing_mode, d.status));"""

NEW_ROWS = f"SELECT restricted, {FACETS}, 1 AS d FROM new_rows"
OLD_ROWS = f"SELECT restricted, {FACETS}, -1 AS d FROM old_rows"

FUNCTIONS = [
    r"""
CREATE FUNCTION text_bigram_codes(t text) RETURNS integer[] LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT (c.a << 16) | c.b), '{}'::integer[])
    FROM regexp_split_to_table(lower(t), '\s+') AS w, generate_series(1, char_length(w) - 1) AS i,
         LATERAL (SELECT CASE WHEN ascii(substr(w, i, 1)) < 65536 THEN ascii(substr(w, i, 1))
                              ELSE 55296 + ascii(substr(w, i, 1)) % 2048 END AS a,
                         CASE WHEN ascii(substr(w, i + 1, 1)) < 65536 THEN ascii(substr(w, i + 1, 1))
                              ELSE 55296 + ascii(substr(w, i + 1, 1)) % 2048 END AS b) AS c
$$
""",
    r"""
CREATE FUNCTION instrument_search_text(name text, name_en text, model text, manufacturer text, functions text,
                                       institution text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT lower(concat_ws(E'\n', name, name_en, model, manufacturer, functions)) || E'\n' || lower(institution)
$$
""",
    f"""
CREATE FUNCTION instrument_search_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM instrument_search AS s USING new_rows AS i WHERE s.instrument_id = i.id AND i.retired_at IS NOT NULL;
    END IF;
    INSERT INTO instrument_search AS s ({SEARCH_COLUMNS}) {SEARCH_ROWS.format(source="new_rows")}
    ON CONFLICT (instrument_id) DO UPDATE SET
        institution_id = excluded.institution_id, institution_kind = excluded.institution_kind,
        city_code = excluded.city_code, category_code = excluded.category_code,
        sharing_mode = excluded.sharing_mode, status = excluded.status, original_value = excluded.original_value,
        accepts_vouchers = excluded.accepts_vouchers, restricted = excluded.restricted, name = excluded.name,
        search_text = excluded.search_text, bigrams = excluded.bigrams
    WHERE (s.*) IS DISTINCT FROM (excluded.*);
    RETURN NULL;
END
$$
""",
    r"""
CREATE FUNCTION institution_search_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The institution's name is the last line of search_text: replace it there. The update reads nothing but the
    -- row it writes, so it composes with a concurrent edit of the instrument (which waits for this transaction
    -- before reading the institution, see instrument_search_refresh).
    IF OLD.name IS NOT DISTINCT FROM NEW.name THEN
        UPDATE instrument_search SET institution_kind = NEW.kind WHERE institution_id = NEW.id;
        RETURN NULL;
    END IF;
    UPDATE instrument_search
    SET institution_kind = NEW.kind,
        search_text = left(search_text, char_length(search_text) - char_length(lower(OLD.name))) || lower(NEW.name),
        bigrams = text_bigram_codes(
            left(search_text, char_length(search_text) - char_length(lower(OLD.name))) || lower(NEW.name))
    WHERE institution_id = NEW.id;
    RETURN NULL;
END
$$
""",
    f"""
CREATE FUNCTION instrument_facet_counts_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF EXISTS (SELECT FROM new_rows) THEN {CUBE_APPLY.format(deltas=NEW_ROWS)}
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF EXISTS (SELECT FROM old_rows) THEN {CUBE_APPLY.format(deltas=OLD_ROWS)}
        END IF;
    ELSIF EXISTS (SELECT FROM new_rows AS n JOIN old_rows AS o USING (instrument_id)
                  WHERE (n.restricted, n.city_code, n.institution_kind, n.category_code, n.sharing_mode, n.status)
                        IS DISTINCT FROM
                        (o.restricted, o.city_code, o.institution_kind, o.category_code, o.sharing_mode, o.status))
    THEN {CUBE_APPLY.format(deltas=NEW_ROWS + " UNION ALL " + OLD_ROWS)}
    END IF;
    RETURN NULL;
END
$$
""",
    f"""
CREATE FUNCTION instrument_facet_counts_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({CUBE_LOCK});
    DELETE FROM instrument_facet_counts;
    RETURN NULL;
END
$$
""",
]

TRIGGERS = [
    "CREATE TRIGGER instrument_search_insert AFTER INSERT ON instruments REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION instrument_search_refresh()",
    "CREATE TRIGGER instrument_search_update AFTER UPDATE ON instruments REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION instrument_search_refresh()",
    "CREATE TRIGGER institution_search_refresh AFTER UPDATE OF name, kind ON institutions FOR EACH ROW"
    " WHEN (OLD.name IS DISTINCT FROM NEW.name OR OLD.kind IS DISTINCT FROM NEW.kind)"
    " EXECUTE FUNCTION institution_search_refresh()",
    "CREATE TRIGGER instrument_facet_counts_insert AFTER INSERT ON instrument_search"
    " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION instrument_facet_counts_refresh()",
    "CREATE TRIGGER instrument_facet_counts_update AFTER UPDATE ON instrument_search"
    " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION instrument_facet_counts_refresh()",
    "CREATE TRIGGER instrument_facet_counts_delete AFTER DELETE ON instrument_search"
    " REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION instrument_facet_counts_refresh()",
    "CREATE TRIGGER instrument_facet_counts_truncate AFTER TRUNCATE ON instrument_search"
    " FOR EACH STATEMENT EXECUTE FUNCTION instrument_facet_counts_clear()",
]

# The catalogue revision's search machinery on instruments, dropped by upgrade and restored by downgrade.
OLD_TEXT_BIGRAMS = r"""
CREATE FUNCTION text_bigrams(t text) RETURNS text[] LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT g), '{}'::text[])
    FROM (SELECT substr(s, i, 2) AS g
          FROM (SELECT lower(t) AS s) AS src, generate_series(1, char_length(s) - 1) AS i) AS pieces
    WHERE g !~ '\s'
$$
"""
OLD_FUNCTIONS = [
    r"""
CREATE FUNCTION instruments_search_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_text := lower(concat_ws(E'\n', NEW.name, NEW.name_en, NEW.model, NEW.manufacturer, NEW.functions,
                                       (SELECT i.name FROM institutions i WHERE i.id = NEW.institution_id)));
    NEW.search_bigrams := text_bigrams(NEW.search_text);
    RETURN NEW;
END
$$
""",
    r"""
CREATE FUNCTION institutions_rename_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Assigning institution_id fires instruments_search_refresh, which reads the new name.
    UPDATE instruments SET institution_id = institution_id WHERE institution_id = NEW.id;
    RETURN NULL;
END
$$
""",
]
OLD_TRIGGERS = [
    "CREATE TRIGGER instruments_search_refresh BEFORE INSERT OR UPDATE OF name, name_en, model, manufacturer,"
    " functions, institution_id ON instruments FOR EACH ROW EXECUTE FUNCTION instruments_search_refresh()",
    "CREATE TRIGGER institutions_rename_refresh AFTER UPDATE OF name ON institutions FOR EACH ROW"
    " WHEN (OLD.name IS DISTINCT FROM NEW.name) EXECUTE FUNCTION institutions_rename_refresh()",
]


def upgrade() -> None:
    op.execute("DROP TRIGGER institutions_rename_refresh ON institutions")
    op.execute("DROP TRIGGER instruments_search_refresh ON instruments")
    op.execute("DROP FUNCTION institutions_rename_refresh()")
    op.execute("DROP FUNCTION instruments_search_refresh()")
    op.drop_index("ix_instruments_search_bigrams", table_name="instruments", postgresql_using="gin")
    op.drop_column("instruments", "search_bigrams")
    op.drop_column("instruments", "search_text")
    op.execute("DROP FUNCTION text_bigrams(text)")
    # ### commands auto generated by Alembic, then reviewed ###
    op.create_table(
        "instrument_facet_counts",
        sa.Column("dims", sa.SmallInteger(), nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("city_code", sa.String(length=6), nullable=False),
        sa.Column("institution_kind", sa.Text(), nullable=False),
        sa.Column("category_code", sa.String(length=6), nullable=False),
        sa.Column("sharing_mode", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.CheckConstraint("n >= 0", name=op.f("ck_instrument_facet_counts_n")),
        sa.PrimaryKeyConstraint(
            "dims",
            "restricted",
            "city_code",
            "institution_kind",
            "category_code",
            "sharing_mode",
            "status",
            name=op.f("pk_instrument_facet_counts"),
        ),
    )
    op.create_table(
        "instrument_search",
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("institution_kind", sa.Text(), nullable=False),
        sa.Column("city_code", sa.String(length=6), nullable=False),
        sa.Column("category_code", sa.String(length=6), nullable=False),
        sa.Column("sharing_mode", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("original_value", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("accepts_vouchers", sa.Boolean(), nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("bigrams", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instruments.id"],
            name=op.f("fk_instrument_search_instrument_id_instruments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instrument_id", name=op.f("pk_instrument_search")),
    )
    # ### end Alembic commands ###
    # A search reads at most a few thousand pages of this table: a parallel worker costs more to start than it saves,
    # and on the service's two cores it takes a core from the next request.
    op.execute("ALTER TABLE instrument_search SET (parallel_workers = 0)")
    for statement in FUNCTIONS:
        op.execute(statement)
    # The triggers first: the backfill is one INSERT into instrument_search, and the cube's trigger counts it. The
    # indexes after it: building them in one pass is much faster than growing them row by row.
    for statement in TRIGGERS:
        op.execute(statement)
    op.execute(f"INSERT INTO instrument_search ({SEARCH_COLUMNS}) {SEARCH_ROWS.format(source='instruments')}")
    op.create_index(
        "ix_instrument_search_bigrams",
        "instrument_search",
        ["bigrams"],
        unique=False,
        postgresql_using="gin",
        postgresql_with={"gin_pending_list_limit": "256"},
    )
    op.create_index(op.f("ix_instrument_search_category_code"), "instrument_search", ["category_code"], unique=False)
    op.create_index(op.f("ix_instrument_search_city_code"), "instrument_search", ["city_code"], unique=False)
    op.create_index(
        op.f("ix_instrument_search_institution_id"), "instrument_search", ["institution_id"], unique=False
    )
    op.create_index("ix_instrument_search_name", "instrument_search", ["name", "instrument_id"], unique=False)
    op.create_index(
        "ix_instrument_search_restricted",
        "instrument_search",
        ["institution_id"],
        unique=False,
        postgresql_where=sa.text("restricted"),
    )
    op.create_index(
        "ix_instrument_search_value", "instrument_search", ["original_value", "instrument_id"], unique=False
    )
    op.execute("ANALYZE instrument_search")
    op.execute("ANALYZE instrument_facet_counts")


def downgrade() -> None:
    for trigger, table in (
        ("instrument_facet_counts_truncate", "instrument_search"),
        ("instrument_facet_counts_delete", "instrument_search"),
        ("instrument_facet_counts_update", "instrument_search"),
        ("instrument_facet_counts_insert", "instrument_search"),
        ("institution_search_refresh", "institutions"),
        ("instrument_search_update", "instruments"),
        ("instrument_search_insert", "instruments"),
    ):
        op.execute(f"DROP TRIGGER {trigger} ON {table}")
    for function in (
        "instrument_facet_counts_clear()",
        "instrument_facet_counts_refresh()",
        "institution_search_refresh()",
        "instrument_search_refresh()",
        "instrument_search_text(text, text, text, text, text, text)",
        "text_bigram_codes(text)",
    ):
        op.execute(f"DROP FUNCTION {function}")
    op.execute(OLD_TEXT_BIGRAMS)
    # ### commands auto generated by Alembic, then reviewed ###
    op.drop_index("ix_instrument_search_value", table_name="instrument_search")
    op.drop_index("ix_instrument_search_restricted", table_name="instrument_search", postgresql_where=sa.text("restricted"))
    op.drop_index("ix_instrument_search_name", table_name="instrument_search")
    op.drop_index(op.f("ix_instrument_search_institution_id"), table_name="instrument_search")
    op.drop_index(op.f("ix_instrument_search_city_code"), table_name="instrument_search")
    op.drop_index(op.f("ix_instrument_search_category_code"), table_name="instrument_search")
    op.drop_index("ix_instrument_search_bigrams", table_name="instrument_search", postgresql_using="gin")
    op.drop_table("instrument_search")
    op.drop_table("instrument_facet_counts")
    # ### end Alembic commands ###
    op.add_column("instruments", sa.Column("search_text", sa.Text(), nullable=True))
    op.add_column("instruments", sa.Column("search_bigrams", postgresql.ARRAY(sa.Text()), nullable=True))
    op.create_index(
        "ix_instruments_search_bigrams", "instruments", ["search_bigrams"], unique=False, postgresql_using="gin"
    )
    for statement in OLD_FUNCTIONS + OLD_TRIGGERS:
        op.execute(statement)
    # Assigning institution_id fires instruments_search_refresh for every row.
    op.execute("UPDATE instruments SET institution_id = institution_id")
