"""Every function's declared properties (catalog.Properties) hold when its graph and its
gradient are sampled through the engine, and `ListFunctions` carries them to the SDK.

Each field is checked both ways: a property declared true must hold on the samples, one
declared false must visibly fail on them, so a wrong declaration either way fails here.
The samples: x in [-60, 60] by 1e-3 (every declared kink of the defaults is a grid point) and
geometric tails out to +-1e6, in float64, at the defaults (prelu at its sample slope;
softmax as one output against its own logit, the other fixed at 0).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from actgrad import _responses
from actgrad.v1 import activation_pb2
from actgrad_server import catalog
from actgrad_server.api.activation import function_infos
from actgrad_server.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "generate_functions_doc", ROOT / "scripts" / "generate_functions_doc.py"
)
assert _spec is not None and _spec.loader is not None
doc_script: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(doc_script)

STEP = 1e-3
FINE = np.arange(-60_000, 60_001) * STEP
TAIL = np.geomspace(60.5, 1e6, 300)
X = np.concatenate([-TAIL[::-1], FINE, TAIL])
FAR = 1e4  # |x| beyond this is "the far end" for saturation
# Second differences of a C1 function on the fine grid are about STEP**2 * |f'''|
# (below 1e-4 here); a jump J in f or f' makes one of them about J (0.2 at least for
# the defaults: hardsigmoid's slope).
JUMP = 1e-2

Sampled = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu", cache_size=64)


@pytest.fixture(scope="module")
def samples(engine: Engine) -> dict[str, Sampled]:
    return {f.name: doc_script.sample(engine, f, X) for f in catalog.CATALOG}


CASES = [pytest.param(f, id=f.name) for f in catalog.CATALOG]


@pytest.mark.parametrize("function", CASES)
def test_zero_centred(function: catalog.Function, engine: Engine) -> None:
    y, _ = doc_script.sample(engine, function, np.zeros(1))
    if function.properties.zero_centred:
        assert y[0] == 0.0
    else:
        assert abs(y[0]) > 1e-3


@pytest.mark.parametrize("function", CASES)
def test_output_range_holds_and_is_approached(
    function: catalog.Function, samples: dict[str, Sampled]
) -> None:
    y, _ = samples[function.name]
    low, high = function.properties.output_range
    assert np.all(np.isfinite(y))
    slack = 1e-12 * max(1.0, abs(low) if math.isfinite(low) else 0.0)
    assert y.min() >= low - slack, f"min {y.min()!r} below the declared {low!r}"
    slack = 1e-12 * max(1.0, abs(high) if math.isfinite(high) else 0.0)
    assert y.max() <= high + slack, f"max {y.max()!r} above the declared {high!r}"
    # The bounds are tight: a finite one is approached, an infinite one is not a bound.
    if math.isfinite(low):
        assert y.min() <= low + 1e-5 * max(1.0, abs(low)), f"min {y.min()!r} vs {low!r}"
    else:
        assert y.min() <= -1e3
    if math.isfinite(high):
        assert y.max() >= high - 1e-5 * max(1.0, abs(high)), f"max {y.max()!r} vs {high!r}"
    else:
        assert y.max() >= 1e3


@pytest.mark.parametrize("function", CASES)
def test_monotonic(function: catalog.Function, samples: dict[str, Sampled]) -> None:
    y, dy = samples[function.name]
    if function.properties.monotonic:
        assert dy.min() >= 0.0, f"f'({X[dy.argmin()]!r}) = {dy.min()!r}"
        # The values too: a downward jump has no gradient to show it.
        rounding = 4 * np.finfo(np.float64).eps * np.maximum(abs(y[1:]), abs(y[:-1]))
        drops = np.diff(y) < -rounding
        assert not drops.any(), f"f decreases after x = {X[:-1][drops][:5]}"
    else:
        assert dy.min() < -1e-6


def _second_differences(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    fine = values[len(TAIL) : len(TAIL) + len(FINE)]
    return np.abs(np.diff(fine, 2))


@pytest.mark.parametrize("function", CASES)
def test_smooth(function: catalog.Function, samples: dict[str, Sampled]) -> None:
    y, dy = samples[function.name]
    jumps = np.maximum(_second_differences(y), _second_differences(dy))
    if function.properties.smooth:
        where = FINE[1 + jumps.argmax()]
        assert jumps.max() <= JUMP, f"f or f' jumps by {jumps.max():.3g} near x = {where!r}"
    else:
        assert jumps.max() > 10 * JUMP
        # ... and only at the kinks it declares (catalog.Function.kinks), which
        # test_kinks_torch.py compares with PyTorch autograd.
        declared = np.array(function.kinks({p.name: p.default for p in function.params}))
        assert declared.size, f"{function.name} is not C1 but declares no kink"
        where = FINE[1:-1][jumps > JUMP]
        stray = [x for x in where if np.abs(declared - x).min() > 1.5 * STEP]
        assert not stray, f"f or f' jumps near x = {stray[:5]}, declared kinks {declared}"


@pytest.mark.parametrize("function", CASES)
def test_saturating(function: catalog.Function, samples: dict[str, Sampled]) -> None:
    _, dy = samples[function.name]
    props = function.properties
    for side, declared in ((X <= -FAR, props.saturating_left), (X >= FAR, props.saturating_right)):
        largest = np.abs(dy[side]).max()
        if declared:
            assert largest <= 1e-6
        else:
            assert largest >= 1e-3


@pytest.mark.parametrize("function", CASES)
def test_bounded_follows_the_range(function: catalog.Function) -> None:
    props = function.properties
    low, high = props.output_range
    assert low < high
    assert props.bounded_below == (low > -math.inf)
    assert props.bounded_above == (high < math.inf)


def test_parameterised_functions_say_what_the_properties_hold_for() -> None:
    for function in catalog.CATALOG:
        assert bool(function.properties.condition) == bool(function.params), function.name


def test_list_functions_carries_the_properties_to_the_sdk() -> None:
    for function, message in zip(catalog.CATALOG, function_infos(), strict=True):
        info = _responses.function_info(message)
        props = function.properties
        assert info.properties is not None
        assert (info.properties.output_min, info.properties.output_max) == props.output_range
        assert info.properties.monotonic == props.monotonic
        assert info.properties.smooth == props.smooth
        assert info.properties.zero_centred == props.zero_centred
        assert info.properties.bounded_below == props.bounded_below
        assert info.properties.bounded_above == props.bounded_above
        assert info.properties.saturating_left == props.saturating_left
        assert info.properties.saturating_right == props.saturating_right
        assert info.properties.condition == props.condition


def test_a_server_without_properties_gives_none() -> None:
    info = _responses.function_info(activation_pb2.FunctionInfo(name="f"))
    assert info.properties is None
