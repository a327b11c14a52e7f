"""An MLServer runtime that serves one ONNX file on onnxruntime (MLServer 1.7 has none).

Runs inside MLServer's own venv (``.venv-mlserver``, ``make bench-mlserver-venv``): it
imports only MLServer, onnxruntime and numpy, never actgrad. The harness writes the
graph actgrad serves (the same builder, the same float32 graph) into the model's
folder; this runtime loads it with the session options the model settings name
(``parameters.extra``: ``intra_op_num_threads``, as actgrad's engine sets it) and runs it
on the request's tensors, decoded and encoded with MLServer's own NumpyCodec, as a
custom runtime written the way MLServer's documentation shows would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

__all__ = ["OnnxRuntime"]


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self.settings, wellknown_filenames=["model.onnx"])
        extra: dict[str, Any] = dict(self.settings.parameters.extra or {})
        options = ort.SessionOptions()
        threads = int(extra.get("intra_op_num_threads", 0))
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        results = self._session.run(self._outputs, feeds)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output(name, np.asarray(value))
                for name, value in zip(self._outputs, results, strict=True)
            ],
        )
