"""Accuracy and structure of the activation graphs, run by onnxruntime on the CPU.

Tolerances (ref: mpmath at 40 digits, at the dtype-rounded x; x the input element):
  float64  |err| <= 1e-12 |ref| + 1e-15 max(1, |x|)
  float32  |err| <= 2e-6 |ref| + 1e-7 max(1, |x|)
  float16  |err| <= 2**-10 |ref| + 2**-24 + 1e-7 max(1, |x|)
           (one float16 ulp, the smallest subnormal, and the float32 compute term)
  bfloat16 (float32 graph narrowed RNE)
           |err| <= 2**-7 |ref| + 2**-133 + 1e-7 max(1, |x|)
The float16/bfloat16 bounds keep the float32 absolute term because they are computed in
float32 (it matters only where the result cancels to near 0); test_tails_... checks the
relative accuracy of the tails separately.
Where the reference overflows the dtype the output must be the same-signed inf.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest

from actgrad_server import graphs
from actgrad_server.graphs import gelu as gelu_module

sys.path.insert(0, str(Path(__file__).parent))
import graph_reference as ref  # type: ignore[import-not-found,unused-ignore]

Array = npt.NDArray[Any]
DTYPES = ("float32", "float64", "float16")
NP: dict[str, type[np.floating[Any]]] = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
}
BFLOAT16_MAX = 3.3895313892515355e38
SELU_ALPHA = 1.6732632423543772848
SELU_GAMMA = 1.0507009873554804934


def tolerance(dtype: str, expected: Array, x: Array) -> Array:
    scale = np.maximum(1.0, np.abs(x.astype(np.float64)))
    magnitude = np.abs(expected)
    if dtype == "float64":
        return 1e-12 * magnitude + 1e-15 * scale
    if dtype == "float32":
        return 2e-6 * magnitude + 1e-7 * scale
    if dtype == "float16":
        return 2.0**-10 * magnitude + 2.0**-24 + 1e-7 * scale
    if dtype == "bfloat16":
        return 2.0**-7 * magnitude + 2.0**-133 + 1e-7 * scale
    raise AssertionError(dtype)


def error_ratio(dtype: str, got: Array, expected: Array, x: Array) -> Array:
    """|err| / tolerance elementwise; a reference beyond the dtype's range must give inf."""
    got = got.astype(np.float64)
    limit = BFLOAT16_MAX if dtype == "bfloat16" else float(np.finfo(NP[dtype]).max)
    overflow = np.abs(expected) > limit
    ratio: Array = np.abs(got - expected) / tolerance(dtype, expected, x)
    ratio[overflow] = np.where(got[overflow] == np.sign(expected[overflow]) * np.inf, 0.0, np.inf)
    return ratio


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def run(model: onnx.ModelProto, **feeds: Any) -> dict[str, Array]:
    sess = session(model)
    names = [out.name for out in sess.get_outputs()]
    outputs: list[Array] = sess.run(None, feeds)
    return dict(zip(names, outputs, strict=True))


def scalar(value: float) -> Array:
    return np.asarray(value, dtype=np.float64)


@dataclass(frozen=True)
class Case:
    """One elementwise function with fixed parameters."""

    function: str
    reference: str
    params: Mapping[str, float] = field(default_factory=dict)
    static: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        extra = [f"{k}={v}" for k, v in {**self.params, **self.static}.items()]
        return "-".join([self.function, *extra])

    def param_values(self, dtype: str) -> tuple[float, ...]:
        """The parameters as the graph sees them: cast to the compute dtype."""
        compute = np.float64 if dtype == "float64" else np.float32
        return tuple(float(compute(v)) for v in self.params.values())

    def feeds(self) -> dict[str, Array]:
        return {name: scalar(value) for name, value in self.params.items()}


