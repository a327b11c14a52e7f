"""Every kink of every elementwise function against PyTorch autograd, in process.

The kinks are the catalog's (`Function.kinks`, a function of the parameters): the graphs
are evaluated through the engine at each kink rounded to the dtype and at the two dtype
values on either side of it, at the catalog's defaults and at other values
(test_flow_torch.OTHER_PARAMS, and below the values that move a kink where float32
cannot hold it, swap its ends or merge them), and compared with torch_reference's
expression differentiated by autograd (grad_output 1): values and slopes within two
units in the dtype's last place. float64 and float32 run in the same dtype in torch;
float16 and bfloat16, which the service computes in float32 and rounds once, against
torch in float32 on the same inputs, rounded to the dtype (torch's half-precision
arithmetic rounds every intermediate: torch_reference's hardsigmoid then cancels in
alpha * x + beta).

That the list is complete is checked from torch's side: on a grid of step 1/256 over
[-8, 8] (every kink of the cases lies there), autograd's slope and value jump only in
an interval that holds a declared kink. And graph_reference's mpmath slopes (which
test_graphs holds the graphs to everywhere else) take torch's side at every kink.

hardsigmoid: torch has no hardsigmoid with ONNX's alpha and beta. Its own
(F.hardsigmoid, alpha = 1/6) decides the slope on the input itself (-3 < x < 3), and the
catalog decides it on the exact alpha * x, while torch_reference's expression clips the
rounded alpha * x + beta and so differs from both within an ulp of a kink. Its slope
is taken here from the same function clipped in x at the exact kinks of the
parameters as the graph sees them (rational arithmetic, rounded outward), which
autograd decides on x exactly; its value from torch_reference's expression.

torch is a dev dependency, imported with pytest.importorskip for now: where it is
missing, this module is skipped, and `pytest -rs` shows why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import graph_reference
import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402, N812 (torch's own spelling)
import torch_reference  # noqa: E402
from test_flow_torch import OTHER_PARAMS  # noqa: E402

from actgrad_server import catalog  # noqa: E402
from actgrad_server.engine import Engine  # noqa: E402

Array = npt.NDArray[Any]
DTYPES: dict[str, Any] = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
}
#: Elementwise functions whose kinks are checked (softmax mixes values along an axis).
ELEMENTWISE = [f for f in catalog.CATALOG if f.elementwise]
#: Values other than OTHER_PARAMS': a kink float32 cannot hold (hardtanh, softshrink),
#: a negative slope that swaps hardsigmoid's ends, torch's own hardsigmoid constants,
#: a negative threshold, a zero band whose two kinks are one, a negative prelu slope.
EXTRA_PARAMS: list[tuple[str, dict[str, Any]]] = [
    ("hardsigmoid", {"alpha": -0.25, "beta": 0.5}),
    ("hardsigmoid", {"alpha": 1 / 6, "beta": 0.5}),
    ("hardtanh", {"min_val": -0.3, "max_val": 0.7}),
    ("thresholded_relu", {"alpha": -0.3}),
    ("softshrink", {"lambd": 0.0}),
    ("softshrink", {"lambd": 0.1}),
    ("hardshrink", {"lambd": 0.0}),
    ("prelu", {"slope": -0.5}),
]
NEIGHBOURS = 2
GRID_STEP = 1 / 256
GRID = np.arange(-8.0, 8.0 + GRID_STEP / 2, GRID_STEP)
# On GRID, a C1 function's slope moves by at most GRID_STEP * |f''| between neighbours
# (0.04 for xsin, |f''| <= 10 on [-8, 8]) and the trapezoid rule misses its value step by
# GRID_STEP^3 |f'''| / 12; a kink makes either about its jump (1/6 at least in the
# slopes of these cases, hardsigmoid's alpha; 0.1 in the values, thresholded_relu's).
SLOPE_JUMP = 0.1
VALUE_JUMP = 0.01

torch.set_num_threads(1)


def _cases() -> list[Any]:
    cases = []
    for function in ELEMENTWISE:
        name = function.name
        defaults: dict[str, Any] = {"slope": 0.25} if function.tensor_params else {}
        sets = [defaults]
        if name in OTHER_PARAMS:
            sets.append(OTHER_PARAMS[name])
        sets += [given for extra, given in EXTRA_PARAMS if extra == name]
        for given in sets:
            shown = (
                f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in given.items()
            )
            cases.append(pytest.param(name, given, id="-".join([name, *shown])))
    return cases


CASES = _cases()


def kinks(name: str, given: Mapping[str, Any]) -> tuple[float, ...]:
    return catalog.lookup(name).kinks(torch_reference.params_of(name, given))


KINKED = [c for c in CASES if kinks(*c.values)]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu", cache_size=256)


def compute_dtype(dtype: str) -> Any:
    """The dtype the graph computes in (float16 and bfloat16 in float32)."""
    return np.float64 if dtype == "float64" else np.float32


def points(kink_list: tuple[float, ...], dtype: str) -> Array:
    """Each kink rounded to the dtype and NEIGHBOURS dtype values either side of it."""
    np_dtype = DTYPES[dtype]
    up, down = np.array(np.inf, np_dtype), np.array(-np.inf, np_dtype)
    found = []
    for kink in kink_list:
        centre = np.array(kink, np_dtype)
        found.append(centre)
        above = below = centre
        for _ in range(NEIGHBOURS):
            above, below = np.nextafter(above, up), np.nextafter(below, down)
            found += [above, below]
    return np.unique(np.array(found, np_dtype))


def served(
    engine: Engine, name: str, given: Mapping[str, Any], x: Array
) -> tuple[Array, Array, dict[str, Array]]:
    """(value, slope, tensor parameters' gradients) through the engine, grad_output 1."""
    function = catalog.lookup(name)
    params = {
        k: np.asarray(v, x.dtype) if k in function.tensor_params else v for k, v in given.items()
    }
    call = catalog.bind(function, params, x_shape=x.shape, x_dtype=x.dtype)
    result = engine.gradient(call, x, np.ones_like(x), with_output=True)
    assert result.output is not None
    return result.output, result.grad_input, dict(result.grad_params)


def _outward(value: Fraction, toward: float) -> float:
    """The float64 nearest `value` on the side of it away from `toward`'s direction:
    rounded down for a lower end (toward -inf), up for an upper end."""
    rounded = float(value)
    if (toward < 0 and Fraction(rounded) > value) or (toward > 0 and Fraction(rounded) < value):
        rounded = math.nextafter(rounded, toward)
    return rounded


def _hardsigmoid_decided_on_x(z: Any, p: Mapping[str, Any]) -> Any:
    """alpha * clip(x, lo, hi) + beta, [lo, hi] the exact kinks rounded outward to float64:
    for any float64 x, lo < x < hi exactly when 0 < alpha * x + beta < 1 exactly."""
    alpha, beta = Fraction(p["alpha"]), Fraction(p["beta"])
    ends = sorted((-beta / alpha, (1 - beta) / alpha))
    low, high = _outward(ends[0], -math.inf), _outward(ends[1], math.inf)
    return p["alpha"] * F.hardtanh(z, low, high) + p["beta"]


def autograd(name: str, given: Mapping[str, Any], x: Array, dtype: str) -> tuple[Array, ...]:
    """torch's (value, slope, tensor parameters' gradients), in the served dtype.

    The parameters are taken as the graph sees them (runtime values in the compute
    dtype), which is also what torch's kernels do with a Python number.
    """
    work = torch.float64 if compute_dtype(dtype) is np.float64 else torch.float32
    np_dtype = DTYPES[dtype]
    function = catalog.lookup(name)
    p: dict[str, Any] = torch_reference.params_of(name, given)
    for param in function.params:
        if param.runtime:
            p[param.name] = float(compute_dtype(dtype)(p[param.name]))
    leaves = {"x": torch.tensor(x.astype(np.float64), dtype=work, requires_grad=True)}
    for param in function.tensor_params:
        value = float(np.asarray(p[param], np_dtype).astype(np.float64))
        leaves[param] = torch.tensor(value, dtype=work, requires_grad=True)
        p[param] = leaves[param]
    y = torch_reference.FUNCTIONS[name](leaves["x"], p)
    grads = torch.autograd.grad(y, list(leaves.values()), torch.ones_like(y))
    slope = grads[0]
    if name == "hardsigmoid":
        z = torch.tensor(x.astype(np.float64), dtype=torch.float64, requires_grad=True)
        (slope,) = torch.autograd.grad(_hardsigmoid_decided_on_x(z, p).sum(), z)

    def back(t: Any) -> Array:
        # Through the compute dtype first: a float64 slope (hardsigmoid's) rounds as
        # the graph's float32 result would before it is narrowed.
        wide = t.detach().to(torch.float64).numpy()
        return np.asarray(wide.astype(compute_dtype(dtype)).astype(np_dtype))

    return back(y), back(slope), *(back(g) for g in grads[1:])


def assert_close(got: Array, want: Array, dtype: str, what: str, x: Array) -> None:
    """Within two units in the dtype's last place, and within its smallest normal number
    below that: subnormal results are not held to an ulp (onnxruntime's float32 Tanh
    flushes a subnormal argument, so selu(-3e-45) is 0 where torch's is -4e-45)."""
    info = ml_dtypes.finfo(DTYPES[dtype])
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    bound = np.maximum(2 * float(info.eps) * np.abs(want64), float(info.tiny))
    bad = ~(np.abs(got64 - want64) <= bound) & ~(np.isnan(got64) & np.isnan(want64))
    if bad.any():
        lines = [
            f"  x = {float(xi)!r}: got {float(g)!r}, torch {float(w)!r}"
            for xi, g, w in zip(x[bad], got64[bad], want64[bad], strict=True)
        ]
        raise AssertionError(f"{what} ({dtype}) differs from torch's at:\n" + "\n".join(lines))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(("name", "given"), KINKED)
def test_kinks_match_torch_autograd(
    engine: Engine, name: str, given: dict[str, Any], dtype: str
) -> None:
    x = points(kinks(name, given), dtype)
    y, slope, grad_params = served(engine, name, given, x)
    want_y, want_slope, *want_params = autograd(name, given, x, dtype)
    assert_close(y, want_y, dtype, f"{name}{given} value", x)
    assert_close(slope, want_slope, dtype, f"{name}{given} slope", x)
    for param, want in zip(catalog.lookup(name).tensor_params, want_params, strict=True):
        assert_close(grad_params[param], want, dtype, f"{name}{given} d/d{param} (summed)", x)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("name", "given"), [c for c in KINKED if c.values[0] != "prelu"])
