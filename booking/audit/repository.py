# SQL here is assembled from fixed fragments chosen by checked keys; every value is a bound parameter.
# ruff: noqa: S608
"""Every audit statistic, as SQL aggregates.

The building blocks are common table expressions parameterised by the as-of instant:

- `st`: registered large instruments as of D, from the effective-dated `instrument_history` (sharing mode, status,
  value, owner and 市州 holding at the end of D), narrowed to the caller's scope and filters;
- `pub`: instruments with availability published for the days after D (recorded spans for past days, the live
  opening windows and date overrides for today);
- `sh`: instruments with a service for an external user in the look-back window;
- `uf`: usage facts of a window of service end times, read from `audit_usage_monthly` for whole months known
  before T's month, and from the raw rows for partial months and for facts that became known in T's month.

Nothing is summed or counted in Python.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from booking.audit.rules import AsOf, Band, Definitions, Window, local_midnight, month_end, shared_window

# ---- filters -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """Scope (what the caller may see) and the filters asked for; all narrow the `st` set."""

    province: bool = True
    scope_cities: tuple[str, ...] = ()
    scope_institutions: tuple[int, ...] = ()
    city: str | None = None
    institution_id: int | None = None
    institution_kind: str | None = None
    category: str | None = None  # 2-digit 大类 prefix
    chain_id: int | None = None  # 0: instruments without any chain tag
    band: Band | None = None
    instrument_id: int | None = None
    # Restricted (military-civil) instruments are counted like any other, but their name, model and asset number
    # are shown only to platform admins and the owning institution's managers.
    reveal_all: bool = True
    reveal_institutions: tuple[int, ...] = ()


_HIDDEN = "'受限仪器'"


def _reveal(p: dict[str, Any], reveal_all: bool, institutions: Sequence[int], owner: str) -> str:
    """SQL true when the viewer may see a restricted instrument's identifying fields."""
    p["reveal_all"] = reveal_all
    p["reveal_insts"] = list(institutions)
    return f"(NOT i.restricted OR CAST(:reveal_all AS boolean) OR {owner} = ANY(CAST(:reveal_insts AS int[])))"


def _state_cte(f: Filters, d: Definitions, p: dict[str, Any]) -> str:
    shown = _reveal(p, f.reveal_all, f.reveal_institutions, "h.institution_id")
    conds = ["h.valid_from < :t", "(h.valid_to IS NULL OR h.valid_to >= :t)", "h.original_value >= :threshold",
             "(i.retired_at IS NULL OR i.retired_at >= :t)"]
    p["threshold"] = d.threshold
    if not f.province:
        p["scope_cities"] = list(f.scope_cities)
        p["scope_insts"] = list(f.scope_institutions)
        conds.append("(h.city_code = ANY(:scope_cities) OR h.institution_id = ANY(:scope_insts))")
    if f.city:
        p["f_city"] = f.city
        conds.append("h.city_code = :f_city")
    if f.institution_id is not None:
        p["f_inst"] = f.institution_id
        conds.append("h.institution_id = :f_inst")
    if f.institution_kind:
        p["f_kind"] = f.institution_kind
        conds.append("inst.kind = :f_kind")
    if f.category:
        p["f_cat_lo"] = f.category + "0000"
        p["f_cat_hi"] = f.category + "9999"
        conds.append("i.category_code BETWEEN :f_cat_lo AND :f_cat_hi")
    if f.chain_id is not None:
        if f.chain_id == 0:
            conds.append("NOT EXISTS (SELECT 1 FROM instrument_chains c WHERE c.instrument_id = h.instrument_id)")
        else:
            p["f_chain"] = f.chain_id
            conds.append("EXISTS (SELECT 1 FROM instrument_chains c WHERE c.instrument_id = h.instrument_id"
                         " AND c.chain_id = :f_chain)")
    if f.band is not None:
        p["f_band_lo"] = f.band.lo
        conds.append("h.original_value >= :f_band_lo")
        if f.band.hi is not None:
            p["f_band_hi"] = f.band.hi
            conds.append("h.original_value < :f_band_hi")
    if f.instrument_id is not None:
        p["f_instrument"] = f.instrument_id
        conds.append("h.instrument_id = :f_instrument")
    return f"""
st AS (
  SELECT h.instrument_id AS id, h.sharing_mode, h.status, h.original_value, h.institution_id, h.city_code,
         i.category_code, coalesce(i.usage_kind, 'general') AS usage_kind,
         CASE WHEN {shown} THEN i.name ELSE {_HIDDEN} END AS name,
         CASE WHEN {shown} THEN i.model END AS model, CASE WHEN {shown} THEN i.asset_number END AS asset_number,
         inst.kind AS institution_kind, inst.name AS institution_name
  FROM instrument_history h
  JOIN instruments i ON i.id = h.instrument_id
  JOIN institutions inst ON inst.id = h.institution_id
  WHERE {' AND '.join(conds)}
)"""


