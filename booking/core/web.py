"""HTML rendering: one helper renders a whole page, or only a named block of it for htmx requests."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2_fragments.fastapi import Jinja2Blocks

from booking.core.clock import to_local
from booking.core.paths import TEMPLATES_DIR
from booking.core.regions import CITIES, city_name

templates = Jinja2Blocks(directory=str(TEMPLATES_DIR))
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True
templates.env.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "sort_keys": True}

ContextProcessor = Callable[[Request], Mapping[str, Any]]
_context_processors: list[ContextProcessor] = []


def add_context_processor(fn: ContextProcessor) -> None:
    if fn not in _context_processors:
        _context_processors.append(fn)


def _fmt_dt(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return ""
    return to_local(value).strftime(fmt)


def timespan(start: datetime | None, end: datetime | None) -> str:
    """A time range in Beijing time: the end's date only when it is on another day."""
    if start is None or end is None:
        return ""
    a, b = to_local(start), to_local(end)
    return f"{a:%Y-%m-%d %H:%M} – {b:%H:%M}" if a.date() == b.date() else f"{a:%Y-%m-%d %H:%M} – {b:%Y-%m-%d %H:%M}"


def _fmt_iso_local(value: str | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if not value:
        return ""
    return to_local(datetime.fromisoformat(value)).strftime(fmt)


def _fmt_wan(value: Decimal | int | float | None) -> str:
    """原值 is stored in exact CNY and shown in 万元 with two decimals, as on the national platform."""
    if value is None:
        return ""
    return f"{Decimal(value) / Decimal(10000):,.2f}"


# Labels for fields that any page's error may name (query parameters, mostly); pages add their own (field_labels).
COMMON_FIELD_LABELS = {
    "q": "关键词", "offset": "分页位置", "limit": "每页条数", "sort": "排序", "city": "市州", "category": "分类",
    "institution": "单位", "institution_kind": "单位类型", "sharing_mode": "共享模式", "status": "状态",
    "chain": "产业链", "min_value": "原值下限", "max_value": "原值上限", "min_wan": "原值下限", "max_wan": "原值上限",
    "large": "大型仪器", "vouchers": "创新券", "as_of": "统计日", "year": "年度", "view": "视图", "file": "文件",
    "email": "邮箱", "password": "密码", "phone": "电话", "start": "开始时间", "end": "结束时间",
    "date": "日期", "instrument_ids": "仪器", "instrument_id": "仪器", "measure": "指标", "band": "原值区间",
    "dim": "分组维度", "code": "代码",
}
_FIELD_PATH = re.compile(
    r"^(?P<base>[A-Za-z_]\w*)(?:\[(?P<index>\d+)\]|\.(?P<dotted>\d+))?(?:\.(?P<sub>[A-Za-z_]\w*))?$")


def field_label(field: str | None, labels: Mapping[str, str] | None = None) -> str:
    """A problem's field as users read it: "windows[0].end" (or "windows.0.end") -> "开放时段第 1 项的结束".
    Unknown names stay as they are (still better than nothing for finding the field)."""
    if not field:
        return ""
    merged = {**COMMON_FIELD_LABELS, **(labels or {})}
    if field in merged:
        return merged[field]
    m = _FIELD_PATH.match(field)
    if not m or m["base"] not in merged:
        return field
    text = merged[m["base"]]
    index = m["index"] if m["index"] is not None else m["dotted"]
    if index is not None:
        text += f"第 {int(index) + 1} 项"
    if m["sub"]:
        text += "的" + merged.get(m["sub"], m["sub"])
    return text


def _query(params: Mapping[str, Any], **overrides: Any) -> str:
    merged = {k: v for k, v in {**params, **overrides}.items() if v not in (None, "", [])}
    return urlencode(merged, doseq=True)


def _json_text(value: Any) -> str:
    """A value as JSON to read on a page: Chinese as is, and (unlike tojson, which is for scripts) `<` and `&`
    left for autoescape instead of shown as \\u003c."""
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


templates.env.filters["localtime"] = _fmt_dt
templates.env.filters["jsontext"] = _json_text
templates.env.filters["wan"] = _fmt_wan
templates.env.filters["isolocal"] = _fmt_iso_local
templates.env.filters["city"] = city_name
templates.env.globals["CITIES"] = CITIES
templates.env.globals["query"] = _query
templates.env.globals["field_label"] = field_label
templates.env.globals["timespan"] = timespan


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    block: str | None = None,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """Render a page; when htmx asks and a block is named, render just that block."""
    ctx: dict[str, Any] = {}
    for processor in _context_processors:
        ctx.update(processor(request))
    ctx.update(context or {})
    ctx["request"] = request
    kwargs: dict[str, Any] = {}
    if block and is_htmx(request) and not request.headers.get("HX-Boosted"):
        kwargs["block_name"] = block
    response = templates.TemplateResponse(request, template, ctx, status_code=status_code, **kwargs)
    response.headers["Vary"] = "HX-Request"
    current = request.headers.get("HX-Current-URL")
    if request.method == "POST" and request.headers.get("HX-Boosted") and current and "block_name" not in kwargs:
        # A boosted form that answers with a page (its errors, or the page again with a flash) would leave the
        # address bar on the POST-only URL, and reloading would then fail: keep the page the form was on.
        response.headers["HX-Replace-Url"] = current
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response  # type: ignore[return-value]


def redirect(request: Request, url: str, *, status_code: int = 303) -> Response:
    """303 after a mutation; htmx follows HX-Redirect instead of swapping the redirected page into a target."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=status_code)