CASES = [
    Case("sigmoid", "sigmoid"),
    Case("tanh", "tanh"),
    Case("relu", "relu"),
    Case("leaky_relu", "leaky_relu", {"alpha": 0.01}),
    Case("leaky_relu", "leaky_relu", {"alpha": 0.2}),
    Case("swish", "swish", {"beta": 1.0}),
    Case("swish", "swish", {"beta": 1.7}),
    Case("gelu", "gelu", static={"approximate": "none"}),
    Case("gelu", "gelu_tanh", static={"approximate": "tanh"}),
    Case("selu", "selu", {"alpha": SELU_ALPHA, "gamma": SELU_GAMMA}),
    Case("xtanh", "xtanh"),
    Case("xsin", "xsin"),
]
CASE_IDS = [case.id for case in CASES]

_GRID = np.arange(-60.0, 60.0 + 1 / 32, 1 / 16)  # exact in float16, float32 and float64
_SPECIAL = np.array(
    [
        0.0,
        5e-324,
        1e-45,
        1e-30,
        1e-8,
        6e-8,
        1e-3,
        0.5,
        1.0,
        60.0,
        1000.0,
        65504.0,
        # roots of derivatives, saturation bounds inside the graphs
        0.7518,
        1.278,
        2.0288,
        13.0,
        15.0,
        30.0,
        40.0,
    ]
)
_RNG = np.random.default_rng(20240611)
_RANDOM = np.concatenate(
    [_RNG.uniform(-60, 60, 300), 10.0 ** _RNG.uniform(-12, 1.5, 150) * _RNG.choice([-1, 1], 150)]
)


def points(dtype: str) -> Array:
    x = np.concatenate([_GRID, _SPECIAL, -_SPECIAL, _RANDOM])
    if dtype == "bfloat16":
        return x.astype(ml_dtypes.bfloat16).astype(np.float32)
    return x.astype(NP[dtype])


def grad_output_for(x: Array) -> Array:
    return np.random.default_rng(7).uniform(-1.0, 1.0, x.shape).astype(x.dtype)


def evaluate(case: Case, dtype: str, gradient: bool) -> tuple[Array, Array, Array]:
    """(x, got, expected) over the test points; graph dtype float32 for bfloat16."""
    graph_dtype = "float32" if dtype == "bfloat16" else dtype
    x = points(dtype)
    if gradient:
        g = grad_output_for(x)
        if dtype == "bfloat16":
            g = g.astype(ml_dtypes.bfloat16).astype(np.float32)
        model = graphs.build_gradient(
            case.function, graph_dtype, with_output=False, x_rank=1, **case.static
        )
        got = run(model, x=x, grad_output=g, **case.feeds())["grad_input"]
        expected = (
            g.astype(np.float64)
            * ref.reference(case.reference, x, case.param_values(graph_dtype))[1]
        )
    else:
        model = graphs.build_forward(case.function, graph_dtype, x_rank=1, **case.static)
        got = run(model, x=x, **case.feeds())["y"]
        expected = ref.reference(case.reference, x, case.param_values(graph_dtype))[0]
    assert got.dtype == np.dtype(NP[graph_dtype])
    assert got.shape == x.shape
    if dtype == "bfloat16":
        got = got.astype(ml_dtypes.bfloat16)
    return x, got, expected


MAX_RATIOS: dict[str, float] = {}


