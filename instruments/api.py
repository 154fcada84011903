"""JSON API for the catalogue: search, read, create, update, retire, access grants, import/export, codes and tags."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json
from starlette.types import Receive, Scope, Send

from booking.auth.deps import ApiAdmin, ApiPrincipal, ApiUser, load_api_principal, oauth2_scheme
from booking.auth.principal import Principal
from booking.core.db import SessionDep, get_sessionmaker, read_connection
from booking.core.direct_routes import RequestRoute
from booking.core.regions import city_name
from instruments import exporter, importer, service
from instruments import repository as repo
from instruments.models import SHARING_MODE_LABELS, STATUS_LABELS
from instruments.repository import SearchFilters, SearchPage
from instruments.rules import is_large
from instruments.schemas import (
    AccessGrant,
    CategoryCreate,
    CategoryPublic,
    CategoryRef,
    ChainCreate,
    ChainPublic,
    Contact,
    Fees,
    ImportResult,
    InstitutionRef,
    InstrumentCreate,
    InstrumentPublic,
    InstrumentUpdate,
    NamedRef,
    RetireRequest,
    SearchResult,
)

router = APIRouter(prefix="/api/v1", tags=["instruments"])

Sort = Literal["relevance", "newest", "name", "value_desc", "value_asc"]


@dataclass
class SearchQuery:
    filters: SearchFilters
    sort: str
    limit: int
    offset: int
    facets: bool


class SearchParams(BaseModel):
    """The search's query parameters, validated as one model: one pass of pydantic instead of one per parameter."""

    model_config = ConfigDict(extra="ignore")

    q: Annotated[str | None, Field(max_length=100, description="关键词：名称、型号、厂商、功能、单位（子串匹配）")] = None
    city: Annotated[str | None, Field(pattern=r"^\d{6}$", description="市州代码")] = None
    institution_kind: Annotated[str | None, Field(max_length=10, description="单位类型，如 高校")] = None
    institution: Annotated[int | None, Field(ge=1, description="单位 id")] = None
    category: Annotated[str | None, Field(pattern=r"^\d{2}(\d{2}){0,2}$", description="分类编码（任一级）")] = None
    sharing_mode: Literal["internal", "external", "none"] | None = None
    status: (
        Literal[
            "normal",
            "standby",
            "remote",
            "occasional_fault",
            "frequent_fault",
            "awaiting_repair",
            "awaiting_scrap",
        ]
        | None
    ) = None
    chain: Annotated[str | None, Field(max_length=50, description="产业链标签 id 或名称")] = None
    min_value: Annotated[Decimal | None, Field(ge=0, description="原值下限（元）")] = None
    max_value: Annotated[Decimal | None, Field(ge=0, description="原值上限（元）")] = None
    large: Annotated[bool | None, Field(description="大型仪器（原值 ≥ 阈值）")] = None
    vouchers: Annotated[bool | None, Field(description="接受创新券")] = None
    sort: Sort = "relevance"
    limit: Annotated[int, Field(ge=1, le=200)] = 20
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    facets: Annotated[bool, Field(description="同时返回分面计数")] = True


