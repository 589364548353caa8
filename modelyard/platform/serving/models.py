"""A loaded version: its ONNX Runtime session and its signature in Open Inference Protocol terms.

The variant served is the one the export chose for the target (`server-gpu` on a machine
whose ONNX Runtime has CUDA, else `server-cpu`), read from the version's tags; the file
is the run's `export/variants/<variant>.onnx`, downloaded once into a cache folder.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InputError, UnavailableError
from modelyard.platform.registry.base import EXPORT_TAG

# ONNX tensor types -> Open Inference Protocol datatypes and numpy dtypes.
ONNX_TO_OIP = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
}
OIP_DTYPES: dict[str, Any] = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT16": np.int16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # an OIP datatype
    shape: tuple[int, ...]  # -1 where the model accepts any size (the batch, first)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class LoadedModel:
    name: str
    version: str
    target: str
    variant: str
    path: Path
    session: Any
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    providers: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(None, feeds)
        return {spec.name: value for spec, value in zip(self.outputs, results, strict=True)}

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [i.as_dict() for i in self.inputs],
            "outputs": [o.as_dict() for o in self.outputs],
            "parameters": {"variant": self.variant, "target": self.target, "providers": self.providers},
        }


def _spec(arg: Any) -> TensorSpec:
    datatype = ONNX_TO_OIP.get(arg.type)
    if datatype is None:
        raise UnavailableError(f"tensor '{arg.name}' has type {arg.type}, which this server does not serve.")
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, datatype, shape)


def serving_target() -> str:
    import onnxruntime as ort

    return "server-gpu" if "CUDAExecutionProvider" in ort.get_available_providers() else "server-cpu"


_download_lock = threading.Lock()


def load_version(registry: Any, name: str, version: str, cache: Path, threads: int = 0) -> LoadedModel:
    """Download (once) and open the version's variant for this machine's target; one sentence if it has none."""
    import mlflow
    import onnxruntime as ort

    from modelyard.platform.registry.mlflow_store import mlflow_errors

    info = registry.get_version(name, version)
    target = serving_target()
    variant = info.tags.get(f"{EXPORT_TAG}.{target}")
    if target == "server-gpu" and variant in (None, "none"):  # a GPU machine still serves a CPU variant
        target, variant = "server-cpu", info.tags.get(f"{EXPORT_TAG}.server-cpu")
    if variant in (None, "none") or not info.run_id:
        status = info.tags.get(f"{EXPORT_TAG}.status")
        why = "it has not been exported yet" if status is None else f"its export chose no {target} variant"
        raise UnavailableError(f"{name}/{version} cannot be served: {why}.", code="not_exported")
    folder = cache / name / version
    path = folder / f"{variant}.onnx"
    with _download_lock:
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            with mlflow_errors(f"download the {variant} variant of {name}/{version}"):
                got = mlflow.artifacts.download_artifacts(
                    run_id=info.run_id, artifact_path=f"export/variants/{variant}.onnx", dst_path=str(folder / "tmp")
                )
            Path(got).rename(path)  # whole or absent: a crash mid-download leaves no half file under this name
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle ONNX Runtime threads spin by default: on a small machine they take the CPU the event loop needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"] if target == "server-gpu" else ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(path), options, providers=wanted)
    except Exception as err:  # a corrupt file, an operator this runtime lacks
        first = (str(err).splitlines() or [type(err).__name__])[0][:300]
        raise UnavailableError(
            f"{name}/{version}: ONNX Runtime cannot load {variant}.onnx ({first}).", code="load_failed"
        ) from None
    providers = list(session.get_providers())
    if providers[0] != wanted[0]:  # CUDA falls back to CPU silently
        raise UnavailableError(f"{name}/{version}: ONNX Runtime fell back from {wanted[0]} to {providers[0]}.")
    inputs = [_spec(i) for i in session.get_inputs()]
    outputs = [_spec(o) for o in session.get_outputs()]
    return LoadedModel(name, version, target, variant, path, session, inputs, outputs, providers)


def decode_inputs(
    model: LoadedModel, tensors: list[dict[str, Any]], binary: bytes | None, max_rows: int, kind: str = "input"
) -> dict[str, np.ndarray]:
    """OIP request tensors -> feeds, checked against the signature: one sentence naming the tensor that is wrong.

    `kind="output"` checks tensors against the outputs instead (predictions uploaded from elsewhere).
    """
    where = f"{model.name}/{model.version}"
    expected = {i.name: i for i in (model.inputs if kind == "input" else model.outputs)}
    given = [t.get("name") for t in tensors]
    unknown = [n for n in given if n not in expected]
    if unknown:
        raise InputError(f"{where} has no {kind} '{unknown[0]}' ({kind}s: {', '.join(expected)}).")
    missing = [n for n in expected if n not in given]
    if missing:
        raise InputError(f"{kind} '{missing[0]}' of {where} is missing.")
    if len(set(given)) != len(given):
        raise InputError(f"an {kind} of {where} is given twice.")
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    rows: int | None = None
    for t in tensors:
        spec = expected[t["name"]]
        shape = t.get("shape")
        if t.get("datatype") != spec.datatype:
            raise InputError(
                f"{kind} '{spec.name}' of {where} must have datatype {spec.datatype}, not {t.get('datatype')}."
            )
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise InputError(f"{kind} '{spec.name}' of {where} needs a shape: a list of integers.")
        if len(shape) != len(spec.shape) or any(e != -1 and d != e for d, e in zip(shape, spec.shape, strict=True)):
            raise InputError(
                f"{kind} '{spec.name}' of {where} must have shape {list(spec.shape)} (-1: any size), not {shape}."
            )
        if any(d < 1 for d in shape):
            raise InputError(f"{kind} '{spec.name}' of {where} has an empty dimension in shape {shape}.")
        if shape[0] > max_rows:
            raise InputError(
                f"{kind} '{spec.name}' of {where} has {shape[0]} rows; this server takes at most {max_rows}."
            )
        if rows is not None and shape[0] != rows:
            raise InputError(f"the {kind}s of {where} disagree on the number of rows ({rows} and {shape[0]}).")
        rows = shape[0]
        count = math.prod(shape)
        dtype = OIP_DTYPES[spec.datatype]
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if binary is None or not isinstance(size, int) or offset + size > len(binary):
                raise InputError(f"{kind} '{spec.name}' of {where} names binary data the request does not carry.")
            if size != count * np.dtype(dtype).itemsize:
                raise InputError(
                    f"{kind} '{spec.name}' of {where}: {size} bytes of binary data do not hold shape {shape} "
                    f"of {spec.datatype}."
                )
            array = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += size
        else:
            array = _from_json(t.get("data"), dtype, shape, f"{kind} '{spec.name}'", where)
        feeds[spec.name] = array
    return feeds


def _from_json(data: Any, dtype: Any, shape: list[int], what: str, where: str) -> np.ndarray:
    if not isinstance(data, list):
        raise InputError(f"{what} of {where} needs its data as a list of numbers.")
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{what} of {where} holds data that is not of its datatype.") from None
    if array.size != math.prod(shape):
        raise InputError(f"{what} of {where} has {array.size} values; shape {shape} needs {math.prod(shape)}.")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"{what} of {where} holds NaN or infinite values.")
    return array.reshape(shape)


def encode_outputs(
    model: LoadedModel, results: dict[str, np.ndarray], wanted: list[dict[str, Any]] | None, binary_all: bool
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """OIP output tensors (JSON data, or the binary extension where asked): (tensors, binary chunks)."""
    names = {o.name: o for o in model.outputs}
    requested = wanted or [{"name": n} for n in names]
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for w in requested:
        name = w.get("name")
        if name not in names:
            raise InputError(f"{model.name}/{model.version} has no output '{name}' (outputs: {', '.join(names)}).")
        value = results[name]
        tensor: dict[str, Any] = {"name": name, "datatype": names[name].datatype, "shape": list(value.shape)}
        if (w.get("parameters") or {}).get("binary_data", binary_all):
            raw = np.ascontiguousarray(value).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = value.reshape(-1).tolist()
        tensors.append(tensor)
    return tensors, chunks
