"""The HTTP front end's OpenAPI document: valid OpenAPI 3.1, and every route in it.

No sockets: the Starlette application is built and its routes read.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from actgrad_server.calls.admission import Admission
from actgrad_server.calls.records import CallRecords
from actgrad_server.config import Settings
from actgrad_server.engine import Engine
from actgrad_server.http.app import build_app, openapi_document
from actgrad_server.metrics import ServerMetrics
from actgrad_server.oip.dataplane import DataPlane
from actgrad_server.ops import Operations


def test_the_document_is_valid_openapi_3_1() -> None:
    validator: Any = importlib.import_module("openapi_spec_validator")  # a dev pin
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    validator.validate(document)


def test_every_route_of_the_app_is_in_the_document() -> None:
    settings = Settings(device="cpu")
    engine = Engine(device="cpu")
    app = build_app(
        DataPlane(engine, settings.limits),
        Operations(engine, settings.limits),
        admission=Admission(threading.Event()),
        records=CallRecords(ServerMetrics(engine.cache_info)),
        max_body_bytes=settings.max_message_bytes,
        max_open=settings.call_cap,
        threads=1,
    )
    try:
        paths = openapi_document()["paths"]
        routes = [getattr(route, "path", "") for route in app.routes.routes]
        assert "/v2/models/{model_name}/infer" in routes and "/openapi.json" in routes
        for path in routes:
            if path != "/openapi.json":
                assert path in paths, path
    finally:
        app.pool.shutdown()
