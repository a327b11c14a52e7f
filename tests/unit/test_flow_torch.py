"""GradientFlow and Dense against PyTorch autograd, in process (the servicer, no sockets).

torch_reference.py builds the same networks from torch's own operators and lets
autograd differentiate them. torch (the CPU build, `make torch`) is not in the dev lock:
without it this module is skipped and the run ends saying so (tests/conftest.py), or
fails under ACTGRAD_REQUIRE_TORCH=1, as in CI. Float64: every statistic within a
relative 1e-9, saturated and dead as exact counts.

Where torch is the less accurate side, the comparison says so instead of loosening a
tolerance (test_where_torch_is_less_accurate shows each against 40-digit mpmath):
- torch rounds some slopes to an exact 0 by cancellation, far in a tail (sigmoid'
  = y (1 - y) beyond z ~ 37, tanh' = 1 - y^2 beyond |z| ~ 19, gelu's tanh form below
  z ~ -7), where the catalog's are tiny but not 0: torch may count more `dead` units,
  and exactly those units where mpmath's f' is not 0 are allowed to differ;
- torch's tanhshrink is x - tanh(x), which cancels for small |x| (relative error
  ~ 3 eps / x^2); a plain tanhshrink network cubes its signal down to that range after
  4 layers, so that case runs at depth 4;
- torch's celu backward rounds alpha to float32 (1.0 / alpha.toFloat() in its
  derivatives.yaml): the other alpha tested is 0.75, which float32 holds exactly.
Kinks (relu'(0) = 0, ...) follow torch's conventions in the catalog; random normal
data never lands on one, except a z row that is exactly 0 after a layer whose
outputs were all 0 (relu and friends), and there both sides agree.
"""

from __future__ import annotations

from typing import Any

import graph_reference
import numpy as np
import pytest
import torch_reference
from _context import FakeContext

from actgrad import wire
from actgrad.v1 import activation_pb2 as pb
from actgrad_server import catalog, neuron
from actgrad_server.api.activation import ActivationServicer
from actgrad_server.config import Limits
from actgrad_server.engine import Engine

torch = pytest.importorskip("torch")  # the skip already came with torch_reference
torch.set_num_threads(1)

LIMITS = Limits(max_message_bytes=64 << 20, max_elements=1 << 22, max_rank=8, max_concurrent_rpcs=4)
STATS = ("act_rms", "grad_rms", "weight_grad_rms")
COUNTS = ("saturated", "dead")
#: Every function the probe takes: elementwise, without tensor parameters.
PROBED = [f.name for f in catalog.CATALOG if f.elementwise and not f.tensor_params]
INITS = list(neuron.INITS)
#: A value other than the default for every parameter of a probed function.
OTHER_PARAMS: dict[str, dict[str, Any]] = {
    "leaky_relu": {"alpha": 0.2},
    "swish": {"beta": 1.7},
    "gelu": {"approximate": "tanh"},
    "selu": {"alpha": 1.5, "gamma": 1.2},
    "softplus": {"beta": 2.5},
    "elu": {"alpha": 0.6},
    "celu": {"alpha": 0.75},  # float32 holds it: torch's celu backward rounds alpha
    "hardsigmoid": {"alpha": 0.3, "beta": 0.4},
    "hardtanh": {"min_val": -0.5, "max_val": 2.0},
    "thresholded_relu": {"alpha": 0.1},
    "softshrink": {"lambd": 0.3},
    "hardshrink": {"lambd": 0.3},
}


#: A grpc.ServicerContext as far as the servicer uses one.
CONTEXT: Any = FakeContext()


@pytest.fixture(scope="module")
def servicer() -> ActivationServicer:
    return ActivationServicer(Engine(device="cpu"), LIMITS)


def _fill(target: Any, params: dict[str, Any]) -> None:
    for name, value in params.items():
        if isinstance(value, str):
            target[name].text = value
        elif isinstance(value, np.ndarray):
            wire.encode(value, out=target[name].tensor)
        else:
            target[name].number = float(value)


def served_flow(servicer: ActivationServicer, **fields: Any) -> dict[str, Any]:
    params = fields.pop("params", {})
    request = pb.GradientFlowRequest(**fields)
    _fill(request.params, params)
    response = servicer.GradientFlow(request, CONTEXT)
    got: dict[str, Any] = {name: np.array(getattr(response, name)) for name in (*STATS, *COUNTS)}
    got["ratio"] = response.ratio
    return got


