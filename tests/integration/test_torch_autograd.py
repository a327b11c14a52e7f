"""Client.gradient_flow and Client.dense_vjp against PyTorch autograd, through both clients.

The torch side is tests/unit/torch_reference.py (the same networks from torch's own
operators); tests/unit/test_flow_torch.py covers every function, init and option in
process, and says where torch is the less accurate side. Without torch (`make torch`)
this module is skipped, loudly (tests/conftest.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
import torch_reference  # type: ignore[import-not-found,unused-ignore]

torch = pytest.importorskip("torch")  # the skip already came with torch_reference
torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("function", "init", "options", "params"),
    [
        ("gelu", "he_uniform", {"residual": True, "normalize": True, "seed": 3}, {}),
        ("silu", "lecun_normal", {"seed": 4}, {"beta": 1.7}),
    ],
)
def test_gradient_flow_matches_torch(
    client: Any, function: str, init: str, options: dict[str, Any], params: dict[str, Any]
) -> None:
    depth, width, batch = 8, 16, 12
    got = client.gradient_flow(
        function, depth=depth, width=width, batch=batch, init=init, **options, **params
    )
    weights, x, g = torch_reference.draw(depth, width, batch, init, options["seed"], None)
    name = "swish" if function == "silu" else function
    want = torch_reference.flow(
        name,
        torch_reference.params_of(name, params),
        weights,
        x,
        g,
        residual=options.get("residual", False),
        normalize=options.get("normalize", False),
    )
    for stat in ("act_rms", "grad_rms", "weight_grad_rms"):
        np.testing.assert_allclose(getattr(got, stat), want[stat], rtol=1e-9, atol=0, err_msg=stat)
    assert got.ratio == pytest.approx(want["ratio"], rel=1e-9)
    np.testing.assert_array_equal(got.saturated, want["saturated"] / (batch * width))
    np.testing.assert_array_equal(got.dead, want["dead"] / width)


@pytest.mark.parametrize(
    ("activation", "params", "shape", "dtype", "rtol"),
    [
        ("prelu", {"slope": np.array([0.2, -0.1, 0.3, 0.05])}, (6, 5), np.float64, 1e-9),
        ("tanh", {}, (2, 3, 5), np.float64, 1e-9),
        ("gelu", {"approximate": "tanh"}, (7, 5), np.float32, 1e-5),
    ],
)
def test_dense_vjp_matches_torch(
    client: Any,
    activation: str,
    params: dict[str, Any],
    shape: tuple[int, ...],
    dtype: Any,
    rtol: float,
) -> None:
    rng = np.random.default_rng(9)
    x, weight, bias, grad_output = (
        rng.standard_normal(s).astype(dtype) for s in (shape, (4, shape[-1]), 4, (*shape[:-1], 4))
    )
    params = {n: v.astype(dtype) if isinstance(v, np.ndarray) else v for n, v in params.items()}
    got = client.dense_vjp(
        x,
        weight,
        bias,
        activation=activation,
        grad_output=grad_output,
        return_output=True,
        return_net_output=True,
        **params,
    )
    bound = torch_reference.params_of(activation, params)
    want = torch_reference.dense(activation, bound, x, weight, bias, grad_output)
    pairs = [
        (name, getattr(got, name), want[name])
        for name in ("output", "net_output", "grad_input", "grad_weight", "grad_bias")
    ]
    assert sorted(got.grad_params) == sorted(want["grad_params"])
    pairs += [(name, got.grad_params[name], d) for name, d in want["grad_params"].items()]
    for name, ours, theirs in pairs:
        assert ours.dtype == theirs.dtype == np.dtype(dtype), name
        assert ours.shape == theirs.shape, name
        scale = float(np.abs(theirs).max())
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * scale, err_msg=name)