def live_published_sql() -> str:
    """Instruments with opening windows on at least one day of [:p_lo, :p_hi], or a date override there with
    windows. A weekly window counts only if its weekday falls inside its validity clipped to the span."""
    a = "GREATEST(coalesce(w.valid_from, :p_lo), :p_lo)"
    b = "LEAST(coalesce(w.valid_to, :p_hi), :p_hi)"
    return f"""
  SELECT w.instrument_id FROM opening_windows w
  WHERE {a} <= {b}
    AND ({b} - {a} >= 6 OR ((w.weekday - (extract(isodow FROM {a})::int - 1) + 7) % 7) <= {b} - {a})
  UNION
  SELECT o.instrument_id FROM schedule_overrides o
  WHERE o.day BETWEEN :p_lo AND :p_hi AND jsonb_array_length(o.windows) > 0"""


def _published_cte(asof: AsOf, today: date, d: Definitions, p: dict[str, Any]) -> str:
    if asof.day < today:
        p["pub_day"] = asof.day
        return """
pub AS (
  SELECT DISTINCT instrument_id FROM audit_published_spans
  WHERE valid_from <= :pub_day AND (valid_to IS NULL OR valid_to >= :pub_day)
)"""
    p["p_lo"] = asof.day + timedelta(days=1)
    p["p_hi"] = asof.day + timedelta(days=d.lookahead_days)
    return f"\npub AS ({live_published_sql()}\n)"


def _window_params(w: Window, prefix: str, p: dict[str, Any]) -> None:
    p[f"{prefix}_lo"] = w.lo
    p[f"{prefix}_hi"] = w.hi
    p[f"{prefix}_full_lo"] = w.full_lo
    p[f"{prefix}_full_hi"] = w.full_hi
    p[f"{prefix}_full_lo_ts"] = w.full_lo_ts
    p[f"{prefix}_full_hi_ts"] = w.full_hi_ts


_KNOWN = "greatest(r.created_at, r.ended_at)"
_RATING_KNOWN = "greatest(coalesce(r.rated_at, r.created_at), r.created_at, r.ended_at)"


def _shared_cte(asof: AsOf, d: Definitions, p: dict[str, Any]) -> str:
    _window_params(shared_window(asof, d.lookback_months), "s", p)
    return f"""
sh AS (
  SELECT s.instrument_id FROM audit_usage_monthly s
  WHERE s.month >= :s_full_lo AND s.month < :s_full_hi AND s.known_month < :t_month AND s.external_records > 0
  UNION
  SELECT r.instrument_id FROM service_records r
  WHERE r.is_external AND {_KNOWN} < :t AND r.ended_at >= :s_lo AND r.ended_at < :s_full_lo_ts
  UNION
  SELECT r.instrument_id FROM service_records r
  WHERE r.is_external AND {_KNOWN} < :t AND r.ended_at >= :s_full_hi_ts AND r.ended_at < :s_hi
  UNION
  SELECT r.instrument_id FROM service_records r
  WHERE r.is_external AND r.created_at >= :t_month_ts AND r.created_at < :t
    AND r.ended_at >= :s_full_lo_ts AND r.ended_at < :s_full_hi_ts
)"""


_USAGE_RAW = """r.instrument_id, 1 AS records, r.is_external::int AS external_records, r.hours,
         CASE WHEN r.is_external THEN r.hours ELSE 0 END AS external_hours, r.amount,
         CASE WHEN r.is_external THEN r.amount ELSE 0 END AS external_amount,
         0 AS rating_count, 0 AS rating_sum, 0 AS rating_1, 0 AS rating_2, 0 AS rating_3, 0 AS rating_4,
         0 AS rating_5"""
_RATING_RAW = """r.instrument_id, 0, 0, 0, 0, 0, 0, 1, r.rating, (r.rating = 1)::int, (r.rating = 2)::int,
         (r.rating = 3)::int, (r.rating = 4)::int, (r.rating = 5)::int"""
# The partial months at either end of a window, as two ranges (each served by the ended_at index).
_PARTIAL_LO = "r.ended_at >= :u_lo AND r.ended_at < :u_full_lo_ts"
_PARTIAL_HI = "r.ended_at >= :u_full_hi_ts AND r.ended_at < :u_hi"
_FULL = "r.ended_at >= :u_full_lo_ts AND r.ended_at < :u_full_hi_ts"
_QUOTA = ("(CASE WHEN st.usage_kind = 'special' THEN CAST(:q_special AS numeric)"
          " ELSE CAST(:q_general AS numeric) END) * CAST(:fraction AS numeric)")
_METRICS = ("records", "external_records", "hours", "external_hours", "amount", "external_amount", "rating_count",
            "rating_sum", "rating_1", "rating_2", "rating_3", "rating_4", "rating_5")


