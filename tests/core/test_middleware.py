"""DirectRoutes: a few exact routes served ahead of the app's routing, answering as the routed path would."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse, Response

from booking.core.middleware import DirectRoutes, RequestContextMiddleware


class Teapot(Exception):
    pass


class SmallTeapot(Teapot):
    pass


class Shelved(Exception):
    """Has a handler of its own, registered under an HTTP status: only HTTPExceptions are looked up by status."""


RAISES: dict[str, Exception] = {
    "teapot": SmallTeapot("short and stout"),
    "unauthorised": HTTPException(401, "no token", headers={"WWW-Authenticate": "Bearer"}),
    "gone": HTTPException(410, "moved away"),
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


def gone(request: Request, exc: Exception) -> Response:  # a plain function: handlers may be either
    return JSONResponse({"gone": True}, status_code=410)


async def unhandled(request: Request, exc: Exception) -> Response:
    return JSONResponse({"unhandled": type(exc).__name__}, status_code=500)


def make_app(*, direct: bool) -> tuple[FastAPI, APIRoute]:
    app = FastAPI()
    app.add_exception_handler(Teapot, teapot)
    app.add_exception_handler(410, gone)
    app.add_exception_handler(Exception, unhandled)
    app.add_api_route("/things", endpoint, methods=["GET"])
    app.add_api_route("/things", create, methods=["POST"])
    app.add_api_route("/things/{thing_id}", endpoint, methods=["GET"])
    route = next(r for r in app.router.routes if isinstance(r, APIRoute) and r.endpoint is endpoint)
    if direct:
        app.add_middleware(DirectRoutes, routes=[route])
    app.add_middleware(RequestContextMiddleware)
    return app, route


async def call(app: FastAPI, method: str, url: str, *, raise_app_exceptions: bool = False, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(
        app=app, raise_app_exceptions=raise_app_exceptions, root_path=kwargs.pop("root_path", "")
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, url, **kwargs)


@pytest.mark.parametrize(
    ("method", "url", "routed"),
    [
        ("GET", "/things", False),
        ("GET", "/things?q=x", False),
        ("POST", "/things", True),  # the same path, another method: the router's
        ("GET", "/things/7", True),  # a path with parameters is never direct
        ("HEAD", "/things", True),
    ],
)
async def test_only_the_exact_method_and_path_are_served_directly(method: str, url: str, routed: bool) -> None:
    app, _ = make_app(direct=True)
    r = await call(app, method, url)
    if method == "POST":
        assert r.status_code == 201
    elif method == "HEAD":
        assert r.status_code == 405
    else:
        assert r.status_code == 200 and r.json()["routed"] is routed


async def test_a_direct_answer_carries_what_the_routed_one_does() -> None:
    """The route and endpoint in the scope (the access log and the metrics label by the route), the request
    context's headers."""
    direct, _ = make_app(direct=True)
    routed, _ = make_app(direct=False)
    a, b = await call(direct, "GET", "/things"), await call(routed, "GET", "/things")
    assert a.json() == {"routed": False, "route": "/things", "endpoint": True}
    assert b.json() == {"routed": True, "route": "/things", "endpoint": True}
    for header in ("x-request-id", "x-content-type-options", "referrer-policy", "content-type"):
        assert header in a.headers and (header == "x-request-id" or a.headers[header] == b.headers[header])


async def test_under_a_root_path_the_router_answers() -> None:
    app, _ = make_app(direct=True)
    r = await call(app, "GET", "/api/things", root_path="/api")
    assert r.status_code == 200 and r.json()["routed"] is True


@pytest.mark.parametrize(
    ("name", "status", "body"),
    [
        ("teapot", 418, {"teapot": "short and stout"}),  # the nearest class in the MRO
        ("unauthorised", 401, {"detail": "no token"}),  # FastAPI's own HTTPException handler
        ("gone", 410, {"gone": True}),  # an HTTPException's status handler first
        ("invalid", 422, None),  # FastAPI's validation handler
        ("broken", 500, {"unhandled": "RuntimeError"}),  # the catch-all, run by the server-error middleware
    ],
)
async def test_errors_get_the_same_answer_as_through_the_router(name: str, status: int, body: Any) -> None:
    direct, _ = make_app(direct=True)
    routed, _ = make_app(direct=False)
    a = await call(direct, "GET", f"/things?raise={name}")
    b = await call(routed, "GET", f"/things?raise={name}")
    assert a.status_code == b.status_code == status
    assert a.json() == b.json()
    if body is not None:
        assert a.json() == body
    assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate")


async def test_an_unhandled_error_still_reaches_the_server() -> None:
    """The catch-all handler answers, and the error goes on to the server (which logs it), as through the router:
    it is the server-error middleware's to run, not DirectRoutes'."""
    for direct in (True, False):
        app, _ = make_app(direct=direct)
        with pytest.raises(RuntimeError, match="bug"):
            await call(app, "GET", "/things?raise=broken", raise_app_exceptions=True)


def test_a_route_with_path_parameters_is_refused() -> None:
    app, _ = make_app(direct=False)
    parametrised = next(r for r in app.router.routes if getattr(r, "path", "") == "/things/{thing_id}")
    with pytest.raises(ValueError, match="exact path"):
        DirectRoutes(app, routes=[parametrised])  # type: ignore[list-item]