def search_params(request: Request) -> SearchParams:
    """The query string validated by one pydantic call. FastAPI's own handling of a query-parameter model
    inspects every field's annotation on every request (~0.5 ms for these 14 fields, a third of the app's time for a
    fast search); the errors and the 422 are the same, and the route declares the parameters for OpenAPI from
    the model (SEARCH_PARAMETERS)."""
    try:
        # A plain dict: pydantic validates one three times faster than a Mapping. An empty parameter (city=, as an
        # HTML form sends an unused field) is left out, as if not given, for every parameter alike.
        return SearchParams.model_validate({k: v for k, v in request.query_params.items() if v != ""})
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("query", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


def _openapi_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", None)
        out.append(
            {"name": name, "in": "query", "required": name in schema.get("required", ()), "schema": prop}
            | ({"description": description} if description else {})
        )
    return out


SEARCH_PARAMETERS = {"parameters": _openapi_parameters(SearchParams)}


async def _filters(source: repo.Reader, params: SearchParams) -> SearchFilters:
    return await service.build_filters(
        source,
        q=params.q,
        city=params.city,
        institution_kind=params.institution_kind,
        institution=params.institution,
        category=params.category,
        sharing_mode=params.sharing_mode,
        status=params.status,
        chain=params.chain,
        min_value=params.min_value,
        max_value=params.max_value,
        large=params.large,
        vouchers=params.vouchers,
    )


async def search_query(request: Request, session: SessionDep) -> SearchQuery:
    params = search_params(request)
    filters = await _filters(session, params)
    return SearchQuery(filters, params.sort, params.limit, params.offset, params.facets)


SearchDep = Annotated[SearchQuery, Depends(search_query)]


def item_of(row: Mapping[Any, Any], *, threshold: Decimal, base_url: str) -> dict[str, Any]:
    """One search result as SearchResult's InstrumentItem (a plain dict: the route serialises it without a model).
    `threshold`: the large-instrument threshold; `base_url`: the public pages' base (service.public_base_url)."""
    value = row["original_value"]
    return {
        "id": row["id"],
        "name": row["name"],
        "name_en": row["name_en"],
        "model": row["model"],
        "manufacturer": row["manufacturer"],
        "institution": {
            "id": row["institution_id"],
            "name": row["institution_name"],
            "kind": row["institution_kind"],
        },
        "city_code": row["city_code"],
        "city_name": city_name(row["city_code"]),
        "category_code": row["category_code"],
        "category_name": row["category_name"],
        "sharing_mode": row["sharing_mode"],
        "status": row["status"],
        "original_value": value,
        "large": is_large(value, threshold),
        "accepts_vouchers": row["accepts_vouchers"],
        "restricted": row["restricted"],
        "url": f"{base_url}/instruments/{row['id']}",
    }


def items_of(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A page of search results; the settings read once per page, not per row."""
    threshold, base_url = service.threshold(), service.public_base_url()
    return [item_of(r, threshold=threshold, base_url=base_url) for r in rows]


_FACET_LABELS: dict[str, Any] = {
    "city": city_name,
    "sharing_mode": lambda v: SHARING_MODE_LABELS.get(v, v),
    "status": lambda v: STATUS_LABELS.get(v, v),
}


def facets_of(page: SearchPage) -> dict[str, list[dict[str, Any]]]:
    """The facets as SearchResult's FacetCount dicts (plain dicts: the route serialises them without a model)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, values in page.facets.items():
        label_of = _FACET_LABELS.get(name)
        out[name] = [
            {"value": v, "label": label or (label_of(v) if label_of else v), "count": n} for v, label, n in values
        ]
    return out


async def search(request: Request) -> Response:
    """Search the catalogue. Served without FastAPI's dependencies (RequestRoute): the session, the principal and
    the parameters as dependencies (seven of them, with the session's ORM begin, commit and close) took as long as
    a fast search statement itself. The same checks run here, in the same order: the token (401), the parameters
    (422 by name), the filters (422 by name)."""
    token = await oauth2_scheme(request)
    if token:
        async with get_sessionmaker()() as session:
            principal = await load_api_principal(session, request, token)
            params = search_params(request)
            page = await _search(session, principal, params)
    else:
        # Anonymous, most searches: a connection straight from the pool, no ORM session (read_connection), taken
        # once the parameters are well-formed.
        params = search_params(request)
        async with read_connection() as conn:
            page = await _search(conn, None, params)
    body = {
        "items": items_of(page.rows),
        "total": page.total,
        "limit": params.limit,
        "offset": params.offset,
        "facets": facets_of(page),
    }
    return Response(to_json(body), media_type="application/json")


async def _search(source: repo.Reader, principal: Principal | None, params: SearchParams) -> SearchPage:
    filters = await _filters(source, params)
    return await service.search(
        source,
        principal,
        filters,
        sort=params.sort,
        limit=params.limit,
        offset=params.offset,
        with_facets=params.facets,
    )


router.add_api_route(
    "/instruments",
    search,
    methods=["GET"],
    response_model=SearchResult,
    summary="Search the catalogue",
    openapi_extra=SEARCH_PARAMETERS | {"security": [{oauth2_scheme.scheme_name: []}]},
    route_class_override=RequestRoute,
)
# booking.app serves it directly (booking.core.direct_routes.DirectRoutes), ahead of the app's routing.
search_route = next(r for r in router.routes if isinstance(r, RequestRoute) and r.endpoint is search)


def public_of(v: service.InstrumentView) -> InstrumentPublic:
    i = v.instrument
    assert i.id is not None
    cat = v.category_path[-1] if v.category_path else None
    return InstrumentPublic(
        id=i.id,
        url=service.public_url(i.id),
        asset_number=i.asset_number,
        name=i.name,
        name_en=i.name_en,
        institution=InstitutionRef(id=v.institution.id, name=v.institution.name, kind=v.institution.kind),
        facility=NamedRef(id=v.facility.id, name=v.facility.name) if v.facility else None,
        department=i.department,
        category=CategoryRef(code=i.category_code, name=cat.name if cat else None),
        category_path=[CategoryRef(code=c.code, name=c.name) for c in v.category_path],
        source=i.source,
        usage_kind=i.usage_kind,
        original_value=i.original_value,
        large=is_large(i.original_value, service.threshold()),
        country_code=i.country_code,
        model=i.model,
        manufacturer=i.manufacturer,
        start_date=i.start_date,
        specs=i.specs,
        functions=i.functions,
        subjects=list(i.subjects or []),
        service_content=i.service_content,
        achievements=i.achievements,
        sharing_rules=i.sharing_rules,
        fees=Fees(
            unit=i.fee_unit,
            internal=i.fee_internal,
            external=i.fee_external,
            minimum=i.fee_minimum,
            text=i.fee_text,
        ),
        city_code=i.city_code,
        city_name=city_name(i.city_code),
        county_code=i.county_code,
        street=i.street,
        contact=Contact(name=i.contact_name, phone=i.contact_phone, email=i.contact_email)
        if v.show_contact
        else None,
        sharing_mode=i.sharing_mode,
        status=i.status,
        funding_source=i.funding_source,
        customs_status=i.customs_status,
        photo_url=i.photo_url,
        qualification_required=i.qualification_required,
        accepts_vouchers=i.accepts_vouchers,
        restricted=i.restricted,
        chains=v.chains,
        retired_at=i.retired_at,
        retired_reason=i.retired_reason,
        created_at=i.created_at,
        updated_at=i.updated_at,
    )


async def _public(session: SessionDep, principal: Principal | None, instrument_id: int) -> InstrumentPublic:
    return public_of(await service.view(session, principal, instrument_id))


@router.post(
    "/instruments",
    response_model=InstrumentPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Publish an instrument (managers of the owning institution)",
)
async def create(principal: ApiUser, session: SessionDep, data: InstrumentCreate) -> InstrumentPublic:
    inst = await service.create_instrument(session, principal, data)
    return await _public(session, principal, inst.id)  # type: ignore[arg-type]


# ---- import / export (declared before /instruments/{id} so the literal paths win) -----------------------------


@router.post(
    "/instruments/import",
    response_model=ImportResult,
    summary="Bulk import (CSV or XLSX with the national field names as headers); all or nothing",
    responses={422: {"description": "problem+json with errors: [{row, column, message}]"}},
)
async def import_file(
    principal: ApiUser,
    session: SessionDep,
    file: Annotated[UploadFile, File(description="CSV 或 XLSX")],
    institution_id: Annotated[
        int | None, Query(description="默认所属单位（管理员只管理一个单位时可省略）")
    ] = None,
) -> ImportResult:
    content = await file.read(importer.MAX_BYTES + 1)
    return await importer.import_file(
        session, principal, filename=file.filename or "", content=content, institution_id=institution_id
    )


@router.get("/instruments/import/template.xlsx", summary="Import template (XLSX)")
async def template_xlsx() -> Response:
    return Response(
        exporter.template_xlsx(),
        media_type=exporter.XLSX_TYPE,
        headers={"Content-Disposition": exporter.disposition("仪器导入模板.xlsx")},
    )


@router.get("/instruments/import/template.csv", summary="Import template (CSV, UTF-8 with BOM)")
async def template_csv() -> Response:
    return Response(
        exporter.template_csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": exporter.disposition("仪器导入模板.csv")},
    )


@router.get(
    "/instruments/export.{fmt}",
    summary="Export search results in the import layout (csv, xlsx, json)",
    openapi_extra=SEARCH_PARAMETERS,
)
async def export(
    session: SessionDep, principal: ApiPrincipal, query: SearchDep, fmt: Literal["csv", "xlsx", "json"]
) -> Response:
    show_contact = principal is not None
    viewer = service.viewer_of(principal)
    name = f"仪器目录.{fmt}"
    headers = {"Content-Disposition": exporter.disposition(name)}
    if fmt == "csv":
        return _ClosingStream(
            _export_body(exporter.csv_chunks, query.filters, viewer, show_contact),
            media_type="text/csv; charset=utf-8", headers=headers,
        )
    if fmt == "json":
        return _ClosingStream(
            _export_body(exporter.json_chunks, query.filters, viewer, show_contact),
            media_type="application/json", headers=headers,
        )
    # Written whole within the request, through its own session.
    rows = repo.stream_export(session, query.filters, viewer)
    return Response(await exporter.xlsx_bytes(rows, show_contact), media_type=exporter.XLSX_TYPE, headers=headers)


Chunks = Callable[[AsyncIterator[Mapping[str, Any]], bool], AsyncIterator[bytes]]


async def _export_body(
    chunks: Chunks, filters: SearchFilters, viewer: repo.Viewer, show_contact: bool
) -> AsyncIterator[bytes]:
    """A streamed export's body, reading through a session of its own: a streamed body is read after the
    request's session has been closed (SessionDep is function-scoped), and a statement started on that one held its
    connection until the garbage collector found it. Closed with the body (_ClosingStream)."""
    async with get_sessionmaker()() as session:
        body = chunks(repo.stream_export(session, filters, viewer), show_contact)
        try:
            async for chunk in body:
                yield chunk
        finally:
            await body.aclose()  # type: ignore[attr-defined]


class _ClosingStream(StreamingResponse):
    """Closes its body when the response ends, however it ends: when the client goes away mid-stream Starlette
    cancels the sending and leaves the body's generator suspended, holding its session until it is collected."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


# ---- one instrument ---------------------------------------------------------------------------------------------


@router.get(
    "/instruments/{instrument_id}",
    response_model=InstrumentPublic,
    summary="Read one instrument (contact details only for signed-in users)",
)
async def read(session: SessionDep, principal: ApiPrincipal, instrument_id: int) -> InstrumentPublic:
    return await _public(session, principal, instrument_id)


@router.patch("/instruments/{instrument_id}", response_model=InstrumentPublic)
async def update(
    principal: ApiUser, session: SessionDep, instrument_id: int, data: InstrumentUpdate
) -> InstrumentPublic:
    await service.update_instrument(session, principal, instrument_id, data)
    return await _public(session, principal, instrument_id)


@router.post(
    "/instruments/{instrument_id}/retire",
    response_model=InstrumentPublic,
    summary="Retire (soft delete) with a reason",
)
async def retire(
    principal: ApiUser, session: SessionDep, instrument_id: int, data: RetireRequest
) -> InstrumentPublic:
    await service.retire_instrument(session, principal, instrument_id, data.reason)
    return await _public(session, principal, instrument_id)


@router.get("/instruments/{instrument_id}/access", summary="Users authorised to see a restricted instrument")
async def list_access(principal: ApiUser, session: SessionDep, instrument_id: int) -> dict[str, list[int]]:
    _, views = await service.list_access(session, principal, instrument_id)
    return {"user_ids": sorted(v.user.id for v in views)}  # type: ignore[misc]


@router.post("/instruments/{instrument_id}/access", status_code=status.HTTP_204_NO_CONTENT)
async def grant_access(
    principal: ApiUser, session: SessionDep, instrument_id: int, data: AccessGrant
) -> None:
    await service.grant_access(session, principal, instrument_id, data.user_id, email=data.email)


@router.delete("/instruments/{instrument_id}/access/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_access(principal: ApiUser, session: SessionDep, instrument_id: int, user_id: int) -> None:
    await service.revoke_access(session, principal, instrument_id, user_id)


# ---- classification codes and chain tags ------------------------------------------------------------------------


@router.get("/instrument-categories", response_model=list[CategoryPublic], summary="Classification codes")
async def list_categories(
    session: SessionDep,
    parent: Annotated[
        str | None, Query(pattern=r"^(\d{6}|root)$", description="上级编码；root 表示大类")
    ] = None,
) -> list[CategoryPublic]:
    if parent is None:
        rows = await repo.categories(session)
    else:
        rows = await repo.children(session, None if parent == "root" else parent)
    return [CategoryPublic.model_validate(c) for c in rows]


@router.post("/instrument-categories", response_model=CategoryPublic, status_code=status.HTTP_201_CREATED)
async def add_category(principal: ApiAdmin, session: SessionDep, data: CategoryCreate) -> CategoryPublic:
    return CategoryPublic.model_validate(await service.add_category(session, principal, data))


@router.get("/instrument-chains", response_model=list[ChainPublic], summary="Industrial-chain tags")
async def list_chains(session: SessionDep) -> list[ChainPublic]:
    return [ChainPublic.model_validate(c) for c in await repo.chains(session)]


@router.post("/instrument-chains", response_model=ChainPublic, status_code=status.HTTP_201_CREATED)
async def add_chain(principal: ApiAdmin, session: SessionDep, data: ChainCreate) -> ChainPublic:
    return ChainPublic.model_validate(await service.add_chain(session, principal, data))


@router.patch("/instrument-chains/{chain_id}", response_model=ChainPublic)
async def rename_chain(
    principal: ApiAdmin, session: SessionDep, chain_id: int, data: ChainCreate
) -> ChainPublic:
    chain, _renamed = await service.rename_chain(session, principal, chain_id, data)
    return ChainPublic.model_validate(chain)


@router.delete("/instrument-chains/{chain_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete an industrial-chain tag and its links to instruments")
async def delete_chain(principal: ApiAdmin, session: SessionDep, chain_id: int) -> None:
    await service.delete_chain(session, principal, chain_id)
