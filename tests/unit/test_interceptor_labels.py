"""Metric and access-log labels of each request kind."""

from __future__ import annotations

import numpy as np

from actgrad import wire
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import tensor_pb2
from actgrad_server.api._interceptors import _labels


def test_labels_of_requests_in_messages_and_in_shared_memory() -> None:
    tensor = wire.encode(np.ones(2, dtype=np.float16))
    plain = pb.ActivateRequest(function="silu", input=tensor)
    assert _labels(plain) == ("swish", "float16")
    # A tensor in shared memory keeps its dtype in the message.
    region = tensor_pb2.SharedMemoryRegion(segment="actgrad-1", offset=0, size=4)
    shared = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT16, shape=[2], region=region)
    grad = pb.GradientRequest(function="nope", input=shared, grad_input_region=region)
    assert _labels(grad) == ("unknown", "float16")
    soft = pb.SoftmaxRequest(input=shared, output_region=region)
    assert _labels(soft) == ("softmax", "float16")
    assert _labels(None) == ("", "")


def test_dense_requests_are_labelled_by_their_activation() -> None:
    tensor = wire.encode(np.ones((1, 2), dtype=np.float32))
    dense = pb.DenseRequest(input=tensor, weight=tensor, activation="silu")
    assert _labels(dense) == ("swish", "float32")
    assert _labels(pb.DenseRequest(input=tensor, weight=tensor)) == ("", "float32")
