"""The catalogue search as one SQL statement: the page, the total and every facet in a single round trip.

Three shapes, by what the query asks:

- **Counted from the cube** (no text, no filter beyond the five facets): the page comes from the narrow
  instrument_search table through its indexes, the total and the facets from instrument_facet_counts, which holds
  the count of every combination of facet values; each facet reads the few rows of the cuboid made of itself and
  the other filtered facets.
- **Counted live** (a text query or any other filter): the matching rows of instrument_search (through the bigram
  GIN index when there is a term of two or more characters); the page is the top of them, and one grouping-sets
  pass over them counts every facet under every filter but its own.
- **A frequent term** (one term found in thousands of instruments; no filter but the facets, the value, vouchers
  and a chain): the page walks the term's kept postings in order (by name: the name index, tested against the
  postings), the total and facets sum its kept counts (search_term_postings, search_term_counts,
  search_term_chain_counts; see the frequent-terms migrations), so 43,000 matches of 分析 are neither gathered nor
  grouped; the counts are split by value class, and a value bound inside a class has that class's postings on
  one side of it counted (value_split). Without a facet filter or a chain, each facet's counts are its marginals
  (search_term_marginals): a few hundred rows.

Facet semantics are the same in both: each facet counts the results of every other filter but not its own, and
lists only values with at least one result; `_total` is the count under all filters.

Values that steer the plan (facet values, ids, amounts, limit and offset) are checked and written into the
statement as literals: asyncpg prepares statements and may switch one to a generic plan after five runs, and a
generic plan cannot see them. Only the free text (the terms whose bigrams are looked up, the LIKE patterns) is passed as
parameters: the bigram containment is served by its GIN index for any term, so no plan depends on the text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from instruments.models import FACET_DIMS, VALUE_CLASS_BOUNDS
from instruments.rules import frequent_key, has_bigram, like_pattern, search_terms

FACETS = ("city", "institution_kind", "category", "sharing_mode", "status")
SORTS = ("relevance", "newest", "name", "value_desc", "value_asc")

# Facet name -> column of instrument_search and instrument_facet_counts.
FACET_COLUMNS = {
    "city": "city_code",
    "institution_kind": "institution_kind",
    "category": "category_code",
    "sharing_mode": "sharing_mode",
    "status": "status",
}
# GROUPING(city_code, institution_kind, major, sharing_mode, status) of the grouping set of each facet alone.
_GROUPING_OF = {"city": 15, "institution_kind": 23, "category": 27, "sharing_mode": 29, "status": 30}

# What a literal may look like: facet values are codes and enum values (Chinese letters for institution kinds).
_SAFE_LITERAL = re.compile(r"^[0-9A-Za-z_\u4e00-\u9fff]{1,40}$")

ITEM_COLUMNS = (
    "id",
    "name",
    "name_en",
    "model",
    "manufacturer",
    "institution_id",
    "institution_name",
    "institution_kind",
    "city_code",
    "category_code",
    "category_name",
    "sharing_mode",
    "status",
    "original_value",
    "accepts_vouchers",
    "restricted",
)


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


def literal(value: str) -> str:
    """A checked string literal for a code or enum value; anything else is a programming error."""
    if not _SAFE_LITERAL.match(value):
        raise ValueError(f"not a code or enum value: {value!r}")
    return f"'{value}'"


def int_literal(value: int) -> str:
    return str(int(value))


def numeric_literal(value: Decimal) -> str:
    value = Decimal(value)
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value}")
    return f"{value:f}::numeric"


@dataclass
class Params:
    """Collects the statement's parameters: `$n` placeholders for asyncpg, `:pn` for SQLAlchemy text() (which does
    not see `:pn::type`, so casts are written CAST(... AS type))."""

    style: str = "$"
    values: list[Any] = field(default_factory=list)

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        n = len(self.values)
        return f"${n}" if self.style == "$" else f":p{n}"

    def as_dict(self) -> dict[str, Any]:
        return {f"p{i}": v for i, v in enumerate(self.values, start=1)}


@dataclass
class SearchSQL:
    sql: str
    args: list[Any]
    counted_from_cube: bool
    frequent_term: int | None = None  # id of the frequent term whose kept postings and counts it reads


_CASELESS = re.compile(r"^[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff0-9!-/:-@\[-`{-~\u3000-\u303f\uff01-\uff0f]+$")


def _caseless(term: str) -> bool:
    """Only characters that have no case (CJK ideographs, digits, punctuation): lower() leaves them and every
    character around them alone, so LIKE and ILIKE find the same."""
    return bool(_CASELESS.match(term))


def _prefix_range(column: str, prefix: str) -> str:
    # A range rather than LIKE 'p%' so a plain btree index serves it under any collation.
    if not prefix.isascii() or not prefix.isdigit():
        raise ValueError(f"not a category prefix: {prefix!r}")
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)  # '09' -> '0:', just above every code starting 09
    return f"{column} >= '{prefix}' AND {column} < '{upper}'"


def facet_conditions(f: SearchFilters, alias: str) -> dict[str, str]:
    """The active facet filters as SQL over `alias` (instrument_search or instrument_facet_counts)."""
    conds: dict[str, str] = {}
    if f.city:
        conds["city"] = f"{alias}.city_code = {literal(f.city)}"
    if f.institution_kind:
        conds["institution_kind"] = f"{alias}.institution_kind = {literal(f.institution_kind)}"
    if f.category:
        conds["category"] = _prefix_range(f"{alias}.category_code", f.category)
    if f.sharing_mode:
        conds["sharing_mode"] = f"{alias}.sharing_mode = {literal(f.sharing_mode)}"
    if f.status:
        conds["status"] = f"{alias}.status = {literal(f.status)}"
    return conds


def visibility(viewer: Viewer, alias: str = "s") -> str:
    """Which rows of instrument_search (live instruments only) the viewer may see: restricted ones only for
    platform admins, the owner's managers and explicitly authorised users."""
    if viewer.is_admin:
        return "TRUE"
    return f"(NOT {alias}.restricted OR {_restricted_visible(viewer, alias)})"


