"""PyTorch autograd as the reference of GradientFlow and Dense: the same networks built
from torch's own operators (torch.nn.functional's activations, F.linear, F.batch_norm)
and differentiated by autograd, in the weights' dtype.

Each catalog function's torch expression takes the bound parameter values (the
catalog's defaults filled in). Where the catalog's parameters mean what torch's do, the
torch function is called with them; where they do not (hardsigmoid's alpha and beta,
swish's beta, softplus without a threshold), the expression is written out. Kinks follow
torch's autograd, which the catalog's gradient notes claim to match (relu'(0) = 0,
elu'(0) = alpha, ...); random normal data never lands on one, except where a whole row
of the previous layer is exactly 0 (relu and friends), and then both sides say the same.

Used by tests/unit/test_flow_torch.py (in process) and
tests/integration/test_torch_autograd.py (through the SDK). torch is not in the dev
lock (its CPU build is not on PyPI; `make torch` installs it): without it, importing
this module skips the importing test module, and the run ends saying so
(tests/conftest.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from actgrad_server import catalog

torch = pytest.importorskip("torch")
F = torch.nn.functional  # torch's own spelling

__all__ = ["EPSILON", "FUNCTIONS", "SATURATION", "dense", "draw", "flow", "params_of"]

Array = np.ndarray[Any, Any]
Tensor = torch.Tensor
#: The standardisation's epsilon and the saturation threshold of the contract.
EPSILON = 1e-5
SATURATION = 1e-3


def _selu(z: Tensor, p: Mapping[str, Any]) -> Tensor:
    defaults = params_of("selu")
    if p["alpha"] == defaults["alpha"] and p["gamma"] == defaults["gamma"]:
        y: Tensor = F.selu(z)  # torch's own constants: the catalog's defaults must be them
    else:
        y = F.elu(z, p["alpha"]) * p["gamma"]
    return y


def _swish(z: Tensor, p: Mapping[str, Any]) -> Tensor:
    return F.silu(z) if p["beta"] == 1.0 else z * torch.sigmoid(p["beta"] * z)


def _softmax(z: Tensor, p: Mapping[str, Any]) -> Tensor:
    scaled = z / p["temperature"]
    return F.log_softmax(scaled, p["axis"]) if p["log"] else F.softmax(scaled, p["axis"])


# name -> f(z, bound parameters), in torch.
FUNCTIONS: dict[str, Callable[[Tensor, Mapping[str, Any]], Tensor]] = {
    "sigmoid": lambda z, p: torch.sigmoid(z),
    "tanh": lambda z, p: torch.tanh(z),
    "relu": lambda z, p: F.relu(z),
    "leaky_relu": lambda z, p: F.leaky_relu(z, p["alpha"]),
    # torch's weight is per channel (axis 1); the tests pass [out] slopes for a 2-D z.
    "prelu": lambda z, p: F.prelu(z, torch.as_tensor(p["slope"])),
    "softmax": _softmax,
    "swish": _swish,
    "gelu": lambda z, p: F.gelu(z, approximate=p["approximate"]),
    "selu": _selu,
    "xtanh": lambda z, p: z * torch.tanh(z),
    "xsin": lambda z, p: z * torch.sin(z),
    # The catalog has no threshold switch (torch's default 20 returns x above it).
    "softplus": lambda z, p: F.softplus(z, beta=p["beta"], threshold=math.inf),
    "elu": lambda z, p: F.elu(z, p["alpha"]),
    "softsign": lambda z, p: F.softsign(z),
    "mish": lambda z, p: F.mish(z),
    "logsigmoid": lambda z, p: F.logsigmoid(z),
    # ONNX's alpha and beta (torch's F.hardsigmoid is alpha = 1/6): clipped with
    # hardtanh, whose gradient is 0 at both ends as F.hardsigmoid's is.
    "hardsigmoid": lambda z, p: F.hardtanh(p["alpha"] * z + p["beta"], 0.0, 1.0),
    "hardswish": lambda z, p: F.hardswish(z),
    "relu6": lambda z, p: F.relu6(z),
    "hardtanh": lambda z, p: F.hardtanh(z, p["min_val"], p["max_val"]),
    "celu": lambda z, p: F.celu(z, p["alpha"]),
    "thresholded_relu": lambda z, p: F.threshold(z, p["alpha"], 0.0),
    "softshrink": lambda z, p: F.softshrink(z, p["lambd"]),
    "hardshrink": lambda z, p: F.hardshrink(z, p["lambd"]),
    "tanhshrink": lambda z, p: F.tanhshrink(z),
}


def params_of(name: str, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The catalog's defaults, overridden by `given`."""
    function = catalog.lookup(name)
    return {p.name: p.default for p in function.params} | dict(given or {})


