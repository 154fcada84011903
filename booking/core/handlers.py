"""Every error is mapped here, once: RFC 9457 problem+json for /api, a Chinese page or htmx fragment otherwise."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from booking.core.context import request_id_var
from booking.core.errors import DomainError, Problem, ServiceUnavailable
from booking.core.validation import problems_from_errors
from booking.core.web import field_label, is_htmx, render

log = logging.getLogger("booking.errors")

_HTTP_TITLES = {
    400: "请求无效",
    401: "需要登录",
    403: "没有权限",
    404: "页面不存在",
    405: "不支持的请求方法",
    409: "冲突",
    410: "已失效",
    413: "请求内容过大",
    415: "不支持的内容类型",
    422: "输入有误",
    429: "请求过于频繁",
    500: "服务器内部错误",
    503: "服务暂不可用",
}


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str = "",
    *,
    type_slug: str = "about:blank",
    problems: list[Problem] | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{type_slug}" if type_slug != "about:blank" else "about:blank",
        "title": title,
        "status": status,
        "detail": detail or title,
        "instance": request.url.path,
        "request_id": request_id_var.get(),
    }
    if problems:
        body["errors"] = [p.as_dict() for p in problems]
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def _page(request: Request, status: int, title: str, detail: str, problems: list[Problem] | None = None,
          headers: dict[str, str] | None = None) -> Response:
    template = f"errors/{status}.html" if status in (403, 404, 422, 500) else "errors/generic.html"
    ctx = {"status": status, "title": title, "detail": detail, "problems": problems or []}
    if is_htmx(request):
        # Show the problem inline where the user acted instead of replacing the page.
        response = render(request, "errors/_fragment.html", ctx, status_code=status, headers=headers)
        response.headers["HX-Reswap"] = "innerHTML"
        response.headers["HX-Retarget"] = "#flash"
        # A boosted link or form that failed stays where it was: the address bar keeps the page it shows.
        response.headers["HX-Push-Url"] = "false"
        return response
    try:
        return render(request, template, ctx, status_code=status, headers=headers)
    except Exception:  # the error page itself must never fail (e.g. with the database down)
        log.exception("error page failed to render")
        return Response(f"{status} {title}", status_code=status, media_type="text/plain; charset=utf-8")


def respond(request: Request, status: int, title: str, detail: str = "", *, type_slug: str = "about:blank",
            problems: list[Problem] | None = None, extra: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> Response:
    if is_api(request):
        return problem_response(request, status, title, detail, type_slug=type_slug, problems=problems,
                                extra=extra, headers=headers)
    return _page(request, status, title, detail, problems, headers)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    headers: dict[str, str] = {}
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        headers["Retry-After"] = str(int(retry))
    if exc.status == 401:
        if is_api(request):
            headers["WWW-Authenticate"] = "Bearer"
        else:
            target = f"/login?next={request.url.path}"
            if is_htmx(request):
                return Response(status_code=204, headers={"HX-Redirect": target})
            return RedirectResponse(target, status_code=303)
    return respond(request, exc.status, exc.title, exc.detail, type_slug=exc.type_slug, problems=exc.problems,
                   extra=exc.extra, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = problems_from_errors(exc.errors())
    # The API names fields as sent; pages name them as users read them.
    if is_api(request):
        detail = "；".join(f"{p.field}: {p.message}" if p.field else p.message for p in problems)
    else:
        detail = "；".join(f"{field_label(p.field)}：{p.message}" if p.field else p.message for p in problems)
    return respond(request, 422, "输入有误", detail, type_slug="validation-error", problems=problems)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    title = _HTTP_TITLES.get(exc.status_code, "错误")
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail not in ("Not Found",) else title
    return respond(request, exc.status_code, title, detail, headers=dict(exc.headers or {}))


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable: %s", exc.__class__.__name__)
    err = ServiceUnavailable("数据库暂时无法连接，请稍后再试")
    return respond(request, 503, err.title, err.detail, type_slug=err.type_slug, headers={"Retry-After": "5"})


# PostgreSQL aborted the transaction because of another one (deadlock victim, serialization failure): nothing was
# written, and the same request a moment later normally succeeds.
_TRANSIENT_SQLSTATES = {"40P01", "40001"}


# Text PostgreSQL cannot store (a NUL character) in a body or a form: refused as input, not a server error. Query
# parameters holding one are refused by name earlier (booking.core.middleware); a body's field is not known here.
_UNSTORABLE_TEXT = {"22021", "22P05"}  # text, and JSON text (the activity log's before/after)


def _unstorable_text(request: Request) -> Response:
    log.info("input refused by the database as unstorable text (NUL)")
    return respond(request, 422, "输入有误", "输入中含有无法保存的字符（如空字符 \\0），未做任何更改。",
                   type_slug="invalid-character")


# asyncpg refusing, before sending anything, a parameter its column type cannot hold ("invalid input for query
# argument $1: 2147483648 (value out of int32 range)"): input no record can match. PostgreSQL's own overflows
# (SQLSTATE 22003, an arithmetic one in a report, say) are bugs and stay 500s.
_OUT_OF_RANGE = re.compile(r"invalid input for query argument \$\d+: (.*?) \(value out of int\d+ range\)")


def _out_of_range(exc: BaseException) -> str | None:
    """The parameter value asyncpg refused as out of its column's range, or None."""
    found = _OUT_OF_RANGE.search(str(exc))
    return found.group(1) if found else None


