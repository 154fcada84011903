"""JSON API of the audit under /api/v1/stats: headline, breakdowns, usage, drill-down lists, exports.

Every endpoint needs a bearer token; who sees what is decided by the service's scope (see booking.audit.service).
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from booking.activity.service import record
from booking.audit import exports, service
from booking.audit import repository as repo
from booking.audit.rules import year_window
from booking.auth.deps import ApiUser
from booking.core.db import SessionDep, get_sessionmaker
from booking.core.errors import RuleViolation, invalid
from booking.core.pagination import PageDep
from instruments.exporter import disposition

router = APIRouter(prefix="/api/v1/stats", tags=["audit"])

AsOfQ = Annotated[date | None, Query(description="统计日 YYYY-MM-DD（默认今天，北京时间）")]
CityQ = Annotated[str | None, Query(pattern=r"^\d{6}$", description="市州代码")]
YearQ = Annotated[int | None, Query(ge=1900, le=9999, description="统计年度（默认统计日所在年度）")]
Dim = Literal["city", "kind", "institution", "category", "chain", "band"]
Order = Literal["asc", "desc"]
RECORDS_XLSX_MAX = 100_000


@router.get("/sharing", summary="Registered, open and actually shared large instruments against the target")
async def sharing(principal: ApiUser, session: SessionDep, as_of: AsOfQ = None, city: CityQ = None) -> dict[str, Any]:
    return await service.headline(session, principal, service.resolve_asof(as_of), city=city)


@router.get("/sharing/by-{dim}", summary="Registered / open / shared by 市州, institution kind, institution, "
                                          "category 大类, chain tag or value band; every row links to its instruments")
async def sharing_by(principal: ApiUser, session: SessionDep, dim: Dim, as_of: AsOfQ = None, city: CityQ = None,
                     sort: Literal["key", "registered", "open", "shared", "open_rate", "shared_rate"] = "key",
                     order: Order = "desc") -> dict[str, Any]:
    return await service.breakdown(session, principal, service.resolve_asof(as_of), dim, city=city, sort=sort,
                                   descending=order == "desc")


UsageSort = Literal["hours", "external_hours", "share_rate", "amount", "external_amount", "users", "utilisation",
                    "instruments", "name", "rating"]


@router.get("/usage", summary="Machine hours, 共享率, income, users and satisfaction per 市州, institution or "
                           "instrument")
async def usage(principal: ApiUser, session: SessionDep, page: PageDep, as_of: AsOfQ = None, year: YearQ = None,
                group: Literal["city", "institution", "instrument"] = "city", city: CityQ = None,
                institution: Annotated[int | None, Query(ge=1)] = None,
                only: Literal["idle", "saturated", "evaluation"] | None = None, sort: UsageSort = "hours",
                order: Order = "desc") -> dict[str, Any]:
    asof = service.resolve_asof(as_of)
    scope = None
    if institution is not None:
        scope, _ = await service.institution_scope(session, principal, institution)
    if only == "evaluation" and group != "institution":
        raise invalid("group", "invalid", "评价范围按单位统计：group 应为 institution")
    if only in ("idle", "saturated") and group != "instrument":
        raise invalid("group", "invalid", "闲置/饱和清单按仪器统计：group 应为 instrument")
    return await service.usage_table(session, principal, asof, group=group, year=year, city=city,
                                     institution_id=institution, only=only, sort=sort, descending=order == "desc",
                                     limit=page.limit, offset=page.offset, scope=scope)


@router.get("/instruments", summary="The instruments behind a figure (registered, open or shared as of D)")
async def instruments(
    principal: ApiUser, session: SessionDep, page: PageDep, as_of: AsOfQ = None,
    measure: Literal["registered", "open", "shared", "not_open", "not_shared"] = "registered", city: CityQ = None,
    institution: Annotated[int | None, Query(ge=1)] = None, kind: Annotated[str | None, Query(max_length=10)] = None,
    category: Annotated[str | None, Query(pattern=r"^\d{2}$")] = None,
    chain: Annotated[int | None, Query(ge=0)] = None, band: Annotated[str | None, Query(max_length=4)] = None,
    sort: Literal["name", "value_desc", "institution", "id"] = "name",
) -> dict[str, Any]:
    return await service.behind(session, principal, service.resolve_asof(as_of), measure, city=city,
                                institution_id=institution, kind=kind, category=category, chain=chain, band=band,
                                sort=sort, limit=page.limit, offset=page.offset)


@router.get("/institutions/{institution_id}", summary="One institution's figures (self-assessment)")
async def institution(principal: ApiUser, session: SessionDep, institution_id: int, as_of: AsOfQ = None,
                      year: YearQ = None) -> dict[str, Any]:
    return await service.institution_figures(session, principal, institution_id, service.resolve_asof(as_of), year)


@router.get("/instruments/{instrument_id}", summary="One instrument's state as of D and its usage per year")
async def instrument(principal: ApiUser, session: SessionDep, instrument_id: int,
                     as_of: AsOfQ = None) -> dict[str, Any]:
    return await service.instrument_figures(session, principal, instrument_id, service.resolve_asof(as_of))


@router.get("/instruments/{instrument_id}/service-records", summary="One instrument's service records, newest first")
async def instrument_records(principal: ApiUser, session: SessionDep, instrument_id: int, page: PageDep,
                             as_of: AsOfQ = None, year: YearQ = None) -> dict[str, Any]:
    return await service.instrument_records(session, principal, instrument_id, service.resolve_asof(as_of), year,
                                            page.limit, page.offset)


# ---- exports -----------------------------------------------------------------------------------------------------

SheetKey = Literal["summary", "trend", "by-city", "by-kind", "by-institution", "by-category", "by-chain", "by-band",
                   "usage-city", "usage-institution", "usage-instrument", "idle", "saturated", "evaluation",
                   "definitions"]


@router.get("/export.xlsx", summary="The report: one sheet per breakdown, definitions and the as-of date")
async def export_xlsx(principal: ApiUser, session: SessionDep, as_of: AsOfQ = None, year: YearQ = None,
                      city: CityQ = None) -> Response:
    asof = service.resolve_asof(as_of)
    sheets = await exports.build_report(session, principal, asof, year, city)
    content = await asyncio.to_thread(exports.report_xlsx, sheets)
    record(session, actor_id=principal.id, action="stats.exported", target_type="stats", target_id="report.xlsx",
           after={"format": "xlsx", "as_of": asof.day, "year": year, "city": city,
                  "sheets": [s.key for s in sheets]})
    return Response(content, media_type=exports.XLSX_TYPE,
                    headers={"Content-Disposition": disposition(exports.filename("共享统计", asof, "xlsx", city))})


@router.get("/export.csv", summary="One sheet of the report as CSV (UTF-8 with BOM)")
async def export_csv(principal: ApiUser, session: SessionDep, sheet: SheetKey = "by-city", as_of: AsOfQ = None,
                     year: YearQ = None, city: CityQ = None) -> Response:
    asof = service.resolve_asof(as_of)
    sheets = await exports.build_report(session, principal, asof, year, city, only=sheet)
    record(session, actor_id=principal.id, action="stats.exported", target_type="stats", target_id=f"{sheet}.csv",
           after={"format": "csv", "sheet": sheet, "as_of": asof.day, "year": year, "city": city})
    return Response(exports.sheet_csv(sheets[0]), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": disposition(exports.filename(f"共享统计-{sheets[0].title}", asof,
                                                                                 "csv", city))})


@router.get("/service-records.{fmt}", summary="Service records in the national platform's layout (CSV or XLSX)")
async def export_records(principal: ApiUser, session: SessionDep, fmt: Literal["csv", "xlsx"], as_of: AsOfQ = None,
                         year: YearQ = None, city: CityQ = None,
                         institution: Annotated[int | None, Query(ge=1)] = None) -> Response:
    asof = service.resolve_asof(as_of)
    if institution is not None:
        scope, _ = await service.institution_scope(session, principal, institution)
    else:
        scope = service.auditor_scope(principal)
    service.check_city(scope, city)
    y = service.resolve_year(year, asof)
    d = service.definitions()
    f = scope.filters(city=city, institution_id=institution)
    w = year_window(asof, y)
    name = exports.filename(f"服务记录-{y}", asof, fmt, city)
    record(session, actor_id=principal.id, action="stats.exported", target_type="service_records",
           target_id=f"service-records.{fmt}",
           after={"format": fmt, "as_of": asof.day, "year": y, "city": city, "institution": institution})
    headers = {"Content-Disposition": disposition(name)}
    if fmt == "xlsx":
        if await repo.count_records(session, asof, d, f, w) > RECORDS_XLSX_MAX:
            raise RuleViolation(f"记录超过 {RECORDS_XLSX_MAX} 条，请按市州或单位筛选，或导出 CSV",
                                problems=[invalid("fmt", "too_many_rows", "记录过多，请筛选或改用 CSV").problems[0]])
        rows = [r async for r in repo.stream_records(session, asof, d, f, w)]
        content = await asyncio.to_thread(exports.report_xlsx, [exports.records_sheet(rows)])
        return Response(content, media_type=exports.XLSX_TYPE, headers=headers)

    async def chunks() -> Any:
        # The request's session commits (with the activity record) before the body streams: read with our own.
        async with get_sessionmaker()() as own:
            async for chunk in exports.records_csv_chunks(repo.stream_records(own, asof, d, f, w)):
                yield chunk

    return StreamingResponse(chunks(), media_type="text/csv; charset=utf-8", headers=headers)