@pytest.mark.parametrize("gradient", [False, True], ids=["forward", "gradient"])
@pytest.mark.parametrize("dtype", [*DTYPES, "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_high_precision_reference(case: Case, dtype: str, gradient: bool) -> None:
    x, got, expected = evaluate(case, dtype, gradient)
    ratio = error_ratio(dtype, got, expected, x)
    worst = int(np.argmax(ratio))
    MAX_RATIOS[f"{case.id}/{dtype}/{'grad' if gradient else 'fwd'}"] = float(ratio[worst])
    assert ratio[worst] <= 1.0, (
        f"x={x[worst]!r} got={got[worst]!r} expected={expected[worst]!r} "
        f"({ratio[worst]:.3g} x tolerance)"
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", [c for c in CASES if c.function != "xsin"], ids=lambda c: c.id)
def test_tails_are_relatively_accurate(case: Case, dtype: str) -> None:
    """Where |x| >= 4 and the result is a normal number, the relative error alone is small
    (the absolute tolerance term is not what makes the tails pass)."""
    bound = {"float32": 1e-5, "float64": 1e-12}[dtype]
    for gradient in (False, True):
        x, got, expected = evaluate(case, dtype, gradient)
        tail = (np.abs(x) >= 4) & (np.abs(expected) > np.finfo(NP[dtype]).tiny)
        tail &= np.abs(expected) <= np.finfo(NP[dtype]).max
        rel = np.abs(got[tail].astype(np.float64) - expected[tail]) / np.abs(expected[tail])
        assert rel.max() <= bound, (gradient, x[tail][np.argmax(rel)], rel.max())


# x -> (f(+inf), f(-inf), f'(+inf), f'(-inf))
INFINITE_LIMITS: dict[str, tuple[float, float, float, float]] = {
    "sigmoid": (1.0, 0.0, 0.0, 0.0),
    "tanh": (1.0, -1.0, 0.0, 0.0),
    "relu": (math.inf, 0.0, 1.0, 0.0),
    "leaky_relu-alpha=0.2": (math.inf, -math.inf, 1.0, 0.2),
    "swish-beta=1.7": (math.inf, 0.0, 1.0, 0.0),
    "gelu-approximate=none": (math.inf, 0.0, 1.0, 0.0),
    "gelu-approximate=tanh": (math.inf, 0.0, 1.0, 0.0),
    "xtanh": (math.inf, math.inf, 1.0, -1.0),
    "xsin": (math.nan, math.nan, math.nan, math.nan),
}
SELU_ID = next(case.id for case in CASES if case.function == "selu")
INFINITE_LIMITS[SELU_ID] = (math.inf, -SELU_GAMMA * SELU_ALPHA, SELU_GAMMA, 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [c for c in CASES if c.id in INFINITE_LIMITS], ids=lambda c: c.id)
def test_nan_propagates_and_infinities_give_limits(case: Case, dtype: str) -> None:
    x = np.array([np.nan, np.inf, -np.inf, 1.5, 0.0, -2.0], dtype=NP[dtype])
    g = np.ones_like(x)
    forward = graphs.build_forward(case.function, dtype, x_rank=1, **case.static)
    y = run(forward, x=x, **case.feeds())["y"]
    gradient = graphs.build_gradient(
        case.function, dtype, with_output=True, x_rank=1, **case.static
    )
    out = run(gradient, x=x, grad_output=g, **case.feeds())
    up, down, dup, ddown = INFINITE_LIMITS[case.id]
    rtol = 1e-3 if dtype == "float16" else 1e-6
    np.testing.assert_allclose(y[:3].astype(np.float64), [np.nan, up, down], rtol=rtol)
    np.testing.assert_allclose(
        out["grad_input"][:3].astype(np.float64), [np.nan, dup, ddown], rtol=rtol
    )
    np.testing.assert_array_equal(out["y"], y)
    assert np.isfinite(y[3:]).all() and np.isfinite(out["grad_input"][3:]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_inputs_do_not_overflow(dtype: str) -> None:
    """Finite results at the extremes: sigmoid/tanh(+-1000), gelu(-40), selu/swish(-1000), and
    +-max of the dtype (65504 for float16); also their gradients."""
    big = float(np.finfo(NP[dtype]).max)
    x = np.array([1000.0, -1000.0, -40.0, big, -big], dtype=NP[dtype])
    for case in CASES:
        y = run(
            graphs.build_forward(case.function, dtype, x_rank=1, **case.static), x=x, **case.feeds()
        )["y"]
        grad = run(
            graphs.build_gradient(case.function, dtype, with_output=False, x_rank=1, **case.static),
            x=x,
            grad_output=np.full_like(x, 0.5),
            **case.feeds(),
        )["grad_input"]
        assert not np.isnan(y).any() and not np.isnan(grad).any(), case.id
        # infinite only where the true value exceeds the dtype's range
        assert np.isfinite(y[1:3]).all() and np.isfinite(grad).all(), (case.id, y, grad)


def test_kinks_follow_pytorch() -> None:
    for dtype in DTYPES:
        x = np.zeros(3, dtype=NP[dtype])
        g = np.array([1.0, -2.0, 0.5], dtype=NP[dtype])
        expected = {
            ("relu", 0.0): 0.0,
            ("leaky_relu", 0.25): 0.25,
            ("selu", 0.0): SELU_GAMMA * SELU_ALPHA,
        }
        for (function, alpha), derivative in expected.items():
            params = {"alpha": scalar(alpha)} if function == "leaky_relu" else {}
            if function == "selu":
                params = {"alpha": scalar(SELU_ALPHA), "gamma": scalar(SELU_GAMMA)}
            model = graphs.build_gradient(function, dtype, with_output=True, x_rank=1)
            out = run(model, x=x, grad_output=g, **params)
            np.testing.assert_allclose(out["grad_input"], g * NP[dtype](derivative), rtol=1e-3)
            np.testing.assert_array_equal(out["y"], 0.0)
        model = graphs.build_gradient("prelu", dtype, with_output=False, x_rank=1, slope_shape=(3,))
        slope = np.array([0.1, 0.2, 0.3], dtype=NP[dtype])
        out = run(model, x=x, grad_output=g, slope=slope)
        np.testing.assert_array_equal(out["grad_input"], g * slope)
        np.testing.assert_array_equal(out["grad_slope"], 0.0)


FD_CASES = [c for c in CASES if c.function not in ("relu", "leaky_relu")] + [
    c for c in CASES if c.function in ("relu", "leaky_relu")
]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradient_matches_central_differences(case: Case) -> None:
    x = np.concatenate([np.linspace(-20, 20, 401), _RNG.uniform(-3, 3, 100)])
    x = x[np.abs(x) > 1e-3]  # away from the kinks at 0
    h = 1e-6 * np.maximum(1.0, np.abs(x))
    forward = session(graphs.build_forward(case.function, "float64", x_rank=1, **case.static))
    f_plus, f_minus = (forward.run(None, {"x": x + s * h, **case.feeds()})[0] for s in (1, -1))
    fd = (f_plus - f_minus) / ((x + h) - (x - h))
    model = graphs.build_gradient(
        case.function, "float64", with_output=False, x_rank=1, **case.static
    )
    grad = run(model, x=x, grad_output=np.ones_like(x), **case.feeds())["grad_input"]
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7 * np.maximum(1.0, np.abs(x)).max())


def test_selu_float32_matches_onnx_selu_op() -> None:
    x = points("float32")
    x = x[np.abs(x) <= 1000]
    node = onnx.helper.make_node("Selu", ["x"], ["y"])  # default attributes
    info = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["n"]) for n in "xy"]
    onnx_selu = onnx.helper.make_model(
        onnx.helper.make_graph([node], "selu", [info[0]], [info[1]]),
        opset_imports=[onnx.helper.make_opsetid("", graphs.OPSET)],
        ir_version=graphs.IR_VERSION,
    )
    expected = run(onnx_selu, x=x)["y"].astype(np.float64)
    ours = graphs.build_forward("selu", "float32", x_rank=1)
    got = run(ours, x=x, alpha=scalar(SELU_ALPHA), gamma=scalar(SELU_GAMMA))["y"]
    assert np.float32(SELU_ALPHA) == np.float32(1.67326319217681884765625)
    assert np.float32(SELU_GAMMA) == np.float32(1.05070102214813232421875)
    assert (error_ratio("float32", got, expected, x) <= 1.0).all()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_normal_tail_coefficients_are_reproducible(dtype: str) -> None:
    a, coefficients = gelu_module.NORMAL_TAIL[dtype]
    regenerated = ref.normal_tail_coefficients(len(coefficients), a)
    np.testing.assert_allclose(coefficients, regenerated, rtol=1e-14, atol=0)


def softmax_feeds(temperature: float) -> dict[str, Array]:
    return {"temperature": scalar(temperature)}


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_known_values(dtype: str) -> None:
    x = np.array([2.0, 1.0, 0.1], dtype=NP[dtype])
    y = run(graphs.build_forward("softmax", dtype, axis=0, x_rank=1), x=x, **softmax_feeds(1.0))
    np.testing.assert_array_equal(np.round(y["y"].astype(np.float64), 3), [0.659, 0.242, 0.099])


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [*DTYPES, "bfloat16"])
def test_softmax_matches_reference(dtype: str, log: bool) -> None:
    rng = np.random.default_rng(3)
    graph_dtype = "float32" if dtype == "bfloat16" else dtype
    narrow = ml_dtypes.bfloat16 if dtype == "bfloat16" else NP[dtype]
    x = (rng.standard_normal((3, 4, 5)) * 4).astype(narrow).astype(NP[graph_dtype])
    g = np.asarray(rng.uniform(-1, 1, x.shape)).astype(narrow).astype(NP[graph_dtype])
    for axis in range(3):
        for temperature in (1.0, 0.37, 2.5):
            feeds = softmax_feeds(temperature)
            t = float(np.float64(temperature) if dtype == "float64" else np.float32(temperature))
            expected_y, expected_grad = ref.softmax_reference(x, g, axis, t, log)
            static = {"axis": axis, "log": log, "x_rank": 3}
            y = run(graphs.build_forward("softmax", graph_dtype, **static), x=x, **feeds)["y"]
            out = run(
                graphs.build_gradient("softmax", graph_dtype, with_output=True, **static),
                x=x,
                grad_output=g,
                **feeds,
            )
            pairs = ((y, expected_y), (out["y"], expected_y), (out["grad_input"], expected_grad))
            for got, expected in pairs:
                if dtype == "bfloat16":
                    got = got.astype(ml_dtypes.bfloat16)
                ratio = error_ratio(dtype, got, expected, x)
                assert ratio.max() <= 1.0, (axis, temperature, ratio.max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_large_logits_and_masking(dtype: str) -> None:
    """Logits near 1e4 do not overflow; a -inf logit is a masked entry (probability 0)."""
    x = np.array([[1e4, 1e4 - 1, 1e4 + 3], [0.5, -np.inf, 1.5]], dtype=NP[dtype])
    g = np.array([[1.0, -1.0, 0.5], [0.25, 1.0, -0.5]], dtype=NP[dtype])
    kept = np.array([[True, True, True], [True, False, True]])
    for log in (False, True):
        static = {"axis": 1, "log": log, "x_rank": 2}
        out = run(
            graphs.build_gradient("softmax", dtype, with_output=True, **static),
            x=x,
            grad_output=g,
            **softmax_feeds(1.0),
        )
        for row in range(2):
            keep = kept[row]
            expected_y, expected_grad = ref.softmax_reference(
                x[row, keep], g[row, keep], 0, 1.0, log
            )
            if log:  # the masked entry's grad_output still enters sum(g)
                s = ref.softmax_reference(x[row, keep], g[row, keep], 0, 1.0, False)[0]
                g_sum = g[row].astype(np.float64).sum()
                expected_grad = g[row, keep].astype(np.float64) - s * g_sum
            for got, expected in ((out["y"], expected_y), (out["grad_input"], expected_grad)):
                ratio = error_ratio(dtype, got[row, keep], expected, x[row, keep])
                assert ratio.max() <= 1.0, (log, row, got, expected)
        if log:
            assert out["y"][1, 1] == -np.inf
            assert out["grad_input"][1, 1] == g[1, 1]
        else:
            assert out["y"][1, 1] == 0.0
            assert out["grad_input"][1, 1] == 0.0


def test_softmax_nan_and_gradient_by_central_differences() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4))
    g = rng.uniform(-1, 1, x.shape)
    for log in (False, True):
        for temperature in (1.0, 0.6):
            static = {"axis": 1, "log": log, "x_rank": 3}
            forward = session(graphs.build_forward("softmax", "float64", **static))
            feeds = softmax_feeds(temperature)
            grad = run(
                graphs.build_gradient("softmax", "float64", with_output=False, **static),
                x=x,
                grad_output=g,
                **feeds,
            )["grad_input"]
            fd = np.empty_like(x)
            h = 1e-6
            for index in np.ndindex(x.shape):
                step = np.zeros_like(x)
                step[index] = h
                plus = forward.run(None, {"x": x + step, **feeds})[0]
                minus = forward.run(None, {"x": x - step, **feeds})[0]
                fd[index] = np.sum(g * (plus - minus)) / (2 * h)
            np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
        with_nan = x.copy()
        with_nan[0, 1, 2] = np.nan
        y = forward.run(None, {"x": with_nan, **softmax_feeds(1.0)})[0]
        assert np.isnan(y[0, 1, 2])


