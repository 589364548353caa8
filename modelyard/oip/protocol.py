"""The protocol's vocabulary in plain Python: datatypes, tensor specs, shape rules, body layouts.

No numpy here, so the bundle format (modelyard.bundle) can name Open Inference Protocol
datatypes and tensors without loading it; tensor data lives in modelyard.oip.tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

# Open Inference Protocol datatypes -> numpy dtype names. BYTES (strings) is left out on purpose: neither
# the agent nor the server feeds strings to a model, so a tensor of them is refused as unknown.
DATATYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
NUMPY_TO_OIP: dict[str, str] = {numpy: oip for oip, numpy in DATATYPES.items()}
# ONNX tensor types (as ONNX Runtime's NodeArg.type spells them) -> Open Inference Protocol datatypes.
ONNX_TO_OIP: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}


def datatype_of(dtype: Any) -> str | None:
    """The datatype of a numpy dtype (or its name), None where the protocol has none.

    By name, so this module needs no numpy: np.dtype('float32').name == 'float32'.
    """
    return NUMPY_TO_OIP.get(str(getattr(dtype, "name", dtype)))


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model's signature, as metadata answers and bundle manifests list them."""

    name: str
    datatype: str  # a key of DATATYPES
    shape: tuple[int, ...]  # -1 where the model accepts any size (the batch, first)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def is_shape(value: Any) -> TypeGuard[list[int]]:
    """Whether a request's `shape` is a list of integers (booleans are not sizes, though Python says int)."""
    return isinstance(value, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in value)


def fits(shape: Sequence[int], expected: Sequence[int]) -> bool:
    """Whether a concrete shape matches a signature's: same rank, equal sizes where the signature is not -1."""
    return len(shape) == len(expected) and all(e == -1 or d == e for d, e in zip(shape, expected, strict=True))


def unknown_and_missing(given: Iterable[Any], expected: Iterable[str]) -> tuple[list[Any], list[str]]:
    """The names a request gives that the signature lacks, and the names it needs but does not give (in order)."""
    given, expected = list(given), list(expected)
    return [n for n in given if n not in expected], [n for n in expected if n not in given]


def server_metadata(name: str, version: str, extensions: Iterable[str]) -> dict[str, Any]:
    """The body of GET /v2: the server's name and version, and the protocol extensions it speaks
    (by the names Triton gives them, such as `binary_tensor_data`)."""
    return {"name": name, "version": version, "extensions": list(extensions)}


def model_metadata(
    name: str,
    version: str,
    platform: str,
    inputs: Iterable[TensorSpec],
    outputs: Iterable[TensorSpec],
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of GET /v2/models/{name}[/versions/{version}]; `parameters` only where the server has some."""
    body: dict[str, Any] = {
        "name": name,
        "versions": [version],
        "platform": platform,
        "inputs": [spec.to_dict() for spec in inputs],
        "outputs": [spec.to_dict() for spec in outputs],
    }
    if parameters is not None:
        body["parameters"] = parameters
    return body


def infer_response(model: str, version: str, request_id: str, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The body of a successful infer answer (the tensors from modelyard.oip.tensors.encode_tensor)."""
    return {"model_name": model, "model_version": version, "id": request_id, "outputs": outputs}