def compare_flow(
    servicer: ActivationServicer,
    function: str,
    *,
    depth: int = 6,
    width: int = 16,
    batch: int = 8,
    init: str = "xavier_normal",
    init_std: float | None = None,
    seed: int = 0,
    residual: bool = False,
    normalize: bool = False,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The service's statistics against torch's, on the documented draw."""
    params = params or {}
    got = served_flow(
        servicer,
        function=function,
        params=params,
        depth=depth,
        width=width,
        batch=batch,
        init=init,
        init_std=init_std,
        seed=seed,
        residual=residual,
        normalize=normalize,
    )
    weights, x, g = torch_reference.draw(depth, width, batch, init, seed, init_std)
    name = catalog.lookup(function).name
    bound = torch_reference.params_of(name, params)
    want = torch_reference.flow(name, bound, weights, x, g, residual=residual, normalize=normalize)
    where = f" {function} {params} {init} seed {seed} residual={residual} normalize={normalize}"
    for stat in STATS:
        np.testing.assert_allclose(got[stat], want[stat], rtol=1e-9, atol=0, err_msg=stat + where)
    assert got["ratio"] == pytest.approx(want["ratio"], rel=1e-9, nan_ok=True), where
    # The fractions are counts over batch * width samples (saturated) or width units
    # (dead): exactly those counts.
    np.testing.assert_array_equal(got["saturated"], want["saturated"] / (batch * width), where)
    dead, rounded = _dead_units(got["dead"] * width, want, name, bound, where)
    np.testing.assert_array_equal(got["dead"], dead / width, "dead" + where)
    got["dead_rounded_by_torch"] = rounded
    return got


def _dead_units(
    ours: Any, want: dict[str, Any], name: str, params: dict[str, Any], where: str
) -> tuple[Any, int]:
    """Torch's dead-unit counts, less the units torch alone calls dead: those where
    40-digit mpmath finds f' not 0 at some sample (torch's slope rounded to 0)."""
    counts = want["dead"].copy()
    for layer, (count, theirs) in enumerate(zip(np.rint(ours), want["dead"], strict=True)):
        if count == theirs:
            continue
        z = want["z"][layer][:, want["dead_units"][layer]]
        _, exact = graph_reference.reference(name, z, params)
        counts[layer] -= int((exact != 0).any(axis=0).sum())
        assert counts[layer] < theirs, f"dead, layer {layer + 1}: {count} != {theirs}" + where
    return counts, int((want["dead"] - counts).sum())


def test_every_catalog_function_has_a_torch_expression() -> None:
    assert sorted(torch_reference.FUNCTIONS) == sorted(f.name for f in catalog.CATALOG)
    with_params = {f.name for f in catalog.CATALOG if f.params} & set(PROBED)
    assert sorted(OTHER_PARAMS) == sorted(with_params)


@pytest.mark.parametrize("init", INITS)
def test_the_servers_draw_is_the_documented_recipe(init: str) -> None:
    init_std = 0.3 if init == "normal" else None
    for seed, (depth, width, batch) in enumerate([(1, 3, 2), (6, 16, 8), (4, 5, 11)]):
        served = neuron.flow_inputs(
            depth=depth, width=width, batch=batch, init=init, init_std=init_std, seed=seed
        )
        weights, x, g = torch_reference.draw(depth, width, batch, init, seed, init_std)
        assert len(served.weights) == depth
        for got, want in zip(served.weights, weights, strict=True):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(served.x, x)
        np.testing.assert_array_equal(served.g, g)


@pytest.mark.parametrize(
    ("residual", "normalize"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["plain", "residual", "normalize", "residual+normalize"],
)
@pytest.mark.parametrize("function", PROBED)
def test_float64_matches_torch_for_every_init(
    servicer: ActivationServicer, function: str, residual: bool, normalize: bool
) -> None:
    # A plain tanhshrink network reaches |z| ~ 1e-5 by layer 5, where torch's x - tanh(x)
    # has lost 6 digits (see test_where_torch_is_less_accurate).
    depth = 4 if function == "tanhshrink" and not (residual or normalize) else 6
    for seed, init in enumerate(INITS):
        init_std = 0.3 if init == "normal" else None
        compare_flow(
            servicer,
            function,
            depth=depth,
            init=init,
            init_std=init_std,
            seed=seed,
            residual=residual,
            normalize=normalize,
        )


@pytest.mark.parametrize("function", sorted(OTHER_PARAMS))
def test_other_parameter_values(servicer: ActivationServicer, function: str) -> None:
    for seed, options in enumerate([{}, {"residual": True}, {"normalize": True}]):
        compare_flow(
            servicer,
            function,
            init="he_uniform",
            seed=seed,
            params=OTHER_PARAMS[function],
            **options,
        )


@pytest.mark.parametrize(
    ("function", "sizes", "options"),
    [
        ("tanh", (1, 3, 2), {}),
        ("relu", (12, 8, 32), {"init": "he_normal"}),
        ("gelu", (4, 32, 3), {"normalize": True}),
        ("selu", (9, 6, 16), {"init": "lecun_normal", "residual": True}),
        ("silu", (5, 10, 4), {"init": "xavier_uniform"}),
    ],
)
def test_other_sizes(
    servicer: ActivationServicer,
    function: str,
    sizes: tuple[int, int, int],
    options: dict[str, Any],
) -> None:
    depth, width, batch = sizes
    compare_flow(servicer, function, depth=depth, width=width, batch=batch, seed=5, **options)


def test_dead_units_and_saturation_are_counted_alike(servicer: ActivationServicer) -> None:
    # relu under a small init: whole units die; tanh under a large one: saturates.
    dead = compare_flow(servicer, "relu", init="normal", init_std=0.15, seed=2)
    assert dead["dead"].max() > 0
    saturated = compare_flow(servicer, "tanh", init="normal", init_std=1.5, seed=2)
    assert saturated["saturated"].max() > 0.1


@pytest.mark.parametrize(
    ("function", "params", "z"),
    [
        ("sigmoid", {}, 40.0),  # torch's slope y (1 - y) is 0
        ("gelu", {"approximate": "tanh"}, -7.5),  # 0.5 (1 + tanh(...)) is 0
        ("tanhshrink", {}, 1e-5),  # torch's value x - tanh(x) cancels
        ("celu", {"alpha": 0.7}, -3.0),  # torch's slope uses float32(alpha)
    ],
)
def test_where_torch_is_less_accurate(function: str, params: dict[str, Any], z: float) -> None:
    bound = torch_reference.params_of(function, params)
    exact_value, exact_slope = graph_reference.reference(function, np.array([z]), bound)
    leaf = torch.tensor([z], dtype=torch.float64, requires_grad=True)
    value = torch_reference.FUNCTIONS[function](leaf, bound)
    (slope,) = torch.autograd.grad(value.sum(), leaf)
    torch_error = max(
        abs(float(value.detach()) / exact_value[0] - 1), abs(float(slope) / exact_slope[0] - 1)
    )
    assert torch_error > 1e-9
    call = catalog.bind(
        catalog.lookup(function), params, x_shape=(1,), x_dtype=np.dtype(np.float64)
    )
    ours = Engine(device="cpu").gradient(call, np.array([z]), np.ones(1), with_output=True)
    assert ours.output is not None
    np.testing.assert_allclose(ours.output, exact_value, rtol=1e-14)
    np.testing.assert_allclose(ours.grad_input, exact_slope, rtol=1e-14)


def test_float32_is_close_to_torch_float64(servicer: ActivationServicer) -> None:
    got = served_flow(
        servicer,
        function="tanh",
        depth=5,
        width=16,
        batch=8,
        init="xavier_normal",
        dtype=wire.dtype_info("float32").wire,
    )
    weights, x, g = torch_reference.draw(5, 16, 8, "xavier_normal", 0, None)
    want = torch_reference.flow("tanh", {}, weights, x, g, residual=False, normalize=False)
    for stat in STATS:
        np.testing.assert_allclose(got[stat], want[stat], rtol=1e-4, err_msg=stat)


# The figures at depth 30, width 256, batch 128 (seed 0), and their ratios.
HEADLINE = [
    ("sigmoid", "xavier_normal", {}, (1e-21, 1e-17)),
    ("relu", "he_normal", {}, (0.5, 2.0)),
    ("sigmoid", "xavier_normal", {"residual": True}, (0.5, 2.0)),
    ("sigmoid", "xavier_normal", {"normalize": True}, (0.2, 0.8)),
]


@pytest.mark.slow
@pytest.mark.parametrize(("function", "init", "options", "bounds"), HEADLINE)
def test_the_headline_results_at_depth_30(
    servicer: ActivationServicer,
    function: str,
    init: str,
    options: dict[str, Any],
    bounds: tuple[float, float],
) -> None:
    got = compare_flow(servicer, function, depth=30, width=256, batch=128, init=init, **options)
    low, high = bounds
    assert low < got["ratio"] < high
    # The residual network's activations grow to where torch rounds sigmoid' to 0 (z > 37)
    # for every sample of a few units: torch alone counts them dead.
    assert (got["dead_rounded_by_torch"] > 0) == options.get("residual", False)


# Dense: f(x . W^T + b) and its VJP, in float64 and float32.
DENSE_PARAMS: dict[str, dict[str, Any]] = {
    "prelu": {"slope": np.array([0.2, -0.1, 0.3, 0.05])},
    "softmax": {"temperature": 0.7},
    **OTHER_PARAMS,
}
FIELDS = ("output", "net_output", "grad_input", "grad_weight", "grad_bias")


def served_dense(
    servicer: ActivationServicer,
    activation: str | None,
    params: dict[str, Any],
    x: Any,
    weight: Any,
    bias: Any,
    grad_output: Any,
) -> dict[str, Any]:
    request = pb.DenseRequest(
        activation=activation or "", gradient=True, return_output=True, return_net_output=True
    )
    for name, value in (("input", x), ("weight", weight), ("bias", bias)):
        wire.encode(value, out=getattr(request, name))
    wire.encode(grad_output, out=request.grad_output)
    _fill(request.params, params)
    response = servicer.Dense(request, CONTEXT)
    got: dict[str, Any] = {name: wire.decode(getattr(response, name)) for name in FIELDS}
    got["grad_params"] = {n: wire.decode(t) for n, t in response.grad_params.items()}
    return got


def compare_dense(
    servicer: ActivationServicer,
    activation: str | None,
    params: dict[str, Any],
    shape: tuple[int, ...],
    dtype: Any,
    rtol: float,
    seed: int = 0,
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal((4, shape[-1])).astype(dtype)
    bias = rng.standard_normal(4).astype(dtype)
    grad_output = rng.standard_normal((*shape[:-1], 4)).astype(dtype)
    params = {n: v.astype(dtype) if isinstance(v, np.ndarray) else v for n, v in params.items()}
    got = served_dense(servicer, activation, params, x, weight, bias, grad_output)
    bound = {} if activation is None else torch_reference.params_of(activation, params)
    want = torch_reference.dense(activation, bound, x, weight, bias, grad_output)
    pairs = [(name, got[name], want[name]) for name in FIELDS]
    assert sorted(got["grad_params"]) == sorted(want["grad_params"])
    pairs += [(name, got["grad_params"][name], g) for name, g in want["grad_params"].items()]
    for name, ours, theirs in pairs:
        assert ours.dtype == theirs.dtype == np.dtype(dtype), name
        assert ours.shape == theirs.shape, name
        # And absolute at rtol times the tensor's largest element: an element that
        # cancels to near 0 keeps only the absolute precision of the terms it came from.
        scale = float(np.abs(theirs).max())
        np.testing.assert_allclose(
            ours, theirs, rtol=rtol, atol=rtol * scale, err_msg=f"{activation} {name}"
        )


DENSE_CASES = [None, *(f.name for f in catalog.CATALOG)]


@pytest.mark.parametrize("activation", DENSE_CASES, ids=str)
def test_dense_float64_matches_torch(servicer: ActivationServicer, activation: str | None) -> None:
    params = DENSE_PARAMS.get(activation or "", {})
    if activation != "prelu":  # its slope has no default
        compare_dense(servicer, activation, {}, (6, 5), np.float64, 1e-9, seed=1)
    compare_dense(servicer, activation, params, (7, 5), np.float64, 1e-9, seed=2)
    if activation != "prelu":  # torch's prelu weight is per channel (axis 1): 2-D only
        compare_dense(servicer, activation, params, (2, 3, 5), np.float64, 1e-9, seed=3)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "gelu", "prelu", "softmax", None])
def test_dense_float32_matches_torch(servicer: ActivationServicer, activation: str | None) -> None:
    params = DENSE_PARAMS.get(activation or "", {})
    compare_dense(servicer, activation, params, (7, 5), np.float32, 1e-5, seed=4)
