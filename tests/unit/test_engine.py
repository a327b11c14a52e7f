"""The engine: providers, the bounded session cache, dtypes, empty and 0-d inputs."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from actgrad_server import catalog
from actgrad_server.engine import Engine, resolve_providers
from actgrad_server.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
import graph_reference as ref  # type: ignore[import-not-found,unused-ignore]

BF16 = np.dtype(ml_dtypes.bfloat16)
# Away from every kink of the functions at the parameter values below.
X_OFF_KINKS = np.array([-2.3, -1.1, -0.4, -0.05, 0.15, 0.7, 1.3, 2.9])


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu", cache_size=8)


def bind(name: str, x: Any, **params: Any) -> catalog.Call:
    return catalog.bind(catalog.lookup(name), params, x_shape=x.shape, x_dtype=x.dtype)


def test_cuda_without_provider_fails_clearly() -> None:
    with pytest.raises(ConfigError, match="CUDAExecutionProvider"):
        resolve_providers("cuda", available=["CPUExecutionProvider"])


def test_auto_picks_cuda_only_when_offered() -> None:
    assert resolve_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert resolve_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]


def test_runtime_parameters_share_one_session() -> None:
    engine = Engine(device="cpu", cache_size=4)
    x = np.linspace(-2, 2, 9, dtype=np.float32)
    for alpha in np.linspace(0.01, 0.5, 20):
        y = engine.activate(bind("leaky_relu", x, alpha=float(alpha)), x)
        np.testing.assert_allclose(y, np.where(x >= 0, x, np.float32(alpha) * x), rtol=1e-7)
    assert engine.cache_info().builds == 1


def _runtime_values(function: catalog.Function, k: int) -> dict[str, float]:
    """The k-th set of values other than the defaults (valid: temperature > 0, min_val <
    max_val), e.g. a leaky_relu alpha of 0.01 -> 0.115, 0.155."""
    return {
        p.name: round(float(p.default) * (1.5 if k == 0 else 0.5) + 0.1 + 0.04 * k, 6)
        for p in function.params
        if p.runtime
    }


def _check_reference(function: catalog.Function, values: dict[str, float], y: Any, dx: Any) -> None:
    """float64 against mpmath, with test_graphs' float64 bound."""
    x = X_OFF_KINKS.reshape(2, 4)
    g = np.linspace(-1.0, 2.0, 8).reshape(2, 4)
    if function is catalog.SOFTMAX:
        f, vjp = ref.softmax_reference(x, g, 1, values["temperature"], False)
    else:
        f, d = ref.reference(function.name, x, values)
        vjp = d * g
    for got, want in ((y, f), (dx, vjp)):
        bound = 1e-12 * np.abs(want) + 1e-15 * np.maximum(1.0, np.abs(x))
        assert np.all(np.abs(got - want) <= bound), (function.name, values)


@pytest.mark.parametrize(
    "function", [f for f in catalog.CATALOG if f.runtime_params], ids=lambda f: f.name
)
def test_new_runtime_values_build_nothing_and_match_references(function: catalog.Function) -> None:
    """A second value of every scalar parameter reuses the sessions the first built:
    activate, gradient, dense (forward and gradient) and the gradient-flow probe."""
    engine = Engine(device="cpu")
    x = X_OFF_KINKS.reshape(2, 4)
    g = np.linspace(-1.0, 2.0, 8).reshape(2, 4)
    weight = np.linspace(-0.5, 0.5, 12).reshape(3, 4)
    rng = np.random.default_rng(0)
    flow_weights = [rng.normal(0, 0.5, (4, 4)) for _ in range(2)]
    builds = []
    for k in range(2):
        values = _runtime_values(function, k)
        call = bind(function.name, x, **values)
        y = engine.activate(call, x)
        dx = engine.gradient(call, x, g).grad_input
        _check_reference(function, values, y, dx)
        net = bind(function.name, np.empty((2, 3)), **values)
        dense = engine.dense(net, x, weight, None)
        dense_grad = engine.dense(net, x, weight, None, gradient=True)
        # The dense graph applies the function's own bodies to z = x . weight^T.
        z = x @ weight.T
        np.testing.assert_allclose(dense.output, engine.activate(net, z), rtol=1e-12)
        np.testing.assert_allclose(
            dense_grad.grad_bias, engine.gradient(net, z, None).grad_input.sum(axis=0), rtol=1e-12
        )
        if function.elementwise:  # the probe's functions
            engine.gradient_flow(call, flow_weights, x, g, residual=False, normalize=False)
        builds.append(engine.cache_info().builds)
    assert builds[1] == builds[0] > 0