def _usage_cte(w: Window, p: dict[str, Any], *, instrument_filter: str = "") -> str:
    """Per-instrument usage of the services that ended in the window, as known before T."""
    _window_params(w, "u", p)
    rf = f" AND r.instrument_id {instrument_filter}" if instrument_filter else ""
    sf = f" AND s.instrument_id {instrument_filter}" if instrument_filter else ""
    cols = ", ".join(f"s.{m}" for m in _METRICS)
    sums = ", ".join(f"sum({m}) AS {m}" for m in _METRICS)
    return f"""
uf AS (
  SELECT s.instrument_id, {cols} FROM audit_usage_monthly s
  WHERE s.month >= :u_full_lo AND s.month < :u_full_hi AND s.known_month < :t_month{sf}
  UNION ALL
  SELECT {_USAGE_RAW} FROM service_records r WHERE {_PARTIAL_LO} AND {_KNOWN} < :t{rf}
  UNION ALL
  SELECT {_USAGE_RAW} FROM service_records r WHERE {_PARTIAL_HI} AND {_KNOWN} < :t{rf}
  UNION ALL
  SELECT {_USAGE_RAW} FROM service_records r
  WHERE {_FULL} AND r.created_at >= :t_month_ts AND r.created_at < :t{rf}
  UNION ALL
  SELECT {_RATING_RAW} FROM service_records r
  WHERE r.rating IS NOT NULL AND {_PARTIAL_LO} AND {_RATING_KNOWN} < :t{rf}
  UNION ALL
  SELECT {_RATING_RAW} FROM service_records r
  WHERE r.rating IS NOT NULL AND {_PARTIAL_HI} AND {_RATING_KNOWN} < :t{rf}
  UNION ALL
  SELECT {_RATING_RAW} FROM service_records r
  WHERE r.rating IS NOT NULL AND {_FULL} AND (r.rated_at >= :t_month_ts OR r.created_at >= :t_month_ts)
    AND {_RATING_KNOWN} < :t{rf}
),
u AS (SELECT instrument_id, {sums} FROM uf GROUP BY instrument_id)"""


def _base_params(asof: AsOf) -> dict[str, Any]:
    return {"t": asof.end, "t_month": asof.t_month, "t_month_ts": local_midnight(asof.t_month)}


# ---- sharing counts ----------------------------------------------------------------------------------------------

DIMENSIONS = ("city", "kind", "institution", "category", "chain", "band")


def _band_case(d: Definitions, bands: Sequence[Band], p: dict[str, Any]) -> str:
    parts = []
    for i, b in enumerate(bands):
        p[f"band_lo_{i}"] = b.lo
        if b.hi is None:
            parts.append(f"WHEN st.original_value >= :band_lo_{i} THEN '{b.key}'")
        else:
            p[f"band_hi_{i}"] = b.hi
            parts.append(f"WHEN st.original_value >= :band_lo_{i} AND st.original_value < :band_hi_{i} THEN '{b.key}'")
    return "CASE " + " ".join(parts) + " END"


_OPEN = "(st.sharing_mode = 'external' AND st.status = ANY(:usable) AND pub.instrument_id IS NOT NULL)"


async def sharing_counts(session: AsyncSession, asof: AsOf, today: date, d: Definitions, f: Filters,
                         dim: str | None, bands: Sequence[Band] = ()) -> list[RowMapping]:
    """registered / open / shared per dimension value, and the total over the scope in the row with is_total
    (the only row when dim is None). Counting distinct instruments keeps the total right for chains, where one
    instrument can carry several tags."""
    p = _base_params(asof)
    p["usable"] = list(d.usable_statuses)
    ctes = [_state_cte(f, d, p), _published_cte(asof, today, d, p), _shared_cte(asof, d, p)]
    join = ""
    if dim is None:
        key = "NULL::text"
    elif dim == "city":
        key = "st.city_code"
    elif dim == "kind":
        key = "st.institution_kind"
    elif dim == "institution":
        key = "st.institution_id::text"
    elif dim == "category":
        key = "left(st.category_code, 2) || '0000'"
    elif dim == "chain":
        join = "LEFT JOIN instrument_chains ic ON ic.instrument_id = st.id"
        key = "coalesce(ic.chain_id, 0)::text"
    elif dim == "band":
        key = _band_case(d, bands, p)
    else:  # pragma: no cover - callers pass a checked dimension
        raise ValueError(dim)
    total = "TRUE" if dim is None else f"GROUPING({key}) = 1"
    sql = f"""
WITH {','.join(ctes)}
SELECT {key} AS key, {total} AS is_total, count(DISTINCT st.id) AS registered,
       count(DISTINCT st.id) FILTER (WHERE {_OPEN}) AS open,
       count(DISTINCT st.id) FILTER (WHERE sh.instrument_id IS NOT NULL) AS shared
FROM st
LEFT JOIN pub ON pub.instrument_id = st.id
LEFT JOIN sh ON sh.instrument_id = st.id
{join}
{f"GROUP BY GROUPING SETS (({key}), ())" if dim is not None else ""}
"""
    return list((await session.execute(text(sql), p)).mappings())


