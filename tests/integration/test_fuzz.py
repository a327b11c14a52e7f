"""Fuzzing the wire and the messages, and replaying every input that once broke us.

Three parts, each bounded and seeded so that a failure reproduces:

- wire fuzz: random bytes and mutations of valid serialized requests (flipped and
  inserted bytes, cuts, appended and duplicated fields) sent with identity
  (de)serializers to every method of both services and health, unary and streams;
- structured fuzz (hypothesis, derandomized): Activate, Gradient and Softmax
  requests with arbitrary shapes, dtypes, byte lengths, parameter maps and names;
- the regression corpus (tests/fuzz_corpus/index.json): each input that once broke
  the server, with the code it must get now.

Everywhere: a status of the contract (never UNKNOWN, never INTERNAL), no call past
its deadline, no traceback or file path in a status message, and a valid call
answered after each batch.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from _running import running, settings
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import activation_pb2_grpc, tensor_pb2
from actgrad_server import catalog
from actgrad_server.app import ActgradServer
from actgrad_server.oip import grpc_predict_v2_pb2 as oip

Code = grpc.StatusCode
SEED = 20261130
DEADLINE = 2.0  # seconds, each fuzz call
SLACK = 1.5  # seconds past the deadline that still counts as "not hung"
CORPUS = Path(__file__).resolve().parent.parent / "fuzz_corpus"

# Every code the contract names for a request the caller got wrong or a server under
# load; INTERNAL ("a bug on our side") and UNKNOWN are what fuzzing looks for.
CONTRACT = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.FAILED_PRECONDITION,
    Code.NOT_FOUND,
    Code.RESOURCE_EXHAUSTED,
    Code.DEADLINE_EXCEEDED,
}
# A status message must not show the server's insides.
LEAK = re.compile(r"Traceback|File \"|\.py\b|site-packages|/work/|/usr/|/home/")

F32 = tensor_pb2.DTYPE_FLOAT32
F64 = tensor_pb2.DTYPE_FLOAT64


def _tensor(values: list[float], dtype: int = F32, shape: list[int] | None = None) -> Any:
    np_dtype = np.float32 if dtype == F32 else np.float64
    data = np.asarray(values, dtype=np_dtype).tobytes()
    return tensor_pb2.Tensor(
        dtype=dtype,  # type: ignore[arg-type]
        shape=[len(values)] if shape is None else shape,
        data=data,
    )


REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def _seeds() -> dict[str, list[bytes]]:
    """Valid serialized requests of every method: what the mutations start from."""
    x = _tensor([-1.5, 0.0, 2.0, 3.25])
    g = _tensor([1.0, -1.0, 0.5, 2.0])
    number = pb.ParamValue(number=0.2)
    activate = [
        pb.ActivateRequest(function="gelu", input=x).SerializeToString(),
        pb.ActivateRequest(
            function="leaky_relu", input=x, params={"alpha": number}
        ).SerializeToString(),
        pb.ActivateRequest(
            function="prelu",
            input=_tensor([1.0, -2.0], shape=[2]),
            params={"slope": pb.ParamValue(tensor=_tensor([0.25]))},
        ).SerializeToString(),
    ]
    gradient = [
        pb.GradientRequest(function="sigmoid", input=x, grad_output=g).SerializeToString(),
        pb.GradientRequest(
            function="swish", input=x, params={"beta": number}, return_output=True
        ).SerializeToString(),
    ]
    softmax = [
        pb.SoftmaxRequest(
            input=_tensor([1.0, 2.0, 3.0, 4.0], shape=[2, 2]), axis=0, temperature=0.5
        ).SerializeToString(),
        pb.SoftmaxRequest(input=x, log=True).SerializeToString(),
    ]
    dense = [
        pb.DenseRequest(
            input=_tensor([1.0, 2.0], shape=[1, 2]),
            weight=_tensor([0.5, -0.5, 1.0, 2.0], shape=[2, 2]),
            bias=_tensor([0.1, 0.2]),
            activation="tanh",
            gradient=True,
        ).SerializeToString()
    ]
    flow = [
        pb.GradientFlowRequest(
            function="relu", depth=3, width=4, batch=2, init="he_normal", seed=1
        ).SerializeToString()
    ]
    infer = [
        oip.ModelInferRequest(
            model_name="gelu",
            inputs=[oip.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[4])],
            raw_input_contents=[np.array([-1, 0, 1, 2], dtype=np.float32).tobytes()],
        ).SerializeToString()
    ]
    return {
        "/actgrad.v1.ActivationService/Activate": activate,
        "/actgrad.v1.ActivationService/Gradient": gradient,
        "/actgrad.v1.ActivationService/Softmax": softmax,
        "/actgrad.v1.ActivationService/Dense": dense,
        "/actgrad.v1.ActivationService/GradientFlow": flow,
        "/actgrad.v1.ActivationService/ListFunctions": [b""],
        "/actgrad.v1.ActivationService/GetServerInfo": [b""],
        "/actgrad.v1.ActivationService/ActivateStream": activate,
        "/actgrad.v1.ActivationService/GradientStream": gradient,
        "/actgrad.v1.ActivationService/SoftmaxStream": softmax,
        "/actgrad.v1.ActivationService/DenseStream": dense,
        "/inference.GRPCInferenceService/ModelInfer": infer,
        "/inference.GRPCInferenceService/ModelMetadata": [
            oip.ModelMetadataRequest(name="gelu_grad").SerializeToString()
        ],
        "/inference.GRPCInferenceService/ModelReady": [
            oip.ModelReadyRequest(name="relu").SerializeToString()
        ],
        "/inference.GRPCInferenceService/ModelConfig": [
            oip.ModelConfigRequest(name="relu").SerializeToString()
        ],
        "/inference.GRPCInferenceService/ServerLive": [b""],
        "/inference.GRPCInferenceService/ServerReady": [b""],
        "/inference.GRPCInferenceService/ServerMetadata": [b""],
        "/grpc.health.v1.Health/Check": [
            health_pb2.HealthCheckRequest(
                service="actgrad.v1.ActivationService"
            ).SerializeToString(),
            health_pb2.HealthCheckRequest(service="liveness").SerializeToString(),
        ],
        REFLECTION: [
            reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString(),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="actgrad.v1.ActivationService"
            ).SerializeToString(),
        ],
    }


STREAMS = {
    REFLECTION,
    "/actgrad.v1.ActivationService/ActivateStream",
    "/actgrad.v1.ActivationService/GradientStream",
    "/actgrad.v1.ActivationService/SoftmaxStream",
    "/actgrad.v1.ActivationService/DenseStream",
}


def _mutate(rng: random.Random, seed: bytes) -> bytes:
    """One random mutation of `seed`, or random bytes."""
    data = bytearray(seed)
    kind = rng.randrange(8)
    if kind == 0 or not data:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if kind == 1:  # flip bits of a few bytes
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 2:  # overwrite a few bytes
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.choice(
                [0x00, 0x7F, 0x80, 0xFF, rng.randrange(256)]
            )
    elif kind == 3:  # truncate
        del data[rng.randrange(len(data)) :]
    elif kind == 4:  # append random bytes
        data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    elif kind == 5:  # duplicate the whole message: every field twice (last wins, lists grow)
        data += seed
    elif kind == 6:  # insert bytes in the middle
        at = rng.randrange(len(data))
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
    else:  # a varint that never ends, or a huge length prefix, at a random point
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.choice([b"\xff" * 11, b"\x12\xff\xff\xff\xff\x0f", b"\x0a\x80\x80\x80"])
    return bytes(data)


def _identity(data: bytes) -> bytes:
    return data


def _check_status(method: str, code: Code, details: str, elapsed: float, case: Any) -> None:
    assert code in CONTRACT, (method, code, details, case)
    assert elapsed < DEADLINE + SLACK, (method, "hung", elapsed, case)
    assert not LEAK.search(details), (method, details, case)


def _call(channel: grpc.Channel, method: str, messages: list[bytes]) -> tuple[Code, str, float]:
    started = time.monotonic()
    try:
        if method in STREAMS:
            stream = channel.stream_stream(method, _identity, _identity)
            for _ in stream(iter(messages), timeout=DEADLINE):
                pass
        else:
            channel.unary_unary(method, _identity, _identity)(messages[0], timeout=DEADLINE)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", time.monotonic() - started
    return Code.OK, "", time.monotonic() - started


def _still_serving(channel: grpc.Channel) -> None:
    stub = activation_pb2_grpc.ActivationServiceStub(channel)
    answer = stub.Activate(
        pb.ActivateRequest(function="relu", input=_tensor([-1.0, 2.0])), timeout=10
    )
    assert np.frombuffer(answer.output.data, np.float32).tolist() == [0.0, 2.0]


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ActgradServer]:
    with running(settings(max_concurrent_rpcs=256)) as server:
        yield server


@pytest.fixture
def channel(fuzz_server: ActgradServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{fuzz_server.port}") as channel:
        yield channel


CASES_PER_METHOD = 24  # 20 methods: 480 cases


def test_wire_fuzz_every_method(channel: grpc.Channel) -> None:
    rng = random.Random(SEED)
    codes: dict[Code, int] = {}
    for method, seeds in _seeds().items():
        for _ in range(CASES_PER_METHOD):
            if method in STREAMS:
                # A stream of 1-3 messages, each valid or mutated.
                messages = [
                    rng.choice(seeds) if rng.random() < 0.3 else _mutate(rng, rng.choice(seeds))
                    for _ in range(rng.randrange(1, 4))
                ]
            else:
                messages = [_mutate(rng, rng.choice(seeds))]
            code, details, elapsed = _call(channel, method, messages)
            codes[code] = codes.get(code, 0) + 1
            _check_status(method, code, details, elapsed, messages)
        _still_serving(channel)
    # The mutations reach both outcomes: refused and (harmless mutations) answered.
    assert codes.get(Code.OK, 0) > 0 and codes.get(Code.INVALID_ARGUMENT, 0) > 0, codes


# Found by the wire fuzz: the wrapper of non-blocking streams (health Watch) let the
# placeholder of undecodable bytes through (UNKNOWN and a traceback); fixed.
def test_health_watch_of_garbage_is_invalid_argument(channel: grpc.Channel) -> None:
    rng = random.Random(SEED + 1)
    seed = health_pb2.HealthCheckRequest(service="").SerializeToString()
    watch = channel.unary_stream("/grpc.health.v1.Health/Watch", _identity, _identity)
    for request in [b"\xff", *(_mutate(rng, seed) for _ in range(6))]:
        started = time.monotonic()
        try:
            for _ in watch(request, timeout=0.5):
                pass
            code, details = Code.OK, ""
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
        # An open Watch ends at its deadline; garbage is refused at once.
        _check_status("Health/Watch", code, details, time.monotonic() - started, request)
    _still_serving(channel)


# ---------------------------------------------------------------------------------
# Structured fuzz

ELEMENTWISE = [f for f in catalog.CATALOG if f.elementwise and f.name != "prelu"]
NAMES = [n for f in catalog.CATALOG for n in (f.name, *f.aliases)]
KNOWN_DTYPES: dict[int, Any] = {F32: np.float32, F64: np.float64}
# Closed forms for a few functions, in float64, to check values and not only shapes.
REFERENCES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
}
GRADIENTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": lambda x: np.exp(-x) / (1.0 + np.exp(-x)) ** 2,
    "tanh": lambda x: 1.0 - np.tanh(x) ** 2,
    "softsign": lambda x: 1.0 / (1.0 + np.abs(x)) ** 2,
}

FUZZ = hypothesis_settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

any_dim = st.one_of(
    st.integers(0, 6),
    st.sampled_from([-1, -(2**63), 2**31, 2**40, 2**62, 2**63 - 1]),
)
any_dtype = st.one_of(st.sampled_from([0, F32, F64, 3, 4]), st.integers(-(2**31), 2**31 - 1))
odd_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308]),
)
param_value = st.one_of(
    odd_numbers.map(lambda v: pb.ParamValue(number=v)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: pb.ParamValue(integer=v)),
    st.text(max_size=300).map(lambda v: pb.ParamValue(text=v)),
    st.booleans().map(lambda v: pb.ParamValue(flag=v)),
    st.just(pb.ParamValue(tensor=_tensor([0.25]))),
    st.just(pb.ParamValue()),
)
param_name = st.one_of(
    st.sampled_from(["alpha", "beta", "slope", "approximate", "axis", "lambd", "min_val"]),
    st.text(max_size=400),
)
function_name = st.one_of(
    st.sampled_from(NAMES),
    st.text(max_size=200),
    st.integers(100, 70_000).map(lambda n: "g" * n),
)


@st.composite
def any_tensor(draw: st.DrawFn) -> tensor_pb2.Tensor:
    shape = draw(st.lists(any_dim, max_size=4))
    dtype = draw(any_dtype)
    if draw(st.booleans()):
        # Bytes that fit the shape, where the shape is small and the dtype known.
        count = math.prod(shape) if all(0 <= d <= 6 for d in shape) else 1
        itemsize = {F32: 4, F64: 8, 3: 2, 4: 2}.get(dtype, 4)
        length = count * itemsize + draw(st.sampled_from([0, 0, 0, -1, 1]))
    else:
        length = draw(st.integers(0, 64))
    data = bytes(draw(st.binary(min_size=max(length, 0), max_size=max(length, 0))))
    return tensor_pb2.Tensor(dtype=dtype, shape=shape, data=data)  # type: ignore[arg-type]


def _finite_values(draw: st.DrawFn, count: int) -> list[float]:
    return draw(st.lists(st.floats(-20, 20), min_size=count, max_size=count))


@st.composite
def valid_activation(draw: st.DrawFn) -> tuple[str, int, list[int], list[float]]:
    function = draw(st.sampled_from(ELEMENTWISE)).name
    dtype = draw(st.sampled_from([F32, F64]))
    shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))
    return function, dtype, shape, _finite_values(draw, math.prod(shape))


def _expect(call: Callable[[], Any], allowed: set[Code]) -> tuple[Code, Any]:
    started = time.monotonic()
    try:
        answer = call()
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
        assert code in allowed, (code, details)
        assert not LEAK.search(details), details
        assert time.monotonic() - started < DEADLINE + SLACK
        return code, None
    assert Code.OK in allowed, "an invalid request was answered"
    return Code.OK, answer


@pytest.fixture(scope="module")
def stub(fuzz_server: ActgradServer) -> Iterator[activation_pb2_grpc.ActivationServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{fuzz_server.port}") as channel:
        yield activation_pb2_grpc.ActivationServiceStub(channel)


REFUSED = {Code.INVALID_ARGUMENT, Code.NOT_FOUND}


def _assert_valid(function: str, tensor: Any) -> None:
    """What an answered request must have had right."""
    assert catalog.find(function) is not None, function
    assert tensor.dtype in (F32, F64, 3, 4) and all(d >= 0 for d in tensor.shape), tensor
    itemsize = 4 if tensor.dtype == F32 else 8 if tensor.dtype == F64 else 2
    assert len(tensor.data) == math.prod(tensor.shape) * itemsize, tensor


@FUZZ
@given(
    function=function_name,
    tensor=any_tensor(),
    params=st.dictionaries(param_name, param_value, max_size=3),
)
def test_structured_activate_is_never_internal(
    stub: Any, function: str, tensor: Any, params: dict[str, Any]
) -> None:
    request = pb.ActivateRequest(function=function, input=tensor, params=params)
    code, answer = _expect(lambda: stub.Activate(request, timeout=DEADLINE), REFUSED | {Code.OK})
    if code == Code.OK:  # then the request was a valid one
        _assert_valid(function, tensor)
        assert list(answer.output.shape) == list(tensor.shape)
        assert answer.output.dtype == tensor.dtype


@FUZZ
@given(
    function=function_name,
    tensor=any_tensor(),
    grad_output=st.one_of(st.none(), any_tensor()),
    params=st.dictionaries(param_name, param_value, max_size=3),
    return_output=st.booleans(),
)
def test_structured_gradient_is_never_internal(
    stub: Any,
    function: str,
    tensor: Any,
    grad_output: Any,
    params: dict[str, Any],
    return_output: bool,
) -> None:
    request = pb.GradientRequest(
        function=function,
        input=tensor,
        grad_output=grad_output,
        params=params,
        return_output=return_output,
    )
    code, answer = _expect(lambda: stub.Gradient(request, timeout=DEADLINE), REFUSED | {Code.OK})
    if code == Code.OK:
        _assert_valid(function, tensor)
        assert list(answer.grad_input.shape) == list(tensor.shape)
        assert answer.HasField("output") == return_output


@FUZZ
@given(
    tensor=any_tensor(),
    axis=st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.integers(-5, 5)),
    temperature=st.one_of(st.none(), odd_numbers),
    log=st.booleans(),
)
def test_structured_softmax_is_never_internal(
    stub: Any, tensor: Any, axis: int | None, temperature: float | None, log: bool
) -> None:
    request = pb.SoftmaxRequest(input=tensor, axis=axis, temperature=temperature, log=log)
    # NOT_FOUND cannot occur: Softmax names no function.
    code, answer = _expect(
        lambda: stub.Softmax(request, timeout=DEADLINE), {Code.INVALID_ARGUMENT, Code.OK}
    )
    if code == Code.OK:
        _assert_valid("softmax", tensor)
        assert list(answer.output.shape) == list(tensor.shape)
        assert temperature is None or (math.isfinite(temperature) and temperature > 0)


@FUZZ
@given(case=valid_activation(), verb=st.sampled_from(["activate", "gradient"]))
def test_structured_valid_requests_give_finite_correct_answers(
    stub: Any, case: tuple[str, int, list[int], list[float]], verb: str
) -> None:
    function, dtype, shape, values = case
    np_dtype = KNOWN_DTYPES[dtype]
    x = np.asarray(values, dtype=np_dtype).reshape(shape)
    tensor = _tensor(list(x.ravel()), dtype, shape)
    if verb == "activate":
        answer = stub.Activate(pb.ActivateRequest(function=function, input=tensor), timeout=10)
        out = answer.output
        reference = REFERENCES.get(function)
    else:
        answer = stub.Gradient(pb.GradientRequest(function=function, input=tensor), timeout=10)
        out = answer.grad_input
        reference = GRADIENTS.get(function)
    assert out.dtype == dtype and list(out.shape) == shape
    y = np.frombuffer(out.data, np_dtype).reshape(shape)
    assert np.all(np.isfinite(y)), (function, verb, x, y)
    if reference is not None:
        expected = reference(x.astype(np.float64))
        rtol = 1e-5 if dtype == F32 else 1e-12
        np.testing.assert_allclose(y, expected, rtol=rtol, atol=rtol)


@FUZZ
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    data=st.data(),
    temperature=st.floats(0.05, 20),
    log=st.booleans(),
)
def test_structured_valid_softmax_is_correct(
    stub: Any, shape: list[int], data: st.DataObject, temperature: float, log: bool
) -> None:
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    values = data.draw(
        st.lists(st.floats(-30, 30), min_size=math.prod(shape), max_size=math.prod(shape))
    )
    x = np.asarray(values, dtype=np.float64).reshape(shape)
    request = pb.SoftmaxRequest(
        input=_tensor(values, F64, shape), axis=axis, temperature=temperature, log=log
    )
    out = stub.Softmax(request, timeout=10).output
    y = np.frombuffer(out.data, np.float64).reshape(shape)
    z = x / temperature
    z = z - z.max(axis=axis, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    np.testing.assert_allclose(y, logp if log else np.exp(logp), rtol=1e-12, atol=1e-14)


def test_still_serving_after_structured_fuzz(channel: grpc.Channel) -> None:
    _still_serving(channel)


# ---------------------------------------------------------------------------------
# The regression corpus


def _corpus() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((CORPUS / "index.json").read_text())
    return entries


@pytest.mark.parametrize("entry", _corpus(), ids=lambda e: str(e["file"]))
def test_regression_corpus(channel: grpc.Channel, entry: dict[str, Any]) -> None:
    message = (CORPUS / entry["file"]).read_bytes()
    messages = [message] * int(entry.get("repeat", 1))
    for _ in range(int(entry.get("calls", 1))):
        code, details, elapsed = _call(channel, entry["method"], messages)
        assert code == getattr(Code, entry["code"]), (entry["file"], code, details)
        _check_status(entry["method"], code, details, elapsed, entry["file"])
        assert len(details) < 1024, "a status message must stay short"
    _still_serving(channel)
