"""Audit pages under /audit: dashboard, breakdowns, usage lists, drill-down 市州 → 单位 → 仪器 → 服务记录, exports.

Pages are server-rendered with real links (sorting is a query parameter); the charts are inline SVG.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from booking.activity.service import record
from booking.audit import charts, exports, service
from booking.audit.rules import AsOf, parse_day, value_bands
from booking.auth.deps import CsrfDep, WebUser, load_web_principal
from booking.core.db import SessionDep
from booking.core.errors import DomainError, RuleViolation, invalid
from booking.core.handlers import respond
from booking.core.regions import CITIES
from booking.core.web import redirect, render, templates
from instruments.exporter import disposition
from instruments.models import SHARING_MODE_LABELS, STATUS_LABELS, USAGE_KIND_LABELS

router = APIRouter(include_in_schema=False, dependencies=[Depends(load_web_principal), CsrfDep])


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f}%"


def _num(value: float | int | None, places: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{places}f}"


templates.env.filters["pct"] = _pct
templates.env.filters["num"] = _num


def guarded(fn: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Render a domain error's page inside the handler. Left to propagate, the error would first roll the request's
    session back, which expires the signed-in principal the page's navigation needs."""
    @functools.wraps(fn)
    async def wrapper(**kwargs: Any) -> Response:
        try:
            return await fn(**kwargs)
        except DomainError as exc:
            if exc.status == 401:
                raise
            return respond(kwargs["request"], exc.status, exc.title, exc.detail, type_slug=exc.type_slug,
                           problems=exc.problems)
    return wrapper

DIMS = ("city", "kind", "institution", "category", "chain", "band")
Str = Annotated[str | None, Query(max_length=20)]


def _asof(raw: str | None) -> AsOf:
    day, problems = parse_day(raw, "as_of")
    if problems:
        raise RuleViolation(problems[0].message, problems=problems)
    return service.resolve_asof(day)


