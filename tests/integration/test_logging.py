"""Request ids (from x-request-id or generated, returned in trailing metadata, in the
logs) and the two log formats."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
import grpc.aio
import numpy as np
import pytest
from _running import running, settings

from actgrad import wire
from actgrad.v1 import activation_pb2, activation_pb2_grpc
from actgrad_server.app import ActgradServer
from actgrad_server.logs import (
    JsonFormatter,
    PlainFormatter,
    RequestIdFilter,
    escape_request_id,
    request_id_scope,
)

LIST = activation_pb2.ListFunctionsRequest()


def _trailing_id(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    ids = [value for key, value in metadata or () if key == "x-request-id"]
    assert len(ids) == 1, metadata
    assert isinstance(ids[0], str)
    return ids[0]


def _sync_call(port: int, metadata: list[tuple[str, str]]) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = activation_pb2_grpc.ActivationServiceStub(channel)
        _, call = stub.ListFunctions.with_call(LIST, metadata=metadata, timeout=10)
        return _trailing_id(call.trailing_metadata())


def _async_call(port: int, metadata: list[tuple[str, str]]) -> str:
    async def run() -> str:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = activation_pb2_grpc.ActivationServiceStub(channel)
            call = stub.ListFunctions(LIST, metadata=metadata, timeout=10)
            await call
            return _trailing_id(await call.trailing_metadata())

    return asyncio.run(run())


CALLERS = {"sync": _sync_call, "async": _async_call}


@pytest.mark.parametrize("kind", CALLERS)
def test_the_callers_request_id_comes_back(kind: str, server: ActgradServer) -> None:
    assert CALLERS[kind](server.port, [("x-request-id", "req-42.abc")]) == "req-42.abc"


@pytest.mark.parametrize("kind", CALLERS)
def test_a_request_id_is_generated_when_absent_or_unusable(
    kind: str, server: ActgradServer
) -> None:
    first = CALLERS[kind](server.port, [])
    second = CALLERS[kind](server.port, [])
    too_long = CALLERS[kind](server.port, [("x-request-id", "x" * 500)])
    for generated in (first, second, too_long):
        assert uuid.UUID(hex=generated).version == 4
    assert len({first, second, too_long}) == 3


def test_errors_carry_the_request_id_too(server: ActgradServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = activation_pb2_grpc.ActivationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Activate(
                activation_pb2.ActivateRequest(function="nope"),
                metadata=[("x-request-id", "bad-call-1")],
                timeout=10,
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert _trailing_id(info.value.trailing_metadata()) == "bad-call-1"


def test_the_access_log_line_carries_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="actgrad_server.access")
    with running(settings(access_log=True)) as server:
        _sync_call(server.port, [("x-request-id", "logged-7")])
    records = [r for r in caplog.records if r.name == "actgrad_server.access"]
    mine = [r for r in records if getattr(r, "request_id", None) == "logged-7"]
    assert len(mine) == 1
    record = mine[0]
    assert getattr(record, "rpc", None) == "actgrad.v1.ActivationService/ListFunctions"
    assert getattr(record, "code", None) == "OK"
    assert "ListFunctions OK" in record.getMessage()


def test_no_access_log_turns_the_lines_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="actgrad_server.access")
    with running(settings(access_log=False)) as server:
        _sync_call(server.port, [])
    assert not [r for r in caplog.records if r.name == "actgrad_server.access"]


def test_json_formatter_writes_one_object_with_the_request_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("actgrad_test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with request_id_scope("rid-1"):
            logger.warning("hello %s", "world", extra={"rpc": "X/Y"})
        logger.warning("outside")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    assert lines[0]["message"] == "hello world" and lines[0]["request_id"] == "rid-1"
    assert lines[0]["rpc"] == "X/Y" and lines[0]["level"] == "WARNING"
    assert lines[1]["request_id"] == "-"
    assert "ValueError: boom" in lines[2]["exception"]


def test_plain_lines_escape_a_forged_request_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(PlainFormatter())
    logger = logging.getLogger("actgrad_test.plain")
    logger.addHandler(handler)
    logger.propagate = False
    forged = "x] ERROR actgrad_server.app [y"
    try:
        with request_id_scope(forged):
            logger.warning("hello")
        with request_id_scope("req-1.a:b/c"):
            logger.warning("ordinary")
    finally:
        logger.removeHandler(handler)
    first, second = stream.getvalue().splitlines()
    assert first.endswith(
        " WARNING actgrad_test.plain [x%5D%20ERROR%20actgrad_server.app%20%5By] hello"
    )
    assert first.count("[") == 1 and first.count("]") == 1
    assert second.endswith("[req-1.a:b/c] ordinary")
    assert escape_request_id("é") == "%C3%A9"


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_serve_logs_in_the_chosen_format(log_format: str) -> None:
    env = dict(
        os.environ,
        ACTGRAD_DEVICE="cpu",
        ACTGRAD_LOG_FORMAT=log_format,
        ACTGRAD_HOST="127.0.0.1",
        ACTGRAD_PORT="0",
        ACTGRAD_HTTP_PORT="0",
        ACTGRAD_ACCESS_LOG="true",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "actgrad", "serve"], stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        port = None
        while time.monotonic() < deadline and port is None:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"serving actgrad\.v1 on [^ ]+:(\d+)", line)
            port = int(match.group(1)) if match else None
        assert port is not None, "".join(lines)
        _sync_call(port, [("x-request-id", "proc-req-1")])
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
        lines.extend(rest.splitlines(keepends=True))
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    access = [line for line in lines if "proc-req-1" in line]
    assert len(access) == 1, "".join(lines)
    if log_format == "json":
        for line in lines:
            json.loads(line)  # every line is one JSON object
        entry = json.loads(access[0])
        assert entry["request_id"] == "proc-req-1" and entry["code"] == "OK"
        assert entry["logger"] == "actgrad_server.access"
    else:
        assert "[proc-req-1]" in access[0] and "ListFunctions OK" in access[0]


def test_concurrent_unary_calls_each_log_their_own_sizes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A unary method's handler is built once and shared by every call
    # (CallInterceptor): each call's sizes, id and code must still be its own.
    caplog.set_level(logging.INFO, logger="actgrad_server.access")
    expected: dict[str, tuple[int, int]] = {}
    with (
        running(settings(access_log=True, threads=8)) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = activation_pb2_grpc.ActivationServiceStub(channel)

        def call(k: int) -> None:
            x = np.linspace(-1.0, 1.0, 1 + 37 * k, dtype=np.float64)
            request = activation_pb2.ActivateRequest(function="tanh", input=wire.encode(x))
            response = stub.Activate(request, metadata=[("x-request-id", f"ok-{k}")], timeout=30)
            expected[f"ok-{k}"] = (request.ByteSize(), response.ByteSize())
            bad = activation_pb2.ActivateRequest(function="tanh", input=wire.encode(x[:1]))
            bad.input.shape[:] = [x.size + 1]  # a shape its data does not fill
            with pytest.raises(grpc.RpcError) as info:
                stub.Activate(bad, metadata=[("x-request-id", f"bad-{k}")], timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            expected[f"bad-{k}"] = (bad.ByteSize(), 0)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(call, range(48)))
    records = [r for r in caplog.records if r.name == "actgrad_server.access"]
    by_id = {getattr(r, "request_id", None): r for r in records}
    assert len(by_id) == len(records) >= len(expected) == 96
    for request_id, (bytes_in, bytes_out) in expected.items():
        record = by_id[request_id]
        sizes = (getattr(record, "bytes_in", None), getattr(record, "bytes_out", None))
        assert sizes == (bytes_in, bytes_out), request_id
        assert getattr(record, "code", None) == ("OK" if bytes_out else "INVALID_ARGUMENT")