def _restricted_visible(viewer: Viewer, alias: str) -> str:
    allowed: list[str] = []
    if viewer.managed_institution_ids:
        ids = ", ".join(int_literal(i) for i in sorted(viewer.managed_institution_ids))
        allowed.append(f"{alias}.institution_id IN ({ids})")
    if viewer.user_id is not None:
        allowed.append(
            "EXISTS (SELECT FROM instrument_access AS a"
            f" WHERE a.instrument_id = {alias}.instrument_id AND a.user_id = {int_literal(viewer.user_id)})"
        )
    return f"({' OR '.join(allowed)})" if allowed else "FALSE"


def common_conditions(f: SearchFilters, viewer: Viewer, params: Params, alias: str = "s") -> list[str]:
    """Visibility, the text query and every filter that is not a facet."""
    conds = [visibility(viewer, alias)]
    terms = search_terms(f.q)
    if terms and has_bigram(terms):
        # The GIN index answers the bigram containment; the LIKE below rechecks adjacency and order.
        conds.append(f"{alias}.bigrams @> text_bigram_codes(CAST({params(' '.join(terms))} AS text))")
    for term in terms:
        # A two-character term is exactly one bigram: containment already proves the substring, so the LIKE
        # recheck is only needed for one character or three and more, or when a character lies outside the Basic
        # Multilingual Plane (whose codes are not one to one, see the search migration).
        if len(term) != 2 or any(ord(ch) > 0xFFFF for ch in term):
            # Backslash, LIKE's default escape character, escapes the wildcards (rules.like_pattern); an explicit
            # ESCAPE clause would cost a like_escape() call per row in a generic plan.
            conds.append(f"{alias}.search_text LIKE CAST({params(like_pattern(term))} AS text)")
    conds += _other_filters(f, alias)
    return conds


def _other_filters(f: SearchFilters, alias: str) -> list[str]:
    conds: list[str] = []
    if f.institution_id is not None:
        conds.append(f"{alias}.institution_id = {int_literal(f.institution_id)}")
    if f.chain_id is not None:
        conds.append(_in_chain(f.chain_id, alias))
    conds += _value_filters(f, alias)
    if f.vouchers is not None:
        conds.append(f"{alias}.accepts_vouchers = {'TRUE' if f.vouchers else 'FALSE'}")
    return conds


def _in_chain(chain_id: int, alias: str) -> str:
    return (
        "EXISTS (SELECT FROM instrument_chains AS ic"
        f" WHERE ic.instrument_id = {alias}.instrument_id AND ic.chain_id = {int_literal(chain_id)})"
    )


def _value_filters(f: SearchFilters, alias: str) -> list[str]:
    conds: list[str] = []
    if f.min_value is not None:
        conds.append(f"{alias}.original_value >= {numeric_literal(f.min_value)}")
    if f.max_value is not None:
        conds.append(f"{alias}.original_value <= {numeric_literal(f.max_value)}")
    if f.large is True:
        conds.append(f"{alias}.original_value >= {numeric_literal(f.threshold)}")
    elif f.large is False:
        conds.append(f"{alias}.original_value < {numeric_literal(f.threshold)}")
    return conds


