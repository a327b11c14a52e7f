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

import itertools
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

from actgrad_server import catalog, graphs
from actgrad_server.errors import NotFound
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


def build_forward(name: str, dtype: str, **static: Any) -> onnx.ModelProto:
    return graphs.build_forward(catalog.lookup(name), dtype, **static)


def build_gradient(name: str, dtype: str, *, with_output: bool, **static: Any) -> onnx.ModelProto:
    return graphs.build_gradient(catalog.lookup(name), dtype, with_output=with_output, **static)


@dataclass(frozen=True)
class Case:
    """One elementwise function with fixed parameters.

    `params` are runtime values (graph inputs), `static` structural ones; `id` is the
    function's name followed by the values that differ from the catalog's defaults.
    """

    function: str
    params: Mapping[str, float] = field(default_factory=dict)
    static: Mapping[str, Any] = field(default_factory=dict)
    changed: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        values = {**self.params, **self.static}
        return "-".join([self.function, *(f"{k}={values[k]}" for k in self.changed)])

    def param_values(self, dtype: str) -> dict[str, Any]:
        """The parameters as the graph sees them: runtime values cast to the compute dtype."""
        compute = np.float64 if dtype == "float64" else np.float32
        return {**{k: float(compute(v)) for k, v in self.params.items()}, **self.static}

    def feeds(self) -> dict[str, Array]:
        return {name: scalar(value) for name, value in self.params.items()}


def _other_value(param: catalog.Param) -> float:
    """A second runtime value, away from the default (a leaky_relu alpha of 0.01 -> 0.115)."""
    return round(float(param.default) * 1.5 + 0.1, 6)


def catalog_cases() -> list[Case]:
    """Every elementwise function of the catalog without tensor parameters: its defaults,
    each other choice of a structural parameter, and other runtime values."""
    cases = []
    for function in catalog.CATALOG:
        if not function.elementwise or function.tensor_params:
            continue
        params = {p.name: float(p.default) for p in function.params if p.runtime}
        static = {p.name: p.default for p in function.params if not p.runtime}
        cases.append(Case(function.name, params, static))
        for param in function.params:
            for choice in param.choices:
                if choice != param.default:
                    changed = {**static, param.name: choice}
                    cases.append(Case(function.name, params, changed, (param.name,)))
        if params:
            others = {name: _other_value(function.params_by_name[name]) for name in params}
            cases.append(Case(function.name, others, static, tuple(params)))
    return cases


CASES = catalog_cases()
CASE_IDS = [case.id for case in CASES]


def test_every_elementwise_function_has_a_reference() -> None:
    """A function added to the catalog needs its high-precision reference."""
    missing = {case.function for case in CASES} - set(ref.REFERENCES)
    assert not missing, f"add a reference to tests/unit/graph_reference.py for {missing}"
    assert {case.function for case in CASES} >= {"sigmoid", "gelu", "xsin"}


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
        88.8,
        90.0,
        95.0,
        100.0,
        710.0,
        715.0,
        720.0,
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
        model = build_gradient(
            case.function, graph_dtype, with_output=False, x_rank=1, **case.static
        )
        got = run(model, x=x, grad_output=g, **case.feeds())["grad_input"]
        expected = (
            g.astype(np.float64)
            * ref.reference(case.function, x, case.param_values(graph_dtype))[1]
        )
    else:
        model = build_forward(case.function, graph_dtype, x_rank=1, **case.static)
        got = run(model, x=x, **case.feeds())["y"]
        expected = ref.reference(case.function, x, case.param_values(graph_dtype))[0]
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
        if not tail.any():  # a slope that is 0 in both tails (hardtanh, hardsigmoid)
            continue
        rel = np.abs(got[tail].astype(np.float64) - expected[tail]) / np.abs(expected[tail])
        assert rel.max() <= bound, (gradient, x[tail][np.argmax(rel)], rel.max())


