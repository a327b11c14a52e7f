"""The catalog: names, aliases, defaults and parameter checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from actgrad_server import catalog, graphs
from actgrad_server.errors import InvalidArgument, NotFound

F32 = np.dtype(np.float32)


def test_every_entry_names_its_graphs_and_unique_names() -> None:
    names = [n for f in catalog.CATALOG for n in (f.name, *f.aliases)]
    assert len(names) == len(set(names))
    for function in catalog.CATALOG:
        assert isinstance(function.graph, graphs.Activation)
        assert function.runtime_params == tuple(p.name for p in function.params if p.runtime)
        assert function.streamable == (function.elementwise or function.axis_param is not None)
        if function.axis_param is not None:
            kind = function.params_by_name[function.axis_param].kind
            assert kind is catalog.ParamKind.INTEGER
        for param in function.params:
            if param.required and param.kind is catalog.ParamKind.TENSOR:
                assert param.sample is not None, (function.name, param.name)


def test_softmax_rpc_function() -> None:
    assert catalog.SOFTMAX is catalog.lookup("softmax")
    assert catalog.SOFTMAX.axis_param == "axis"


def test_sample_params_bind_for_warm_up() -> None:
    for function in catalog.CATALOG:
        params = function.sample_params(F32)
        call = catalog.bind(function, params, x_shape=(2, 4), x_dtype=F32)
        assert set(call.tensors) == set(function.tensor_params)


def test_numbers_are_runtime_and_the_rest_enumerable_for_warm_up() -> None:
    """A number never selects a graph (any value shares the session); what does (a
    string's choice, a bool, the axis) has few values, all of which warm-up builds."""
    for function in catalog.CATALOG:
        for p in function.params:
            if p.kind is catalog.ParamKind.NUMBER:
                assert p.runtime, (function.name, p.name)
            elif p.kind is catalog.ParamKind.STRING:
                assert p.choices, (function.name, p.name)
            elif p.kind is catalog.ParamKind.INTEGER:
                assert p.name == function.axis_param, (function.name, p.name)
        for variant in function.structural_variants(2):
            params = {**function.sample_params(F32), **variant}
            catalog.bind(function, params, x_shape=(2, 4), x_dtype=F32)
    assert catalog.lookup("relu").structural_variants(2) == [{}]
    assert catalog.lookup("gelu").structural_variants(2) == [
        {"approximate": "none"},
        {"approximate": "tanh"},
    ]
    assert len(catalog.SOFTMAX.structural_variants(3)) == 3 * 2  # axes times log


def test_grad_output_is_checked_by_bind() -> None:
    relu = catalog.lookup("relu")
    ok = np.zeros((2, 3), np.float32)
    catalog.bind(relu, {}, x_shape=(2, 3), x_dtype=F32, grad_output=ok)
    with pytest.raises(InvalidArgument, match=r"^grad_output: dtype float64 differs"):
        catalog.bind(relu, {}, x_shape=(2, 3), x_dtype=F32, grad_output=ok.astype(np.float64))
    with pytest.raises(InvalidArgument, match=r"^inputs\['grad_output'\]: shape \[3, 2\]"):
        catalog.bind(
            relu,
            {},
            x_shape=(2, 3),
            x_dtype=F32,
            grad_output=ok.reshape(3, 2),
            grad_output_field="inputs['grad_output']",
        )


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("silu", "swish"),
        ("scaled_tanh", "xtanh"),
        ("sinusoidal", "xsin"),
        ("GELU", "gelu"),
        ("leaky-relu", "leaky_relu"),
    ],
)
def test_aliases(name: str, canonical: str) -> None:
    assert catalog.lookup(name).name == canonical


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(NotFound, match="'swish'"):
        catalog.lookup("swsh")


def test_defaults() -> None:
    call = catalog.bind(catalog.lookup("selu"), {}, x_shape=(3,), x_dtype=F32)
    assert call.scalars == {"alpha": 1.6732632423543772848, "gamma": 1.0507009873554804934}
    # The SELU constants round to ONNX's float32 defaults.
    assert np.float32(call.scalars["alpha"]) == np.float32(1.67326319217681884765625)
    assert np.float32(call.scalars["gamma"]) == np.float32(1.05070102214813232421875)
    softmax = catalog.bind(catalog.lookup("softmax"), {}, x_shape=(2, 5), x_dtype=F32)
    assert softmax.static == (("axis", 1), ("log", False))
    assert softmax.scalars == {"temperature": 1.0}


