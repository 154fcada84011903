"""Pure ASGI middleware: request id, access log, Prometheus metrics, security headers, the CSRF cookie, and refusing
query parameters that hold a NUL character."""

from __future__ import annotations

import logging
import re
import secrets
import time
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

from prometheus_client import Counter, Histogram
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
    from starlette.requests import Request

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