# x -> (f(+inf), f(-inf), f'(+inf), f'(-inf)), at the catalog's default parameters
INFINITE_LIMITS: dict[str, tuple[float, float, float, float]] = {
    "sigmoid": (1.0, 0.0, 0.0, 0.0),
    "tanh": (1.0, -1.0, 0.0, 0.0),
    "relu": (math.inf, 0.0, 1.0, 0.0),
    "leaky_relu": (math.inf, -math.inf, 1.0, 0.01),
    "swish": (math.inf, 0.0, 1.0, 0.0),
    "gelu": (math.inf, 0.0, 1.0, 0.0),
    "gelu-approximate=tanh": (math.inf, 0.0, 1.0, 0.0),
    "selu": (math.inf, -SELU_GAMMA * SELU_ALPHA, SELU_GAMMA, 0.0),
    "xtanh": (math.inf, math.inf, 1.0, -1.0),
    "xsin": (math.nan, math.nan, math.nan, math.nan),
    "softplus": (math.inf, 0.0, 1.0, 0.0),
    "elu": (math.inf, -1.0, 1.0, 0.0),
    "celu": (math.inf, -1.0, 1.0, 0.0),
    "softsign": (1.0, -1.0, 0.0, 0.0),
    "mish": (math.inf, 0.0, 1.0, 0.0),
    "logsigmoid": (0.0, -math.inf, 0.0, 1.0),
    "hardsigmoid": (1.0, 0.0, 0.0, 0.0),
    "hardswish": (math.inf, 0.0, 1.0, 0.0),
    "relu6": (6.0, 0.0, 0.0, 0.0),
    "hardtanh": (1.0, -1.0, 0.0, 0.0),
    "thresholded_relu": (math.inf, 0.0, 1.0, 0.0),
    "softshrink": (math.inf, -math.inf, 1.0, 1.0),
    "hardshrink": (math.inf, -math.inf, 1.0, 1.0),
    "tanhshrink": (math.inf, -math.inf, 1.0, 1.0),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_nan_propagates_and_infinities_give_limits(case: Case, dtype: str) -> None:
    """NaN in, NaN out for every function; the limits at +-inf where listed above."""
    x = np.array([np.nan, np.inf, -np.inf, 1.5, 0.0, -2.0], dtype=NP[dtype])
    g = np.ones_like(x)
    forward = build_forward(case.function, dtype, x_rank=1, **case.static)
    y = run(forward, x=x, **case.feeds())["y"]
    gradient = build_gradient(case.function, dtype, with_output=True, x_rank=1, **case.static)
    out = run(gradient, x=x, grad_output=g, **case.feeds())
    assert np.isnan(y[0]) and np.isnan(out["grad_input"][0])
    np.testing.assert_array_equal(out["y"], y)
    assert np.isfinite(y[3:]).all() and np.isfinite(out["grad_input"][3:]).all()
    if case.id not in INFINITE_LIMITS:
        return
    up, down, dup, ddown = INFINITE_LIMITS[case.id]
    rtol = 1e-3 if dtype == "float16" else 1e-6
    np.testing.assert_allclose(y[:3].astype(np.float64), [np.nan, up, down], rtol=rtol)
    np.testing.assert_allclose(
        out["grad_input"][:3].astype(np.float64), [np.nan, dup, ddown], rtol=rtol
    )


def test_infinite_limits_name_cases() -> None:
    assert set(INFINITE_LIMITS) <= set(CASE_IDS)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_inputs_do_not_overflow(dtype: str) -> None:
    """Finite results at the extremes: sigmoid/tanh(+-1000), gelu(-40), selu/swish(-1000), and
    +-max of the dtype (65504 for float16); also their gradients."""
    big = float(np.finfo(NP[dtype]).max)
    x = np.array([1000.0, -1000.0, -40.0, big, -big], dtype=NP[dtype])
    for case in CASES:
        y = run(build_forward(case.function, dtype, x_rank=1, **case.static), x=x, **case.feeds())[
            "y"
        ]
        grad = run(
            build_gradient(case.function, dtype, with_output=False, x_rank=1, **case.static),
            x=x,
            grad_output=np.full_like(x, 0.5),
            **case.feeds(),
        )["grad_input"]
        assert not np.isnan(y).any() and not np.isnan(grad).any(), case.id
        # infinite only where the true value exceeds the dtype's range
        assert np.isfinite(y[1:3]).all() and np.isfinite(grad).all(), (case.id, y, grad)


# The slopes and values at the kinks of the piecewise functions (and beside them) are
# compared with PyTorch autograd itself in tests/unit/test_kinks_torch.py, in every
# dtype, at the catalog's kinks (Function.kinks); graph_reference takes torch's side there
# too, so test_matches_high_precision_reference (whose grid holds every kink of the
# defaults) checks them where torch is absent.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [0.01, 1.0, 0.0, 1.5, -0.3, 1e-30])
def test_leaky_relu_takes_any_slope(alpha: float, dtype: str) -> None:
    """Slopes in (0, 1] take a cheaper branch of the forward graph than the others: both
    are exact (x or alpha * x, alpha as the graph sees it), also at -0, +-inf and NaN."""
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 2.5, -3.0, 1e-30, -1e-30], NP[dtype])
    feeds = {"alpha": scalar(alpha)}
    a = NP["float64" if dtype == "float64" else "float32"](alpha)
    wide = x.astype(a.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = np.where(wide > 0, wide, a * wide).astype(NP[dtype])
        slope = np.where(wide > 0, 1.0, a)
    expected[0] = np.nan
    if alpha == 0.0:
        expected[2] = np.nan  # 0 * -inf, as the product alpha * x is
    y = run(build_forward("leaky_relu", dtype, x_rank=1), x=x, **feeds)["y"]
    np.testing.assert_array_equal(y, expected)
    model = build_gradient("leaky_relu", dtype, with_output=True, x_rank=1)
    g = np.full_like(x, 0.5)
    out = run(model, x=x, grad_output=g, **feeds)
    np.testing.assert_array_equal(out["y"], y)
    expected_grad = (0.5 * slope).astype(NP[dtype])
    expected_grad[0] = np.nan
    np.testing.assert_array_equal(out["grad_input"], expected_grad)


FD_CASES = [c for c in CASES if c.function not in ("relu", "leaky_relu")] + [
    c for c in CASES if c.function in ("relu", "leaky_relu")
]


def kinks(case: Case) -> tuple[float, ...]:
    """Where a function's definition switches branch (the catalog's, at the case's values)."""
    return catalog.lookup(case.function).kinks({**case.params, **case.static})


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradient_matches_central_differences(case: Case) -> None:
    x = np.concatenate([np.linspace(-20, 20, 401), _RNG.uniform(-3, 3, 100)])
    x = x[np.abs(x) > 1e-3]  # away from the kinks at 0
    for kink in kinks(case):
        x = x[np.abs(x - kink) > 1e-3 * max(1.0, abs(kink))]
    h = 1e-6 * np.maximum(1.0, np.abs(x))
    forward = session(build_forward(case.function, "float64", x_rank=1, **case.static))
    f_plus, f_minus = (forward.run(None, {"x": x + s * h, **case.feeds()})[0] for s in (1, -1))
    fd = (f_plus - f_minus) / ((x + h) - (x - h))
    model = build_gradient(case.function, "float64", with_output=False, x_rank=1, **case.static)
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
    ours = build_forward("selu", "float32", x_rank=1)
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
    y = run(build_forward("softmax", dtype, axis=0, x_rank=1), x=x, **softmax_feeds(1.0))
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
            y = run(build_forward("softmax", graph_dtype, **static), x=x, **feeds)["y"]
            out = run(
                build_gradient("softmax", graph_dtype, with_output=True, **static),
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
            build_gradient("softmax", dtype, with_output=True, **static),
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
            forward = session(build_forward("softmax", "float64", **static))
            feeds = softmax_feeds(temperature)
            grad = run(
                build_gradient("softmax", "float64", with_output=False, **static),
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

    y = run(build_forward("prelu", dtype, x_rank=4), x=x, slope=slope)["y"]
    model = build_gradient("prelu", dtype, with_output=True, x_rank=4, slope_shape=slope_shape)
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


FUNCTIONS = [f.name for f in catalog.CATALOG]


def static_for(function: str, x_rank: int | None) -> dict[str, Any]:
    static: dict[str, Any] = {} if x_rank is None else {"x_rank": x_rank}
    axis_param = catalog.lookup(function).axis_param
    if axis_param is not None:
        static[axis_param] = 0
    return static


def params_for(function: str) -> dict[str, Array]:
    return {name: scalar(0.5) for name in catalog.lookup(function).runtime_params}


# Every graph the server can build: each catalog function, each choice of its structural
# parameters (a string's choices, both values of a bool, the default of the others as
# catalog.bind normalises it), each shape class of a tensor parameter, each direction and
# each graph dtype. Values of x (rank 2) do not matter here, only the structure.
_SERVED_X_SHAPE = (3, 4)
_SERVED_TENSOR_SHAPES = [(), (1,), (4,), (1, 4), (3, 4)]  # reduced over all, some, no axes
_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}


def _structural_choices(function: catalog.Function) -> list[dict[str, Any]]:
    options: list[list[tuple[str, Any]]] = []
    for param in function.params:
        if param.runtime:
            continue
        if param.kind is catalog.ParamKind.TENSOR:
            values: list[Any] = [np.zeros(shape) for shape in _SERVED_TENSOR_SHAPES]
        elif param.choices:
            values = list(param.choices)
        elif param.kind is catalog.ParamKind.BOOL:
            values = [False, True]
        else:
            values = [param.default]
        options.append([(param.name, value) for value in values])
    return [dict(combination) for combination in itertools.product(*options)]


def _served_id(function: catalog.Function, values: Mapping[str, Any]) -> str:
    parts = [function.name]
    for name, value in values.items():
        shown = list(value.shape) if isinstance(value, np.ndarray) else value
        parts.append(f"{name}={shown}")
    return "-".join(parts)


SERVED = [
    pytest.param(function, values, id=_served_id(function, values))
    for function in catalog.CATALOG
    for values in _structural_choices(function)
]
DIRECTIONS = {"forward": None, "gradient": False, "gradient+y": True}


def served_models(function: catalog.Function, values: Mapping[str, Any]) -> dict[str, Any]:
    """(direction, dtype) -> model, built as the engine builds it (catalog.bind, x_rank)."""
    models = {}
    for dtype in DTYPES:
        params = {
            name: value.astype(NP[dtype]) if isinstance(value, np.ndarray) else value
            for name, value in values.items()
        }
        call = catalog.bind(function, params, x_shape=_SERVED_X_SHAPE, x_dtype=np.dtype(NP[dtype]))
        static: dict[str, Any] = {**dict(call.static), "x_rank": len(_SERVED_X_SHAPE)}
        static.update((f"{n}_shape", tuple(t.shape)) for n, t in call.tensors.items())
        for direction, with_output in DIRECTIONS.items():
            if with_output is None:
                model = graphs.build_forward(function, dtype, **static)
            else:
                model = graphs.build_gradient(function, dtype, with_output=with_output, **static)
            models[f"{direction}/{dtype}"] = model
    return models


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs in a node's attributes (an If's branches)."""
    found = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            found.append(attribute.g)
        found.extend(attribute.graphs)
    return found


def _reads(node: onnx.NodeProto) -> set[str]:
    """The values a node reads: its inputs, and those its subgraphs read from outside."""
    names = set(node.input)
    for graph in _subgraphs(node):
        for inner in graph.node:
            names |= _reads(inner)
    return names


def dead_nodes(graph: onnx.GraphProto) -> list[str]:
    """Nodes no output of their graph depends on, in the graph and in the branches of its
    live nodes (onnxruntime runs every node of a graph it runs)."""
    producer = {out: node for node in graph.node for out in node.output}
    live: dict[int, onnx.NodeProto] = {}
    pending = [out.name for out in graph.output]
    while pending:
        node = producer.get(pending.pop())
        if node is None or id(node) in live:
            continue
        live[id(node)] = node
        pending.extend(_reads(node))
    dead = [f"{n.op_type} -> {list(n.output)}" for n in graph.node if id(n) not in live]
    for node in live.values():
        for branch in _subgraphs(node):
            dead.extend(dead_nodes(branch))
    return dead


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for branch in _subgraphs(node):
            nodes.extend(_all_nodes(branch))
    return nodes


def _value_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {
        value.name: value.type.tensor_type.elem_type
        for value in [*graph.input, *graph.value_info, *graph.output]
    }
    types.update((init.name, init.data_type) for init in graph.initializer)
    for node in graph.node:
        for branch in _subgraphs(node):
            types.update(_value_types(branch))
    return types


def float_wheres(model: onnx.ModelProto) -> list[str]:
    """Where nodes that select float values (bool or integer selections would be fine)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = _value_types(inferred.graph)
    return [
        f"Where -> {list(node.output)}"
        for node in _all_nodes(inferred.graph)
        if node.op_type == "Where"
        and (types.get(node.output[0]) in _FLOAT_TYPES or types.get(node.input[1]) in _FLOAT_TYPES)
    ]


@pytest.mark.parametrize(("function", "values"), SERVED)
def test_served_graphs_have_no_dead_nodes_and_no_float_where(
    function: catalog.Function, values: Mapping[str, Any]
) -> None:
    """Every node feeds a graph output: onnxruntime at ORT_ENABLE_BASIC still runs a
    node nothing reads. And no float Where: in onnxruntime 1.32 one costs as much
    as 20 to 80 arithmetic kernels (docs/performance.md), so branches are arithmetic."""
    for key, model in served_models(function, values).items():
        assert not dead_nodes(model.graph), (key, dead_nodes(model.graph))
        assert not float_wheres(model), (key, float_wheres(model))


def _model_of(nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n"])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n"])
    return onnx.helper.make_model(
        onnx.helper.make_graph(nodes, "g", [x], [y]),
        opset_imports=[onnx.helper.make_opsetid("", graphs.OPSET)],
        ir_version=graphs.IR_VERSION,
    )


