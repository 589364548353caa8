"""What a served version reads and answers, as the monitoring loop, ingest and the API need it.

A version's signature (input columns and shape, classes, task, its spec's `monitoring:`
section) comes from its MLflow run once per process; so does its reference sample.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from modelyard.errors import NotFoundError

if TYPE_CHECKING:
    from modelyard.monitoring.checks import Reference
    from modelyard.monitoring.spec import MonitoringSpec
    from modelyard.platform.context import Platform
    from modelyard.platform.store.inference import LoggedRow
    from modelyard.trainers.spec import TrainSpec


@dataclass
class Signature:
    """What a version reads and answers, as the monitoring loop needs it (from its run's dataset.json)."""

    model: str
    version: str
    run_id: str
    spec: TrainSpec
    monitoring: MonitoringSpec
    columns: list[str]  # one per flattened input value
    input_shape: list[int]
    classes: list[Any]
    task: str

    @property
    def metric(self) -> str:
        return self.spec.primary_metric

    def class_index(self, label: Any) -> int | None:
        from modelyard.trainers.datasets import class_index, label_key

        return class_index(self.classes).get(label_key(label))


_cache_lock = threading.Lock()
_signatures: dict[tuple[str, str], Signature] = {}
_references: dict[tuple[str, str], Reference] = {}


def signature(platform: Platform, model: str, version: str) -> Signature:
    """A version's signature and monitoring section; read from MLflow once per process."""
    from modelyard.monitoring.spec import parse_monitoring
    from modelyard.platform.registry import tracking

    key = (model, version)
    with _cache_lock:
        if key in _signatures:
            return _signatures[key]
    info = platform.registry.get_version(model, version)
    run_id = info.run_id or ""
    tracking.use_tracking(platform.settings)
    spec = tracking.load_spec_of(run_id)
    data = tracking.load_dataset_info(run_id)
    shape = [int(d) for d in data.get("input_shape", [])]
    width = int(np.prod(shape)) if shape else 1
    names = [str(n) for n in data.get("features", [])]
    columns = names if len(names) == width else [f"f{i}" for i in range(width)]
    found = Signature(
        model,
        version,
        run_id,
        spec,
        parse_monitoring(spec.monitoring, f"of {model}/{version}"),
        columns,
        shape,
        list(data.get("classes") or []),
        str(data.get("task", spec.dataset.task)),
    )
    with _cache_lock:
        _signatures[key] = found
    return found


def known(platform: Platform, model: str) -> None:
    if not platform.audit.knows(model):
        raise NotFoundError(f"model '{model}' is not registered.", code="model_not_found")


def champion_of(platform: Platform, model: str) -> str:
    known(platform, model)
    aliases = platform.audit.aliases(model).get(model, {})
    champion = aliases.get("champion")
    if champion is None:
        raise NotFoundError(f"model '{model}' has no champion to monitor.", code="alias_not_set")
    return champion


def open_version(platform: Platform, model: str, version: str) -> Any:
    """The version's server ONNX variant (the one the server serves), opened in this process."""
    from modelyard.platform.serving.models import load_version

    return load_version(platform.registry, model, version, platform.settings.root / "cache" / "models", threads=1)


def predict(loaded: Any, sig: Signature, flat: np.ndarray) -> np.ndarray:
    x = flat.reshape((len(flat), *sig.input_shape)).astype(np.float32)
    out = loaded.run({loaded.inputs[0].name: x})
    return np.asarray(out[loaded.outputs[0].name], dtype=np.float64)


def reference(platform: Platform, sig: Signature) -> Reference:
    """The version's reference sample (training rows logged with it), its outputs on them, its held-out metric."""
    import mlflow
    import pandas as pd

    from modelyard.monitoring.checks import Reference
    from modelyard.platform.registry.mlflow_store import mlflow_errors

    key = (sig.model, sig.version)
    with _cache_lock:
        if key in _references:
            return _references[key]
    with mlflow_errors(f"the reference sample of {sig.model}/{sig.version}"):
        path = mlflow.artifacts.download_artifacts(
            run_id=sig.run_id, artifact_path="reference/reference_sample.parquet"
        )
    frame = pd.read_parquet(path).drop(columns=["label"], errors="ignore")
    frame.columns = sig.columns
    outputs = predict(open_version(platform, sig.model, sig.version), sig, frame.to_numpy(np.float32))
    heldout = platform.registry.run_metrics(sig.run_id).get(f"test_{sig.metric}")
    found = Reference(frame, outputs, heldout)
    with _cache_lock:
        _references[key] = found
    return found


def rows_to_arrays(sig: Signature, rows: list[LoggedRow]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Logged rows -> (flat inputs, outputs, labels of the labeled rows, labeled mask)."""
    inputs = [next(iter(r.inputs.values())) if r.inputs else [] for r in rows]
    outputs = [next(iter(r.outputs.values())) if r.outputs else [] for r in rows]
    flat = np.asarray(inputs, dtype=np.float64).reshape(len(rows), -1)
    out = np.asarray(outputs, dtype=np.float64).reshape(len(rows), -1)
    labeled = np.array([r.label is not None for r in rows], dtype=bool)
    if sig.task == "classification":
        labels = np.array([sig.class_index(r.label) for r in rows if r.label is not None], dtype=np.int64)
    else:
        labels = np.array([float(r.label) for r in rows if r.label is not None], dtype=np.float64)
    return flat, out, labels, labeled
