"""DirectRoutes and RequestRoute: exact routes served ahead of the app's routing, answering as the routed path."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from booking.core.direct_routes import DirectRoutes, RequestRoute
from booking.core.middleware import RequestContextMiddleware


class Teapot(Exception):
    pass


class SmallTeapot(Teapot):
    pass


RAISES: dict[str, Exception] = {
    "teapot": SmallTeapot("short and stout"),
    "unauthorised": HTTPException(401, "no token", headers={"WWW-Authenticate": "Bearer"}),
    "gone": HTTPException(410, "moved away"),
    "server": HTTPException(503, "later"),
    "internal": HTTPException(500, "oops"),
    "invalid": RequestValidationError([{"loc": ("query", "limit"), "msg": "too big", "type": "value_error"}]),
    "broken": RuntimeError("bug"),
}


async def endpoint(request: Request) -> Response:
    name = request.query_params.get("raise")
    if name:
        raise RAISES[name]
    return JSONResponse(
        {
            "routed": "router" in request.scope,  # Starlette's router marks the scope; the direct path does not
            "route": getattr(request.scope.get("route"), "path", None),
            "endpoint": request.scope.get("endpoint") is endpoint,
        }
    )


async def create(request: Request) -> Response:
    return JSONResponse({"created": True}, status_code=201)


async def teapot(request: Request, exc: Exception) -> Response:
    return JSONResponse({"teapot": str(exc)}, status_code=418)


def gone(request: Request, exc: Exception) -> Response:  # a plain function: Starlette runs it in a thread
    return JSONResponse({"gone": True}, status_code=410)


async def unhandled(request: Request, exc: Exception) -> Response:
    return JSONResponse({"unhandled": type(exc).__name__}, status_code=500)


def make_app(*, direct: bool) -> FastAPI:
    app = FastAPI()
    app.add_exception_handler(Teapot, teapot)
    app.add_exception_handler(410, gone)
    app.add_exception_handler(500, unhandled)  # the server-error middleware's, as the Exception handler is
    app.add_exception_handler(Exception, unhandled)
    router = APIRouter(prefix="/api/v1")
    router.add_api_route("/things", endpoint, methods=["GET"], route_class_override=RequestRoute)
    router.add_api_route("/things", create, methods=["POST"])
    router.add_api_route("/things/{thing_id}", endpoint, methods=["GET"])
    app.include_router(router)
    if direct:
        route = next(r for r in router.routes if isinstance(r, RequestRoute))
        app.add_middleware(DirectRoutes, routes=[route])
    app.add_middleware(RequestContextMiddleware)
    return app


async def call(app: ASGIApp, method: str, url: str, *, raise_app_exceptions: bool = False,
               root_path: str = "") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, url, headers={"X-Request-ID": "same-request-0001"})


@pytest.mark.parametrize(
    ("method", "url", "status", "routed"),
    [
        ("GET", "/api/v1/things", 200, False),
        ("GET", "/api/v1/things?q=x", 200, False),
        ("POST", "/api/v1/things", 201, None),  # the same path, another method: the router's
        ("GET", "/api/v1/things/7", 200, True),  # a path with parameters is never direct
        ("GET", "/api/v1/things/", 307, None),  # the router redirects a trailing slash
        ("HEAD", "/api/v1/things", 405, None),
    ],
)
async def test_only_the_exact_method_and_path_are_served_directly(
    method: str, url: str, status: int, routed: bool | None
) -> None:
    direct, plain = make_app(direct=True), make_app(direct=False)
    a, b = await call(direct, method, url), await call(plain, method, url)
    assert a.status_code == b.status_code
    assert headers(a) == headers(b)
    assert a.status_code == status
    if routed is not None:
        assert a.json()["routed"] is routed


async def test_a_direct_answer_carries_what_the_routed_one_does() -> None:
    """The route and endpoint in the scope (the access log and the metrics label requests by the route), and the
    same headers, the request context's included."""
    a = await call(make_app(direct=True), "GET", "/api/v1/things")
    b = await call(make_app(direct=False), "GET", "/api/v1/things")
    assert a.json() == {"routed": False, "route": "/api/v1/things", "endpoint": True}
    assert b.json() == {"routed": True, "route": "/api/v1/things", "endpoint": True}
    assert headers(a) == headers(b)


