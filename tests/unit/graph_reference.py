"""High-precision (mpmath) references for the activation graphs.

Each reference returns (f(x), f'(x)) rounded to float64 from 40-digit arithmetic at the
exact (already dtype-rounded) x; the float64 rounding adds 2**-53 relative, far below
every tolerance tested.

`REFERENCES` has one entry per elementwise catalog function (by canonical name); each
takes x and the call's parameters by name (runtime values as the graph sees them,
structural values such as gelu's ``approximate`` as given). The tests derive their
cases from the catalog, so a function added there without a reference here fails.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import mpmath
import numpy as np
import numpy.typing as npt

DPS = 40

Mpf: TypeAlias = Any  # mpmath.mpf; mpmath has no type stubs
Params = Mapping[str, Any]
Reference = Callable[[Mpf, Params], tuple[Mpf, Mpf]]

_TANH_K = mpmath.sqrt(2 / mpmath.pi)


def _sigmoid(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    e = mpmath.exp(-x)
    return 1 / (1 + e), e / (1 + e) ** 2


def _tanh(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    return mpmath.tanh(x), mpmath.sech(x) ** 2


def _relu(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    return (x, mpmath.mpf(1)) if x > 0 else (mpmath.mpf(0), mpmath.mpf(0))


def _leaky_relu(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    alpha = mpmath.mpf(p["alpha"])
    return (x, mpmath.mpf(1)) if x > 0 else (alpha * x, alpha)


def _swish(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    beta = mpmath.mpf(p["beta"])
    v = beta * x
    e = mpmath.exp(-v)
    s = 1 / (1 + e)
    return x * s, s + v * e / (1 + e) ** 2


def _gelu(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    if p.get("approximate", "none") == "tanh":
        return _gelu_tanh(x)
    return x * mpmath.ncdf(x), mpmath.ncdf(x) + x * mpmath.npdf(x)


def _gelu_tanh(x: Mpf) -> tuple[Mpf, Mpf]:
    c = mpmath.mpf("0.044715")
    u = _TANH_K * (x + c * x**3)
    # 0.5 (1 + tanh u) = sigmoid(2u), exact and without cancellation in mpmath either way
    s = 1 / (1 + mpmath.exp(-2 * u))
    du = _TANH_K * (1 + 3 * c * x**2)
    return x * s, s + x * mpmath.sech(u) ** 2 * du / 2


def _selu(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    alpha, gamma = mpmath.mpf(p["alpha"]), mpmath.mpf(p["gamma"])
    if x > 0:
        return gamma * x, gamma
    return gamma * alpha * mpmath.expm1(x), gamma * alpha * mpmath.exp(x)


def _xtanh(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    return x * mpmath.tanh(x), mpmath.tanh(x) + x * mpmath.sech(x) ** 2


def _xsin(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    return x * mpmath.sin(x), mpmath.sin(x) + x * mpmath.cos(x)


def _softplus(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    beta = mpmath.mpf(p["beta"])
    v = beta * x
    return mpmath.log1p(mpmath.exp(v)) / beta, 1 / (1 + mpmath.exp(-v))


def _elu(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    alpha = mpmath.mpf(p["alpha"])
    if x > 0:
        return x, mpmath.mpf(1)
    return alpha * mpmath.expm1(x), alpha * mpmath.exp(x)  # elu'(0) = alpha (PyTorch)


def _celu(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    alpha = mpmath.mpf(p["alpha"])
    if x > 0:
        return x, mpmath.mpf(1)
    return alpha * mpmath.expm1(x / alpha), mpmath.exp(x / alpha)


def _softsign(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    return x / (1 + abs(x)), 1 / (1 + abs(x)) ** 2


def _mish(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    t = mpmath.tanh(mpmath.log1p(mpmath.exp(x)))
    return x * t, t + x * (1 - t * t) / (1 + mpmath.exp(-x))


def _logsigmoid(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    return -mpmath.log1p(mpmath.exp(-x)), 1 / (1 + mpmath.exp(x))


def _hardsigmoid(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    alpha, beta = mpmath.mpf(p["alpha"]), mpmath.mpf(p["beta"])
    v = alpha * x + beta
    inside = 0 < v < 1  # slope 0 at both kinks (PyTorch)
    return min(max(v, mpmath.mpf(0)), mpmath.mpf(1)), alpha if inside else mpmath.mpf(0)


def _hardswish(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    y = x * min(max(x + 3, mpmath.mpf(0)), mpmath.mpf(6)) / 6
    if x <= -3:  # PyTorch: x / 3 + 1/2 on the open (-3, 3), 0 at -3 and 1 at 3
        return y, mpmath.mpf(0)
    return y, (x / 3 + mpmath.mpf(1) / 2 if x < 3 else mpmath.mpf(1))


def _clipped(x: Mpf, low: Mpf, high: Mpf) -> tuple[Mpf, Mpf]:
    return min(max(x, low), high), mpmath.mpf(1 if low < x < high else 0)


def _hardtanh(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    return _clipped(x, mpmath.mpf(p["min_val"]), mpmath.mpf(p["max_val"]))


def _relu6(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    return _clipped(x, mpmath.mpf(0), mpmath.mpf(6))


def _thresholded_relu(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    above = x > mpmath.mpf(p["alpha"])
    return (x, mpmath.mpf(1)) if above else (mpmath.mpf(0), mpmath.mpf(0))


def _softshrink(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    lambd = mpmath.mpf(p["lambd"])
    if x > lambd:
        return x - lambd, mpmath.mpf(1)
    if x < -lambd:
        return x + lambd, mpmath.mpf(1)
    return mpmath.mpf(0), mpmath.mpf(0)


def _hardshrink(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    lambd = mpmath.mpf(p["lambd"])
    outside = x > lambd or x < -lambd
    return (x, mpmath.mpf(1)) if outside else (mpmath.mpf(0), mpmath.mpf(0))


def _tanhshrink(x: Mpf, p: Params) -> tuple[Mpf, Mpf]:
    t = mpmath.tanh(x)
    return x - t, t * t


REFERENCES: dict[str, Reference] = {
    "sigmoid": _sigmoid,
    "tanh": _tanh,
    "relu": _relu,
    "leaky_relu": _leaky_relu,
    "swish": _swish,
    "gelu": _gelu,
    "selu": _selu,
    "xtanh": _xtanh,
    "xsin": _xsin,
    "softplus": _softplus,
    "elu": _elu,
    "celu": _celu,
    "softsign": _softsign,
    "mish": _mish,
    "logsigmoid": _logsigmoid,
    "hardsigmoid": _hardsigmoid,
    "hardswish": _hardswish,
    "hardtanh": _hardtanh,
    "relu6": _relu6,
    "thresholded_relu": _thresholded_relu,
    "softshrink": _softshrink,
    "hardshrink": _hardshrink,
    "tanhshrink": _tanhshrink,
}


@functools.cache
def _point(name: str, x: float, params: tuple[tuple[str, Any], ...]) -> tuple[float, float]:
    with mpmath.workdps(DPS):
        f, d = REFERENCES[name](mpmath.mpf(x), dict(params))
        return float(f), float(d)


def reference(
    name: str, x: npt.NDArray[np.floating], params: Params | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(f(x), f'(x)) elementwise for finite x, at the exact values of x."""
    key = tuple(sorted((params or {}).items()))
    pairs = [_point(name, float(v), key) for v in np.asarray(x).ravel()]
    f = np.array([pair[0] for pair in pairs], dtype=np.float64).reshape(np.shape(x))
    d = np.array([pair[1] for pair in pairs], dtype=np.float64).reshape(np.shape(x))
    return f, d