@pytest.mark.parametrize(
    ("name", "params", "fragment"),
    [
        ("relu", {"alpha": 0.1}, "unknown parameter; relu takes no parameters"),
        ("leaky_relu", {"slope": 0.1}, "unknown parameter for leaky_relu (allowed: alpha)"),
        ("leaky_relu", {"alpha": True}, "number"),
        ("leaky_relu", {"alpha": float("inf")}, "finite"),
        ("softmax", {"temperature": 0.0}, "> 0"),
        ("softmax", {"axis": 1.5}, "integer"),
        ("softmax", {"axis": 5}, "out of range"),
        ("softmax", {"log": "yes"}, "boolean"),
        ("gelu", {"approximate": "foo"}, "'none', 'tanh'"),
        ("prelu", {}, "required"),
        ("prelu", {"slope": "steep"}, "tensor"),
        ("prelu", {"slope": float("nan")}, "finite"),
        ("prelu", {"slope": np.ones(4, dtype=np.float32)}, "broadcastable"),
        ("prelu", {"slope": np.ones(3, dtype=np.float64)}, "dtype"),
    ],
)
def test_refusals_name_the_field(name: str, params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        catalog.bind(catalog.lookup(name), params, x_shape=(2, 3), x_dtype=F32)
    assert fragment in info.value.message
    assert "params[" in info.value.message


def test_integer_accepted_for_number_and_integral_number_for_integer() -> None:
    call = catalog.bind(catalog.lookup("leaky_relu"), {"alpha": 1}, x_shape=(2,), x_dtype=F32)
    assert call.scalars == {"alpha": 1.0}
    call = catalog.bind(catalog.lookup("softmax"), {"axis": -2.0}, x_shape=(2, 3), x_dtype=F32)
    assert ("axis", 0) in call.static


def test_scalar_softmax_axis() -> None:
    call = catalog.bind(catalog.lookup("softmax"), {"axis": -1}, x_shape=(), x_dtype=F32)
    assert ("axis", 0) in call.static


def test_number_slope_is_a_scalar_tensor_of_the_input_dtype() -> None:
    call = catalog.bind(catalog.lookup("prelu"), {"slope": 0.25}, x_shape=(2, 3), x_dtype=F32)
    slope = call.tensors["slope"]
    assert slope.shape == () and slope.dtype == F32 and float(slope) == 0.25


@pytest.mark.parametrize("length", [catalog.MAX_NAME_LENGTH + 1, 16 * 1024, 4 << 20])
def test_long_names_are_refused_before_any_search_with_a_short_message(length: int) -> None:
    name = "s" * length
    with pytest.raises(InvalidArgument) as info:
        catalog.lookup(name)
    assert info.value.message.startswith("function: 'ssss")
    assert f"({length} characters)" in info.value.message
    assert len(info.value.message) < 200
    assert catalog.find(name) is None
    with pytest.raises(InvalidArgument, match=r"^params\['sss.*characters\)\]: unknown"):
        catalog.bind(catalog.lookup("relu"), {name: 1.0}, x_shape=(2,), x_dtype=F32)


def test_names_at_the_limit_are_looked_up() -> None:
    with pytest.raises(NotFound, match="unknown function"):
        catalog.lookup("x" * catalog.MAX_NAME_LENGTH)
    assert catalog.find(" GELU ") is catalog.lookup("gelu")
    assert catalog.shown("relu") == "'relu'"


def test_hardtanh_needs_min_below_max() -> None:
    hardtanh = catalog.lookup("hardtanh")
    catalog.bind(hardtanh, {"min_val": -2.0, "max_val": 0.5}, x_shape=(3,), x_dtype=F32)
    for low, high in ((1.0, 1.0), (2.0, -2.0)):
        with pytest.raises(InvalidArgument, match=r"^params\['min_val'\]"):
            catalog.bind(hardtanh, {"min_val": low, "max_val": high}, x_shape=(3,), x_dtype=F32)
    with pytest.raises(InvalidArgument, match=r"^params\['min_val'\]"):
        catalog.bind(hardtanh, {"min_val": 3.0}, x_shape=(3,), x_dtype=F32)  # max_val 1