PRELU_SLOPES = [(), (1,), (5,), (3, 1, 1), (2, 3, 4, 5), (1, 1, 5)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope_shape", PRELU_SLOPES, ids=str)
def test_prelu_matches_numpy(dtype: str, slope_shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 4, 5)).astype(NP[dtype])
    x.flat[::7] = 0.0  # the kink
    g = np.asarray(rng.uniform(-1, 1, x.shape)).astype(NP[dtype])
    slope = np.asarray(rng.uniform(0.05, 0.5, slope_shape)).astype(NP[dtype])
    x64, g64, slope64 = (a.astype(np.float64) for a in (x, g, slope))
    wide = np.broadcast_to(slope64, x.shape)
    expected_y = np.where(x64 > 0, x64, wide * x64)
    expected_grad = np.where(x64 > 0, g64, wide * g64)
    terms = np.where(x64 > 0, 0.0, x64 * g64)
    pad = x.ndim - len(slope_shape)
    axes = tuple(range(pad)) + tuple(pad + i for i, d in enumerate(slope_shape) if d == 1)
    expected_slope = terms.sum(axis=axes, keepdims=True).reshape(slope_shape)
    magnitude = np.abs(terms).sum(axis=axes, keepdims=True).reshape(slope_shape)

    y = run(graphs.build_forward("prelu", dtype, x_rank=4), x=x, slope=slope)["y"]
    model = graphs.build_gradient(
        "prelu", dtype, with_output=True, x_rank=4, slope_shape=slope_shape
    )
    out = run(model, x=x, grad_output=g, slope=slope)
    assert out["grad_slope"].shape == slope_shape and out["grad_slope"].dtype == NP[dtype]
    np.testing.assert_array_equal(out["y"], y)
    assert (error_ratio(dtype, y, expected_y, x) <= 1.0).all()
    assert (error_ratio(dtype, out["grad_input"], expected_grad, x) <= 1.0).all()
    # a sum of n float32 products: n ulps of the sum of magnitudes
    eps = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10}[dtype]
    n = x.size // max(1, slope.size)
    bound = eps * (np.abs(expected_slope) + n * magnitude * (dtype != "float16") * 2.0**-0)
    if dtype == "float16":  # summed in float32, rounded once to float16
        bound = eps * np.abs(expected_slope) + n * 2.0**-23 * magnitude
    assert np.all(np.abs(out["grad_slope"] - expected_slope) <= bound)


