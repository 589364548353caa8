"""The Open Inference Protocol (KServe v2, REST/JSON, as Triton and MLServer speak it).

Both sides speak it: the device agent's local server (modelyard.edge.server) and the
platform's API (modelyard.platform.api). The rules live here once; each side keeps only its
own transport and error types (the API's pydantic bodies stay in platform/api/schemas.py).

A leaf package: it imports nothing of modelyard, and this module and `protocol` import nothing
but the standard library. `tensors` (numpy) converts tensor data.
"""

from __future__ import annotations

from modelyard.oip.protocol import (
    DATATYPES,
    NUMPY_TO_OIP,
    ONNX_TO_OIP,
    TensorSpec,
    datatype_of,
    fits,
    infer_response,
    is_shape,
    model_metadata,
    server_metadata,
    unknown_and_missing,
)

__all__ = [
    "DATATYPES",
    "NUMPY_TO_OIP",
    "ONNX_TO_OIP",
    "TensorSpec",
    "datatype_of",
    "fits",
    "infer_response",
    "is_shape",
    "model_metadata",
    "server_metadata",
    "unknown_and_missing",
]
