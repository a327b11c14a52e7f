"""The gradient-flow probe on the engine, against the independent numpy reference.

The reference (flow_reference.py, float64, backprop by hand) is itself checked here
against central finite differences of its loss, so that agreement means correctness.
"""

from __future__ import annotations

from typing import Any

import flow_reference
import numpy as np
import pytest

from actgrad_server import catalog, neuron
from actgrad_server.engine import Engine
from actgrad_server.errors import InvalidArgument

STATS = ("act_rms", "grad_rms", "weight_grad_rms", "saturated", "dead")


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu")


def probe(
    engine: Engine,
    function: str,
    *,
    depth: int,
    width: int,
    batch: int,
    init: str,
    init_std: float | None = None,
    seed: int = 0,
    residual: bool = False,
    normalize: bool = False,
    dtype: Any = np.float64,
) -> dict[str, Any]:
    drawn = neuron.flow_inputs(
        depth=depth, width=width, batch=batch, init=init, init_std=init_std, seed=seed
    )
    call = catalog.bind(
        catalog.lookup(function), {}, x_shape=(batch, width), x_dtype=np.dtype(dtype)
    )
    stats = engine.gradient_flow(
        call,
        [w.astype(dtype) for w in drawn.weights],
        drawn.x.astype(dtype),
        drawn.g.astype(dtype),
        residual=residual,
        normalize=normalize,
    )
    stats["ratio"] = stats["grad_rms"][0] / stats["grad_rms"][-1]
    return stats


@pytest.mark.parametrize("options", [{}, {"residual": True}, {"normalize": True}])
@pytest.mark.parametrize("function", ["tanh", "gelu", "selu"])
def test_the_reference_backprop_matches_finite_differences(
    function: str, options: dict[str, bool]
) -> None:
    weights, x, g = flow_reference.draw(3, 4, 5, "xavier_normal", seed=3)
    got = flow_reference.flow_reference(function, weights, x, g, **options)
    step = 1e-6
    for layer, w in enumerate(weights):
        numeric = np.zeros_like(w)
        for index in np.ndindex(w.shape):
            shifted = [v.copy() for v in weights]
            shifted[layer][index] += step
            up = flow_reference.loss(function, shifted, x, g, **options)
            shifted[layer][index] -= 2 * step
            down = flow_reference.loss(function, shifted, x, g, **options)
            numeric[index] = (up - down) / (2 * step)
        np.testing.assert_allclose(got["weight_grads"][layer], numeric, rtol=1e-6, atol=1e-8)


def test_the_draws_follow_the_documented_order() -> None:
    for init in neuron.INITS:
        std = 0.5 if init == "normal" else None
        drawn = neuron.flow_inputs(depth=3, width=4, batch=2, init=init, init_std=std, seed=7)
        weights, x, g = flow_reference.draw(3, 4, 2, init, seed=7, init_std=std)
        for got, want in zip(drawn.weights, weights, strict=True):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(drawn.x, x)
        np.testing.assert_array_equal(drawn.g, g)


@pytest.mark.parametrize(
    ("function", "init", "options"),
    [
        ("sigmoid", "xavier_normal", {}),
        ("tanh", "xavier_uniform", {"residual": True}),
        ("relu", "he_uniform", {"normalize": True}),
        ("relu", "he_normal", {"residual": True, "normalize": True}),
        ("leaky_relu", "lecun_normal", {}),
        ("selu", "lecun_normal", {"normalize": True}),
        ("gelu", "normal", {"init_std": 0.2}),
    ],
)
def test_float64_matches_the_reference_to_1e_9(
    engine: Engine, function: str, init: str, options: dict[str, Any]
) -> None:
    init_std = options.pop("init_std", None)
    got = probe(
        engine, function, depth=6, width=16, batch=8, init=init, init_std=init_std, **options
    )
    weights, x, g = flow_reference.draw(6, 16, 8, init, seed=0, init_std=init_std)
    want = flow_reference.flow_reference(function, weights, x, g, **options)
    for name in (*STATS, "ratio"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=0, err_msg=name)


# The figures at depth 30, width 256, batch 128 (seed 0): (ratio low, high).
EXPECTED = [
    ("sigmoid", "xavier_normal", {}, (1e-21, 1e-17)),
    ("relu", "he_normal", {}, (0.5, 2.0)),
    ("relu", "xavier_normal", {}, (1e-6, 1e-4)),
    ("selu", "lecun_normal", {}, (0.1, 10.0)),
    ("tanh", "normal", {"init_std": 0.01}, (1e-26, 1e-22)),
    ("sigmoid", "xavier_normal", {"residual": True}, (0.5, 2.0)),
    ("sigmoid", "xavier_normal", {"normalize": True}, (0.2, 0.8)),
]


@pytest.mark.parametrize(("function", "init", "options", "bounds"), EXPECTED)
def test_the_remedies_at_depth_30(
    engine: Engine, function: str, init: str, options: dict[str, Any], bounds: tuple[float, float]
) -> None:
    got = probe(engine, function, depth=30, width=256, batch=128, init=init, **options)
    low, high = bounds
    assert low < got["ratio"] < high
    weights, x, g = flow_reference.draw(30, 256, 128, init, 0, options.get("init_std"))
    want = flow_reference.flow_reference(
        function,
        weights,
        x,
        g,
        residual=options.get("residual", False),
        normalize=options.get("normalize", False),
    )
    for name in (*STATS, "ratio"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=0, err_msg=name)


def test_float32_is_close(engine: Engine) -> None:
    got = probe(engine, "tanh", depth=5, width=16, batch=8, init="xavier_normal", dtype=np.float32)
    want = probe(engine, "tanh", depth=5, width=16, batch=8, init="xavier_normal")
    for name in STATS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, err_msg=name)


def test_one_session_per_depth_and_options(engine: Engine) -> None:
    probe(engine, "softsign", depth=4, width=8, batch=4, init="he_normal")
    builds = engine.cache_info().builds
    probe(engine, "softsign", depth=4, width=32, batch=16, init="lecun_normal", seed=1)
    assert engine.cache_info().builds == builds
    probe(engine, "softsign", depth=4, width=8, batch=4, init="he_normal", residual=True)
    assert engine.cache_info().builds == builds + 1


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"depth": 0}, "depth: must be >= 1"),
        ({"width": -1}, "width: must be >= 1"),
        ({"batch": 0}, "batch: must be >= 1"),
        ({"depth": neuron.MAX_DEPTH + 1}, "depth: must be <="),
        ({"depth": 100, "width": 100, "batch": 100}, "exceeds the limit"),
        ({"init": "glorot"}, "init: must be one of"),
        ({"init": "normal"}, "init_std: init 'normal' needs"),
        ({"init": "normal", "init_std": -1.0}, "init_std: init 'normal' needs"),
        ({"init_std": 0.1}, "init_std: is only for init 'normal'"),
    ],
)
def test_check_flow_names_the_field(changes: dict[str, Any], fragment: str) -> None:
    arguments: dict[str, Any] = {
        "depth": 3,
        "width": 4,
        "batch": 2,
        "init": "he_normal",
        "init_std": None,
        "max_elements": 100_000,
    }
    neuron.check_flow(**arguments)
    with pytest.raises(InvalidArgument, match=fragment):
        neuron.check_flow(**{**arguments, **changes})