def headers(r: httpx.Response) -> dict[str, str]:
    """All but the length, which differs with the body's "routed" here."""
    return {k: v for k, v in r.headers.items() if k != "content-length"}


async def test_under_a_root_path_the_route_is_found_as_the_router_finds_it() -> None:
    """Behind a server's root_path the path holds it (as ASGI says); the route path is matched, as by the router."""
    r = await call(make_app(direct=True), "GET", "/svc/api/v1/things", root_path="/svc")
    assert r.status_code == 200 and r.json()["routed"] is False


async def test_while_fastapi_telemetry_traces_a_request_the_router_answers() -> None:
    """FastAPI names the route in its spans and metrics when its router picks it: a traced request goes there."""

    def traced(app: ASGIApp) -> ASGIApp:
        async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
            scope["fastapi.telemetry"] = object()
            await app(scope, receive, send)

        return wrapper

    app = make_app(direct=True)
    app.user_middleware.insert(0, type(app.user_middleware[0])(lambda a: traced(a)))  # outermost
    r = await call(app, "GET", "/api/v1/things")
    assert r.status_code == 200 and r.json()["routed"] is True


@pytest.mark.parametrize(
    ("name", "status", "body"),
    [
        ("teapot", 418, {"teapot": "short and stout"}),  # the nearest class in the MRO
        ("unauthorised", 401, {"detail": "no token"}),  # FastAPI's own HTTPException handler
        ("gone", 410, {"gone": True}),  # an HTTPException's status handler first, a plain function
        ("server", 503, {"detail": "later"}),
        ("internal", 500, {"detail": "oops"}),  # a 500 handler is the server-error middleware's, not used here
        ("invalid", 422, None),  # FastAPI's validation handler
        ("broken", 500, {"unhandled": "RuntimeError"}),  # the catch-all, run by the server-error middleware
    ],
)
async def test_errors_get_the_same_answer_as_through_the_router(name: str, status: int, body: Any) -> None:
    a = await call(make_app(direct=True), "GET", f"/api/v1/things?raise={name}")
    b = await call(make_app(direct=False), "GET", f"/api/v1/things?raise={name}")
    assert (a.status_code, dict(a.headers), a.json()) == (b.status_code, dict(b.headers), b.json())
    assert a.status_code == status
    if body is not None:
        assert a.json() == body


async def test_an_unhandled_error_still_reaches_the_server() -> None:
    """The catch-all handler answers, and the error goes on to the server (which logs it), as through the router:
    it is the server-error middleware's to run, not DirectRoutes'."""
    for direct in (True, False):
        with pytest.raises(RuntimeError, match="bug"):
            await call(make_app(direct=direct), "GET", "/api/v1/things?raise=broken", raise_app_exceptions=True)


def test_only_request_routes_with_exact_paths_are_taken() -> None:
    """A plain API route's endpoint expects FastAPI's request handling (dependencies, parameters, response model),
    which a direct call would skip; a path with parameters is not matched exactly."""
    router = APIRouter()
    router.add_api_route("/plain", endpoint, methods=["GET"])
    router.add_api_route("/p/{x}", endpoint, methods=["GET"], route_class_override=RequestRoute)
    for route in router.routes:
        with pytest.raises(ValueError, match="RequestRoute with an exact path"):
            DirectRoutes(make_app(direct=False), routes=[route])  # type: ignore[list-item]


def test_a_request_route_refuses_dependencies() -> None:
    """A RequestRoute runs no dependencies; one added by a router would be skipped silently, so it is refused when
    the route is made."""

    def guard() -> None:
        return None

    router = APIRouter(dependencies=[Depends(guard)])
    with pytest.raises(TypeError, match="runs no dependencies"):
        router.add_api_route("/x", endpoint, methods=["GET"], route_class_override=RequestRoute)