MEASURES = ("registered", "open", "shared", "not_open", "not_shared")


async def instruments_behind(session: AsyncSession, asof: AsOf, today: date, d: Definitions, f: Filters,
                             measure: str, *, sort: str, limit: int, offset: int) -> tuple[list[RowMapping], int]:
    """The instruments counted in a cell: registered large ones as of D, narrowed to open or shared."""
    p = _base_params(asof)
    p["usable"] = list(d.usable_statuses)
    ctes = [_state_cte(f, d, p), _published_cte(asof, today, d, p), _shared_cte(asof, d, p)]
    cond = {"registered": "TRUE", "open": _OPEN, "shared": "sh.instrument_id IS NOT NULL",
            "not_open": f"NOT {_OPEN}", "not_shared": "sh.instrument_id IS NULL"}[measure]
    order = {"name": "st.name, st.id", "value_desc": "st.original_value DESC, st.id",
             "institution": "st.institution_name, st.id", "id": "st.id"}[sort]
    p["limit"], p["offset"] = limit, offset
    sql = f"""
WITH {','.join(ctes)}
SELECT st.id, st.name, st.model, st.asset_number, st.institution_id, st.institution_name, st.institution_kind,
       st.city_code, st.category_code, st.usage_kind, st.original_value, st.sharing_mode, st.status,
       {_OPEN} AS is_open, sh.instrument_id IS NOT NULL AS is_shared, count(*) OVER () AS total
FROM st
LEFT JOIN pub ON pub.instrument_id = st.id
LEFT JOIN sh ON sh.instrument_id = st.id
WHERE {cond}
ORDER BY {order}
LIMIT :limit OFFSET :offset
"""
    rows = list((await session.execute(text(sql), p)).mappings())
    total = int(rows[0]["total"]) if rows else 0
    if not rows and offset:
        total = await _count_behind(session, asof, today, d, f, cond)
    return rows, total


async def _count_behind(session: AsyncSession, asof: AsOf, today: date, d: Definitions, f: Filters,
                        cond: str) -> int:
    p = _base_params(asof)
    p["usable"] = list(d.usable_statuses)
    ctes = [_state_cte(f, d, p), _published_cte(asof, today, d, p), _shared_cte(asof, d, p)]
    sql = (f"WITH {','.join(ctes)} SELECT count(*) FROM st LEFT JOIN pub ON pub.instrument_id = st.id "
           f"LEFT JOIN sh ON sh.instrument_id = st.id WHERE {cond}")
    return int((await session.execute(text(sql), p)).scalar_one())


# ---- usage -------------------------------------------------------------------------------------------------------

USAGE_GROUPS = ("city", "institution", "instrument")
USAGE_SORTS = ("hours", "external_hours", "share_rate", "amount", "external_amount", "users", "utilisation",
               "instruments", "name", "rating")


@dataclass(frozen=True)
class UsageQuery:
    group: str
    year: int
    window: Window
    fraction: Decimal  # of the year covered, for pro-rated quotas and thresholds
    only: str | None = None  # idle | saturated | evaluation
    sort: str = "hours"
    descending: bool = True
    limit: int | None = None
    offset: int = 0