def softmax_reference(
    x: npt.NDArray[np.floating],
    g: npt.NDArray[np.floating],
    axis: int,
    temperature: float,
    log: bool,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(forward, vector-Jacobian product with g) of (log_)softmax(x / T) along axis."""
    with mpmath.workdps(DPS):
        xs = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
        gs = np.moveaxis(np.asarray(g, dtype=np.float64), axis, -1)
        out = np.empty(xs.shape)
        vjp = np.empty(xs.shape)
        t = mpmath.mpf(temperature)
        for index in np.ndindex(xs.shape[:-1]):
            z = [mpmath.mpf(float(v)) / t for v in xs[index]]
            gv = [mpmath.mpf(float(v)) for v in gs[index]]
            peak = max(z)
            e = [mpmath.exp(v - peak) for v in z]
            total = mpmath.fsum(e)
            s = [v / total for v in e]
            if log:
                log_total = mpmath.log(total)
                row = [v - peak - log_total for v in z]
                g_sum = mpmath.fsum(gv)
                grad = [(gi - si * g_sum) / t for gi, si in zip(gv, s, strict=True)]
            else:
                row = s
                dot = mpmath.fsum(gi * si for gi, si in zip(gv, s, strict=True))
                grad = [si * (gi - dot) / t for gi, si in zip(gv, s, strict=True)]
            out[index] = [float(v) for v in row]
            vjp[index] = [float(v) for v in grad]
        return np.moveaxis(out, -1, axis), np.moveaxis(vjp, -1, axis)


def normal_tail_coefficients(terms: int, a: float) -> tuple[float, ...]:
    """Monomial coefficients of the Chebyshev interpolant (at ``terms`` nodes) of
    M(u) = Phi(-t) exp(t^2 / 2) (t + a) / (2a), t = a (1 + u) / (1 - u), u in [-1, 1].

    This regenerates actgrad_server.graphs.gelu.NORMAL_TAIL.
    """
    with mpmath.workdps(DPS):
        a_mp = mpmath.mpf(a)

        def m(u: Mpf) -> Mpf:
            t = a_mp * (1 + u) / (1 - u)
            return mpmath.ncdf(-t) * mpmath.exp(t * t / 2) * (t + a_mp) / (2 * a_mp)

        half = mpmath.mpf(1) / 2
        nodes = [mpmath.cos(mpmath.pi * (k + half) / terms) for k in range(terms)]
        values = [m(node) for node in nodes]
        cheb = [
            2
            * mpmath.fsum(
                values[k] * mpmath.cos(mpmath.pi * j * (k + half) / terms) for k in range(terms)
            )
            / terms
            for j in range(terms)
        ]
        cheb[0] /= 2
        basis: list[list[Mpf]] = [[mpmath.mpf(1)], [mpmath.mpf(0), mpmath.mpf(1)]]
        for _ in range(2, terms):
            nxt = [mpmath.mpf(0)] + [2 * v for v in basis[-1]]
            for i, v in enumerate(basis[-2]):
                nxt[i] -= v
            basis.append(nxt)
        monomial = [mpmath.mpf(0)] * terms
        for j in range(terms):
            for i, v in enumerate(basis[j]):
                monomial[i] += cheb[j] * v
        return tuple(float(v) for v in monomial)