def test_the_structure_checks_see_dead_nodes_and_float_wheres() -> None:
    model = _model_of(
        [
            onnx.helper.make_node("Greater", ["x", "x"], ["mask"]),
            onnx.helper.make_node("Where", ["mask", "x", "x"], ["selected"]),
            onnx.helper.make_node("Neg", ["selected"], ["y"]),
            onnx.helper.make_node("Exp", ["x"], ["unused"]),
            onnx.helper.make_node("Abs", ["unused"], ["also_unused"]),
        ]
    )
    assert dead_nodes(model.graph) == ["Exp -> ['unused']", "Abs -> ['also_unused']"]
    assert float_wheres(model) == ["Where -> ['selected']"]
    # Inside an If's branches too; a value read only inside a branch ("mask") is used.
    branch = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Where", ["mask", "x", "x"], ["inner"]),
            onnx.helper.make_node("Sqrt", ["x"], ["inner_unused"]),
        ],
        "branch",
        [],
        [onnx.helper.make_tensor_value_info("inner", onnx.TensorProto.FLOAT, ["n"])],
    )
    model = _model_of(
        [
            onnx.helper.make_node("Greater", ["x", "x"], ["mask"]),
            onnx.helper.make_node("Cast", ["x"], ["x_as_bool"], to=onnx.TensorProto.BOOL),
            onnx.helper.make_node("ReduceMin", ["x"], ["lowest"], keepdims=0),
            onnx.helper.make_node("Greater", ["lowest", "lowest"], ["never"]),
            onnx.helper.make_node("If", ["never"], ["y"], then_branch=branch, else_branch=branch),
        ]
    )
    unused = "Sqrt -> ['inner_unused']"
    assert dead_nodes(model.graph) == ["Cast -> ['x_as_bool']", unused, unused]
    assert float_wheres(model) == ["Where -> ['inner']"] * 2