def countable_from_cube(f: SearchFilters) -> bool:
    """No text and no filter beyond the five facets: the cube holds the counts."""
    return not search_terms(f.q) and not _other_filters(f, "s")


@dataclass(frozen=True)
class _Sort:
    keys: tuple[tuple[str, str], ...]  # (expression over instrument_search s, its name in the page)
    order: tuple[tuple[str, bool], ...]  # (key name, descending)

    def by(self, qualifier: str = "") -> str:
        return ", ".join(f"{qualifier}{name}{' DESC' if desc else ''}" for name, desc in self.order)


def _sort(sort: str, f: SearchFilters, params: Params, *, indexable: bool) -> _Sort:
    """The page's order. With a text query the statement has parameters, and a generic plan cannot tell a rare term
    from a common one: ordered by a bare column it may walk that column's index and test row after row against the
    term (all 100,000 of them for a term nothing matches). Unless `indexable`, the keys are therefore expressions
    that no index provides, and the matches are always gathered through the bigram index first."""

    def key(column: str, zero: str = " + 0") -> str:
        return column if indexable else f"({column}{zero})"

    newest = (key("s.instrument_id"), "k_id")
    if sort == "name":
        return _Sort(((key("s.name", " || ''"), "k_name"), newest), (("k_name", False), ("k_id", False)))
    if sort in ("value_desc", "value_asc"):
        desc = sort == "value_desc"
        return _Sort(((key("s.original_value"), "k_value"), newest), (("k_value", desc), ("k_id", desc)))
    terms = search_terms(f.q)
    if sort == "relevance" and terms:
        # Name matches first, then the rest; newest first within each group. ILIKE lowercases every name it
        # compares; a term of caseless characters (Chinese, digits, punctuation) matches the same with LIKE.
        like = "LIKE" if _caseless(terms[0]) else "ILIKE"
        hit = f"s.name {like} CAST({params(like_pattern(terms[0]))} AS text)"
        return _Sort(((hit, "k_hit"), newest), (("k_hit", True), ("k_id", True)))
    return _Sort((newest,), (("k_id", True),))


def _items_and_counts(page: str, counts: str) -> str:
    """The final SELECT: the page's items (part 0, numbered by `ord`) and the counts (part 1: facet, value, n and
    the category's label; the facet `_total` is the total)."""
    item_rows = (
        "SELECT 0 AS part, p.ord, i.id, i.name, i.name_en, i.model, i.manufacturer, i.institution_id,"
        " n.name AS institution_name, n.kind AS institution_kind, i.city_code, i.category_code,"
        " c.name AS category_name, i.sharing_mode, i.status, i.original_value, i.accepts_vouchers, i.restricted,"
        " NULL::text AS facet, NULL::text AS value, NULL::bigint AS n, NULL::text AS label"
        f" FROM {page} AS p JOIN instruments AS i ON i.id = p.instrument_id"
        " JOIN institutions AS n ON n.id = i.institution_id"
        " LEFT JOIN instrument_categories AS c ON c.code = i.category_code"
    )
    count_rows = (
        "SELECT 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
        " NULL, f.facet, f.value, f.n, cat.name"
        f" FROM ({counts}) AS f"
        " LEFT JOIN instrument_categories AS cat ON f.facet = 'category' AND cat.code = f.value || '0000'"
    )
    return f"{item_rows} UNION ALL {count_rows}"


def _page_ctes(source: str, where: list[str], sort: _Sort, limit: int, offset: int, *, keys_from_s: bool) -> str:
    """CTEs `top` (the page's ids and sort keys) and `page` (the ids numbered in order: a window over the page
    only, not over every match)."""
    keys = "".join(f", {expr if keys_from_s else name} AS {name}" for expr, name in sort.keys)
    conds = " AND ".join(where) if where else "TRUE"
    return (
        f"top AS (SELECT s.instrument_id{keys} FROM {source} AS s WHERE {conds}"
        f" ORDER BY {sort.by()} LIMIT {int_literal(limit)} OFFSET {int_literal(offset)}),"
        f" page AS (SELECT instrument_id, row_number() OVER (ORDER BY {sort.by()}) AS ord FROM top)"
    )


def _flags(fconds: dict[str, str]) -> tuple[dict[str, str], str]:
    """Boolean columns for the active facet filters: (facet -> column name, the select list that computes them)."""
    flags = {name: f"f_{name}" for name in fconds}
    return flags, "".join(f", {cond} AS {flags[name]}" for name, cond in fconds.items())


def _all(flags: dict[str, str]) -> str:
    return " AND ".join(flags.values()) or "TRUE"


