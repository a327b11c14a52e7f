"""Chunk plans: every split is valid for its function and reassembles exactly."""

from __future__ import annotations

import numpy as np
import pytest

from actgrad.wire import plan_chunks


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("shape", [(1000,), (7, 11, 13), (3, 1, 1000)])
def test_elementwise_split_reassembles(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    plan = plan_chunks(shape, 8, chunk_bytes=8 * 97, elementwise=True)
    assert plan is not None and len(plan) > 1
    out = np.empty_like(x)
    for k, piece in enumerate(plan.chunk(x, k) for k in range(len(plan))):
        assert piece.flags.c_contiguous and piece.nbytes <= 8 * 97
        plan.place(out, k, np.tanh(piece))
    np.testing.assert_array_equal(out, np.tanh(x))


@pytest.mark.parametrize(
    ("shape", "axis"), [((6, 50), 1), ((6, 50), 0), ((4, 5, 30), 2), ((1, 9, 40), 0), ((8, 30), 0)]
)
def test_softmax_split_avoids_the_softmax_axis(shape: tuple[int, ...], axis: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape)
    plan = plan_chunks(shape, 8, chunk_bytes=8 * 40, elementwise=False, mixing_axis=axis)
    assert plan is not None and len(plan) > 1
    assert plan.axis != axis
    out = np.empty_like(x)
    for k, piece in enumerate(plan.chunk(x, k) for k in range(len(plan))):
        plan.place(out, k, _softmax(piece, axis))
    np.testing.assert_allclose(out, _softmax(x, axis), rtol=1e-15)


def test_softmax_over_a_vector_cannot_be_split() -> None:
    assert plan_chunks((10_000,), 4, chunk_bytes=64, elementwise=False, mixing_axis=0) is None


@pytest.mark.parametrize("slope_shape", [(), (1,), (5,), (3, 1), (4, 3, 5), (1, 3, 1)])
def test_prelu_split_slices_or_repeats_the_slope(slope_shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(2)
    shape = (4, 3, 5)
    x = rng.normal(size=shape)
    g = rng.normal(size=shape)
    slope = rng.uniform(0.1, 0.5, size=slope_shape)
    plan = plan_chunks(
        shape, 8, chunk_bytes=8 * 15, elementwise=True, tensor_params={"slope": slope_shape}
    )
    assert plan is not None and len(plan) == 4
    out = np.empty_like(x)
    grad_slope = np.zeros(slope_shape)
    for k in range(len(plan)):
        xk, gk = plan.chunk(x, k), plan.chunk(g, k)
        sk = plan.param_chunk("slope", slope, k)
        plan.place(out, k, np.where(xk > 0, gk, sk * gk))
        partial = np.where(xk > 0, 0.0, xk * gk)
        # Reduce the chunk's slope gradient to the chunk's slope shape, as the server does.
        padded = (1,) * (xk.ndim - sk.ndim) + sk.shape
        axes = tuple(i for i, d in enumerate(padded) if d == 1)
        plan.place_param(
            grad_slope, "slope", k, partial.sum(axis=axes, keepdims=True).reshape(sk.shape)
        )
    full = np.broadcast_to(slope, shape)
    np.testing.assert_allclose(out, np.where(x > 0, g, full * g), rtol=1e-15)
    padded = (1,) * (x.ndim - slope.ndim) + slope.shape
    axes = tuple(i for i, d in enumerate(padded) if d == 1)
    expected = np.where(x > 0, 0.0, x * g).sum(axis=axes, keepdims=True).reshape(slope_shape)
    np.testing.assert_allclose(grad_slope, expected, rtol=1e-12)


def test_nothing_to_split() -> None:
    assert plan_chunks((), 4, chunk_bytes=1, elementwise=True) is None
    assert plan_chunks((0, 5), 4, chunk_bytes=1, elementwise=True) is None
    assert (
        plan_chunks((1, 100), 4, chunk_bytes=8, elementwise=True, tensor_params={"slope": (100,)})
        is None
    )
