"""The protocol-neutral concerns around a call (`actgrad_server.calls`), which the gRPC
interceptor and the HTTP pipeline both run."""

from __future__ import annotations

import logging
import threading

import pytest

from actgrad_server.calls import admission
from actgrad_server.calls.admission import Admission
from actgrad_server.calls.labels import datatype_label, function_label, model_label
from actgrad_server.calls.records import GRPC, HTTP, CallRecords
from actgrad_server.calls.request_ids import MAX_REQUEST_ID, request_id
from actgrad_server.engine import Engine
from actgrad_server.metrics import ServerMetrics
from actgrad_server.security import TokenSet


def test_a_draining_server_refuses_before_it_looks_at_tokens() -> None:
    refusing = threading.Event()
    gate = Admission(refusing, TokenSet([b"s3cret"]))
    assert gate.check("Bearer s3cret") is None
    assert gate.check(None) is admission.UNAUTHENTICATED
    assert gate.check("Bearer guess") is admission.UNAUTHENTICATED
    refusing.set()
    # A probe of a draining replica never reads as an auth failure.
    assert gate.check(None) is admission.DRAINING
    assert gate.check("Bearer s3cret") is admission.DRAINING
    assert admission.DRAINING.retry and not admission.UNAUTHENTICATED.retry


def test_without_tokens_only_the_drain_refuses() -> None:
    refusing = threading.Event()
    gate = Admission(refusing)
    assert gate.tokens is None and gate.check(None) is None
    refusing.set()
    assert gate.draining and gate.check(None) is admission.DRAINING


def test_limits_name_themselves() -> None:
    assert "--max-message-bytes" in admission.too_large(1024).message
    assert "1024" in admission.too_large(1024).message
    assert admission.overloaded(7).reason == "overloaded" and "7" in admission.overloaded(7).message


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("req-1", True),
        ("x" * MAX_REQUEST_ID, True),
        ("x" * (MAX_REQUEST_ID + 1), False),
        ("caf\u00e9", False),
        ("a\nb", False),
        ("", False),
        (None, False),
    ],
)
def test_a_request_id_is_the_callers_only_when_sane(given: str | None, kept: bool) -> None:
    rid = request_id(given)
    if kept:
        assert rid == given
    else:
        assert rid != given and len(rid) == 32 and rid[12] == "4" and rid[16] in "89ab"
        assert request_id(given) != rid  # a new one each time


def test_labels_are_bounded() -> None:
    assert function_label("silu") == "swish"
    assert function_label("no-such-function" * 100) == "unknown"
    assert function_label("") == ""
    assert model_label("gelu_grad") == "gelu"
    assert model_label("nope") == "unknown"
    assert datatype_label("FP16") == "fp16" and datatype_label("COMPLEX") == "unknown"


def test_records_count_every_protocol_in_one_account(caplog: pytest.LogCaptureFixture) -> None:
    metrics = ServerMetrics(Engine(device="cpu").cache_info)
    records = CallRecords(metrics, access_log=True)
    records.received(GRPC, "actgrad.v1.ActivationService/Activate").inc()
    records.received(HTTP, "HTTP POST /v1/activate").inc()
    records.opened()
    records.opened()
    assert records.calls_received() == 2 and records.open_calls() == 2
    caplog.set_level(logging.INFO, logger="actgrad_server.access")
    records.closed()
    records.finished(
        HTTP,
        "HTTP POST /v1/activate",
        "200",
        0.001,
        request_id="r-1",
        trace_id="-",
        function="",
        dtype="",
        bytes_in=10,
        bytes_out=20,
        peer="127.0.0.1:1",
        target="POST /v1/activate",
    )
    assert records.open_calls() == 1
    value = metrics.registry.get_sample_value(
        "actgrad_requests_total",
        {"protocol": "http", "rpc": "HTTP POST /v1/activate", "function": "", "dtype": ""}
        | {"code": "200"},
    )
    assert value == 1
    (line,) = [r for r in caplog.records if r.name == "actgrad_server.access"]
    assert getattr(line, "protocol", None) == "http" and getattr(line, "rpc", None) == (
        "POST /v1/activate"
    )
    assert getattr(line, "request_id", None) == "r-1"