def _live_counts(
    source: str, flags: dict[str, str], *, with_facets: bool, weight: str | None = None, positive: bool = True
) -> str:
    """(facet, value, n) over `source` in one pass: every facet counts the rows that pass every *other* active facet
    filter (flags: facet -> boolean column of source); `_total` counts the rows that pass them all. Values with no
    rows are left out (unless not `positive`: signed weights, summed with other counts). With `weight`, each row of
    source stands for that many instruments (kept counts), or is added or taken away (signed)."""
    agg = "count(*)" if weight is None else f"sum(b.{weight})"
    if not with_facets:
        return (
            f"SELECT '_total'::text AS facet, NULL::text AS value, coalesce({agg}, 0)::bigint AS n"
            f" FROM {source} AS b WHERE {_all(flags)}"
        )

    def count_for(name: str) -> str:
        others = [flag for other, flag in flags.items() if other != name]
        return f"{agg} FILTER (WHERE {' AND '.join(others)})" if others else agg

    total = f"{agg} FILTER (WHERE {_all(flags)})" if flags else agg
    grouping = "GROUPING(b.city_code, b.institution_kind, left(b.category_code, 2), b.sharing_mode, b.status)"
    facet = " ".join(f"WHEN {_GROUPING_OF[name]} THEN '{name}'" for name in FACETS)
    n = " ".join(f"WHEN {_GROUPING_OF[name]} THEN {count_for(name)}" for name in FACETS)
    return (
        "SELECT facet, value, n FROM ("
        f"SELECT CASE {grouping} {facet} ELSE '_total' END AS facet,"
        " coalesce(b.city_code, b.institution_kind, left(b.category_code, 2), b.sharing_mode, b.status)::text"
        f" AS value, (CASE {grouping} {n} ELSE {total} END)::bigint AS n"
        f" FROM {source} AS b"
        " GROUP BY GROUPING SETS ((b.city_code), (b.institution_kind), (left(b.category_code, 2)), (b.sharing_mode),"
        " (b.status), ())"
        f") AS g{' WHERE n > 0' if positive else ''}"
    )


def _live(
    f: SearchFilters, viewer: Viewer, *, sort: str, limit: int, offset: int, with_facets: bool, params: Params
) -> str:
    common = common_conditions(f, viewer, params)
    fconds = facet_conditions(f, "s")
    order = _sort(sort, f, params, indexable=not params.values)
    keys = "".join(f", {expr} AS {name}" for expr, name in order.keys)
    if with_facets:
        flags, flag_cols = _flags(fconds)
        where = common + _failing_at_most_one(fconds)
        columns = f"s.instrument_id, s.city_code, s.institution_kind, s.category_code, s.sharing_mode, s.status{keys}"
    else:
        flags, flag_cols = {}, ""
        where = common + list(fconds.values())
        columns = f"s.instrument_id{keys}"
    # With no facet filter the page and the counts each read the matches again (their pages are cached by then),
    # which costs less than writing every match into a tuplestore and reading it back twice; with facet filters the
    # page takes only the rows that pass them all, and reading those back from the tuplestore is the cheaper way.
    materialized = "MATERIALIZED" if flags else "NOT MATERIALIZED"
    base = (
        f"base AS {materialized} (SELECT {columns}{flag_cols} FROM instrument_search AS s"
        f" WHERE {' AND '.join(where)})"
    )
    page = _page_ctes("base", list(flags.values()), order, limit, offset, keys_from_s=False)
    return f"WITH {base}, {page} " + _items_and_counts("page", _live_counts("base", flags, with_facets=with_facets))


@dataclass(frozen=True)
class ValueRange:
    """Postings whose value lies in this range, counted `sign` times. None: unbounded."""

    low: Decimal | None
    low_inclusive: bool
    high: Decimal | None
    high_inclusive: bool
    sign: int

    def sql(self, alias: str) -> list[str]:
        conds = []
        if self.low is not None:
            conds.append(f"{alias}.original_value {'>=' if self.low_inclusive else '>'} {numeric_literal(self.low)}")
        if self.high is not None:
            conds.append(f"{alias}.original_value {'<=' if self.high_inclusive else '<'} {numeric_literal(self.high)}")
        return conds


@dataclass(frozen=True)
class ValueSplit:
    """How the value filters of a frequent-term search are counted: the kept counts of the value classes
    first..last (None: none), plus or minus the term's postings in `postings`."""

    classes: tuple[int, int] | None
    postings: tuple[ValueRange, ...]


def value_bounds(f: SearchFilters) -> tuple[Decimal | None, Decimal | None, bool]:
    """The value filters (原值 bounds and 大型 at the threshold) as one range: low (inclusive), high, whether high is
    inclusive."""
    lows = [v for v in (f.min_value, f.threshold if f.large is True else None) if v is not None]
    highs = [(v, True) for v in (f.max_value,) if v is not None]
    if f.large is False:
        highs.append((f.threshold, False))
    high, inclusive = min(highs) if highs else (None, True)  # at equal values, exclusive (False) sorts first
    return (max(lows) if lows else None), high, inclusive


