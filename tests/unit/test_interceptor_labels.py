"""Metric and access-log labels of each request kind."""

from __future__ import annotations

import numpy as np

from actgrad import wire
from actgrad.v1 import activation_pb2 as pb
from actgrad.v1 import tensor_pb2
from actgrad.wire import frames
from actgrad_server.api._labels import labels as _labels


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


def test_inference_protocol_requests_are_labelled_by_model_and_datatype() -> None:
    from actgrad_server.oip import grpc_predict_v2_pb2 as oip

    def infer(model: str, datatype: str) -> object:
        request = oip.ModelInferRequest(model_name=model)
        request.inputs.add(name="x", datatype=datatype, shape=[2])
        return request

    assert _labels(infer("gelu_grad", "FP64")) == ("gelu", "fp64")
    assert _labels(infer("nope", "FP32")) == ("unknown", "fp32")
    assert _labels(infer("gelu", "COMPLEX")) == ("gelu", "unknown")
    assert _labels(oip.ModelInferRequest(model_name="gelu")) == ("gelu", "")
    # Messages that carry no function or tensor, and raw bytes, get empty labels.
    assert _labels(pb.ListFunctionsRequest()) == ("", "")
    assert _labels(b"\x00") == ("", "")


def test_large_requests_read_by_the_zero_copy_codec_are_labelled_alike() -> None:
    x = np.ones(frames.SMALL_BYTES // 4 + 1, dtype=np.float32)
    request = pb.ActivateRequest(function="sigmoid", input=wire.encode(x))
    parsed = wire.codec_for(pb.ActivateRequest).parse(request.SerializeToString())
    assert type(parsed).__name__ == "Parsed"
    assert _labels(parsed) == _labels(request) == ("sigmoid", "float32")