def static_for(function: str, x_rank: int | None) -> dict[str, Any]:
    static: dict[str, Any] = {} if x_rank is None else {"x_rank": x_rank}
    if function == "softmax":
        static["axis"] = 0
    return static


def params_for(function: str) -> dict[str, Array]:
    return {name: scalar(0.5) for name in graphs.runtime_inputs(function)}


def test_public_surface() -> None:
    assert graphs.OPSET == 21 and graphs.IR_VERSION == 10
    assert graphs.FUNCTIONS == (
        "sigmoid", "tanh", "relu", "leaky_relu", "prelu", "softmax",
        "swish", "gelu", "selu", "xtanh", "xsin",
    )  # fmt: skip
    assert graphs.runtime_inputs("leaky_relu") == ("alpha",)
    assert graphs.runtime_inputs("swish") == ("beta",)
    assert graphs.runtime_inputs("selu") == ("alpha", "gamma")
    assert graphs.runtime_inputs("softmax") == ("temperature",)
    for function in ("sigmoid", "tanh", "relu", "prelu", "gelu", "xtanh", "xsin"):
        assert graphs.runtime_inputs(function) == ()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("function", graphs.FUNCTIONS)
def test_graphs_pass_the_checker_and_declare_the_contract(function: str, dtype: str) -> None:
    elem = {"float32": 1, "float64": 11, "float16": 10}[dtype]
    static = static_for(function, 2)
    if function == "prelu":
        static["slope_shape"] = (3,)
    models = {
        ("y",): graphs.build_forward(function, dtype, **static),
        ("grad_input",): graphs.build_gradient(function, dtype, with_output=False, **static),
        ("grad_input", "y"): graphs.build_gradient(function, dtype, with_output=True, **static),
    }
    for outputs, model in models.items():
        onnx.checker.check_model(model, full_check=True)
        assert [(o.opset_import[0].domain, o.opset_import[0].version) for o in [model]] == [
            ("", 21)
        ]
        declared = {i.name: i.type.tensor_type for i in model.graph.input}
        assert declared["x"].elem_type == elem
        assert [d.dim_param for d in declared["x"].shape.dim] == ["d0", "d1"]
        for name in graphs.runtime_inputs(function):
            assert declared[name].elem_type == 11 and len(declared[name].shape.dim) == 0
        if function == "prelu":
            assert declared["slope"].elem_type == elem
            outputs = (
                (*outputs[:1], "grad_slope", *outputs[1:]) if "grad_input" in outputs else outputs
            )
        assert ("grad_output" in declared) == ("grad_input" in outputs)
        assert tuple(o.name for o in model.graph.output) == outputs
        assert all(o.type.tensor_type.elem_type == elem for o in model.graph.output)


