"""HTML pages of the catalogue: search, detail, create/edit/retire, import, classification codes and chain tags."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal, DecimalException
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.datastructures import FormData, UploadFile

from booking.accounts import repository as accounts_repo
from booking.accounts.models import Facility, Institution, InstitutionKind
from booking.accounts.rules import phone_problems
from booking.auth.deps import CsrfDep, WebAdmin, WebManager, WebPrincipal, load_web_principal
from booking.auth.principal import Principal
from booking.core.clock import to_local, utcnow
from booking.core.db import SessionDep, refusable
from booking.core.errors import DomainError, Problem, RuleViolation
from booking.core.forms import errors_by_field, parse_form
from booking.core.regions import CITIES
from booking.core.validation import DB_INT_MAX, problems_from_errors
from booking.core.web import redirect, render
from instruments import importer, service
from instruments import repository as repo
from instruments.api import facets_of, items_of
from instruments.columns import WAN
from instruments.models import (
    CUSTOMS_LABELS,
    FEE_UNIT_LABELS,
    FUNDING_LABELS,
    MAX_ORIGINAL_VALUE,
    SHARING_MODE_LABELS,
    SOURCE_LABELS,
    STATUS_LABELS,
    USAGE_KIND_LABELS,
    Instrument,
)
from instruments.reference import COUNTRIES, SUBJECTS
from instruments.rules import MAX_SEARCH_TERMS
from instruments.schemas import CategoryCreate, ChainCreate, InstrumentCreate, InstrumentUpdate

MAX_QUERY_LENGTH = 100  # as the API's q
MAX_OFFSET = 1_000_000

router = APIRouter(include_in_schema=False, dependencies=[Depends(load_web_principal), CsrfDep])

PAGE_SIZE = 20
SORT_LABELS = {
    "relevance": "相关度",
    "newest": "最新发布",
    "name": "名称",
    "value_desc": "原值从高到低",
    "value_asc": "原值从低到高",
}
FIELD_LABELS: dict[str, str] = {
    "institution_id": "所属单位",
    "facility_id": "所属实验室/平台",
    "asset_number": "所在单位仪器内部编码",
    "name": "中文名称",
    "name_en": "英文名称",
    "category_code": "设备分类编码",
    "source": "仪器来源",
    "usage_kind": "仪器类别",
    "original_value": "原值（元）",
    "country_code": "产地国别",
    "model": "规格型号",
    "manufacturer": "生产制造商",
    "start_date": "启用日期",
    "specs": "主要技术指标",
    "functions": "主要功能",
    "subjects": "主要学科领域",
    "service_content": "服务内容",
    "achievements": "典型成果",
    "sharing_rules": "对外开放共享规定",
    "fee_text": "参考收费标准",
    "city_code": "所在市州",
    "county_code": "所在区县代码",
    "street": "安放地址",
    "contact_name": "联系人",
    "contact_phone": "联系电话",
    "contact_email": "电子邮箱",
    "sharing_mode": "共享模式",
    "status": "运行状态",
    "funding_source": "主要购置经费来源",
    "department": "所属单位内部门",
    "customs_status": "海关监管情况",
    "fee_unit": "收费方式",
    "fee_internal": "内部单价（元）",
    "fee_external": "外部单价（元）",
    "fee_minimum": "最低收费（元）",
    "photo_url": "照片网址",
    "qualification_required": "需培训取得资质",
    "accepts_vouchers": "接受创新券",
    "restricted": "限制公开（军民融合）",
    "chains": "产业链",
    "reason": "退役原因",
    "code": "分类编码",
}
LABELS = {
    "sharing_mode": SHARING_MODE_LABELS,
    "status": STATUS_LABELS,
    "source": SOURCE_LABELS,
    "usage_kind": USAGE_KIND_LABELS,
    "funding_source": FUNDING_LABELS,
    "customs_status": CUSTOMS_LABELS,
    "fee_unit": FEE_UNIT_LABELS,
}
BOOL_FIELDS = ("qualification_required", "accepts_vouchers", "restricted")


def _common() -> dict[str, Any]:
    return {"labels": LABELS, "field_labels": FIELD_LABELS, "countries": COUNTRIES, "subjects_ref": SUBJECTS}


# ---- search -----------------------------------------------------------------------------------------------------


def _wan_to_cny(text: str | None) -> Decimal | None:
    if not text:
        return None
    try:
        value = Decimal(text.strip()) * WAN
    except DecimalException:  # not a number, or one whose arithmetic overflows (1e999999)
        return None
    return value if value.is_finite() and 0 <= value <= MAX_ORIGINAL_VALUE else None


_FILTER_LABELS = {"city": "市州", "institution_kind": "单位类型", "institution": "单位", "category": "仪器分类",
                  "sharing_mode": "共享模式", "status": "运行状态", "chain": "产业链", "min_wan": "原值下限",
                  "max_wan": "原值上限", "sort": "排序"}


def _chain_param(chain: str | None, chains: Sequence[Any]) -> str | None:
    """The chain filter as the page links it (its id), given by id or, as the API allows, by name."""
    text = (chain or "").strip()
    if text.isascii() and text.isdigit():
        return text if int(text) in {c.id for c in chains} else None
    return next((str(c.id) for c in chains if c.name == text), None) if text else None


@router.get("/instruments")
async def catalogue(
    request: Request,
    session: SessionDep,
    principal: WebPrincipal,
    # Generous bounds only: a mangled shared link gets the page with a note on what was left out, not a 422.
    q: Annotated[str | None, Query(max_length=2000)] = None,
    city: Annotated[str | None, Query(max_length=2000)] = None,
    institution_kind: Annotated[str | None, Query(max_length=2000)] = None,
    institution: Annotated[str | None, Query(max_length=2000)] = None,
    category: Annotated[str | None, Query(max_length=2000)] = None,
    sharing_mode: Annotated[str | None, Query(max_length=2000)] = None,
    status: Annotated[str | None, Query(max_length=2000)] = None,
    chain: Annotated[str | None, Query(max_length=2000)] = None,
    min_wan: Annotated[str | None, Query(max_length=2000)] = None,
    max_wan: Annotated[str | None, Query(max_length=2000)] = None,
    large: Annotated[str | None, Query(max_length=2000)] = None,
    vouchers: Annotated[str | None, Query(max_length=2000)] = None,
    sort: Annotated[str | None, Query(max_length=2000)] = None,
    offset: Annotated[str | None, Query(max_length=2000)] = None,
) -> Response:
    # A page forgives what the API refuses: unknown values are dropped, and said so beside the count.
    chains = await repo.chains(session)
    terms = (q or "").split()
    query_text = " ".join(terms[:MAX_SEARCH_TERMS])
    cut_notes = []
    if len(terms) > MAX_SEARCH_TERMS:
        cut_notes.append(f"关键词最多 {MAX_SEARCH_TERMS} 个，只按前 {MAX_SEARCH_TERMS} 个搜索")
    if len(query_text) > MAX_QUERY_LENGTH:
        query_text = query_text[:MAX_QUERY_LENGTH].strip()
        cut_notes.append(f"关键词过长，只按前 {MAX_QUERY_LENGTH} 个字符搜索")
    offset_text = (offset or "").strip()
    usable_offset = offset_text.isascii() and offset_text.isdigit() and int(offset_text) <= MAX_OFFSET
    page_offset = int(offset_text) if usable_offset else 0
    if offset_text and not usable_offset:
        cut_notes.append("分页位置无效，已回到第 1 页")
    params: dict[str, Any] = {
        "q": query_text or None,
        "city": city if city in CITIES else None,
        "institution_kind": institution_kind
        if institution_kind in {k.value for k in InstitutionKind}
        else None,
        "institution": institution
        if institution and institution.isascii() and institution.isdigit() and int(institution) <= DB_INT_MAX
        else None,
        "category": category if category and category.isascii() and category.isdigit() and len(category) in (2, 4, 6)
        else None,
        "sharing_mode": sharing_mode if sharing_mode in SHARING_MODE_LABELS else None,
        "status": status if status in STATUS_LABELS else None,
        "chain": _chain_param(chain, chains),
        "min_wan": min_wan if _wan_to_cny(min_wan) is not None else None,
        "max_wan": max_wan if _wan_to_cny(max_wan) is not None else None,
        "large": "1" if large in ("1", "true", "on") else None,
        "vouchers": "1" if vouchers in ("1", "true", "on") else None,
        "sort": sort if sort in SORT_LABELS else None,
    }
    # Well-formed but unknown (a removed institution, a mistyped code in a shared link): ignored like the rest,
    # rather than showing 共 0 台 as if nothing matched.
    institution_row = await session.get(Institution, int(params["institution"])) if params["institution"] else None
    if institution_row is None:
        params["institution"] = None
    if params["category"] and not any(code.startswith(params["category"]) for code in await repo.category_codes(session)):
        params["category"] = None
    # Said beside the count, so a shared link with a stale or mistyped filter does not silently show everything.
    given = {"city": city, "institution_kind": institution_kind, "institution": institution, "category": category,
             "sharing_mode": sharing_mode, "status": status, "chain": chain, "min_wan": min_wan, "max_wan": max_wan,
             "sort": sort}
    ignored = [f"{_FILTER_LABELS[name]}（{value.strip()}）" for name, value in given.items()
               if value and value.strip() and params[name] is None]
    low, high = _wan_to_cny(params["min_wan"]), _wan_to_cny(params["max_wan"])
    value_note = "；".join(filter(None, [f"已忽略无效的筛选条件：{'、'.join(ignored)}" if ignored else None,
                                         *cut_notes])) or None
    if low is not None and high is not None and low > high:
        # Shown beside the count; the other filters still apply (the API refuses this with a 422).
        value_note = "；".join(filter(None, [value_note, "原值下限大于上限，已忽略原值条件"]))
        low = high = None
    filters = await service.build_filters(
        session,
        q=params["q"],
        city=params["city"],
        institution_kind=params["institution_kind"],
        institution=int(params["institution"]) if params["institution"] else None,
        category=params["category"],
        sharing_mode=params["sharing_mode"],
        status=params["status"],
        chain=params["chain"],
        min_value=low,
        max_value=high,
        large=True if params["large"] else None,
        vouchers=True if params["vouchers"] else None,
    )
    page = await service.search(
        session, principal, filters, sort=params["sort"] or "relevance", limit=PAGE_SIZE, offset=page_offset
    )
    institution_name = institution_row.name if institution_row else None
    majors = await repo.children(session, None)
    api_params = {
        k: params[k]
        for k in (
            "q",
            "city",
            "institution_kind",
            "institution",
            "category",
            "sharing_mode",
            "status",
            "chain",
            "sort",
        )
    }
    api_params.update(
        min_value=filters.min_value,
        max_value=filters.max_value,
        large="true" if params["large"] else None,
        vouchers="true" if params["vouchers"] else None,
    )
    ctx = {
        "params": params,
        "value_note": value_note,
        "items": items_of(page.rows),
        "total": page.total,
        "facets": facets_of(page),
        "offset": page_offset,
        "page_size": PAGE_SIZE,
        "chains": chains,
        "majors": majors,
        "sort_labels": SORT_LABELS,
        "kinds": [k.value for k in InstitutionKind],
        "institution_name": institution_name,
        "export_query": urlencode({k: v for k, v in api_params.items() if v is not None}),
        "can_import": principal is not None
        and (principal.is_admin or bool(principal.managed_institution_ids)),
        **_common(),
    }
    return render(request, "instruments/search.html", ctx, block="results")


# ---- the form ---------------------------------------------------------------------------------------------------


async def _form_options(session: SessionDep, principal: Principal, values: dict[str, Any]) -> dict[str, Any]:
    if principal.is_admin:
        institutions, _ = await accounts_repo.list_institutions(
            session, q=None, city_code=None, kind=None, limit=5000, offset=0
        )
    else:
        institutions = [
            i
            for i in [
                await session.get(Institution, iid) for iid in sorted(principal.managed_institution_ids)
            ]
            if i is not None
        ]
    inst_ids = [i.id for i in institutions if i.id is not None]
    facilities: list[Facility] = (
        await repo.facilities_of(session, inst_ids)
        if len(inst_ids) <= 50
        else (
            await repo.facilities_of(session, [int(values["institution_id"])])
            if values.get("institution_id")
            else []
        )
    )
    names = {i.id: i.name for i in institutions}
    facility_options = [
        (f.id, f"{names.get(f.institution_id, '')} / {f.name}")
        for f in facilities
        if principal.manages_facility(f.institution_id, f.id)
    ]
    return {
        "institutions": institutions,
        "facility_options": facility_options,
        "chains": await repo.chains(session),
        **await _picker_context(session, values.get("category_code") or ""),
    }


async def _picker_context(session: SessionDep, code: str, cat1: str = "", cat2: str = "") -> dict[str, Any]:
    """The cascading 大类 → 中类 → 小类 choice for a code (or for the levels chosen so far)."""
    if code and len(code) == 6:
        cat1 = code[:2] + "0000"
        cat2 = code[:4] + "00" if code[2:4] != "00" else ""
    majors = await repo.children(session, None)
    mids = await repo.children(session, cat1) if cat1 else []
    smalls = await repo.children(session, cat2) if cat2 else []
    cat3 = code if code and code[4:] != "00" else ""
    return {
        "picker": {"majors": majors, "mids": mids, "smalls": smalls, "cat1": cat1, "cat2": cat2, "cat3": cat3}
    }


def _form_data(form: FormData, *, update: bool) -> dict[str, Any]:
    """Form fields → the API input model's fields. A blank optional field clears it on edit."""
    data: dict[str, Any] = {}
    for key in FIELD_LABELS:
        if key in ("chains", "reason", "code", "category_code", "subjects", *BOOL_FIELDS):
            continue
        if key in form:
            value = str(form.get(key) or "").strip()
            if value:
                data[key] = value
            elif update:
                data[key] = None
    cat = next((str(form.get(k)) for k in ("cat3", "cat2", "cat1") if form.get(k)), "")
    if cat:
        data["category_code"] = cat
    subjects = str(form.get("subjects") or "").replace("；", ";").replace("，", ";").replace(",", ";")
    if "subjects" in form:
        data["subjects"] = [s.strip() for s in subjects.split(";") if s.strip()]
    data["chains"] = [str(c) for c in form.getlist("chains")]
    for key in BOOL_FIELDS:
        data[key] = key in form
    if data.get("country_code"):
        data["country_code"] = str(data["country_code"]).upper()
    return data