async def usage(session: AsyncSession, asof: AsOf, d: Definitions, f: Filters,
                q: UsageQuery) -> tuple[list[RowMapping], int]:
    p = _base_params(asof)
    instrument_filter = ""
    if f.instrument_id is not None:
        p["uf_instrument"] = f.instrument_id
        instrument_filter = "= :uf_instrument"
    ctes = [_state_cte(f, d, p), _usage_cte(q.window, p, instrument_filter=instrument_filter)]
    p["q_general"], p["q_special"], p["fraction"] = d.quota_general, d.quota_special, q.fraction
    quota = _QUOTA
    if q.group == "city":
        key, labels = "st.city_code", "min(st.city_code) AS city_code"
    elif q.group == "institution":
        key = "st.institution_id::text"
        labels = ("min(st.institution_id) AS institution_id, min(st.institution_name) AS institution_name, "
                  "min(st.institution_kind) AS institution_kind, min(st.city_code) AS city_code")
    else:
        key = "st.id::text"
        labels = ("min(st.id) AS instrument_id, min(st.name) AS name, min(st.model) AS model, "
                  "min(st.institution_id) AS institution_id, min(st.institution_name) AS institution_name, "
                  "min(st.city_code) AS city_code, min(st.usage_kind) AS usage_kind, "
                  "min(st.original_value) AS original_value, min(st.sharing_mode) AS sharing_mode, "
                  "min(st.status) AS status")
    sums = ", ".join(f"coalesce(sum(u.{m}), 0) AS {m}" for m in _METRICS)
    where: list[str] = []
    if q.only == "idle":
        p["idle_ratio"] = d.idle_ratio
        where.append("g.hours < g.quota_hours * CAST(:idle_ratio AS numeric)")
    elif q.only == "saturated":
        p["saturated"] = d.saturated_hours
        where.append("g.hours >= CAST(:saturated AS numeric) * CAST(:fraction AS numeric)")
    elif q.only == "evaluation":
        p["eval_min"] = d.evaluation_min_large
        where.append("g.instruments >= :eval_min")
    order_col = {"hours": "g.hours", "external_hours": "g.external_hours", "amount": "g.amount",
                 "external_amount": "g.external_amount", "users": "coalesce(du.users, 0)",
                 "share_rate": "(g.external_hours / NULLIF(g.hours, 0))",
                 "utilisation": "(g.hours / NULLIF(g.quota_hours, 0))", "instruments": "g.instruments",
                 "rating": "(g.rating_sum::numeric / NULLIF(g.rating_count, 0))", "name": "g.key"}[q.sort]
    if q.sort == "name":
        order_col = {"city": "g.key", "institution": "g.institution_name", "instrument": "g.name"}[q.group]
    direction = "DESC NULLS LAST" if q.descending else "ASC NULLS FIRST"
    page = ""
    if q.limit is not None:
        p["limit"], p["offset"] = q.limit, q.offset
        page = "LIMIT :limit OFFSET :offset"
    sql = f"""
WITH {','.join(ctes)},
g AS (
  SELECT {key} AS key, {labels}, count(*) AS instruments, {sums},
         sum({quota}) AS quota_hours
  FROM st LEFT JOIN u ON u.instrument_id = st.id
  GROUP BY 1
),
du AS (
  SELECT {key} AS key, count(DISTINCT r.user_id) AS users,
         count(DISTINCT r.user_institution_id) FILTER (WHERE r.is_external) AS external_institutions
  FROM service_records r JOIN st ON st.id = r.instrument_id
  WHERE r.ended_at >= :u_lo AND r.ended_at < :u_hi AND {_KNOWN} < :t
  GROUP BY 1
)
SELECT g.*, coalesce(du.users, 0) AS users, coalesce(du.external_institutions, 0) AS external_institutions,
       count(*) OVER () AS total
FROM g LEFT JOIN du ON du.key = g.key
{'WHERE ' + ' AND '.join(where) if where else ''}
ORDER BY {order_col} {direction}, g.key
{page}
"""
    rows = list((await session.execute(text(sql), p)).mappings())
    return rows, int(rows[0]["total"]) if rows else 0


async def usage_totals(session: AsyncSession, asof: AsOf, d: Definitions, f: Filters, w: Window,
                       fraction: Decimal) -> RowMapping:
    """The same figures over the whole scope, in one row (distinct users across it, not a sum of groups)."""
    p = _base_params(asof)
    ctes = [_state_cte(f, d, p), _usage_cte(w, p)]
    p["q_general"], p["q_special"], p["fraction"] = d.quota_general, d.quota_special, fraction
    sums = ", ".join(f"coalesce(sum(u.{m}), 0) AS {m}" for m in _METRICS)
    sql = f"""
WITH {','.join(ctes)},
g AS (
  SELECT count(*) AS instruments, {sums},
         coalesce(sum({_QUOTA}), 0)
           AS quota_hours
  FROM st LEFT JOIN u ON u.instrument_id = st.id
),
du AS (
  SELECT count(DISTINCT r.user_id) AS users,
         count(DISTINCT r.user_institution_id) FILTER (WHERE r.is_external) AS external_institutions
  FROM service_records r JOIN st ON st.id = r.instrument_id
  WHERE r.ended_at >= :u_lo AND r.ended_at < :u_hi AND {_KNOWN} < :t
)
SELECT g.*, du.users, du.external_institutions FROM g, du
"""
    return (await session.execute(text(sql), p)).mappings().one()


# ---- one instrument's records ------------------------------------------------------------------------------------

_RECORD_COLUMNS = """r.id, r.instrument_id,
       CASE WHEN {shown} THEN i.name ELSE '受限仪器' END AS instrument_name,
       CASE WHEN {shown} THEN i.asset_number END AS asset_number, r.started_at, r.ended_at,
       r.hours, r.samples, r.is_external, r.service_mode, r.service_type, r.project_name, r.funding_source,
       r.applicant_name, r.amount, r.fee_basis, r.rating, r.rating_comment, r.user_institution_id,
       r.payment_status, r.paid_at, r.paid_amount, r.invoice_number,
       ui.name AS user_institution_name, r.provider_institution_id, pi.name AS provider_institution_name,
       r.created_at"""


