"""Metric and access-log labels of each request kind."""

from __future__ import annotations

import numpy as np

from actgrad import wire
from actgrad.v1 import activation_pb2 as pb
from actgrad_server.api._interceptors import _labels


def test_labels_of_plain_and_shared_requests() -> None:
    tensor = wire.encode(np.ones(2, dtype=np.float16))
    plain = pb.ActivateRequest(function="silu", input=tensor)
    assert _labels(plain) == ("swish", "float16")
    shared = pb.ActivateSharedRequest(request=plain)
    assert _labels(shared) == ("swish", "float16")
    grad = pb.GradientSharedRequest(request=pb.GradientRequest(function="nope", input=tensor))
    assert _labels(grad) == ("unknown", "float16")
    soft = pb.SoftmaxSharedRequest(request=pb.SoftmaxRequest(input=tensor))
    assert _labels(soft) == ("softmax", "float16")
    assert _labels(None) == ("", "")
