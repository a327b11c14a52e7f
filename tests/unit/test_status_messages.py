"""Status messages stay short: values are cut where they are quoted (`errors.shown`),
and `statuses` caps whatever reaches a caller (the trailer has a size limit)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from actgrad.wire import TensorError
from actgrad_server import catalog, neuron
from actgrad_server.errors import InvalidArgument, NotFound, shown
from actgrad_server.statuses import MAX_DETAILS_BYTES, capped, status_for

F32 = np.dtype(np.float32)


def test_shown_cuts_long_values_and_says_how_long() -> None:
    assert shown("tanh") == "'tanh'"
    long = shown("é" * 100_000)
    assert long.startswith("'éééé") and long.endswith("... (100000 characters)")
    assert len(long) < 80


@pytest.mark.parametrize("value", ["x" * 20_000, "é" * 100_000])
def test_bad_choices_and_inits_quote_the_value_cut(value: str) -> None:
    gelu = catalog.lookup("gelu")
    with pytest.raises(InvalidArgument) as info:
        catalog.bind(gelu, {"approximate": value}, x_shape=(2,), x_dtype=F32)
    assert info.value.message.startswith("params['approximate']: must be one of 'none', 'tanh'")
    assert f"({len(value)} characters)" in info.value.message
    assert len(info.value.message) < 200
    with pytest.raises(InvalidArgument) as info:
        neuron.check_flow(depth=2, width=2, batch=2, init=value, init_std=None, max_elements=100)
    assert info.value.message.startswith("init: must be one of")
    assert len(info.value.message) < 200


@pytest.mark.parametrize(
    "error",
    [
        InvalidArgument("x" * 100_000),
        NotFound("€" * 50_000),  # three bytes of UTF-8 each
        TensorError("input", "y" * 100_000),
    ],
)
def test_every_status_message_is_capped(error: Exception) -> None:
    code, message = status_for(error, "test")
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert len(message.encode()) <= MAX_DETAILS_BYTES
    assert message.endswith(" bytes)") and "message cut" in message


def test_short_messages_and_whole_characters_are_kept() -> None:
    assert capped("unknown function 'x'") == "unknown function 'x'"
    exact = "a" * MAX_DETAILS_BYTES
    assert capped(exact) == exact
    cut = capped("€" * MAX_DETAILS_BYTES)
    assert cut.startswith("€") and cut.encode().decode() == cut  # no split character
    assert len(cut.encode()) <= MAX_DETAILS_BYTES
