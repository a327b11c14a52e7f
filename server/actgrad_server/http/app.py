"""The HTTP front end's application: the OIP REST routes, actgrad's own JSON routes, the
OpenAPI document, all behind one `Pipeline` (request id, drain, tokens, limits, log).

`build_app` makes the Starlette application; `actgrad_server.http.server` serves it.
Route modules only convert (`oip_routes` over the process's one `DataPlane`,
`actgrad_routes` over its `Operations`); nothing here computes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from actgrad import __version__
from actgrad_server.calls.admission import Admission
from actgrad_server.calls.records import CallRecords
from actgrad_server.http import actgrad_routes, oip_routes, playground
from actgrad_server.http.pipeline import Pipeline
from actgrad_server.http.responses import json_response
from actgrad_server.http.runner import Runner
from actgrad_server.oip.dataplane import DataPlane
from actgrad_server.ops import Operations
from actgrad_server.tracing import Tracing

__all__ = ["HttpApp", "build_app", "openapi_document"]


class HttpApp:
    """The application to serve (`pipeline`, the ASGI app around the routes) and the
    thread pool the routes compute on; `pipeline.open_requests` is what a drain waits for."""

    def __init__(self, pipeline: Pipeline, pool: ThreadPoolExecutor, routes: Starlette) -> None:
        self.pipeline = pipeline
        self.pool = pool
        #: The application inside the pipeline (its routes).
        self.routes = routes


def openapi_document(*, with_playground: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route: OIP's, actgrad's own and, unless
    `with_playground` is false, the playground page's."""
    components: dict[str, Any] = {"schemas": {}}
    for module in (oip_routes, actgrad_routes):
        extra = getattr(module, "OPENAPI_COMPONENTS", {})
        for kind, entries in extra.items():
            components.setdefault(kind, {}).update(entries)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "actgrad",
            "version": __version__,
            "description": "Activation functions and their gradients: the Open Inference "
            "Protocol's REST binding (KServe v2 / Triton) and actgrad's own calls as JSON.",
        },
        "paths": {
            **oip_routes.OPENAPI_PATHS,
            **actgrad_routes.OPENAPI_PATHS,
            **(playground.OPENAPI_PATHS if with_playground else {}),
        },
        "components": components,
    }


def build_app(
    plane: DataPlane,
    ops: Operations,
    *,
    admission: Admission,
    records: CallRecords,
    max_body_bytes: int,
    max_open: int,
    threads: int,
    tracing: Tracing | None = None,
    with_playground: bool = True,
) -> HttpApp:
    """The Starlette application over `plane` (OIP) and `ops` (actgrad's calls), and
    the playground page at / unless `with_playground` is false."""
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="actgrad-http")
    # On the front end's own pool, with the request's context (its request id); small
    # elementwise requests inline (`Runner.small`).
    run = Runner(pool)

    document = openapi_document(with_playground=with_playground)

    async def openapi(request: Request) -> Response:
        return json_response(document)

    # Starlette tries routes in order: the calls first (no path of theirs overlaps
    # another's), then the rest in their own order (/v2/models/stats before
    # /v2/models/{model_name}).
    oip = oip_routes.OipRoutes(plane, run, max_body_bytes=max_body_bytes).routes()
    calls = [route for route in oip if getattr(route, "path", "").endswith("/infer")]
    routes: list[BaseRoute] = [
        *calls,
        *actgrad_routes.routes(ops, run),
        *(route for route in oip if route not in calls),
        Route("/openapi.json", openapi, methods=["GET"]),
        *(playground.routes() if with_playground else []),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        if status == 404:
            detail = f"no route {request.url.path} (see /openapi.json)"
        elif status == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        headers = getattr(exc, "headers", None)
        return json_response({"error": detail}, status, headers)

    asgi = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    pipeline = Pipeline(
        asgi,
        routes,
        admission=admission,
        records=records,
        max_body_bytes=max_body_bytes,
        max_open=max_open,
        tracing=tracing,
        public_paths=playground.PUBLIC_PATHS if with_playground else frozenset(),
    )
    return HttpApp(pipeline, pool, asgi)