def value_split(
    low: Decimal | None, high: Decimal | None, inclusive: bool, bounds: tuple[Decimal, ...] = VALUE_CLASS_BOUNDS
) -> ValueSplit:
    """Which value classes (class i: bounds[i-1] <= value < bounds[i]) lie wholly in the range and are summed from
    the kept counts, and which postings are counted besides: the part of a class that a bound cuts. That part is
    counted as it is, or, when a log-uniform guess says it is most of its class, as the whole class less the
    postings on the other side of the bound (the first and last classes, unbounded, are always counted as they
    are). A range inside one class is counted directly."""
    edges: tuple[Decimal | None, ...] = (None, *bounds, None)  # class i spans edges[i] .. edges[i + 1]

    def whole(i: int) -> bool:
        start, end = edges[i], edges[i + 1]
        return (low is None or (start is not None and low <= start)) and (
            high is None or (end is not None and end <= high)
        )

    inside = [i for i in range(len(bounds) + 1) if whole(i)]
    if not inside:
        return ValueSplit(None, (ValueRange(low, True, high, inclusive, 1),))
    first, last = inside[0], inside[-1]
    postings: list[ValueRange] = []
    if low is not None and (bound := edges[first]) is not None and low < bound:  # low cuts class first - 1
        start = edges[first - 1]
        if _mostly(start, bound, counted=(low, bound)):
            first -= 1
            postings.append(ValueRange(start, True, low, False, -1))
        else:
            postings.append(ValueRange(low, True, bound, False, 1))
    if high is not None and (bound := edges[last + 1]) is not None and (bound < high or (bound == high and inclusive)):
        end = edges[last + 2]  # high cuts class last + 1
        if _mostly(bound, end, counted=(bound, high)):
            last += 1
            postings.append(ValueRange(high, not inclusive, end, False, -1))
        else:
            postings.append(ValueRange(bound, True, high, inclusive, 1))
    return ValueSplit((first, last), tuple(postings))


def _mostly(start: Decimal | None, end: Decimal | None, *, counted: tuple[Decimal, Decimal]) -> bool:
    """Whether `counted` is more than half of the class start..end, values spread log-uniformly."""
    if start is None or end is None or start <= 0:
        return False
    a, b = (max(counted[0], start), min(counted[1], end))
    if a <= 0:
        return False
    return math.log(b / a) > math.log(end / start) / 2


# The empty term, kept as frequent since revision 0010: its postings are every live instrument, so a search without
# text but with a filter the facet cube does not hold (vouchers, 原值, a chain) is answered like a frequent term's.
EVERYTHING = ""


def frequent_term(f: SearchFilters, sort: str) -> str | None:
    """The frequent-term key of a query the kept postings and counts can answer, if its term is frequent: one term,
    no filter but the five facets, the value, vouchers and a chain. Without text, the empty term (EVERYTHING): at
    100,000 instruments vouchers alone take 0.6 ms of SQL instead of 25 counted live, vouchers and a city 5.5
    instead of 37, 原值 and an institution kind 24 instead of 56."""
    terms = search_terms(f.q)
    if f.institution_id is not None:
        return None
    if not terms:
        return None if countable_from_cube(f) else EVERYTHING
    if len(terms) != 1:
        return None
    return frequent_key(terms[0])


def _failing_at_most_one(fconds: dict[str, str]) -> list[str]:
    """A row that fails two facet filters counts for no facet."""
    if len(fconds) < 2:
        return []
    return [" + ".join(f"(NOT ({cond}))::int" for cond in fconds.values()) + " <= 1"]