_REQUIRED_FIELDS = [name for name, field in InstrumentCreate.model_fields.items() if field.is_required()]


def _validate(model: type[InstrumentCreate] | type[InstrumentUpdate], data: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [Problem(p.field.split(".")[0] if p.field else None, p.code, p.message)
                    for p in problems_from_errors(exc.errors())]
        # The record's own checks run only on a valid form; the one a user is likely to hit alongside a typo is
        # checked here too, so the page lists every problem at once.
        flagged = {p.field for p in problems}
        # On edit a blank field means "clear it", which the record's checks refuse for a required one only once
        # the form is otherwise valid: said now, with the rest.
        problems += [Problem(name, "missing", "必填") for name in _REQUIRED_FIELDS
                     if name in data and data[name] is None and name not in flagged]
        try:
            start = date.fromisoformat(str(data.get("start_date") or ""))
        except ValueError:
            start = None
        if "start_date" not in flagged and start is not None and start > to_local(utcnow()).date():
            problems.append(Problem("start_date", "future_date", "启用日期不能晚于今天"))
        if "contact_phone" not in flagged:
            problems += phone_problems(str(data.get("contact_phone") or "").strip() or None, field="contact_phone")
        priced = any(str(data.get(f) or "").strip() for f in ("fee_internal", "fee_external", "fee_minimum"))
        if "fee_unit" not in flagged and priced and not str(data.get("fee_unit") or "").strip():
            problems.append(Problem("fee_unit", "unit_required",
                                    "填写了单价或最低收费时，须选择收费方式（按小时/按样品/按次）"))
        raise RuleViolation("输入有误", problems=problems) from None


def _values_of(inst: Instrument) -> dict[str, Any]:
    values = inst.model_dump()
    values["subjects"] = "；".join(inst.subjects or [])
    return values


async def _render_form(
    request: Request,
    session: SessionDep,
    principal: Principal,
    *,
    values: dict[str, Any],
    instrument: Instrument | None,
    errors: dict[str, str] | None = None,
    problems: list[Problem] | None = None,
    chain_values: list[str] | None = None,
    status_code: int = 200,
) -> Response:
    ctx = {
        "values": values,
        "instrument": instrument,
        "errors": errors or {},
        "problems": problems or [],
        "chain_values": chain_values or [],
        **_common(),
        **await _form_options(session, principal, values),
    }
    return render(request, "instruments/form.html", ctx, status_code=status_code)


@router.get("/instruments/new")
async def new_form(request: Request, session: SessionDep, principal: WebManager) -> Response:
    values: dict[str, Any] = {"status": "normal", "sharing_mode": "external"}
    if len(principal.managed_institution_ids) == 1:
        values["institution_id"] = next(iter(principal.managed_institution_ids))
    return await _render_form(request, session, principal, values=values, instrument=None)


@router.post("/instruments/new")
async def create(request: Request, session: SessionDep, principal: WebManager) -> Response:
    form = await request.form()
    data = _form_data(form, update=False)
    if form.get("_refresh"):  # no-JS refresh of the category picker: show the form again, save nothing
        values = {
            **{k: v for k, v in form.items() if isinstance(v, str)},
            "category_code": data.get("category_code"),
        }
        return await _render_form(
            request, session, principal, values=values, instrument=None, chain_values=data["chains"]
        )
    try:
        # A savepoint: a refusal after the first writes (an asset number or a tag taken or deleted meanwhile)
        # leaves nothing behind the re-rendered form's commit, and the session usable to render it.
        async with refusable(session):
            inst = await service.create_instrument(session, principal, _validate(InstrumentCreate, data))
    except DomainError as exc:
        return await _rerender_failed(request, session, principal, form, data, exc, instrument=None)
    return redirect(request, f"/instruments/{inst.id}?created=1")


async def _rerender_failed(request: Request, session: SessionDep, principal: Any, form: Any, data: dict[str, Any],
                           exc: DomainError, *, instrument: Any) -> Response:
    """The create/edit form again, with what the user typed and every problem beside its field."""
    values = {**{k: v for k, v in form.items() if isinstance(v, str)}, "category_code": data.get("category_code")}
    return await _render_form(
        request, session, principal, values=values, instrument=instrument,
        errors=errors_by_field(exc.problems) or {"_form": exc.detail}, problems=exc.problems,
        chain_values=data["chains"], status_code=exc.status,
    )


@router.get("/instruments/category-picker")
async def category_picker(
    request: Request,
    session: SessionDep,
    cat1: Annotated[str, Query(max_length=6)] = "",
    cat2: Annotated[str, Query(max_length=6)] = "",
    cat3: Annotated[str, Query(max_length=6)] = "",
) -> Response:
    if cat2 and cat2[:2] + "0000" != cat1:
        cat2 = ""
    ctx = await _picker_context(session, "", cat1, cat2)
    ctx["picker"]["cat3"] = cat3 if cat2 and cat3[:4] + "00" == cat2 else ""
    return render(request, "instruments/_category_picker.html", {**ctx, "errors": {}})


# ---- import -----------------------------------------------------------------------------------------------------


@router.get("/instruments/import")
async def import_page(request: Request, session: SessionDep, principal: WebManager) -> Response:
    return render(request, "instruments/import.html", await _import_context(session, principal))


async def _import_context(session: SessionDep, principal: Principal) -> dict[str, Any]:
    if principal.is_admin:
        institutions, _ = await accounts_repo.list_institutions(
            session, q=None, city_code=None, kind=None, limit=5000, offset=0
        )
    else:
        institutions = [
            i
            for i in [
                await session.get(Institution, iid) for iid in sorted(principal.managed_institution_ids)
            ]
            if i is not None
        ]
    return {"institutions": institutions, "result": None, "errors": [], "error_count": 0, "selected": None}


@router.post("/instruments/import")
async def import_upload(request: Request, session: SessionDep, principal: WebManager) -> Response:
    form = await request.form()
    upload = form.get("file")
    raw_inst = str(form.get("institution_id") or "")
    institution_id = int(raw_inst) if raw_inst.isdigit() else None
    ctx = await _import_context(session, principal)
    ctx["selected"] = institution_id
    if not isinstance(upload, UploadFile) or not upload.filename:
        await form.close()
        ctx["errors"] = [importer.RowError(0, None, "请选择要导入的 CSV 或 XLSX 文件")]
        return render(request, "instruments/import.html", ctx, status_code=422)
    try:
        content = await upload.read(importer.MAX_BYTES + 1)
    finally:
        await form.close()  # manual form parsing leaves closing the spooled upload to us
    try:
        result = await importer.import_file(
            session, principal, filename=upload.filename, content=content, institution_id=institution_id
        )
    except importer.ImportRejected as exc:
        ctx.update(errors=exc.row_errors, error_count=exc.error_count, filename=upload.filename)
        return render(request, "instruments/import.html", ctx, status_code=422)
    ctx.update(result=result, filename=upload.filename)
    return render(request, "instruments/import.html", ctx)


# ---- classification codes and chains (admins) -------------------------------------------------------------------


async def _codes_context(session: SessionDep) -> dict[str, Any]:
    return {
        "categories": await repo.categories(session),
        "chains": await repo.chains(session),
        "chain_usage": await repo.chain_usage_all(session),
        "errors": {},
        "values": {},
        "field_labels": FIELD_LABELS,
    }


_CODES_DONE = {"chain_added": "已添加产业链标签", "chain_renamed": "已重命名产业链标签",
               "chain_unchanged": "名称未改变，产业链标签保持原样",
               "chain_deleted": "已删除产业链标签及其与仪器的关联", "category_added": "已添加分类"}
_CHAIN_NAME_LABEL = "标签名称"
_MAX_ID = 2**31 - 1


def _codes_flash(did: str, chains: list[Any], chain_id: int | None, n: int | None) -> str | None:
    """What the last change on the page did, in words. Only ids and a count come through the address (and the
    names from the database), so a crafted link cannot make the page say arbitrary text."""
    name = next((c.name for c in chains if c.id == chain_id), None)
    if did == "chain_added" and name is not None:
        return f"已添加产业链标签「{name}」"
    if did == "chain_renamed" and name is not None:
        return f"已将产业链标签重命名为「{name}」"
    if did == "chain_unchanged" and name is not None:
        return f"名称未改变，产业链标签「{name}」保持原样"
    if did == "chain_deleted" and n is not None:
        return (f"已删除产业链标签，{n} 台仪器上的该标签已一并移除" if n
                else "已删除产业链标签（没有仪器标注它）")
    return _CODES_DONE.get(did)


@router.get("/instruments/codes")
async def codes_page(request: Request, session: SessionDep, principal: WebAdmin,
                     did: Annotated[str, Query(pattern="^(" + "|".join(_CODES_DONE) + ")?$")] = "",
                     chain: Annotated[int | None, Query(ge=1, le=_MAX_ID)] = None,
                     n: Annotated[int | None, Query(ge=0, le=_MAX_ID)] = None) -> Response:
    ctx = await _codes_context(session)
    return render(request, "instruments/codes.html", {**ctx, "flash": _codes_flash(did, ctx["chains"], chain, n)})


async def _add_code(request: Request, session: SessionDep, section: str, data: dict[str, str],
                    add: Any) -> Response:
    """Validate with the API's model (parse_form), add, and on any problem re-render the codes page with the
    section's errors."""
    try:
        async with refusable(session):  # a refused addition leaves nothing behind the page's own commit
            added = await add(parse_form(CategoryCreate if section == "category" else ChainCreate, data))
    except DomainError as exc:
        ctx = await _codes_context(session)
        ctx.update(errors={section: errors_by_field(exc.problems) or {"_form": exc.detail}},
                   values={section: data}, flash=exc.detail, flash_kind="error")
        return render(request, "instruments/codes.html", ctx, status_code=exc.status)
    return redirect(request, "/instruments/codes?did=category_added#categories" if section == "category"
                    else f"/instruments/codes?did=chain_added&chain={added.id}#chain-{added.id}")


@router.post("/instruments/codes/categories")
async def add_category(request: Request, session: SessionDep, principal: WebAdmin) -> Response:
    form = await request.form()
    data = {"code": str(form.get("code") or "").strip(), "name": str(form.get("name") or "").strip()}
    return await _add_code(request, session, "category", data,
                           lambda payload: service.add_category(session, principal, payload))


@router.post("/instruments/codes/chains")
async def add_chain(request: Request, session: SessionDep, principal: WebAdmin) -> Response:
    form = await request.form()
    data = {"name": str(form.get("name") or "").strip()}
    return await _add_code(request, session, "chain", data,
                           lambda payload: service.add_chain(session, principal, payload))


@router.post("/instruments/codes/chains/{chain_id:int}")
async def rename_chain(request: Request, session: SessionDep, principal: WebAdmin, chain_id: int) -> Response:
    form = await request.form()
    data = {"name": str(form.get("name") or "").strip()}
    try:
        async with refusable(session):  # a refused rename leaves nothing behind the page's own commit
            _chain, renamed = await service.rename_chain(session, principal, chain_id, parse_form(ChainCreate, data))
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        # The row's form again, with what was typed and the problem; the flash names the tag and the field.
        ctx = await _codes_context(session)
        problems = [f"{_CHAIN_NAME_LABEL}：{p.message}" for p in exc.problems] or [exc.detail]
        current = next((c.name for c in ctx["chains"] if c.id == chain_id), "")
        ctx.update(errors={f"chain-{chain_id}": {"name": "；".join(problems)}}, values={f"chain-{chain_id}": data},
                   flash=f"未能重命名产业链标签「{current}」。{'；'.join(problems)}", flash_kind="error")
        return render(request, "instruments/codes.html", ctx, status_code=exc.status)
    did = "chain_renamed" if renamed else "chain_unchanged"
    return redirect(request, f"/instruments/codes?did={did}&chain={chain_id}#chain-{chain_id}")


@router.post("/instruments/codes/chains/{chain_id:int}/delete")
async def delete_chain(request: Request, session: SessionDep, principal: WebAdmin, chain_id: int) -> Response:
    carried = await service.delete_chain(session, principal, chain_id)
    return redirect(request, f"/instruments/codes?did=chain_deleted&n={carried}#chains")


# ---- one instrument ---------------------------------------------------------------------------------------------


@router.get("/instruments/{instrument_id:int}")
async def detail(
    request: Request, session: SessionDep, principal: WebPrincipal, instrument_id: int, created: int = 0,
    saved: int = 0, retired: int = 0,
) -> Response:
    view = await service.view(session, principal, instrument_id)
    ctx = {
        "v": view,
        "i": view.instrument,
        "url": service.public_url(instrument_id),
        "large": view.instrument.original_value >= service.threshold(),
        "errors": {},
        **_common(),
    }
    if created:
        ctx["flash"] = "仪器已发布"
    elif saved:
        ctx["flash"] = "修改已保存"
    elif retired:
        ctx["flash"] = "仪器已退役，不再接受预约"
    return render(request, "instruments/detail.html", ctx)


@router.get("/instruments/{instrument_id:int}/edit")
async def edit_form(
    request: Request, session: SessionDep, principal: WebManager, instrument_id: int
) -> Response:
    view = await service.view(session, principal, instrument_id)
    if not view.can_manage:
        from booking.core.errors import Forbidden

        raise Forbidden("只有该仪器所属单位（实验室/平台）的管理员可以修改")
    return await _render_form(
        request,
        session,
        principal,
        values=_values_of(view.instrument),
        instrument=view.instrument,
        chain_values=view.chains,
    )


@router.post("/instruments/{instrument_id:int}/edit")
async def update(
    request: Request, session: SessionDep, principal: WebManager, instrument_id: int
) -> Response:
    form = await request.form()
    data = _form_data(form, update=True)
    if form.get("_refresh"):
        inst = await service.get_visible(session, principal, instrument_id)
        values = {
            **{k: v for k, v in form.items() if isinstance(v, str)},
            "category_code": data.get("category_code"),
        }
        return await _render_form(
            request, session, principal, values=values, instrument=inst, chain_values=data["chains"]
        )
    try:
        async with refusable(session):  # as in create: a late refusal leaves nothing behind
            await service.update_instrument(session, principal, instrument_id, _validate(InstrumentUpdate, data))
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        inst = await service.get_visible(session, principal, instrument_id)
        return await _rerender_failed(request, session, principal, form, data, exc, instrument=inst)
    return redirect(request, f"/instruments/{instrument_id}?saved=1")


# ---- who may see a restricted instrument -------------------------------------------------------------------------


async def _render_access(request: Request, session: SessionDep, principal: Principal, instrument_id: int,
                         **extra: Any) -> Response:
    status_code = extra.pop("status_code", 200)
    inst, views = await service.list_access(session, principal, instrument_id)
    ctx = {"i": inst, "grants": views, "errors": {}, "values": {}, **extra}
    return render(request, "instruments/access.html", ctx, status_code=status_code)


@router.get("/instruments/{instrument_id:int}/access")
async def access_page(request: Request, session: SessionDep, principal: WebManager, instrument_id: int) -> Response:
    return await _render_access(request, session, principal, instrument_id)


@router.post("/instruments/{instrument_id:int}/access")
async def grant_access(request: Request, session: SessionDep, principal: WebManager, instrument_id: int
                       ) -> Response:
    who = str((await request.form()).get("user") or "").strip()
    try:
        if not who:
            raise RuleViolation("请填写用户", problems=[Problem("user", "missing", "请填写用户邮箱或编号")])
        by_id = who.isascii() and who.isdecimal()
        async with refusable(session):  # a refused grant leaves nothing behind the re-rendered page's commit
            _, user = await service.grant_access(session, principal, instrument_id, int(who) if by_id else None,
                                                 email=None if by_id else who)
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        # The form has one field for id-or-email: its errors go there, whichever the service names.
        errors = {"user": "；".join(p.message for p in exc.problems) or exc.detail}
        return await _render_access(request, session, principal, instrument_id, errors=errors,
                                    values={"user": who}, flash=exc.detail, flash_kind="error",
                                    status_code=exc.status)
    return await _render_access(request, session, principal, instrument_id,
                                flash=f"已授权 {user.name}（{user.email}）查看本仪器")


@router.post("/instruments/{instrument_id:int}/access/{user_id:int}/revoke")
async def revoke_access(request: Request, session: SessionDep, principal: WebManager, instrument_id: int,
                        user_id: int) -> Response:
    await service.revoke_access(session, principal, instrument_id, user_id)
    return redirect(request, f"/instruments/{instrument_id}/access")


@router.post("/instruments/{instrument_id:int}/retire")
async def retire(
    request: Request, session: SessionDep, principal: WebManager, instrument_id: int
) -> Response:
    form = await request.form()
    reason = str(form.get("reason") or "")
    try:
        await service.retire_instrument(session, principal, instrument_id, reason)
    except RuleViolation as exc:
        view = await service.view(session, principal, instrument_id)
        ctx = {
            "v": view,
            "i": view.instrument,
            "url": service.public_url(instrument_id),
            "large": view.instrument.original_value >= service.threshold(),
            "errors": errors_by_field(exc.problems),
            "flash": exc.detail,
            "flash_kind": "error",
            **_common(),
        }
        return render(request, "instruments/detail.html", ctx, status_code=422)
    return redirect(request, f"/instruments/{instrument_id}?retired=1")
