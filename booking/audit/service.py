"""Audit use cases: who may see what (scope), input checks, and assembling the figures the repository computes.

Scope: platform admins and provincial auditors (科技厅) see the whole province; a 市州 auditor sees instruments in
its 市州 only (asking for another 市州, or an institution or instrument outside it, is 403, and the by-city
breakdown returns only its own 市州's row); an institution admin sees its own institution's figures
(self-assessment pages and `/stats/institutions/{id}`) and nothing province-wide; everyone else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import InstitutionKind
from booking.audit import repository as repo
from booking.audit.repository import Filters, UsageQuery
from booking.audit.rules import (
    PROJECTION_METHOD,
    AsOf,
    Band,
    Definitions,
    add_months,
    as_of_problems,
    mean_rating,
    month_end,
    month_floor,
    project,
    ratio,
    share_rate,
    value_bands,
    year_fraction,
    year_problems,
    year_window,
)
from booking.auth.principal import Principal
from booking.core.clock import to_local, utcnow
from booking.core.errors import Forbidden, NotFound, Problem, RuleViolation
from booking.core.regions import CITIES, city_name
from booking.core.settings import get_settings

DIMENSION_LABELS = {"city": "市州", "kind": "单位类型", "institution": "单位", "category": "仪器大类",
                    "chain": "产业链", "band": "原值区间"}


def definitions() -> Definitions:
    return Definitions.from_settings(get_settings())


def today() -> date:
    return to_local(utcnow()).date()


# ---- scope -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scope:
    kind: str  # province | city | institution
    cities: tuple[str, ...] = ()
    institutions: tuple[int, ...] = ()
    reveal_all: bool = False  # restricted instruments' names: platform admins
    reveal_institutions: tuple[int, ...] = ()  # ...and the managers of the owning institution

    @property
    def province(self) -> bool:
        return self.kind == "province"

    def filters(self, **kw: Any) -> Filters:
        return Filters(province=self.province, scope_cities=self.cities, scope_institutions=self.institutions,
                       reveal_all=self.reveal_all, reveal_institutions=self.reveal_institutions, **kw)

    def may_city(self, code: str) -> bool:
        return self.province or code in self.cities

    def may_institution(self, institution_id: int, city_code: str) -> bool:
        return self.province or city_code in self.cities or institution_id in self.institutions

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "cities": list(self.cities), "institutions": list(self.institutions)}


def scope_of(principal: Principal) -> Scope:
    reveal = {"reveal_all": principal.is_admin,
              "reveal_institutions": tuple(sorted(principal.managed_institution_ids))}
    if principal.is_admin or principal.is_provincial_auditor:
        return Scope("province", **reveal)  # type: ignore[arg-type]
    cities = tuple(sorted(principal.auditor_city_codes))
    insts = tuple(sorted(principal.admin_institution_ids))
    if cities:
        return Scope("city", cities, insts, **reveal)  # type: ignore[arg-type]
    if insts:
        return Scope("institution", (), insts, **reveal)  # type: ignore[arg-type]
    raise Forbidden("只有科技厅、市州科技局审计人员和单位管理员可以查看共享统计")


def auditor_scope(principal: Principal) -> Scope:
    """Province-wide and per-市州 figures: auditors and platform admins only."""
    scope = scope_of(principal)
    if scope.kind == "institution":
        raise Forbidden("单位管理员只能查看本单位的统计（/audit/institutions/本单位）")
    return scope


def check_city(scope: Scope, city: str | None, field: str = "city") -> None:
    if city is None:
        return
    if city not in CITIES:
        raise RuleViolation(f"未知的市州代码 {city}", problems=[Problem(field, "unknown_city",
                                                                    f"未知的市州代码 {city}")])
    if not scope.may_city(city):
        raise Forbidden(f"无权查看{city_name(city)}的统计（只能查看本市州）")


# ---- input -------------------------------------------------------------------------------------------------------

def resolve_asof(day: date | None) -> AsOf:
    d = definitions()
    now = today()
    day = day or now
    problems = as_of_problems(day, now, d.data_start)
    if problems:
        raise RuleViolation(problems[0].message, problems=problems)
    return AsOf(day)


def resolve_year(year: int | None, asof: AsOf) -> int:
    year = year or asof.day.year
    problems = year_problems(year, asof, definitions().data_start)
    if problems:
        raise RuleViolation(problems[0].message, problems=problems)
    return year


async def check_filters(session: AsyncSession, *, kind: str | None = None, category: str | None = None,
                        chain: int | None = None, band: str | None = None) -> Band | None:
    problems: list[Problem] = []
    if kind is not None and kind not in {k.value for k in InstitutionKind}:
        problems.append(Problem("kind", "unknown_kind", f"未知的单位类型 {kind}"))
    if category is not None and category not in {c["code"][:2] for c in await repo.top_categories(session)}:
        problems.append(Problem("category", "unknown_category", f"未知的仪器大类 {category}（应为 2 位大类代码）"))
    if chain is not None and chain != 0 and not await repo.chain_exists(session, chain):
        problems.append(Problem("chain", "unknown_chain", f"未知的产业链标签 {chain}"))
    found: Band | None = None
    if band is not None:
        found = next((b for b in value_bands(definitions()) if b.key == band), None)
        if found is None:
            problems.append(Problem("band", "unknown_band", f"未知的原值区间 {band}"))
    if problems:
        raise RuleViolation("查询条件有误", problems=problems)
    return found


# ---- links -------------------------------------------------------------------------------------------------------

def list_link(asof: AsOf, measure: str, *, api: bool = False, **filters: Any) -> str:
    params = {"as_of": asof.day.isoformat(), "measure": measure}
    params.update({k: v for k, v in filters.items() if v is not None})
    base = "/api/v1/stats/instruments" if api else "/audit/list"
    return f"{base}?{urlencode(params)}"


def _cell_links(asof: AsOf, **filters: Any) -> dict[str, str]:
    return {m: list_link(asof, m, **filters) for m in ("registered", "open", "shared")}


# ---- headline, trend, projection ---------------------------------------------------------------------------------

def _counts(row: RowMapping | dict[str, Any] | None) -> dict[str, int]:
    if row is None:
        return {"registered": 0, "open": 0, "shared": 0}
    return {"registered": int(row["registered"]), "open": int(row["open"]), "shared": int(row["shared"])}


def trend_months(asof: AsOf, d: Definitions) -> list[date]:
    """Complete months ending before D, oldest first, none ending before the data start, at most trend_months − 1
    of them (D itself is the last point)."""
    months: list[date] = []
    m = add_months(month_floor(asof.day), -1)
    while len(months) < d.trend_months - 1 and month_end(m) >= d.data_start:
        months.insert(0, m)
        m = add_months(m, -1)
    return months


async def trend(session: AsyncSession, asof: AsOf, scope: Scope, city: str | None) -> list[dict[str, Any]]:
    d = definitions()
    months = trend_months(asof, d)
    cities: list[str] | None = None
    if city:
        cities = [city]
    elif not scope.province:
        cities = list(scope.cities)
    frozen = {r["month"]: r for r in await repo.frozen_months(session, months, cities)} if months else {}
    points: list[dict[str, Any]] = []
    now = today()
    for m in months:  # at most trend_months points; each missing one is computed in SQL
        row = frozen.get(m)
        if row is None:
            f = scope.filters(city=city)
            row = (await repo.sharing_counts(session, AsOf(month_end(m)), now, d, f, None))[0]
        points.append({"month": m.strftime("%Y-%m"), "as_of": month_end(m).isoformat(), **_counts(row)})
    return points


async def headline(session: AsyncSession, principal: Principal, asof: AsOf, city: str | None = None) -> dict[str, Any]:
    scope = auditor_scope(principal)
    check_city(scope, city)
    d = definitions()
    f = scope.filters(city=city)
    current = _counts((await repo.sharing_counts(session, asof, today(), d, f, None))[0])
    points = await trend(session, asof, scope, city)
    series = [*points, {"month": asof.day.strftime("%Y-%m"), "as_of": asof.day.isoformat(), **current}]
    proj = project([(date.fromisoformat(p["as_of"]), p["shared"]) for p in series], d.target_date)
    return {
        "target": d.target, "registered": current["registered"], "open": current["open"],
        "shared": current["shared"], "progress": float(ratio(current["shared"], d.target) or 0),
        "as_of": asof.day.isoformat(), "scope": scope.as_dict(), "city": city,
        "definitions": d.as_dict(), "trend": series,
        "projection": {"date": d.target_date.isoformat(), "shared": proj, "method": PROJECTION_METHOD,
                       "points": len(series)},
        "links": _cell_links(asof, city=city),
    }


# ---- breakdowns --------------------------------------------------------------------------------------------------

SORTS = ("key", "registered", "open", "shared", "open_rate", "shared_rate")


def _sort_rows(rows: list[dict[str, Any]], sort: str, descending: bool) -> list[dict[str, Any]]:
    # Ordering a result of at most a few hundred grouped rows; the grouping itself was done in SQL.
    def key(r: dict[str, Any]) -> Any:
        v = r.get(sort)
        return (v is None, v if v is not None else 0) if sort != "key" else r["sort_key"]
    return sorted(rows, key=key, reverse=descending and sort != "key")


async def breakdown(session: AsyncSession, principal: Principal, asof: AsOf, dim: str, *, city: str | None = None,
                    sort: str = "key", descending: bool = True) -> dict[str, Any]:
    scope = auditor_scope(principal)
    check_city(scope, city)
    d = definitions()
    bands = value_bands(d)
    f = scope.filters(city=city)
    result = await repo.sharing_counts(session, asof, today(), d, f, dim, bands)
    counted = {r["key"]: _counts(r) for r in result if not r["is_total"]}
    totals: dict[str, Any] = _counts(next((r for r in result if r["is_total"]), None))
    totals.update(open_rate=_float(ratio(totals["open"], totals["registered"])),
                  shared_rate=_float(ratio(totals["shared"], totals["registered"])))
    labels: list[tuple[str, str, dict[str, Any]]] = []  # key, label, link filters
    if dim == "city":
        codes = [c for c in CITIES if scope.may_city(c) and (city is None or c == city)]
        labels = [(c, CITIES[c], {"city": c}) for c in codes]
    elif dim == "kind":
        labels = [(k.value, k.value, {"kind": k.value, "city": city}) for k in InstitutionKind]
    elif dim == "category":
        labels = [(c["code"], f"{c['code']} {c['name']}", {"category": c["code"][:2], "city": city})
                  for c in await repo.top_categories(session)]
    elif dim == "chain":
        labels = [(str(c["id"]), c["name"], {"chain": c["id"], "city": city}) for c in await repo.chains(session)]
        labels.append(("0", "未标注产业链", {"chain": 0, "city": city}))
    elif dim == "band":
        labels = [(b.key, b.label, {"band": b.key, "city": city}) for b in bands]
    elif dim == "institution":
        ids = [int(k) for k in counted if k is not None]
        names = await repo.institution_names(session, ids)
        labels = [(str(i), names[i]["name"], {"institution": i, "city": city}) for i in ids if i in names]
    rows: list[dict[str, Any]] = []
    for index, (key, label, link) in enumerate(labels):
        c = counted.get(key, {"registered": 0, "open": 0, "shared": 0})
        row: dict[str, Any] = {"key": key, "label": label, **c,
                               "open_rate": _float(ratio(c["open"], c["registered"])),
                               "shared_rate": _float(ratio(c["shared"], c["registered"])),
                               "links": _cell_links(asof, **link), "href": list_link(asof, "registered", **link),
                               "sort_key": index if dim != "institution" else label}
        if dim == "institution":
            info = names[int(key)]
            row.update({"institution_kind": info["kind"], "city_code": info["city_code"],
                        "page": f"/audit/institutions/{key}?as_of={asof.day.isoformat()}"})
        if dim == "city":
            row["page"] = f"/audit/cities/{key}?as_of={asof.day.isoformat()}"
        rows.append(row)
    rows = _sort_rows(rows, sort, descending)
    for r in rows:
        r.pop("sort_key", None)
    return {"dimension": dim, "label": DIMENSION_LABELS[dim], "as_of": asof.day.isoformat(), "city": city,
            "scope": scope.as_dict(), "items": rows, "totals": totals,
            "note": "一台仪器可标注多个产业链，各行之和可能大于合计" if dim == "chain" else None}


def _float(value: Decimal | None) -> float | None:
    return float(value) if value is not None else None


# ---- usage -------------------------------------------------------------------------------------------------------

def usage_row(r: RowMapping | dict[str, Any], d: Definitions, fraction: Decimal) -> dict[str, Any]:
    hours = Decimal(r["hours"])
    quota = Decimal(r["quota_hours"] or 0)
    out: dict[str, Any] = {
        "instruments": int(r["instruments"]), "records": int(r["records"]),
        "hours": float(hours), "external_hours": float(r["external_hours"]),
        "share_rate": _float(share_rate(r["external_hours"], hours)),
        "amount": float(r["amount"]), "external_amount": float(r["external_amount"]),
        "users": int(r["users"] or 0), "external_institutions": int(r["external_institutions"] or 0),
        "rating_mean": _float(mean_rating(r["rating_sum"], r["rating_count"])),
        "rating_count": int(r["rating_count"]),
        "ratings": {str(k): int(r[f"rating_{k}"]) for k in (5, 4, 3, 2, 1)},
        "quota_hours": float(quota.quantize(Decimal("0.01"))), "utilisation": _float(ratio(hours, quota)),
    }
    if int(r["instruments"]) == 1 or "instrument_id" in r:
        out["idle"] = quota > 0 and hours < quota * d.idle_ratio
        out["saturated"] = hours >= d.saturated_hours * fraction
    return out


async def usage_table(session: AsyncSession, principal: Principal, asof: AsOf, *, group: str, year: int | None,
                      city: str | None = None, institution_id: int | None = None, only: str | None = None,
                      sort: str = "hours", descending: bool = True, limit: int | None = None,
                      offset: int = 0, scope: Scope | None = None, with_totals: bool = True) -> dict[str, Any]:
    scope = scope or auditor_scope(principal)
    check_city(scope, city)
    d = definitions()
    y = resolve_year(year, asof)
    fraction = year_fraction(asof, y)
    f = scope.filters(city=city, institution_id=institution_id)
    q = UsageQuery(group=group, year=y, window=year_window(asof, y), fraction=fraction, only=only, sort=sort,
                   descending=descending, limit=limit, offset=offset)
    rows, total = await repo.usage(session, asof, d, f, q)
    items = []
    for r in rows:
        item = usage_row(r, d, fraction)
        if group == "city":
            item.update({"city_code": r["city_code"], "label": city_name(r["city_code"]),
                         "page": f"/audit/cities/{r['city_code']}?as_of={asof.day.isoformat()}&year={y}"})
        elif group == "institution":
            item.update({"institution_id": r["institution_id"], "label": r["institution_name"],
                         "institution_kind": r["institution_kind"], "city_code": r["city_code"],
                         "page": f"/audit/institutions/{r['institution_id']}?as_of={asof.day.isoformat()}&year={y}"})
        else:
            item.update({"instrument_id": r["instrument_id"], "label": r["name"], "model": r["model"],
                         "institution_id": r["institution_id"], "institution_name": r["institution_name"],
                         "city_code": r["city_code"], "usage_kind": r["usage_kind"],
                         "original_value": float(r["original_value"]), "sharing_mode": r["sharing_mode"],
                         "status": r["status"],
                         "page": f"/audit/instruments/{r['instrument_id']}?as_of={asof.day.isoformat()}&year={y}"})
        items.append(item)
    totals = usage_row(await repo.usage_totals(session, asof, d, f, q.window, fraction), d, fraction) \
        if with_totals else None
    return {"group": group, "year": y, "as_of": asof.day.isoformat(), "year_fraction": float(fraction),
            "only": only, "items": items, "total": total, "limit": limit, "offset": offset,
            "totals": totals, "scope": scope.as_dict(),
            "thresholds": {"saturated_hours": float(d.saturated_hours * fraction),
                           "idle_ratio": float(d.idle_ratio)}}


# ---- drill-down pages --------------------------------------------------------------------------------------------

async def city_figures(session: AsyncSession, principal: Principal, asof: AsOf, code: str,
                       year: int | None) -> dict[str, Any]:
    scope = auditor_scope(principal)
    check_city(scope, code, field="code")
    head = await headline(session, principal, asof, city=code)
    insts = await breakdown(session, principal, asof, "institution", city=code, sort="registered")
    use = await usage_table(session, principal, asof, group="institution", year=year, city=code, scope=scope)
    return {"city_code": code, "city_name": CITIES[code], "headline": head, "institutions": insts, "usage": use}


async def institution_scope(session: AsyncSession, principal: Principal,
                            institution_id: int) -> tuple[Scope, RowMapping]:
    scope = scope_of(principal)
    inst = await repo.institution(session, institution_id)
    if inst is None:
        raise NotFound(f"单位 {institution_id} 不存在")
    if not scope.may_institution(institution_id, inst["city_code"]):
        raise Forbidden("只能查看本单位（或本市州）的统计")
    return scope, inst


async def institution_figures(session: AsyncSession, principal: Principal, institution_id: int, asof: AsOf,
                              year: int | None, *, sort: str = "hours", descending: bool = True,
                              limit: int | None = None, offset: int = 0) -> dict[str, Any]:
    scope, inst = await institution_scope(session, principal, institution_id)
    d = definitions()
    f = scope.filters(institution_id=institution_id)
    counts = _counts((await repo.sharing_counts(session, asof, today(), d, f, None))[0])
    use = await usage_table(session, principal, asof, group="instrument", year=year, institution_id=institution_id,
                            sort=sort, descending=descending, scope=scope, limit=limit, offset=offset)
    return {"institution": {"id": inst["id"], "name": inst["name"], "kind": inst["kind"],
                            "city_code": inst["city_code"], "city_name": city_name(inst["city_code"])},
            "as_of": asof.day.isoformat(), "year": use["year"], **counts,
            "evaluated": counts["registered"] >= d.evaluation_min_large,
            "links": _cell_links(asof, institution=institution_id),
            "usage": use["totals"], "instruments": use["items"], "instruments_total": use["total"],
            "limit": limit, "offset": offset, "definitions": d.as_dict()}


async def instrument_scope(session: AsyncSession, principal: Principal, instrument_id: int,
                           asof: AsOf) -> tuple[Scope, RowMapping]:
    scope = scope_of(principal)
    state = await repo.instrument_state(session, asof, instrument_id, scope.filters())
    if state is None:
        current = await repo.instrument_current_owner(session, instrument_id)
        if current is None:
            raise NotFound(f"仪器 {instrument_id} 不存在")
        if not scope.may_institution(current["institution_id"], current["city_code"]):
            raise Forbidden("无权查看该仪器的统计")
        raise NotFound(f"仪器 {instrument_id} 在统计日 {asof.day.isoformat()} 未在平台登记（或已退役）")
    if not scope.may_institution(state["institution_id"], state["city_code"]):
        raise Forbidden("无权查看该仪器的统计")
    return scope, state


async def instrument_figures(session: AsyncSession, principal: Principal, instrument_id: int,
                             asof: AsOf) -> dict[str, Any]:
    scope, state = await instrument_scope(session, principal, instrument_id, asof)
    d = definitions()
    is_large = Decimal(state["original_value"]) >= d.threshold
    flags = {"registered": False, "open": False, "shared": False}
    years: list[dict[str, Any]] = []
    if is_large:
        f = scope.filters(instrument_id=instrument_id)
        rows, _ = await repo.instruments_behind(session, asof, today(), d, f, "registered", sort="id", limit=1,
                                                offset=0)
        if rows:
            flags = {"registered": True, "open": bool(rows[0]["is_open"]), "shared": bool(rows[0]["is_shared"])}
        for y in range(asof.day.year, d.data_start.year - 1, -1):
            fraction = year_fraction(asof, y)
            q = UsageQuery(group="instrument", year=y, window=year_window(asof, y), fraction=fraction)
            urows, _ = await repo.usage(session, asof, d, f, q)
            if urows:
                years.append({"year": y, "year_fraction": float(fraction), **usage_row(urows[0], d, fraction)})
    history = [dict(h) for h in await repo.history_rows(session, instrument_id)]
    return {"instrument": {**{k: state[k] for k in ("id", "name", "model", "asset_number", "category_code",
                                                     "usage_kind", "sharing_mode", "status", "institution_id",
                                                     "institution_name", "city_code")},
                           "original_value": float(state["original_value"]),
                           "city_name": city_name(state["city_code"])},
            "as_of": asof.day.isoformat(), "large": is_large, **flags, "years": years, "history": history,
            "records_href": f"/audit/instruments/{instrument_id}/records?as_of={asof.day.isoformat()}"}


async def instrument_records(session: AsyncSession, principal: Principal, instrument_id: int, asof: AsOf,
                             year: int | None, limit: int, offset: int) -> dict[str, Any]:
    scope, state = await instrument_scope(session, principal, instrument_id, asof)
    if year is not None:
        resolve_year(year, asof)
    rows, total = await repo.instrument_records(session, asof, instrument_id, year=year, limit=limit, offset=offset,
                                                f=scope.filters())
    return {"instrument": {"id": state["id"], "name": state["name"], "institution_id": state["institution_id"],
                           "institution_name": state["institution_name"], "city_code": state["city_code"]},
            "as_of": asof.day.isoformat(), "year": year, "items": [dict(r) for r in rows], "total": total,
            "limit": limit, "offset": offset}


async def behind(session: AsyncSession, principal: Principal, asof: AsOf, measure: str, *, city: str | None,
                 institution_id: int | None, kind: str | None, category: str | None, chain: int | None,
                 band: str | None, sort: str, limit: int, offset: int) -> dict[str, Any]:
    if institution_id is not None and city is None:
        scope, _inst = await institution_scope(session, principal, institution_id)
    else:
        scope = auditor_scope(principal)
    check_city(scope, city)
    found_band = await check_filters(session, kind=kind, category=category, chain=chain, band=band)
    f = scope.filters(city=city, institution_id=institution_id, institution_kind=kind, category=category,
                      chain_id=chain, band=found_band)
    rows, total = await repo.instruments_behind(session, asof, today(), definitions(), f, measure, sort=sort,
                                                limit=limit, offset=offset)
    items = [{**dict(r), "original_value": float(r["original_value"]), "city_name": city_name(r["city_code"]),
              "page": f"/audit/instruments/{r['id']}?as_of={asof.day.isoformat()}"} for r in rows]
    for item in items:
        item.pop("total", None)
    return {"as_of": asof.day.isoformat(), "measure": measure, "items": items, "total": total, "limit": limit,
            "offset": offset, "filters": {"city": city, "institution": institution_id, "kind": kind,
                                          "category": category, "chain": chain, "band": band}}


# ---- the snapshot job --------------------------------------------------------------------------------------------

async def snapshot(session: AsyncSession, now_day: date | None = None) -> int:
    """Record today's published availability, then freeze every complete month's end figures not yet frozen.

    Idempotent and catching up: each run covers every month since the data start that lacks figures."""
    d = definitions()
    day = now_day or today()
    changed = await repo.record_published(session, day, d.lookahead_days)
    months: list[date] = []
    m = month_floor(d.data_start)
    while month_end(m) < day:
        months.append(m)
        m = add_months(m, 1)
    for month in await repo.missing_months(session, months):
        rows = await repo.sharing_counts(session, AsOf(month_end(month)), day, d, Filters(), "city")
        await repo.store_month(session, month, rows)
        changed += 1
    return changed