def _frequent(
    f: SearchFilters,
    viewer: Viewer,
    term_id: int,
    *,
    sort: str,
    limit: int,
    offset: int,
    with_facets: bool,
    params: Params,
    term: str,
) -> str:
    """A one-term query for a frequent term, from its postings (search_term_postings) and kept counts
    (search_term_counts). The page walks a postings index in the query's order with the filters applied while
    walking: (name_hit, id) for relevance, its two halves merged for newest, (value, id) for value; by name, the
    name index of instrument_search tested against the postings. The total and
    facets sum the kept counts (plus, for viewers who may see some restricted instruments, those few counted live),
    of the value classes a value filter covers whole, with the postings of a class a bound cuts counted besides
    (value_split); a range inside one class is counted over the term's postings: narrow rows, side by side. A last row, facet `_frequent`, says whether the term is still in the frequent set under that
    id, which the caller checks before trusting the answer (its map of frequent terms is a cache)."""
    tid = int_literal(term_id)
    if viewer.is_admin:
        visible = "TRUE"
    else:
        visible = (
            "(NOT p.restricted OR EXISTS (SELECT FROM instrument_search AS rs"
            f" WHERE rs.instrument_id = p.instrument_id AND {_restricted_visible(viewer, 'rs')}))"
        )
    kept = []
    if f.vouchers is not None:
        kept.append(f"p.accepts_vouchers = {'TRUE' if f.vouchers else 'FALSE'}")
    if f.chain_id is not None:
        # Through instrument_chains (whose ids the postings' chain_ids equal), not `p.chain_ids @> ...`: the planner
        # knows how common each chain is there, and for a rare one finds its few instruments instead of walking
        # every posting of the term (分析 + a chain of three: 1.6 ms instead of 12).
        kept.append(_in_chain(f.chain_id, "p"))
    mine = [f"p.term_id = {tid}", visible, *_value_filters(f, "p"), *kept]
    conds = " AND ".join([*mine, *facet_conditions(f, "p").values()])
    window = f"LIMIT {int_literal(limit)} OFFSET {int_literal(offset)}"
    if sort == "relevance":
        # Name matches first, newest first within each group: the order of ix_search_term_postings_page.
        order = "k_hit DESC, k_id DESC"
        top = (
            "SELECT p.instrument_id, p.name_hit AS k_hit, p.instrument_id AS k_id FROM search_term_postings AS p"
            f" WHERE {conds} ORDER BY p.name_hit DESC, p.instrument_id DESC {window}"
        )
    elif sort in ("value_desc", "value_asc"):
        # The order of ix_search_term_postings_value, walked forwards or backwards.
        direction = " DESC" if sort == "value_desc" else ""
        order = f"k_value{direction}, k_id{direction}"
        top = (
            "SELECT p.instrument_id, p.original_value AS k_value, p.instrument_id AS k_id FROM search_term_postings"
            f" AS p WHERE {conds} ORDER BY p.original_value{direction}, p.instrument_id{direction} {window}"
        )
    elif sort == "name":
        # The postings hold no names: the name index of instrument_search is walked (or, under a narrow facet
        # filter, the filter's rows gathered and sorted, as the planner judges), each row tested against the term's
        # postings by their primary key. 分析 at 100,000 instruments: ~3 ms instead of ~40 gathering its 43,000.
        order = "k_name, k_id"
        where = " AND ".join(
            [
                visibility(viewer, "s"),
                *facet_conditions(f, "s").values(),
                *_other_filters(f, "s"),
                f"EXISTS (SELECT FROM search_term_postings AS p WHERE p.term_id = {tid}"
                " AND p.instrument_id = s.instrument_id)",
            ]
        )
        top = (
            "SELECT s.instrument_id, s.name AS k_name, s.instrument_id AS k_id FROM instrument_search AS s"
            f" WHERE {where} ORDER BY s.name, s.instrument_id {window}"
        )
    else:
        # Newest first: the two halves of the relevance index (name matches and the rest), each in that order, merged.
        order = "k_id DESC"
        half = (
            "(SELECT p.instrument_id, p.instrument_id AS k_id FROM search_term_postings AS p"
            f" WHERE {conds} AND {{hit}} ORDER BY p.name_hit DESC, p.instrument_id DESC"
            f" LIMIT {int_literal(limit + offset)})"
        )
        top = (
            f"SELECT m.instrument_id, m.k_id FROM ({half.format(hit='p.name_hit')} UNION ALL"
            f" {half.format(hit='NOT p.name_hit')}) AS m ORDER BY m.k_id DESC {window}"
        )
    ctes = f"top AS ({top}), page AS (SELECT instrument_id, row_number() OVER (ORDER BY {order}) AS ord FROM top)"
    columns = ("city_code", "institution_kind", "category_code", "sharing_mode", "status")
    # (alias, relation, how many instruments a row stands for (None: one), conditions)
    sources: list[tuple[str, str, str | None, list[str]]]
    split = value_split(*value_bounds(f))
    if split.classes is None:
        sources = [("p", "search_term_postings AS p", None, mine)]
    else:
        counts_rows = _kept_rows(f, viewer, tid, split.classes, "c")
        counts_table = "search_term_counts"
        if f.chain_id is not None:
            counts_table = "search_term_chain_counts"
            counts_rows.insert(1, f"c.chain_id = {int_literal(f.chain_id)}")
        sources = [("c", f"{counts_table} AS c", "c.n", counts_rows)]
        # The postings of the classes a bound cuts, counted in the same scope as the kept counts.
        unrestricted = "TRUE" if viewer.is_admin else "NOT p.restricted"
        for part in split.postings:
            sources.append(
                (
                    "p",
                    "search_term_postings AS p",
                    str(part.sign),
                    [f"p.term_id = {tid}", unrestricted, *kept, *part.sql("p")],
                )
            )
        if not viewer.is_admin and (viewer.managed_institution_ids or viewer.user_id is not None):
            # The restricted instruments this viewer may see, matched as the live search matches them.
            sources.append(
                (
                    "s",
                    "instrument_search AS s, search_frequent_terms AS t",
                    "1",
                    [
                        f"t.id = {tid}",
                        f"s.restricted AND {_restricted_visible(viewer, 's')}",
                        "s.bigrams @> t.bigrams AND (t.bigram IS NOT NULL OR s.search_text LIKE t.pattern)",
                        *_other_filters(f, "s"),
                    ],
                )
            )
    # Without facet filters or a chain, each facet's counts are the term's marginals: a few hundred kept rows
    # (search_term_marginals) instead of every cell of the counts (13,000 for 分析).
    marginal = split.classes is not None and f.chain_id is None and not facet_conditions(f, "c")
    if marginal:
        sources = sources[1:]
    parts = []
    flags: dict[str, str] = {}
    for alias, source, weight, rows in sources:
        fconds = facet_conditions(f, alias)
        if with_facets:
            flags, flag_cols = _flags(fconds)
            where = rows + _failing_at_most_one(fconds)
        else:
            flags, flag_cols = {}, ""
            where = rows + list(fconds.values())
        cols = ", ".join(f"{alias}.{c}" for c in columns)
        w = f", {weight} AS w" if weight else ""
        parts.append(f"SELECT {cols}{w}{flag_cols} FROM {source} WHERE {' AND '.join(where)}")
    if parts:
        # Read once, by the grouping: not written to a tuplestore first (a third of the time for 8,000 counts).
        ctes += f", counted AS NOT MATERIALIZED ({' UNION ALL '.join(parts)})"
    if marginal:
        assert split.classes is not None
        rows = " AND ".join(_kept_rows(f, viewer, tid, split.classes, "m"))
        summed = [
            "SELECT '_total'::text AS facet, NULL::text AS value, m.n::bigint AS n FROM search_term_marginals AS m"
            f" WHERE {rows} AND m.facet = 'status'"
        ]
        if with_facets:
            summed.append(f"SELECT m.facet, m.value, m.n FROM search_term_marginals AS m WHERE {rows}")
        if parts:  # postings of a class a bound cuts (added or taken away), restricted rows this viewer may see
            summed.append(_live_counts("counted", {}, with_facets=with_facets, weight="w", positive=False))
        counts = (
            f"SELECT facet, value, sum(n)::bigint AS n FROM ({' UNION ALL '.join(summed)}) AS x"
            " GROUP BY facet, value HAVING sum(n) > 0"
        )
    else:
        counts = _live_counts("counted", flags, with_facets=with_facets, weight="w" if sources[0][2] else None)
    counts += (
        " UNION ALL SELECT '_frequent'::text, NULL::text, count(*) FROM search_frequent_terms"
        f" WHERE id = {tid} AND term = CAST({params(term)} AS text)"
    )
    return f"WITH {ctes} " + _items_and_counts("page", counts)