def _records_sql(where: str, shown: str) -> str:
    return f"""
SELECT {_RECORD_COLUMNS.format(shown=shown)}
FROM service_records r
JOIN instruments i ON i.id = r.instrument_id
JOIN institutions pi ON pi.id = r.provider_institution_id
LEFT JOIN institutions ui ON ui.id = r.user_institution_id
WHERE {where}"""


async def instrument_records(session: AsyncSession, asof: AsOf, instrument_id: int, *, year: int | None,
                             limit: int, offset: int, f: Filters) -> tuple[list[RowMapping], int]:
    p: dict[str, Any] = {"t": asof.end, "iid": instrument_id, "limit": limit, "offset": offset}
    shown = _reveal(p, f.reveal_all, f.reveal_institutions, "r.provider_institution_id")
    where = f"r.instrument_id = :iid AND {_KNOWN} < :t"
    if year is not None:
        p["y_lo"], p["y_hi"] = local_midnight(date(year, 1, 1)), local_midnight(date(year + 1, 1, 1))
        where += " AND r.ended_at >= :y_lo AND r.ended_at < :y_hi"
    total = int((await session.execute(
        text(f"SELECT count(*) FROM service_records r WHERE {where}"), p)).scalar_one())
    rows = await session.execute(text(_records_sql(where, shown) + " ORDER BY r.ended_at DESC, r.id DESC"
                                      " LIMIT :limit OFFSET :offset"), p)
    return list(rows.mappings()), total


async def stream_records(session: AsyncSession, asof: AsOf, d: Definitions, f: Filters,
                         w: Window) -> AsyncIterator[RowMapping]:
    """Service records of the instruments in scope that ended in the window, as known before T."""
    p = _base_params(asof)
    _window_params(w, "u", p)
    where = (f"r.instrument_id IN (SELECT id FROM st) AND r.ended_at >= :u_lo AND r.ended_at < :u_hi"
             f" AND {_KNOWN} < :t")
    shown = _reveal(p, f.reveal_all, f.reveal_institutions, "r.provider_institution_id")
    sql = f"WITH {_state_cte(f, d, p)}" + _records_sql(where, shown) + " ORDER BY r.ended_at, r.id"
    result = await session.stream(text(sql), p)
    async for row in result.mappings():
        yield row


async def count_records(session: AsyncSession, asof: AsOf, d: Definitions, f: Filters, w: Window) -> int:
    p = _base_params(asof)
    _window_params(w, "u", p)
    sql = (f"WITH {_state_cte(f, d, p)} SELECT count(*) FROM service_records r WHERE r.instrument_id IN "
           f"(SELECT id FROM st) AND r.ended_at >= :u_lo AND r.ended_at < :u_hi AND {_KNOWN} < :t")
    return int((await session.execute(text(sql), p)).scalar_one())


async def instrument_state(session: AsyncSession, asof: AsOf, instrument_id: int,
                           f: Filters) -> RowMapping | None:
    """The effective-dated state of one instrument at the end of D (whatever its value), or None."""
    p: dict[str, Any] = {"iid": instrument_id, "t": asof.end}
    shown = _reveal(p, f.reveal_all, f.reveal_institutions, "h.institution_id")
    sql = f"""
SELECT h.instrument_id AS id, h.sharing_mode, h.status, h.original_value, h.institution_id, h.city_code,
       CASE WHEN {shown} THEN i.name ELSE {_HIDDEN} END AS name, CASE WHEN {shown} THEN i.model END AS model,
       CASE WHEN {shown} THEN i.asset_number END AS asset_number, i.restricted, i.category_code, coalesce(i.usage_kind, 'general') AS usage_kind,
       inst.name AS institution_name, inst.kind AS institution_kind, h.valid_from, h.valid_to
FROM instrument_history h JOIN instruments i ON i.id = h.instrument_id
JOIN institutions inst ON inst.id = h.institution_id
WHERE h.instrument_id = :iid AND h.valid_from < :t AND (h.valid_to IS NULL OR h.valid_to >= :t)
"""
    return (await session.execute(text(sql), p)).mappings().one_or_none()


async def instrument_current_owner(session: AsyncSession, instrument_id: int) -> RowMapping | None:
    sql = "SELECT id, institution_id, city_code, name FROM instruments WHERE id = :iid"
    return (await session.execute(text(sql), {"iid": instrument_id})).mappings().one_or_none()


async def history_rows(session: AsyncSession, instrument_id: int) -> list[RowMapping]:
    sql = """SELECT valid_from, valid_to, sharing_mode, status, original_value, institution_id, city_code
             FROM instrument_history WHERE instrument_id = :iid ORDER BY valid_from, id"""
    return list((await session.execute(text(sql), {"iid": instrument_id})).mappings())


# ---- reference lists ---------------------------------------------------------------------------------------------

