"""The Open Inference Protocol (KServe v2 / Triton) front end, whole.

- `servicer`: inference.GRPCInferenceService over the engine (decode -> catalog -> engine);
- `model_table`: the catalog as OIP models (`gelu`, `gelu_grad`, ...), also read by the
  Triton export;
- `*_pb2*.py`: stubs generated from proto/oip/v2 by scripts/generate_oip_stubs.sh (do
  not edit), registered in the private descriptor pool of `_pool`.
"""