def test_served_graphs_cover_every_choice() -> None:
    ids = {param.id for param in SERVED}
    assert {f.name for f in catalog.CATALOG} <= {i.split("-")[0] for i in ids}
    assert {"gelu-approximate=tanh", "softmax-axis=-1-log=True", "prelu-slope=[3, 4]"} <= ids


def test_public_surface() -> None:
    assert graphs.OPSET == 21 and graphs.IR_VERSION == 10
    # Runtime parameters are declared once, in the catalog, and become graph inputs.
    assert catalog.lookup("leaky_relu").runtime_params == ("alpha",)
    assert catalog.lookup("selu").runtime_params == ("alpha", "gamma")
    assert catalog.lookup("softmax").runtime_params == ("temperature",)
    assert catalog.lookup("gelu").runtime_params == ()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_graphs_pass_the_checker_and_declare_the_contract(function: str, dtype: str) -> None:
    elem = {"float32": 1, "float64": 11, "float16": 10}[dtype]
    static = static_for(function, 2)
    tensors = catalog.lookup(function).tensor_params
    for name in tensors:
        static[f"{name}_shape"] = (3,)
    models = {
        ("y",): build_forward(function, dtype, **static),
        ("grad_input",): build_gradient(function, dtype, with_output=False, **static),
        ("grad_input", "y"): build_gradient(function, dtype, with_output=True, **static),
    }
    for outputs, model in models.items():
        onnx.checker.check_model(model, full_check=True)
        assert [(o.opset_import[0].domain, o.opset_import[0].version) for o in [model]] == [
            ("", 21)
        ]
        declared = {i.name: i.type.tensor_type for i in model.graph.input}
        assert declared["x"].elem_type == elem
        assert [d.dim_param for d in declared["x"].shape.dim] == ["d0", "d1"]
        for name in catalog.lookup(function).runtime_params:
            assert declared[name].elem_type == 11 and len(declared[name].shape.dim) == 0
        for name in tensors:
            assert declared[name].elem_type == elem
        if tensors and "grad_input" in outputs:
            grads = tuple(f"grad_{name}" for name in tensors)
            outputs = (*outputs[:1], *grads, *outputs[1:])
        assert ("grad_output" in declared) == ("grad_input" in outputs)
        assert tuple(o.name for o in model.graph.output) == outputs
        assert all(o.type.tensor_type.elem_type == elem for o in model.graph.output)


