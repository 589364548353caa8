"""Open Inference Protocol (KServe v2, REST/JSON) types: request decoding, response encoding.

Data travels flattened in row-major order with an explicit shape, as Triton and MLServer send
it; the server module only routes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelyard.edge.errors import InferenceError
from modelyard.edge.manifest import DATATYPES, Manifest

NUMPY_TO_OIP = {np.dtype(v): k for k, v in DATATYPES.items()}


def decode_request(body: Any, manifest: Manifest) -> tuple[str | None, dict[str, np.ndarray]]:
    """(request id, {input name: array}) from an infer request body."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise InferenceError("the infer request needs a non-empty 'inputs' list.")
    request_id = body.get("id")
    arrays: dict[str, np.ndarray] = {}
    for i, item in enumerate(body["inputs"]):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InferenceError(f"inputs[{i}] of the infer request has no name.")
        name, datatype, shape = item["name"], item.get("datatype"), item.get("shape")
        if datatype not in DATATYPES:
            raise InferenceError(f"input '{name}' has datatype {datatype!r}, not an Open Inference Protocol type.")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InferenceError(f"input '{name}' has shape {shape!r}, not a list of sizes.")
        try:
            data = np.asarray(item.get("data"), dtype=DATATYPES[datatype])
            arrays[name] = data.reshape(shape)
        except (ValueError, TypeError) as exc:
            raise InferenceError(f"input '{name}' data does not fit datatype {datatype} and shape {shape}.") from exc
    return (str(request_id) if request_id is not None else None), arrays


def encode_response(
    manifest: Manifest, outputs: dict[str, np.ndarray], request_id: str | None, wanted: list[str] | None = None
) -> dict[str, Any]:
    names = wanted or list(outputs)
    return {
        "model_name": manifest.model,
        "model_version": manifest.version,
        "id": request_id or "",
        "outputs": [
            {
                "name": name,
                "datatype": NUMPY_TO_OIP.get(outputs[name].dtype, "BYTES"),
                "shape": list(outputs[name].shape),
                "data": outputs[name].reshape(-1).tolist(),
            }
            for name in names
        ],
    }


def requested_outputs(body: dict[str, Any], manifest: Manifest) -> list[str] | None:
    items = body.get("outputs")
    if not items:
        return None
    known = {spec.name for spec in manifest.outputs}
    names = [str(item.get("name")) for item in items if isinstance(item, dict)]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InferenceError(f"model {manifest.label} has no output named {unknown[0]!r}.")
    return names


def metadata(manifest: Manifest) -> dict[str, Any]:
    return {
        "name": manifest.model,
        "versions": [manifest.version],
        "platform": "onnxruntime",
        "inputs": [spec.to_dict() for spec in manifest.inputs],
        "outputs": [spec.to_dict() for spec in manifest.outputs],
    }
