"""Splitting tensors larger than one message into chunks, and putting results back.

The streaming RPCs take one complete request per chunk, so a split is valid only
where the function does not mix values across it:

- elementwise functions without tensor parameters split the flattened tensor
  anywhere;
- a function that mixes values along one axis only (softmax) splits along
  another axis;
- functions with tensor parameters that broadcast to the input (prelu's slope)
  split along axis 0; a parameter whose axis 0 matches the input's is sliced
  with it, one that is broadcast along axis 0 is sent whole with every chunk,
  and the parameter's gradient is then the sum of the chunks' gradients.

Nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ChunkPlan", "plan_chunks"]

Array = npt.NDArray[Any]
Index = tuple[slice, ...]


@dataclass(frozen=True)
class ChunkPlan:
    """Where each chunk lies in the input, and how tensor parameters follow."""

    shape: tuple[int, ...]
    axis: int  # the axis split along, in `view` coordinates
    flat: bool  # split the flattened tensor (elementwise functions)
    bounds: tuple[tuple[int, int], ...]
    sliced_params: frozenset[str]  # tensor parameters sliced along axis 0 with the input

    def __len__(self) -> int:
        return len(self.bounds)

    def _index(self, k: int) -> Index:
        start, stop = self.bounds[k]
        return (slice(None),) * self.axis + (slice(start, stop),)

    def _view(self, array: Array) -> Array:
        return array.reshape(-1) if self.flat else array

    def chunk(self, array: Array, k: int) -> Array:
        """Chunk k of an input-shaped array, C-contiguous (a copy only when needed)."""
        return np.ascontiguousarray(self._view(array)[self._index(k)])

    @property
    def contiguous(self) -> bool:
        """Whether every chunk is one run of elements of the C-ordered tensor."""
        return self.flat or all(d == 1 for d in self.shape[: self.axis])

    def span(self, k: int) -> tuple[int, int]:
        """Chunk k as elements [start, stop) of the C-ordered tensor (`contiguous` plans)."""
        if not self.contiguous:
            raise ValueError("the chunks of this plan are not runs of elements")
        start, stop = self.bounds[k]
        if self.flat:
            return start, stop
        inner = int(np.prod(self.shape[self.axis + 1 :], dtype=np.int64))
        return start * inner, stop * inner

    def chunk_shape(self, k: int) -> tuple[int, ...]:
        """The shape `chunk` gives chunk k."""
        start, stop = self.bounds[k]
        if self.flat:
            return (stop - start,)
        return (*self.shape[: self.axis], stop - start, *self.shape[self.axis + 1 :])

    def param_chunk(self, name: str, value: Array, k: int) -> Array:
        """The value of tensor parameter `name` to send with chunk k."""
        if name not in self.sliced_params:
            return value
        start, stop = self.bounds[k]
        return np.ascontiguousarray(value[start:stop])

    def place(self, out: Array, k: int, piece: Array) -> None:
        """Writes chunk k's result into the input-shaped array `out`."""
        target = self._view(out)[self._index(k)]
        if piece.shape != target.shape:
            raise ValueError(f"chunk {k}: result shape {piece.shape} != {target.shape}")
        target[...] = piece

    def place_param(self, out: Array, name: str, k: int, piece: Array) -> None:
        """Adds chunk k's parameter gradient into `out` (float64 accumulator)."""
        if name in self.sliced_params:
            start, stop = self.bounds[k]
            out[start:stop] += piece
        else:
            out += piece


def _ranges(length: int, step: int) -> tuple[tuple[int, int], ...]:
    return tuple((start, min(start + step, length)) for start in range(0, length, step))


def plan_chunks(
    shape: tuple[int, ...],
    itemsize: int,
    *,
    chunk_bytes: int,
    elementwise: bool,
    mixing_axis: int | None = None,
    tensor_params: Mapping[str, tuple[int, ...]] | None = None,
) -> ChunkPlan | None:
    """Plans chunks of at most about `chunk_bytes` each, or None where no split is valid.

    `mixing_axis` is the normalised axis a non-elementwise function mixes values
    along (the catalog's `axis_param`, e.g. softmax's axis); `tensor_params` maps
    each tensor parameter to its shape.
    """
    size = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if size == 0 or not shape:
        return None
    tensor_params = dict(tensor_params or {})
    if elementwise and not tensor_params:
        step = max(1, chunk_bytes // itemsize)
        return ChunkPlan(shape, 0, True, _ranges(size, step), frozenset())
    if mixing_axis is not None:
        candidates = [a for a in range(len(shape)) if a != mixing_axis and shape[a] > 1]
        if not candidates:
            return None
        axis = candidates[0]
        row_bytes = size // shape[axis] * itemsize
        step = max(1, chunk_bytes // row_bytes)
        return ChunkPlan(shape, axis, False, _ranges(shape[axis], step), frozenset())
    if elementwise:
        if shape[0] <= 1:
            return None
        sliced = set()
        for name, param_shape in tensor_params.items():
            if len(param_shape) == len(shape) and param_shape[0] == shape[0]:
                sliced.add(name)
            elif len(param_shape) == len(shape) and param_shape[0] != 1:
                return None  # not broadcastable along axis 0: let the server say so
        row_bytes = size // shape[0] * itemsize
        step = max(1, chunk_bytes // row_bytes)
        return ChunkPlan(shape, 0, False, _ranges(shape[0], step), frozenset(sliced))
    return None
