"""Routes served ahead of the app's routing: RequestRoute (an API route whose endpoint answers the request itself)
and DirectRoutes (the middleware that serves such routes directly).

The catalogue search is the busiest anonymous route and often runs a statement of 0.3 ms. FastAPI's request
handling (dependency solving, parameter parsing) and its routing (exit stacks, the matching of included routers)
added as much again; these two take them out of its way while keeping everything else a request gets from the
app: the middleware around the routing (request id, access log, metrics, headers) and the app's own exception
handlers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import request_response
from starlette.types import ASGIApp, Receive, Scope, Send


class RequestRoute(APIRoute):
    """An API route whose endpoint takes the request and answers it itself: FastAPI's request handling (dependency
    solving and parameter parsing, even for a lone `request` parameter) is skipped, which took 0.1-0.3 ms. FastAPI
    documents it as usual (its parameters from `openapi_extra`). Overriding get_route_handler is FastAPI's
    documented hook for custom route classes."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        # Dependencies would be skipped silently (a router's, an include's): refuse them at start-up instead.
        if self.dependant.dependencies or self.dependencies:
            raise TypeError(f"{self.path}: a RequestRoute runs no dependencies")
        return self.endpoint  # type: ignore[return-value]


class DirectRoutes:
    """Serves RequestRoutes ahead of the app's routing, answering exactly as the routed path would.

    It sits inside the app's other middleware (request id, access log, metrics, headers) and in front of Starlette's
    exception middleware and the router. A request for one of its routes (method and exact path, matched as the
    router matches them) goes to the route's endpoint through the same exception middleware, built from the app's
    handlers as Starlette builds its own; an error none of them takes goes on to the server-error handler, as
    before. The routes stay on their routers, for OpenAPI and url_for; everything else, and every request while
    FastAPI's own telemetry traces it (it names the route when its router picks one), goes on to the app."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[RequestRoute]) -> None:
        self.app = app
        self.routes: dict[tuple[str, str], RequestRoute] = {}
        for route in routes:
            if not isinstance(route, RequestRoute) or route.param_convertors or not route.methods:
                raise ValueError(f"{route.path}: a direct route is a RequestRoute with an exact path and methods")
            for method in route.methods:
                self.routes[(method, route.path)] = route
        self._answers: dict[tuple[str, str], ASGIApp] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = (scope["method"], get_route_path(scope)) if scope["type"] == "http" else None
        route = self.routes.get(key) if key else None
        if route is None or scope.get("fastapi.telemetry") is not None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # as routing sets it: the access log and the metrics label requests by it
        scope["endpoint"] = route.endpoint
        await self._answer(scope["app"])[key](scope, receive, send)  # type: ignore[index]

    def _answer(self, app: Any) -> dict[tuple[str, str], ASGIApp]:
        """Each route's endpoint behind an exception middleware holding the app's handlers, as
        Starlette.build_middleware_stack hands them to its own (500 and Exception stay with the server-error
        middleware). Built on the first request: handlers may be added until then."""
        if self._answers is None:
            handlers = {k: v for k, v in app.exception_handlers.items() if k not in (500, Exception)}
            self._answers = {
                key: ExceptionMiddleware(request_response(route.endpoint), handlers=handlers, debug=app.debug)
                for key, route in self.routes.items()
            }
        return self._answers