@pytest.mark.parametrize("function", [f for f in graphs.FUNCTIONS if f != "prelu"])
def test_rank_agnostic_graphs_run_on_any_rank(function: str) -> None:
    """Without x_rank the nodes are the same as with it; only the declared shapes go."""
    ranked = graphs.build_gradient(function, "float32", with_output=True, **static_for(function, 3))
    model = graphs.build_gradient(
        function, "float32", with_output=True, **static_for(function, None)
    )
    assert [n.SerializeToString() for n in model.graph.node] == [
        n.SerializeToString() for n in ranked.graph.node
    ]
    assert all(
        not i.type.tensor_type.HasField("shape")
        for i in model.graph.input
        if i.name in ("x", "grad_output")
    )
    forward = graphs.build_forward(function, "float32", **static_for(function, None))
    shapes = [(5,), (2, 3, 4), (1, 2, 1, 3, 2)] + ([()] if function != "softmax" else [])
    for shape in shapes:
        x = np.linspace(-3, 3, max(1, math.prod(shape))).astype(np.float32).reshape(shape)
        out = run(model, x=x, grad_output=np.ones_like(x), **params_for(function))
        y = run(forward, x=x, **params_for(function))["y"]
        assert y.shape == shape and out["grad_input"].shape == shape and out["y"].shape == shape
        flat = run(forward, x=x.reshape(-1), **params_for(function))["y"]
        if function != "softmax":
            np.testing.assert_array_equal(y.reshape(-1), flat)