def test_warm_up_leaves_nothing_to_build_at_its_dtype_and_rank() -> None:
    """After warm-up, a rank-2 float32 call builds no session, whatever its runtime
    values and its structural ones (each choice of a string, both bools, each axis)."""
    engine = Engine(device="cpu")
    engine.warm_up()
    warm = engine.cache_info().builds
    x = X_OFF_KINKS.astype(np.float32).reshape(4, 2)
    for function in catalog.CATALOG:
        options: list[list[tuple[str, Any]]] = []
        for p in function.params:
            if p.kind is catalog.ParamKind.STRING:
                options.append([(p.name, choice) for choice in p.choices])
            elif p.kind is catalog.ParamKind.BOOL:
                options.append([(p.name, False), (p.name, True)])
            elif p.name == function.axis_param:
                options.append([(p.name, axis) for axis in (0, 1, -1)])
        for combination in itertools.product(*options):
            params = {
                **function.sample_params(x.dtype),
                **_runtime_values(function, 1),
                **dict(combination),
            }
            call = bind(function.name, x, **params)
            engine.activate(call, x)
            engine.gradient(call, x, None)
    assert engine.cache_info().builds == warm


def test_cache_is_bounded() -> None:
    engine = Engine(device="cpu", cache_size=3)
    x = np.ones((2, 2, 2, 2, 2), dtype=np.float32)
    for axis in range(5):
        engine.activate(bind("softmax", x, axis=axis), x)
    info = engine.cache_info()
    assert info.size == 3 and info.builds == 5


def test_bfloat16_runs_through_float32_and_rounds(engine: Engine) -> None:
    x = np.linspace(-4, 4, 33).astype(BF16)
    y = engine.activate(bind("sigmoid", x), x)
    assert y.dtype == BF16
    exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_array_equal(y, exact.astype(np.float32).astype(BF16))


def test_empty_tensors_short_circuit(engine: Engine) -> None:
    x = np.empty((3, 0, 5), dtype=np.float16)
    assert engine.activate(bind("softmax", x, axis=1), x).shape == (3, 0, 5)
    slope = np.ones((5,), dtype=np.float16)
    result = engine.gradient(bind("prelu", x, slope=slope), x, None, with_output=True)
    assert result.grad_input.shape == (3, 0, 5) and result.grad_input.dtype == np.float16
    np.testing.assert_array_equal(result.grad_params["slope"], np.zeros(5, np.float16))
    assert result.output is not None and result.output.shape == (3, 0, 5)


def test_scalar_softmax(engine: Engine) -> None:
    x = np.array(3.0)
    assert engine.activate(bind("softmax", x), x).shape == ()
    assert float(engine.activate(bind("softmax", x), x)) == 1.0
    assert float(engine.gradient(bind("softmax", x), x, None).grad_input) == 0.0


def test_warm_up_builds_every_function(engine: Engine) -> None:
    fresh = Engine(device="cpu", cache_size=64)
    fresh.warm_up()
    variants = sum(len(f.structural_variants(2)) for f in catalog.CATALOG)
    assert fresh.cache_info().builds == 2 * variants > 2 * len(catalog.CATALOG)
    assert fresh.providers == ["CPUExecutionProvider"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, BF16], ids=str)
@pytest.mark.parametrize(
    ("name", "shape", "params"),
    [
        ("gelu", (37, 53), {}),
        ("swish", (2001,), {"beta": 1.5}),
        ("softmax", (6, 50, 7), {"axis": 1, "temperature": 0.5}),
        ("softmax", (40, 30), {"axis": 0, "log": True}),
        ("prelu", (12, 5, 9), {"slope": "per-channel"}),
        ("prelu", (12, 5, 9), {"slope": "full"}),
    ],
)
def test_chunked_evaluation_matches_whole(
    dtype: Any, name: str, shape: tuple[int, ...], params: dict[str, Any]
) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(scale=3, size=shape).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)
    if "slope" in params:
        slope_shape = (5, 1) if params["slope"] == "per-channel" else shape
        params = {"slope": rng.uniform(0.1, 0.4, size=slope_shape).astype(dtype)}
    whole = Engine(device="cpu")
    chunked = Engine(device="cpu", chunk_elements=64)
    call = bind(name, x, **params)

    def same(got: Any, want: Any) -> None:
        if name == "softmax":
            # onnxruntime's reductions may sum in another order for another shape.
            eps = float(np.finfo(np.float32 if dtype == BF16 else dtype).eps)
            np.testing.assert_allclose(
                got.astype(np.float64), want.astype(np.float64), rtol=4 * eps, atol=4 * eps
            )
        else:
            np.testing.assert_array_equal(got, want)

    same(chunked.activate(call, x), whole.activate(call, x))
    a = whole.gradient(call, x, g, with_output=True)
    b = chunked.gradient(call, x, g, with_output=True)
    same(b.grad_input, a.grad_input)
    same(b.output, a.output)
    assert b.grad_input.dtype == np.dtype(dtype)
    for key, value in a.grad_params.items():
        # Chunked parameter gradients are summed in float64, so they may differ from
        # the one-pass reduction by the rounding of the accumulation.
        assert b.grad_params[key].dtype == value.dtype
        tol = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-5}.get(np.dtype(dtype), 2e-2)
        np.testing.assert_allclose(
            b.grad_params[key].astype(np.float64), value.astype(np.float64), rtol=tol, atol=tol
        )