_STD: dict[str, Callable[[int], float]] = {
    "xavier": lambda n: math.sqrt(2.0 / (n + n)),
    "he": lambda n: math.sqrt(2.0 / n),
    "lecun": lambda n: math.sqrt(1.0 / n),
}


def draw(
    depth: int, width: int, batch: int, init: str, seed: int, init_std: float | None
) -> tuple[list[Array], Array, Array]:
    """docs/vanishing-gradients.md's recipe, from scratch: W_1..W_L, then x, then g."""
    std = init_std if init == "normal" else _STD[init.split("_")[0]](width)
    assert std is not None
    rng = np.random.default_rng(seed)
    if init.endswith("_uniform"):
        a = math.sqrt(3.0) * std
        weights = [rng.uniform(-a, a, (width, width)) for _ in range(depth)]
    else:
        weights = [rng.standard_normal((width, width)) * std for _ in range(depth)]
    return weights, rng.standard_normal((batch, width)), rng.standard_normal((batch, width))


def _rms(t: Tensor) -> float:
    return float(t.detach().square().mean().sqrt())


def _slope(f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """f'(z) elementwise, by autograd (the sum's upstream gradient is ones)."""
    leaf = z.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(leaf).sum(), leaf)
    return grad


def flow(
    name: str,
    params: Mapping[str, Any],
    weights: list[Array],
    x: Array,
    g: Array,
    *,
    residual: bool,
    normalize: bool,
) -> dict[str, Any]:
    """The probe's statistics by autograd; saturated and dead as integer counts.

    h_0 = x; z_l = h_{l-1} W_l^T, batch-normalised without affine (biased variance, eps
    1e-5) with `normalize`; h_l = f(z_l) (+ h_{l-1}); loss = sum(h_L * g). Also each
    layer's z and which of its units are dead, to explain a differing count.
    """

    def f(z: Tensor) -> Tensor:
        return FUNCTIONS[name](z, params)

    ws = [torch.tensor(w, requires_grad=True) for w in weights]
    hs = [torch.tensor(x, requires_grad=True)]
    zs = []
    for w in ws:
        z = hs[-1] @ w.T
        if normalize:
            z = F.batch_norm(z, None, None, training=True, eps=EPSILON)
        hs.append(f(z) + hs[-1] if residual else f(z))
        zs.append(z)
    loss = (hs[-1] * torch.tensor(g)).sum()
    # dloss/dh_l (every h_l, the input included) and dloss/dW_l in one backward pass.
    grads = torch.autograd.grad(loss, [*hs, *ws])
    slopes = [_slope(f, z) for z in zs]
    grad_rms = np.array([_rms(d) for d in grads[: len(hs)]])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = grad_rms[0] / grad_rms[-1]
    return {
        "act_rms": np.array([_rms(h) for h in hs]),
        "grad_rms": grad_rms,
        "weight_grad_rms": np.array([_rms(d) for d in grads[len(hs) :]]),
        "saturated": np.array([int((s.abs() < SATURATION).sum()) for s in slopes]),
        "dead": np.array([int((s == 0).all(dim=0).sum()) for s in slopes]),
        "ratio": ratio,
        "z": [z.detach().numpy() for z in zs],
        "dead_units": [(s == 0).all(dim=0).numpy() for s in slopes],
    }


def dense(
    name: str | None,
    params: Mapping[str, Any],
    x: Array,
    weight: Array,
    bias: Array | None,
    grad_output: Array,
) -> dict[str, Any]:
    """f(F.linear(x, weight, bias)) and its VJP by autograd, in x's dtype."""
    if bias is None:
        bias = np.zeros(weight.shape[0], x.dtype)  # the service's gradient of a zero bias
    leaves = {
        "input": torch.tensor(x, requires_grad=True),
        "weight": torch.tensor(weight, requires_grad=True),
        "bias": torch.tensor(bias, requires_grad=True),
    }
    tensors = {
        n: torch.tensor(v, requires_grad=True)
        for n, v in params.items()
        if isinstance(v, np.ndarray)
    }
    z = F.linear(leaves["input"], leaves["weight"], leaves["bias"])
    y = z if name is None else FUNCTIONS[name](z, {**params, **tensors})
    grads = torch.autograd.grad(
        y, [*leaves.values(), *tensors.values()], grad_outputs=torch.tensor(grad_output)
    )
    result: dict[str, Any] = {f"grad_{n}": d.numpy() for n, d in zip(leaves, grads, strict=False)}
    result["grad_params"] = {
        n: d.numpy() for n, d in zip(tensors, grads[len(leaves) :], strict=True)
    }
    result["output"] = y.detach().numpy()
    result["net_output"] = z.detach().numpy()
    return result