async def institution(session: AsyncSession, institution_id: int) -> RowMapping | None:
    sql = "SELECT id, name, kind, city_code FROM institutions WHERE id = :id"
    return (await session.execute(text(sql), {"id": institution_id})).mappings().one_or_none()


async def institution_names(session: AsyncSession, ids: Sequence[int]) -> dict[int, RowMapping]:
    if not ids:
        return {}
    sql = "SELECT id, name, kind, city_code FROM institutions WHERE id = ANY(:ids)"
    return {r["id"]: r for r in (await session.execute(text(sql), {"ids": list(ids)})).mappings()}


async def top_categories(session: AsyncSession) -> list[RowMapping]:
    sql = "SELECT code, name FROM instrument_categories WHERE level = 1 ORDER BY code"
    return list((await session.execute(text(sql))).mappings())


async def chains(session: AsyncSession) -> list[RowMapping]:
    return list((await session.execute(text("SELECT id, name FROM chains ORDER BY name, id"))).mappings())


async def chain_exists(session: AsyncSession, chain_id: int) -> bool:
    return bool((await session.execute(text("SELECT 1 FROM chains WHERE id = :id"), {"id": chain_id})).first())


# ---- frozen month-end figures and published spans (the audit.snapshot job) -----------------------------------------

async def frozen_months(session: AsyncSession, months: Sequence[date],
                        cities: Sequence[str] | None) -> list[RowMapping]:
    p: dict[str, Any] = {"months": list(months)}
    cond = ""
    if cities is not None:
        p["cities"] = list(cities)
        cond = " AND city_code = ANY(:cities)"
    sql = f"""SELECT month, sum(registered) AS registered, sum(open) AS open, sum(shared) AS shared, count(*) AS n
              FROM audit_monthly_figures WHERE month = ANY(:months){cond} GROUP BY month"""
    return list((await session.execute(text(sql), p)).mappings())


async def missing_months(session: AsyncSession, months: Sequence[date]) -> list[date]:
    sql = """SELECT m::date FROM unnest(CAST(:months AS date[])) m
             WHERE NOT EXISTS (SELECT 1 FROM audit_monthly_figures f WHERE f.month = m) ORDER BY 1"""
    return [r[0] for r in await session.execute(text(sql), {"months": list(months)})]


async def store_month(session: AsyncSession, month: date, rows: Sequence[RowMapping | dict[str, Any]]) -> None:
    values = [{"month": month, "city": r["key"], "registered": r["registered"], "open": r["open"],
               "shared": r["shared"]} for r in rows if not r.get("is_total") and r["key"] is not None]
    if not values:  # nothing registered anywhere yet: a zero row still marks the month as frozen
        values = [{"month": month, "city": "510100", "registered": 0, "open": 0, "shared": 0}]
    await session.execute(text("DELETE FROM audit_monthly_figures WHERE month = :month"), {"month": month})
    if values:
        await session.execute(text(
            "INSERT INTO audit_monthly_figures (month, city_code, registered, open, shared) "
            "VALUES (:month, :city, :registered, :open, :shared)"), values)


async def record_published(session: AsyncSession, today: date, lookahead_days: int) -> int:
    """Record today's published set: open a span for newly published instruments, close the others'."""
    p: dict[str, Any] = {"today": today, "yesterday": today - timedelta(days=1),
                         "p_lo": today + timedelta(days=1), "p_hi": today + timedelta(days=lookahead_days)}
    live = live_published_sql()
    closed = await session.execute(text(f"""
UPDATE audit_published_spans SET valid_to = :yesterday
WHERE valid_to IS NULL AND valid_from <= :today AND instrument_id NOT IN ({live})"""), p)
    await session.execute(text("DELETE FROM audit_published_spans WHERE valid_to < valid_from"))
    opened = await session.execute(text(f"""
INSERT INTO audit_published_spans (instrument_id, valid_from)
SELECT DISTINCT x.instrument_id, CAST(:today AS date) FROM ({live}) x
WHERE NOT EXISTS (SELECT 1 FROM audit_published_spans s WHERE s.instrument_id = x.instrument_id
                  AND s.valid_to IS NULL)"""), p)
    return int(closed.rowcount or 0) + int(opened.rowcount or 0)  # type: ignore[attr-defined]


async def rebuild_usage_summary(session: AsyncSession) -> None:
    """Recompute the summary from the raw rows (the triggers keep it exact; this is for repair and tests)."""
    await session.execute(text("DELETE FROM audit_usage_monthly"))
    await session.execute(text(_REBUILD))


