"""Pure ASGI middleware: request id, access log, Prometheus metrics, security headers, the CSRF cookie, refusing
query parameters that hold a NUL character, and the direct routes (DirectRoutes)."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from http.cookies import SimpleCookie
from inspect import isawaitable
from typing import Any, Protocol
from urllib.parse import parse_qsl

from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from booking.core.context import client_addr_var, request_id_var

log = logging.getLogger("booking.access")

REQUESTS = Counter("booking_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "booking_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

CSRF_COOKIE = "bk_csrf"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed cookie header is ignored, not an error
                return None
            if name in jar:
                return jar[name].value
    return None


def _nul_parameters(scope: Scope) -> list[str]:
    """The query parameters whose name or value holds a NUL character. PostgreSQL text cannot store one, so such a
    value would fail deep inside a statement (a 500) instead of being refused by name."""
    raw: bytes = scope.get("query_string", b"")
    if b"%00" not in raw and b"\x00" not in raw:
        return []
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    return list(dict.fromkeys(name.replace("\x00", "") for name, value in pairs if "\x00" in name + value))


async def _refuse(scope: Scope, receive: Receive, send: Send, names: list[str]) -> None:
    from booking.core.errors import Problem
    from booking.core.handlers import respond

    problems = [Problem(name, "invalid_character", "不能包含空字符（\\0）") for name in names]
    await respond(Request(scope, receive), 422, "请求参数有误", problems=problems)(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, secure_cookies: bool = False) -> None:
        self.app = app
        self.secure_cookies = secure_cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID_OK.match(incoming) else secrets.token_hex(8)
        client = scope.get("client")
        address = client[0] if client else "unknown"
        rid_token = request_id_var.set(request_id)
        addr_token = client_addr_var.set(address)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        is_api = scope["path"].startswith("/api/")
        csrf = _cookie(scope, CSRF_COOKIE)
        new_csrf = None
        if not is_api and (not csrf or len(csrf) < 20):
            new_csrf = csrf = secrets.token_urlsafe(32)
        state["csrf_token"] = csrf
        started = time.perf_counter()
        status_holder: dict[str, Any] = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"same-origin"))
                if not is_api:
                    headers.append((b"x-frame-options", b"DENY"))
                if new_csrf:
                    attrs = "; Path=/; HttpOnly; SameSite=Lax"
                    if self.secure_cookies:
                        attrs += "; Secure"
                    headers.append((b"set-cookie", f"{CSRF_COOKIE}={new_csrf}{attrs}".encode()))
                message["headers"] = headers
            await send(message)

        try:
            refused = _nul_parameters(scope)
            if refused:
                await _refuse(scope, receive, send_wrapper, refused)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            status = status_holder["status"]
            REQUESTS.labels(scope["method"], route_path, str(status)).inc()
            LATENCY.labels(scope["method"], route_path).observe(elapsed)
            if scope["path"] not in ("/healthz", "/metrics") and not scope["path"].startswith("/static/"):
                log.info(
                    "%s %s %s", scope["method"], scope["path"], status,
                    extra={"method": scope["method"], "path": scope["path"], "status": status,
                           "duration_ms": round(elapsed * 1000, 2), "client": address},
                )
            request_id_var.reset(rid_token)
            client_addr_var.reset(addr_token)


class DirectRoute(Protocol):
    """What DirectRoutes needs of a route (a FastAPI APIRoute has it): a path without parameters, its methods, and
    an endpoint that takes the request and answers it itself."""

    path: str
    methods: set[str] | None
    param_convertors: dict[str, Any]
    endpoint: Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    """Serves a few hot routes ahead of the framework's routing and exception middleware, so that a request for
    one of them costs what its endpoint costs.

    The catalogue search, the busiest anonymous route, often runs a statement of 0.3 ms; behind Starlette's
    exception middleware, FastAPI's async exit stacks and FastAPI's matching of included routers, a request spent
    another 0.1 ms before and after it. Everything a request gets from the app still applies: this sits inside
    RequestContextMiddleware (request id, access log, metrics, headers), its errors go to the app's own exception
    handlers, looked up as Starlette's ExceptionMiddleware does, and an error no handler takes goes on to the
    server-error handler as before. The routes stay on their routers too, for OpenAPI and url_for.

    Only exact paths are served here (method and path, no parameters); anything else goes on to the app
    unchanged."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[DirectRoute]) -> None:
        self.app = app
        self.routes: dict[tuple[str, str], DirectRoute] = {}
        for route in routes:
            if route.param_convertors or not route.methods:
                raise ValueError(f"{route.path}: a direct route needs an exact path and its methods")
            for method in route.methods:
                self.routes[(method, route.path)] = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # scope["path"] holds the root_path too (ASGI): under one, these exact paths do not match and the router
        # answers, as it should.
        route = self.routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # as routing sets it: the access log and metrics label by it
        scope["endpoint"] = route.endpoint
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = _exception_handler(scope["app"].exception_handlers, exc)
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if isawaitable(answer) else answer
        await response(scope, receive, send)


def _exception_handler(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The handler Starlette's ExceptionMiddleware would pick: by status for an HTTPException, else the nearest
    class in the exception's MRO. The catch-all `Exception` handler is the server-error middleware's, which runs
    outside: it is left to it."""
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