def test_prelu_scalar_input_and_forward_without_shapes() -> None:
    x = np.asarray(-2.0, dtype=np.float32)
    slope = np.asarray(0.25, dtype=np.float32)
    model = graphs.build_gradient("prelu", "float32", with_output=True, x_rank=0, slope_shape=())
    out = run(model, x=x, grad_output=np.asarray(3.0, np.float32), slope=slope)
    assert out["y"] == -0.5 and out["grad_input"] == 0.75 and out["grad_slope"] == -6.0
    forward = graphs.build_forward("prelu", "float32")
    y = run(
        forward,
        x=np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32),
        slope=np.array([0.5, 0.25], np.float32),
    )["y"]
    np.testing.assert_array_equal(y, [[-0.5, 2.0], [3.0, -1.0]])


def test_invalid_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown function"):
        graphs.build_forward("softplus", "float32")
    with pytest.raises(ValueError, match="dtype"):
        graphs.build_forward("relu", "bfloat16")
    with pytest.raises(ValueError, match="approximate"):
        graphs.build_forward("gelu", "float32", approximate="erf")
    with pytest.raises(ValueError, match="x_rank"):
        graphs.build_gradient("prelu", "float32", with_output=False, slope_shape=(3,))
    with pytest.raises(ValueError, match="broadcast"):
        graphs.build_gradient("prelu", "float32", with_output=False, x_rank=1, slope_shape=(2, 3))
    with pytest.raises(TypeError):
        graphs.build_forward("sigmoid", "float32", approximate="tanh")
    with pytest.raises(TypeError):
        graphs.build_forward("softmax", "float32", axis=1.0)