_REBUILD = """
INSERT INTO audit_usage_monthly (instrument_id, month, known_month, records, external_records, hours,
    external_hours, amount, external_amount, rating_count, rating_sum, rating_1, rating_2, rating_3, rating_4,
    rating_5)
SELECT instrument_id, month, known_month, sum(records), sum(external_records), sum(hours), sum(external_hours),
       sum(amount), sum(external_amount), sum(rating_count), sum(rating_sum), sum(rating_1), sum(rating_2),
       sum(rating_3), sum(rating_4), sum(rating_5)
FROM (
  SELECT r.instrument_id, date_trunc('month', r.ended_at AT TIME ZONE 'Asia/Shanghai')::date AS month,
         date_trunc('month', greatest(r.created_at, r.ended_at) AT TIME ZONE 'Asia/Shanghai')::date AS known_month,
         1 AS records, r.is_external::int AS external_records, r.hours,
         CASE WHEN r.is_external THEN r.hours ELSE 0 END AS external_hours, r.amount,
         CASE WHEN r.is_external THEN r.amount ELSE 0 END AS external_amount, 0 AS rating_count, 0 AS rating_sum,
         0 AS rating_1, 0 AS rating_2, 0 AS rating_3, 0 AS rating_4, 0 AS rating_5
  FROM service_records r
  UNION ALL
  SELECT r.instrument_id, date_trunc('month', r.ended_at AT TIME ZONE 'Asia/Shanghai')::date,
         date_trunc('month', greatest(coalesce(r.rated_at, r.created_at), r.created_at, r.ended_at)
                    AT TIME ZONE 'Asia/Shanghai')::date,
         0, 0, 0, 0, 0, 0, 1, r.rating, (r.rating = 1)::int, (r.rating = 2)::int, (r.rating = 3)::int,
         (r.rating = 4)::int, (r.rating = 5)::int
  FROM service_records r WHERE r.rating IS NOT NULL
) f
GROUP BY instrument_id, month, known_month
"""


def month_end_asof(month: date) -> AsOf:
    return AsOf(month_end(month))


async def raw_sharing_counts(session: AsyncSession, asof: AsOf, today: date, d: Definitions,
                             f: Filters) -> RowMapping:
    """The headline computed from the raw service records only (no summary): the reference the summary path
    is tested and benchmarked against."""
    return (await session.execute(*_raw_sharing(asof, today, d, f, by_city=False))).mappings().one()


async def raw_sharing_by_city(session: AsyncSession, asof: AsOf, today: date, d: Definitions,
                              f: Filters) -> list[RowMapping]:
    return list((await session.execute(*_raw_sharing(asof, today, d, f, by_city=True))).mappings())


def _raw_sharing(asof: AsOf, today: date, d: Definitions, f: Filters, *, by_city: bool) -> tuple[Any, dict[str, Any]]:
    p = _base_params(asof)
    p["usable"] = list(d.usable_statuses)
    w = shared_window(asof, d.lookback_months)
    p["s_lo"], p["s_hi"] = w.lo, w.hi
    ctes = [_state_cte(f, d, p), _published_cte(asof, today, d, p), f"""
sh AS (
  SELECT DISTINCT r.instrument_id FROM service_records r
  WHERE r.is_external AND r.ended_at >= :s_lo AND r.ended_at < :s_hi AND {_KNOWN} < :t
)"""]
    key, group = ("st.city_code AS key, ", "GROUP BY st.city_code") if by_city else ("", "")
    sql = f"""
WITH {','.join(ctes)}
SELECT {key}count(*) AS registered, count(*) FILTER (WHERE {_OPEN}) AS open,
       count(*) FILTER (WHERE sh.instrument_id IS NOT NULL) AS shared
FROM st LEFT JOIN pub ON pub.instrument_id = st.id LEFT JOIN sh ON sh.instrument_id = st.id
{group}
"""
    return text(sql), p


async def raw_usage_totals(session: AsyncSession, asof: AsOf, d: Definitions, f: Filters, w: Window) -> RowMapping:
    """Usage sums from the raw rows only, for the equivalence test and the benchmark baseline."""
    p = _base_params(asof)
    p["u_lo"], p["u_hi"] = w.lo, w.hi
    sql = f"""
WITH {_state_cte(f, d, p)}
SELECT count(*) FILTER (WHERE {_KNOWN} < :t) AS records,
       coalesce(sum(r.hours) FILTER (WHERE {_KNOWN} < :t), 0) AS hours,
       coalesce(sum(r.hours) FILTER (WHERE r.is_external AND {_KNOWN} < :t), 0) AS external_hours,
       coalesce(sum(r.amount) FILTER (WHERE {_KNOWN} < :t), 0) AS amount,
       coalesce(sum(r.amount) FILTER (WHERE r.is_external AND {_KNOWN} < :t), 0) AS external_amount,
       count(r.rating) FILTER (WHERE {_RATING_KNOWN} < :t) AS rating_count,
       coalesce(sum(r.rating) FILTER (WHERE {_RATING_KNOWN} < :t), 0) AS rating_sum
FROM service_records r JOIN st ON st.id = r.instrument_id
WHERE r.ended_at >= :u_lo AND r.ended_at < :u_hi
"""
    return (await session.execute(text(sql), p)).mappings().one()

