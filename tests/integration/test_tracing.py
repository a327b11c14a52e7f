"""OpenTelemetry: a span per call with --tracing, the SDK's trace context, trace ids in logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from _running import make_client, running, settings
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import actgrad
from actgrad_server.logs import JsonFormatter, RequestIdFilter

KINDS = ["sync", "async"]


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    # The global provider can be set once per process: this module owns it.
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    yield spans


def _server_spans(exporter: InMemorySpanExporter) -> list[trace.Span]:
    return [s for s in exporter.get_finished_spans() if s.kind is trace.SpanKind.SERVER]


@pytest.mark.parametrize("kind", KINDS)
def test_a_span_per_call_child_of_the_callers(kind: str, exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    tracer = trace.get_tracer("test")
    with running(settings(tracing=True)) as server:
        client = make_client(kind, f"127.0.0.1:{server.port}")
        try:
            with tracer.start_as_current_span("caller") as caller:
                client.activate(np.linspace(-1, 1, 6, dtype=np.float32), "silu")
                with pytest.raises(actgrad.NotFoundError):
                    client.activate([1.0], "nope")
        finally:
            client.close()
    ok, failed = _server_spans(exporter)
    assert ok.name == "actgrad.v1.ActivationService/Activate"
    assert ok.parent is not None and ok.parent.span_id == caller.get_span_context().span_id
    assert ok.context.trace_id == caller.get_span_context().trace_id
    assert ok.attributes is not None and failed.attributes is not None
    assert ok.attributes["actgrad.function"] == "swish"
    assert ok.attributes["actgrad.dtype"] == "float32"
    assert ok.attributes["actgrad.elements"] == 6
    assert ok.attributes["rpc.grpc.status_code"] == 0
    assert failed.attributes["rpc.grpc.status_code"] == 5  # NOT_FOUND
    assert failed.attributes["actgrad.function"] == "unknown"
    assert not failed.status.is_ok


def test_no_spans_when_tracing_is_off(exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    with running(settings()) as server, actgrad.Client(f"127.0.0.1:{server.port}") as client:
        client.activate([1.0], "relu")
    assert _server_spans(exporter) == []


def test_json_log_lines_of_a_traced_call_carry_its_trace_id(
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    exporter.clear()
    caplog.set_level(logging.INFO, logger="actgrad_server.access")
    with (
        running(settings(tracing=True, access_log=True)) as server,
        actgrad.Client(f"127.0.0.1:{server.port}") as client,
    ):
        client.activate([1.0], "relu")
    (span,) = _server_spans(exporter)
    (record,) = [r for r in caplog.records if getattr(r, "rpc", "").endswith("/Activate")]
    assert getattr(record, "trace_id", None) == f"{span.context.trace_id:032x}"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    handler.handle(record)
    assert json.loads(stream.getvalue())["trace_id"] == f"{span.context.trace_id:032x}"


def test_http_requests_are_spans_child_of_the_traceparent(exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    headers = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, -1]}]}
    with running(settings(tracing=True)) as server, httpx.Client(timeout=30.0) as http:
        url = f"http://127.0.0.1:{server.http_port}/v2/models/silu/infer"
        assert http.post(url, json=body, headers=headers).status_code == 200
        assert http.post(url.replace("silu", "nope"), json=body).status_code == 404
    ok, missing = _server_spans(exporter)
    assert ok.name == "POST /v2/models/{model_name}/infer"
    assert f"{ok.context.trace_id:032x}" == trace_id
    assert ok.parent is not None and f"{ok.parent.span_id:016x}" == parent_id
    assert ok.attributes is not None and missing.attributes is not None
    assert ok.attributes["http.response.status_code"] == 200
    assert ok.attributes["url.path"] == "/v2/models/silu/infer"
    assert missing.attributes["http.response.status_code"] == 404
    assert missing.status.is_ok  # a 4xx is the caller's, not the server's error
