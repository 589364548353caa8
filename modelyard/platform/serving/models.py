"""A loaded version: its ONNX Runtime session and its signature in Open Inference Protocol terms.

The variant served is the one the export chose for the target (`server-gpu` on a machine
whose ONNX Runtime has CUDA, else `server-cpu`), read from the version's tags; the file
is the run's `export/variants/<variant>.onnx`, downloaded once into a cache folder.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import InputError, UnavailableError
from modelyard.oip import TensorSpec, fits, is_shape, model_metadata, unknown_and_missing
from modelyard.oip.tensors import TensorError, encode_tensor, from_binary, from_json
from modelyard.platform.registry.base import EXPORT_TAG
from modelyard.runtime import CPU, CUDA, ProviderFallback, SessionError, UnsupportedTensor, open_session, run, signature

__all__ = ["LoadedModel", "TensorSpec", "decode_inputs", "encode_outputs", "load_version", "serving_target"]


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
        return run(self.session, [spec.name for spec in self.outputs], feeds)

    def metadata(self) -> dict[str, Any]:
        parameters = {"variant": self.variant, "target": self.target, "providers": self.providers}
        return model_metadata(self.name, self.version, "onnxruntime_onnx", self.inputs, self.outputs, parameters)


def serving_target() -> str:
    import onnxruntime as ort

    return "server-gpu" if CUDA in ort.get_available_providers() else "server-cpu"


_download_lock = threading.Lock()


def load_version(registry: Any, name: str, version: str, cache: Path, threads: int = 0) -> LoadedModel:
    """Download (once) and open the version's variant for this machine's target; one sentence if it has none."""
    import mlflow

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
    wanted = [CUDA, CPU] if target == "server-gpu" else [CPU]
    try:
        # Idle ONNX Runtime threads spin by default: on a small machine they take the CPU the event loop needs.
        session = open_session(path, providers=wanted, threads=threads, spinning=False)
        inputs, outputs = signature(session)
    except SessionError as err:  # a corrupt file, an operator this runtime lacks
        raise UnavailableError(
            f"{name}/{version}: ONNX Runtime cannot load {variant}.onnx ({err.reason}).", code="load_failed"
        ) from None
    except ProviderFallback as err:
        raise UnavailableError(f"{name}/{version}: {err}") from None
    except UnsupportedTensor as err:
        raise UnavailableError(
            f"tensor '{err.name}' has type {err.onnx_type}, which this server does not serve."
        ) from None
    providers = list(session.get_providers())
    return LoadedModel(name, version, target, variant, path, session, inputs, outputs, providers)


def decode_inputs(
    model: LoadedModel, tensors: list[dict[str, Any]], binary: bytes | None, max_rows: int, kind: str = "input"
) -> dict[str, np.ndarray]:
    """OIP request tensors -> feeds, checked against the signature: one sentence naming the tensor that is wrong.

    `kind="output"` checks tensors against the outputs instead (predictions uploaded from elsewhere).
    The protocol's rules (shapes, data, binary extension) are modelyard.oip's, shared with the agent.
    """
    where = f"{model.name}/{model.version}"
    expected = {i.name: i for i in (model.inputs if kind == "input" else model.outputs)}
    given = [t.get("name") for t in tensors]
    unknown, missing = unknown_and_missing(given, expected)
    if unknown:
        raise InputError(f"{where} has no {kind} '{unknown[0]}' ({kind}s: {', '.join(expected)}).")
    if missing:
        raise InputError(f"{kind} '{missing[0]}' of {where} is missing.")
    if len(set(given)) != len(given):
        raise InputError(f"an {kind} of {where} is given twice.")
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    rows: int | None = None
    for t in tensors:
        spec = expected[t["name"]]
        what = f"{kind} '{spec.name}' of {where}"
        shape = t.get("shape")
        if t.get("datatype") != spec.datatype:
            raise InputError(f"{what} must have datatype {spec.datatype}, not {t.get('datatype')}.")
        if not is_shape(shape):
            raise InputError(f"{what} needs a shape: a list of integers.")
        if not fits(shape, spec.shape):
            raise InputError(f"{what} must have shape {list(spec.shape)} (-1: any size), not {shape}.")
        if any(d < 1 for d in shape):
            raise InputError(f"{what} has an empty dimension in shape {shape}.")
        if shape[0] > max_rows:
            raise InputError(f"{what} has {shape[0]} rows; this server takes at most {max_rows}.")
        if rows is not None and shape[0] != rows:
            raise InputError(f"the {kind}s of {where} disagree on the number of rows ({rows} and {shape[0]}).")
        rows = shape[0]
        size = (t.get("parameters") or {}).get("binary_data_size")
        try:  # finite, however sent: what is served is logged, and one NaN in the log would poison every drift window
            if size is not None:
                feeds[spec.name] = from_binary(binary, offset, size, spec.datatype, shape, what=what, finite=True)
                offset += size
            else:
                feeds[spec.name] = from_json(t.get("data"), spec.datatype, shape, what=what, finite=True)
        except TensorError as err:
            raise InputError(str(err)) from None
    return feeds


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
        binary = bool((w.get("parameters") or {}).get("binary_data", binary_all))
        tensor, raw = encode_tensor(name, results[name], names[name].datatype, binary=binary)
        tensors.append(tensor)
        if raw is not None:
            chunks.append(raw)
    return tensors, chunks