def _int(raw: str | None, field: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise invalid(field, "int_parsing", f"{field} 应为整数")
    return int(raw)


def _choice(raw: str | None, allowed: tuple[str, ...], default: str, field: str) -> str:
    if raw is None or raw == "":
        return default
    if raw not in allowed:
        raise invalid(field, "invalid", f"{field} 取值无效（可选：{'、'.join(allowed)}）")
    return raw


def _base(asof: AsOf, **extra: Any) -> dict[str, Any]:
    return {"as_of": asof.day.isoformat(), "defs": service.definitions(), "SHARING_MODE_LABELS": SHARING_MODE_LABELS,
            "STATUS_LABELS": STATUS_LABELS, "USAGE_KIND_LABELS": USAGE_KIND_LABELS,
            "today": service.today().isoformat(), **extra}


@router.get("/audit")
@guarded
async def dashboard(request: Request, session: SessionDep, principal: WebUser, as_of: Str = None,
                    city: Str = None, sort: Str = None, order: Str = None, year: Str = None) -> Response:
    scope = service.scope_of(principal)
    if scope.kind == "institution":
        target = f"/audit/institutions/{scope.institutions[0]}"
        return redirect(request, target + (f"?as_of={as_of}" if as_of else ""))
    asof = _asof(as_of)
    city = city or None
    sort_key = _choice(sort, service.SORTS, "key", "sort")
    direction = _choice(order, ("asc", "desc"), "desc", "order")
    head = await service.headline(session, principal, asof, city=city)
    by_city = await service.breakdown(session, principal, asof, "city", city=city, sort=sort_key,
                                      descending=direction == "desc")
    use = await service.usage_table(session, principal, asof, group="city", year=_int(year, "year"), city=city,
                                    sort="name", descending=False)
    ctx = _base(asof, head=head, by_city=by_city, usage=use, city=city, sort=sort_key, order=direction,
                gauge=charts.gauge(head["shared"], head["target"]),
                bars=charts.bars(sorted(by_city["items"], key=lambda r: -r["registered"])),
                lines=charts.lines(head["trend"]), scope=head["scope"], dims=service.DIMENSION_LABELS)
    return render(request, "audit/dashboard.html", ctx, block="content")


@router.get("/audit/breakdown/{dim}")
@guarded
async def breakdown(request: Request, session: SessionDep, principal: WebUser, dim: str, as_of: Str = None,
                    city: Str = None, sort: Str = None, order: Str = None) -> Response:
    dim = _choice(dim, DIMS, "city", "dim")
    asof = _asof(as_of)
    sort_key = _choice(sort, service.SORTS, "key", "sort")
    direction = _choice(order, ("asc", "desc"), "desc", "order")
    result = await service.breakdown(session, principal, asof, dim, city=city or None, sort=sort_key,
                                     descending=direction == "desc")
    return render(request, "audit/breakdown.html",
                  _base(asof, result=result, dim=dim, city=city or None, sort=sort_key, order=direction,
                        dims=service.DIMENSION_LABELS))


USAGE_VIEWS = {"city": ("city", None, "机时与共享率（按市州）"),
               "institution": ("institution", None, "机时与共享率（按单位）"),
               "instrument": ("instrument", None, "机时与共享率（按仪器）"), "idle": ("instrument", "idle", "闲置仪器"),
               "saturated": ("instrument", "saturated", "饱和仪器"),
               "evaluation": ("institution", "evaluation", "省级评价范围单位（≥ 5 台大型仪器）")}
PAGE = 50


@router.get("/audit/usage")
@guarded
async def usage(request: Request, session: SessionDep, principal: WebUser, view: Str = None, as_of: Str = None,
                year: Str = None, city: Str = None, sort: Str = None, order: Str = None,
                offset: Str = None) -> Response:
    view = _choice(view, tuple(USAGE_VIEWS), "city", "view")
    group, only, title = USAGE_VIEWS[view]
    asof = _asof(as_of)
    sort_key = _choice(sort, ("hours", "external_hours", "share_rate", "amount", "external_amount", "users",
                              "utilisation", "instruments", "name", "rating"), "hours", "sort")
    direction = _choice(order, ("asc", "desc"), "desc", "order")
    off = _int(offset, "offset") or 0
    limit = PAGE if group == "instrument" else None
    result = await service.usage_table(session, principal, asof, group=group, year=_int(year, "year"),
                                       city=city or None, only=only, sort=sort_key, descending=direction == "desc",
                                       limit=limit, offset=off)
    return render(request, "audit/usage.html",
                  _base(asof, result=result, view=view, title=title, group=group, city=city or None, sort=sort_key,
                        order=direction, offset=off, page_size=PAGE, views=USAGE_VIEWS))


@router.get("/audit/cities/{code}")
@guarded
async def city_page(request: Request, session: SessionDep, principal: WebUser, code: str, as_of: Str = None,
                    year: Str = None) -> Response:
    if code not in CITIES:
        raise invalid("code", "unknown_city", f"未知的市州代码 {code[:10]}")
    asof = _asof(as_of)
    data = await service.city_figures(session, principal, asof, code, _int(year, "year"))
    return render(request, "audit/city.html", _base(asof, data=data, lines=charts.lines(data["headline"]["trend"]),
                                                     gauge=charts.gauge(data["headline"]["shared"],
                                                                        data["headline"]["target"])))


@router.get("/audit/institutions/{institution_id}")
@guarded
async def institution_page(request: Request, session: SessionDep, principal: WebUser, institution_id: int,
                           as_of: Str = None, year: Str = None, sort: Str = None, order: Str = None,
                           offset: Str = None) -> Response:
    asof = _asof(as_of)
    off = _int(offset, "offset") or 0
    sort_key = _choice(sort, ("hours", "external_hours", "share_rate", "amount", "users", "utilisation", "name",
                              "rating"), "hours", "sort")
    direction = _choice(order, ("asc", "desc"), "desc", "order")
    data = await service.institution_figures(session, principal, institution_id, asof, _int(year, "year"),
                                             sort=sort_key, descending=direction == "desc", limit=PAGE, offset=off)
    return render(request, "audit/institution.html", _base(asof, data=data, sort=sort_key, order=direction,
                                                           offset=off, page_size=PAGE))


@router.get("/audit/instruments/{instrument_id}")
@guarded
async def instrument_page(request: Request, session: SessionDep, principal: WebUser, instrument_id: int,
                          as_of: Str = None) -> Response:
    asof = _asof(as_of)
    data = await service.instrument_figures(session, principal, instrument_id, asof)
    return render(request, "audit/instrument.html", _base(asof, data=data))


@router.get("/audit/instruments/{instrument_id}/records")
@guarded
async def records_page(request: Request, session: SessionDep, principal: WebUser, instrument_id: int,
                       as_of: Str = None, year: Str = None, offset: Str = None) -> Response:
    asof = _asof(as_of)
    off = _int(offset, "offset") or 0
    data = await service.instrument_records(session, principal, instrument_id, asof, _int(year, "year"), PAGE, off)
    rows = [exports.record_row(r) for r in data["items"]]
    return render(request, "audit/records.html", _base(asof, data=data, rows=rows, offset=off, page_size=PAGE),
                  block="records")


@router.get("/audit/list")
@guarded
async def instrument_list(request: Request, session: SessionDep, principal: WebUser, as_of: Str = None,
                          measure: Str = None, city: Str = None, institution: Str = None, kind: Str = None,
                          category: Str = None, chain: Str = None, band: Str = None, sort: Str = None,
                          offset: Str = None) -> Response:
    asof = _asof(as_of)
    m = _choice(measure, ("registered", "open", "shared", "not_open", "not_shared"), "registered", "measure")
    s = _choice(sort, ("name", "value_desc", "institution", "id"), "name", "sort")
    off = _int(offset, "offset") or 0
    data = await service.behind(session, principal, asof, m, city=city or None,
                                institution_id=_int(institution, "institution"), kind=kind or None,
                                category=category or None, chain=_int(chain, "chain"), band=band or None, sort=s,
                                limit=PAGE, offset=off)
    params = {k: v for k, v in {"as_of": asof.day.isoformat(), "measure": m, "city": city, "institution": institution,
                                "kind": kind, "category": category, "chain": chain, "band": band, "sort": s}.items()
              if v}
    bands = {b.key: b.label for b in value_bands(service.definitions())}
    return render(request, "audit/list.html", _base(asof, data=data, params=params, offset=off, page_size=PAGE,
                                                    measure=m, bands=bands), block="results")


@router.get("/audit/export.xlsx")
@guarded
async def export_xlsx(request: Request, session: SessionDep, principal: WebUser, as_of: Str = None,
                      year: Str = None, city: Str = None) -> Response:
    asof = _asof(as_of)
    y = _int(year, "year")
    sheets = await exports.build_report(session, principal, asof, y, city or None)
    content = await asyncio.to_thread(exports.report_xlsx, sheets)
    record(session, actor_id=principal.id, action="stats.exported", target_type="stats", target_id="report.xlsx",
           after={"format": "xlsx", "as_of": asof.day, "year": y, "city": city or None, "via": "web",
                  "sheets": [s.key for s in sheets]})
    return Response(content, media_type=exports.XLSX_TYPE,
                    headers={"Content-Disposition": disposition(exports.filename("共享统计", asof, "xlsx", city))})


@router.get("/audit/export.csv")
@guarded
async def export_csv(request: Request, session: SessionDep, principal: WebUser, sheet: Str = None,
                     as_of: Str = None, year: Str = None, city: Str = None) -> Response:
    asof = _asof(as_of)
    key = _choice(sheet, exports.SHEET_KEYS, "by-city", "sheet")
    y = _int(year, "year")
    sheets = await exports.build_report(session, principal, asof, y, city or None, only=key)
    record(session, actor_id=principal.id, action="stats.exported", target_type="stats", target_id=f"{key}.csv",
           after={"format": "csv", "sheet": key, "as_of": asof.day, "year": y, "city": city or None, "via": "web"})
    return Response(exports.sheet_csv(sheets[0]), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": disposition(exports.filename(f"共享统计-{sheets[0].title}", asof,
                                                                                 "csv", city))})