def _same_number(given: Any, value: str) -> bool:
    try:
        return int(str(given).strip()) == int(value)
    except ValueError:
        return False


def _refuse_out_of_range(request: Request, value: str) -> Response:
    """An id in the path beyond any record is a record that does not exist (404); a number in the query is named
    (422); otherwise the request is refused as a whole, nothing written (the request's transaction rolls back)."""
    if any(_same_number(v, value) for v in request.path_params.values()):
        return respond(request, 404, "未找到", "没有这条记录。", type_slug="not-found")
    names = [name for name, v in request.query_params.multi_items() if _same_number(v, value)]
    problems = [Problem(name, "out_of_range", "数值超出范围") for name in dict.fromkeys(names)]
    return respond(request, 422, "输入有误", "输入的数值超出范围，未做任何更改。", type_slug="validation-error",
                   problems=problems or None)


async def _dbapi_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, OperationalError | InterfaceError) or _is_connection_error(exc):
        return await _database_unavailable(request, exc)
    if (value := _out_of_range(exc)) is not None:
        return _refuse_out_of_range(request, value)
    if getattr(getattr(exc, "orig", None), "sqlstate", None) in _UNSTORABLE_TEXT:
        return _unstorable_text(request)
    if getattr(getattr(exc, "orig", None), "sqlstate", None) in _TRANSIENT_SQLSTATES:
        log.warning("transaction aborted by a concurrent one: %s", getattr(exc.orig, "sqlstate", ""))  # type: ignore[attr-defined]
        err = ServiceUnavailable("与其他同时进行的操作冲突，未做任何更改，请重试")
        return respond(request, 503, err.title, err.detail, type_slug=err.type_slug, headers={"Retry-After": "1"})
    return await _unhandled(request, exc)


def _is_connection_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        # asyncpg's connection errors (a pg_hba rejection, say) also come unwrapped, from a raw pool checkout
        # (booking.core.db.read_connection).
        if isinstance(current, ConnectionError | OSError | TimeoutError) or name in (
            "CannotConnectNowError", "ConnectionDoesNotExistError", "InterfaceError", "TooManyConnectionsError",
        ) or any(cls.__name__ == "PostgresConnectionError" for cls in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


async def _unhandled(request: Request, exc: Exception) -> Response:
    if _is_connection_error(exc):
        return await _database_unavailable(request, exc)
    if getattr(exc, "sqlstate", None) in _UNSTORABLE_TEXT:  # asyncpg's own error, from a raw connection
        return _unstorable_text(request)
    if (value := _out_of_range(exc)) is not None:
        return _refuse_out_of_range(request, value)
    log.exception("unhandled error", exc_info=exc)
    return respond(request, 500, "服务器内部错误", "服务器出现意外错误，已记录，请稍后再试。")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
    app.add_exception_handler(DBAPIError, _dbapi_error)
    app.add_exception_handler(ConnectionError, _database_unavailable)
    app.add_exception_handler(OSError, _database_unavailable)
    app.add_exception_handler(Exception, _unhandled)
