"""An independent float64 numpy implementation of the gradient-flow probe.

Forward and backward written by hand (each activation's derivative, the
standardisation's VJP), and checked against central finite differences of its own loss
(tests/unit/test_flow.py); PyTorch autograd is the second reference
(torch_reference.py). The weights are drawn exactly as the contract says.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["ACTIVATIONS", "draw", "flow_reference", "loss"]

Array = np.ndarray[Any, Any]
_ERF = np.vectorize(math.erf)
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _sigmoid(z: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-z))  # type: ignore[no-any-return]


def _phi(z: Array) -> Array:
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)  # type: ignore[no-any-return]


def _sigmoid_slope(z: Array) -> Array:
    # s (1 - s) rounds to 0 once 1 - s does (z > 37), but `dead` asks whether f' is
    # exactly 0: the same value written without cancellation.
    e = np.exp(-np.abs(z))
    return e / (1.0 + e) ** 2  # type: ignore[no-any-return]


# name -> (f, f'), with the kinks as PyTorch autograd takes them (relu'(0) = 0); each f'
# written without cancellation, so that an exact 0 is a true underflow.
ACTIVATIONS: dict[str, tuple[Callable[[Array], Array], Callable[[Array], Array]]] = {
    "sigmoid": (_sigmoid, _sigmoid_slope),
    "tanh": (
        np.tanh,
        lambda z: 4.0 * np.exp(-2.0 * np.abs(z)) / (1.0 + np.exp(-2.0 * np.abs(z))) ** 2,
    ),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(np.float64)),
    "leaky_relu": (
        lambda z: np.where(z > 0, z, 0.01 * z),
        lambda z: np.where(z > 0, 1.0, 0.01),
    ),
    "selu": (
        lambda z: _SELU_SCALE * np.where(z > 0, z, _SELU_ALPHA * np.expm1(np.minimum(z, 0.0))),
        lambda z: _SELU_SCALE * np.where(z > 0, 1.0, _SELU_ALPHA * np.exp(np.minimum(z, 0.0))),
    ),
    "gelu": (
        lambda z: 0.5 * z * (1.0 + _ERF(z / math.sqrt(2.0))),
        lambda z: 0.5 * (1.0 + _ERF(z / math.sqrt(2.0))) + z * _phi(z),
    ),
}

_STD: dict[str, Callable[[int], float]] = {
    "xavier": lambda n: math.sqrt(2.0 / (n + n)),
    "he": lambda n: math.sqrt(2.0 / n),
    "lecun": lambda n: math.sqrt(1.0 / n),
}


def draw(
    depth: int, width: int, batch: int, init: str, seed: int, init_std: float | None = None
) -> tuple[list[Array], Array, Array]:
    """W_1..W_L, then x, then g, from numpy.random.default_rng(seed)."""
    family, _, kind = init.partition("_")
    std = float(init_std) if init == "normal" else _STD[family](width)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    weights = []
    for _ in range(depth):
        if kind == "uniform":
            a = math.sqrt(3.0) * std
            weights.append(rng.uniform(-a, a, (width, width)))
        else:
            weights.append(rng.standard_normal((width, width)) * std)
    x = rng.standard_normal((batch, width))
    g = rng.standard_normal((batch, width))
    return weights, x, g


def _forward(
    f: Callable[[Array], Array], weights: list[Array], x: Array, residual: bool, normalize: bool
) -> tuple[list[Array], list[Array], list[Array | None]]:
    hs, zs, inverses = [x], [], []
    for w in weights:
        u = hs[-1] @ w.T
        inverse = None
        if normalize:
            centred = u - u.mean(axis=0)
            inverse = 1.0 / np.sqrt((centred**2).mean(axis=0) + 1e-5)
            u = centred * inverse
        a = f(u)
        hs.append(a + hs[-1] if residual else a)
        zs.append(u)
        inverses.append(inverse)
    return hs, zs, inverses


def loss(
    function: str,
    weights: list[Array],
    x: Array,
    g: Array,
    *,
    residual: bool = False,
    normalize: bool = False,
) -> float:
    """sum(h_L * g): what the finite-difference check differentiates."""
    hs, _, _ = _forward(ACTIVATIONS[function][0], weights, x, residual, normalize)
    return float((hs[-1] * g).sum())


def flow_reference(
    function: str,
    weights: list[Array],
    x: Array,
    g: Array,
    *,
    residual: bool = False,
    normalize: bool = False,
) -> dict[str, Any]:
    """The statistics of the contract, and the raw gradients (dW_l) for checking."""
    f, df = ACTIVATIONS[function]
    hs, zs, inverses = _forward(f, weights, x, residual, normalize)
    slopes = [df(z) for z in zs]
    grads = [g]
    weight_grads: list[Array] = []
    dh = g
    for layer in reversed(range(len(weights))):
        dz = dh * slopes[layer]
        inverse = inverses[layer]
        if inverse is None:
            du = dz
        else:
            z = zs[layer]
            du = inverse * (dz - dz.mean(axis=0) - z * (dz * z).mean(axis=0))
        weight_grads.insert(0, du.T @ hs[layer])
        dh = du @ weights[layer] + (dh if residual else 0.0)
        grads.insert(0, dh)

    def rms(a: Array) -> float:
        return float(np.sqrt(np.mean(a * a)))

    grad_rms = np.array([rms(d) for d in grads])
    return {
        "act_rms": np.array([rms(h) for h in hs]),
        "grad_rms": grad_rms,
        "weight_grad_rms": np.array([rms(d) for d in weight_grads]),
        "saturated": np.array([np.mean(np.abs(s) < 1e-3) for s in slopes]),
        "dead": np.array([np.mean(np.all(s == 0, axis=0)) for s in slopes]),
        "ratio": grad_rms[0] / grad_rms[-1],
        "weight_grads": weight_grads,
        "input_grad": grads[0],
    }