def test_mpmath_references_take_torchs_side_at_kinks(
    name: str, given: dict[str, Any], dtype: str
) -> None:
    """graph_reference's slopes at the kinks (the graphs are held to them elsewhere)."""
    x = points(kinks(name, given), dtype)
    function = catalog.lookup(name)
    seen = {
        k: float(compute_dtype(dtype)(v)) if function.params_by_name[k].runtime else v
        for k, v in torch_reference.params_of(name, given).items()
    }
    _, slope = graph_reference.reference(name, x, seen)
    _, want_slope, *_ = autograd(name, given, x, dtype)
    assert_close(slope.astype(DTYPES[dtype]), want_slope, dtype, f"{name}{given} mpmath slope", x)


@pytest.mark.parametrize(("name", "given"), CASES)
def test_torch_jumps_only_at_declared_kinks(name: str, given: dict[str, Any]) -> None:
    """Autograd's slope or value jumps only in a grid interval holding a declared kink."""
    declared = kinks(name, given)
    assert all(GRID[0] < k < GRID[-1] for k in declared), declared
    y, slope, *_ = (v.astype(np.float64) for v in autograd(name, given, GRID, "float64"))
    slope_jump = np.abs(np.diff(slope)) > SLOPE_JUMP
    trapezoid = np.diff(y) - GRID_STEP * (slope[1:] + slope[:-1]) / 2
    value_jump = np.abs(trapezoid) > VALUE_JUMP
    for i in np.flatnonzero(slope_jump | value_jump):
        low, high = GRID[i], GRID[i + 1]
        assert any(low <= k <= high for k in declared), (
            f"{name}{given}: torch's {'slope' if slope_jump[i] else 'value'} jumps in "
            f"[{low}, {high}], where the catalog declares no kink (declared: {declared})"
        )
