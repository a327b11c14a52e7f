"""The playground page at ``/`` of the HTTP port: static files, no computing here.

The page (``static/index.html``, its script and style sheet) is one more client of
the public JSON API (`actgrad_routes`): it reads the catalog from ``GET /v1/functions``
and the gradient-flow probe's defaults and inits from ``/openapi.json``, and every
number it shows comes from a ``/v1/`` call. The files are package data, read once when
the routes are built and served from memory. They are public (no token: the page asks
for one and sends it with its API calls, as ``Authorization: Bearer``), but refused
while the server drains like every other route. ``--no-playground`` leaves them out.

A Content-Security-Policy of ``'self'`` on the page makes the browser itself refuse any
script, style, font, image or request from anywhere but the serving origin.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from actgrad_server.errors import shown
from actgrad_server.http.responses import json_response

__all__ = ["ASSETS", "OPENAPI_PATHS", "PUBLIC_PATHS", "routes"]

#: Served file name -> media type; ``/`` is index.html, the others ``/playground/<name>``.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
#: The paths the page needs before it can ask for a token: answered without one.
PUBLIC_PATHS = frozenset({"/", *(f"/playground/{name}" for name in ASSETS if name != "index.html")})
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    # Small files that change with the server: always revalidated, never stale.
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


def page_bytes() -> int:
    """The page's weight: the sum of its files' sizes in bytes (uncompressed)."""
    return sum(len(_read(name)) for name in ASSETS)


def routes() -> list[BaseRoute]:
    """``GET /`` (the page) and ``GET /playground/{name}`` (its script and style)."""
    files = {name: (_read(name), media) for name, media in ASSETS.items()}

    def answer(name: str) -> Response:
        body, media = files[name]
        return Response(body, media_type=media, headers=_HEADERS)

    async def index(request: Request) -> Response:
        return answer("index.html")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files or name == "index.html":
            return json_response({"error": f"no playground file {shown(name)}"}, 404)
        return answer(name)

    return [
        Route("/", index, methods=["GET"]),
        Route("/playground/{name}", asset, methods=["GET"]),
    ]


def _text(description: str, media: str) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


OPENAPI_PATHS: dict[str, Any] = {
    "/": {
        "get": {
            "tags": ["playground"],
            "summary": "The playground page: every function, its gradient, softmax, a "
            "neuron and the gradient-flow probe, computed through this API "
            "(off with --no-playground)",
            "responses": {"200": _text("The page", "text/html")},
        }
    },
    "/playground/{name}": {
        "get": {
            "tags": ["playground"],
            "summary": "The page's script and style sheet",
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": [n for n in ASSETS if n != "index.html"]},
                }
            ],
            "responses": {
                "200": _text("The file", "text/plain"),
                "404": {"description": "Not one of the page's files"},
            },
        }
    },
}