def _kept_rows(f: SearchFilters, viewer: Viewer, tid: str, classes: tuple[int, int], alias: str) -> list[str]:
    """The rows of a frequent term's kept counts or marginals (`alias`) a search sums: its term, what the viewer
    may see without a grant (restricted rows are counted live for those with one), its value classes, vouchers."""
    rows = [f"{alias}.term_id = {tid}", "TRUE" if viewer.is_admin else f"NOT {alias}.restricted"]
    if classes != (0, len(VALUE_CLASS_BOUNDS)):
        rows.append(f"{alias}.value_class BETWEEN {int_literal(classes[0])} AND {int_literal(classes[1])}")
    if f.vouchers is not None:
        rows.append(f"{alias}.vouchers" if f.vouchers else f"NOT {alias}.vouchers")
    return rows


def _dims(facets: list[str]) -> int:
    return sum(FACET_DIMS[FACET_COLUMNS[name]] for name in facets)


def _cube(
    f: SearchFilters, viewer: Viewer, *, sort: str, limit: int, offset: int, with_facets: bool, params: Params
) -> str:
    fconds = facet_conditions(f, "s")
    cube_conds = facet_conditions(f, "c")
    order = _sort(sort, f, params, indexable=True)
    ctes = _page_ctes("instrument_search", [visibility(viewer), *fconds.values()], order, limit, offset, keys_from_s=True)
    # The cube counts the live instruments by restricted. Admins count both; others count the unrestricted ones and,
    # when they may see some restricted instruments (their institution's, or granted), those few counted live.
    cube_rows = "TRUE" if viewer.is_admin else "NOT c.restricted"

    def cuboid(facets: list[str]) -> str:
        conds = "".join(f" AND {cube_conds[name]}" for name in facets)
        return f"instrument_facet_counts AS c WHERE c.dims = {_dims(facets)} AND {cube_rows}{conds}"

    filtered = list(cube_conds)
    parts = [f"SELECT '_total'::text AS facet, NULL::text AS value, sum(c.n) AS n FROM {cuboid(filtered)}"]
    if with_facets:
        for name in FACETS:
            value = "left(c.category_code, 2)" if name == "category" else f"c.{FACET_COLUMNS[name]}"
            others = [other for other in filtered if other != name]
            # The cuboid of this facet and the other filtered ones, under the other filters.
            dims = _dims([*others, name])
            conds = "".join(f" AND {cube_conds[other]}" for other in others)
            parts.append(
                f"SELECT '{name}'::text AS facet, {value}::text AS value, sum(c.n) AS n FROM instrument_facet_counts"
                f" AS c WHERE c.dims = {dims} AND {cube_rows}{conds} GROUP BY 2"
            )
    if not viewer.is_admin and (viewer.managed_institution_ids or viewer.user_id is not None):
        flags, flag_cols = _flags(fconds)
        ctes += (
            ", extra AS MATERIALIZED (SELECT s.city_code, s.institution_kind, s.category_code, s.sharing_mode,"
            f" s.status{flag_cols} FROM instrument_search AS s"
            f" WHERE s.restricted AND {_restricted_visible(viewer, 's')})"
        )
        parts.append(_live_counts("extra", flags, with_facets=with_facets))
    counts = (
        "SELECT facet, value, sum(n)::bigint AS n FROM ("
        + " UNION ALL ".join(parts)
        + ") AS u GROUP BY facet, value HAVING sum(n) > 0"
    )
    return f"WITH {ctes} " + _items_and_counts("page", counts)