@pytest.mark.parametrize("function", [f.name for f in catalog.CATALOG if not f.tensor_params])
def test_rank_agnostic_graphs_run_on_any_rank(function: str) -> None:
    """Without x_rank the nodes are the same as with it; only the declared shapes go."""
    ranked = build_gradient(function, "float32", with_output=True, **static_for(function, 3))
    model = build_gradient(function, "float32", with_output=True, **static_for(function, None))
    assert [n.SerializeToString() for n in model.graph.node] == [
        n.SerializeToString() for n in ranked.graph.node
    ]
    assert all(
        not i.type.tensor_type.HasField("shape")
        for i in model.graph.input
        if i.name in ("x", "grad_output")
    )
    forward = build_forward(function, "float32", **static_for(function, None))
    elementwise = catalog.lookup(function).elementwise
    shapes = [(5,), (2, 3, 4), (1, 2, 1, 3, 2)] + ([()] if elementwise else [])
    for shape in shapes:
        x = np.linspace(-3, 3, max(1, math.prod(shape))).astype(np.float32).reshape(shape)
        out = run(model, x=x, grad_output=np.ones_like(x), **params_for(function))
        y = run(forward, x=x, **params_for(function))["y"]
        assert y.shape == shape and out["grad_input"].shape == shape and out["y"].shape == shape
        flat = run(forward, x=x.reshape(-1), **params_for(function))["y"]
        if elementwise:
            np.testing.assert_array_equal(y.reshape(-1), flat)


