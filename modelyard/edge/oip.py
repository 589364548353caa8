"""The local server's Open Inference Protocol bodies: request decoding, response encoding.

The protocol's rules (datatypes, shapes, tensor data) are modelyard.oip's, shared with the
platform's API; this module only reads the request's structure and words each failure as
the agent's InferenceError (a 400 answer). The server module only routes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelyard.bundle import Manifest
from modelyard.edge.errors import InferenceError
from modelyard.oip import DATATYPES, infer_response, is_shape, model_metadata
from modelyard.oip.tensors import TensorError, encode_tensor, from_json


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
        if not is_shape(shape) or any(d < 0 for d in shape):
            raise InferenceError(f"input '{name}' has shape {shape!r}, not a list of sizes.")
        try:
            # NaN passes: the model decides what it makes of one (the device keeps no drift window).
            arrays[name] = from_json(item.get("data"), datatype, shape)
        except TensorError as exc:
            raise InferenceError(f"input '{name}' data does not fit datatype {datatype} and shape {shape}.") from exc
    return (str(request_id) if request_id is not None else None), arrays


def encode_response(
    manifest: Manifest, outputs: dict[str, np.ndarray], request_id: str | None, wanted: list[str] | None = None
) -> dict[str, Any]:
    # The array's own datatype: the session's outputs are what the manifest says, smoke-tested at install.
    tensors = [encode_tensor(name, outputs[name])[0] for name in wanted or list(outputs)]
    return infer_response(manifest.model, manifest.version, request_id or "", tensors)


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
    return model_metadata(manifest.model, manifest.version, "onnxruntime", manifest.inputs, manifest.outputs)