def search_sql(
    f: SearchFilters,
    viewer: Viewer,
    *,
    sort: str,
    limit: int,
    offset: int,
    with_facets: bool = True,
    frequent: Mapping[str, int] | None = None,
) -> SearchSQL:
    """The statement for a search. `frequent`: term -> id of the terms whose postings and counts are kept (a cache;
    a statement built on a stale one says so, see _frequent)."""
    params = Params("$")
    if countable_from_cube(f):
        sql = _cube(f, viewer, sort=sort, limit=limit, offset=offset, with_facets=with_facets, params=params)
        return SearchSQL(sql, params.values, counted_from_cube=True)
    term = frequent_term(f, sort)
    term_id = (frequent or {}).get(term) if term is not None else None
    if term is not None and term_id is not None:
        sql = _frequent(
            f, viewer, term_id, sort=sort, limit=limit, offset=offset, with_facets=with_facets, params=params, term=term
        )
        return SearchSQL(sql, params.values, counted_from_cube=False, frequent_term=term_id)
    sql = _live(f, viewer, sort=sort, limit=limit, offset=offset, with_facets=with_facets, params=params)
    return SearchSQL(sql, params.values, counted_from_cube=False)


def export_sql(f: SearchFilters, viewer: Viewer, *, sort: str = "newest") -> tuple[str, dict[str, Any]]:
    """Every matching instrument with all its fields, the institution's and facility's names and the chain names,
    in the order of `sort`, for SQLAlchemy text() (named parameters)."""
    params = Params(":")
    where = common_conditions(f, viewer, params) + list(facet_conditions(f, "s").values())
    order = _sort(sort, f, params, indexable=not params.values)
    keys = "".join(f", {expr} AS {alias}" for expr, alias in order.keys)
    sql = (
        f"SELECT i.*, n.name AS institution_name, fac.name AS facility_name,"
        " (SELECT coalesce(array_agg(ch.name), '{}'::text[]) FROM instrument_chains AS ic"
        "  JOIN chains AS ch ON ch.id = ic.chain_id WHERE ic.instrument_id = i.id) AS chain_names"
        f" FROM (SELECT s.instrument_id{keys} FROM instrument_search AS s WHERE {' AND '.join(where)}) AS m"
        " JOIN instruments AS i ON i.id = m.instrument_id JOIN institutions AS n ON n.id = i.institution_id"
        " LEFT JOIN facilities AS fac ON fac.id = i.facility_id"
        f" ORDER BY {order.by('m.')}"
    )
    return sql, params.as_dict()
