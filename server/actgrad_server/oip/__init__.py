"""The Open Inference Protocol (KServe v2 / Triton), whole.

- `dataplane`: every OIP operation on plain values (numpy arrays, dataclasses), raising
  domain errors, with the statistics; no protobuf, no gRPC: what every front end calls;
- `servicer`: the gRPC front end, inference.GRPCInferenceService (protobuf -> plain
  values -> DataPlane -> protobuf);
- `model_table`: the catalog as OIP models (`gelu`, `gelu_grad`, ...) and their
  configuration, also read by the Triton export;
- `*_pb2*.py`: stubs generated from proto/oip/v2 by scripts/generate_oip_stubs.sh (do
  not edit), registered in the private descriptor pool of `_pool`.
"""