def test_prelu_scalar_input_and_forward_without_shapes() -> None:
    x = np.asarray(-2.0, dtype=np.float32)
    slope = np.asarray(0.25, dtype=np.float32)
    model = build_gradient("prelu", "float32", with_output=True, x_rank=0, slope_shape=())
    out = run(model, x=x, grad_output=np.asarray(3.0, np.float32), slope=slope)
    assert out["y"] == -0.5 and out["grad_input"] == 0.75 and out["grad_slope"] == -6.0
    forward = build_forward("prelu", "float32")
    y = run(
        forward,
        x=np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32),
        slope=np.array([0.5, 0.25], np.float32),
    )["y"]
    np.testing.assert_array_equal(y, [[-0.5, 2.0], [3.0, -1.0]])


def test_invalid_requests_are_refused() -> None:
    with pytest.raises(NotFound, match="unknown function"):
        build_forward("not_a_function", "float32")
    with pytest.raises(ValueError, match="dtype"):
        build_forward("relu", "bfloat16")
    with pytest.raises(ValueError, match="approximate"):
        build_forward("gelu", "float32", approximate="erf")
    with pytest.raises(ValueError, match="x_rank"):
        build_gradient("prelu", "float32", with_output=False, slope_shape=(3,))
    with pytest.raises(ValueError, match="broadcast"):
        build_gradient("prelu", "float32", with_output=False, x_rank=1, slope_shape=(2, 3))
    with pytest.raises(TypeError):
        build_forward("sigmoid", "float32", approximate="tanh")
    with pytest.raises(TypeError):
        build_forward("softmax", "float32", axis=1.0)
