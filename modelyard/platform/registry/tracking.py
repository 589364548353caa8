"""MLflow tracking for one training: params, per-epoch metrics, dataset inputs, the model,
evaluation artifacts, the held-out split (for the gate) and a reference sample (for drift).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.platform.registry.mlflow_store import mlflow_errors
from modelyard.platform.settings import Settings
from modelyard.trainers.datasets import Dataset, Split
from modelyard.trainers.evaluate import Evaluation, save_confusion_png
from modelyard.trainers.spec import TrainSpec
from modelyard.trainers.train import TrainResult

HOLDOUT = "holdout/holdout.npz"
REFERENCE_ROWS = 1000
EXPORT_ROWS = 256  # validation rows for export parity, training rows for int8 calibration


def use_tracking(settings: Settings) -> None:
    import os

    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # bars garble worker logs
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)


def experiment_for(settings: Settings, model: str) -> str:
    import mlflow

    name = f"modelyard/{model}"
    with mlflow_errors(f"experiment for '{model}'"):
        found = mlflow.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(mlflow.create_experiment(name, artifact_location=settings.artifact_location))
        except Exception:  # created meanwhile by another worker
            found = mlflow.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)


def flat_params(spec: TrainSpec) -> dict[str, str]:
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            out[prefix] = json.dumps(value) if not isinstance(value, str) else value

    walk("", spec.model_dump(mode="json"))
    return {k: v[:6000] for k, v in out.items()}


class EpochLogger:
    """Per-epoch metrics logged off the training loop, in order, in batches.

    MLflow's own asynchronous logging polls its queue once a second, so ending a run
    waited up to a second for it; this thread wakes on close() at once. Between writes it
    waits `every` seconds and writes what came meanwhile as one batch: each write is Python
    work (MLflow's SQLAlchemy store) that holds the interpreter lock the training loop needs,
    so one write per short epoch competes with the fit itself.
    """

    def __init__(self, client: Any, run_id: str, every: float = 2.0) -> None:
        import queue
        import threading

        self._client, self._run_id, self._every = client, run_id, every
        self._queue: queue.Queue[tuple[int, dict[str, float]] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name=f"epochs-{run_id[:8]}", daemon=True)
        self._thread.start()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._queue.put((step, metrics))

    def close(self) -> None:
        """Wait until every logged epoch is written; raise the first error the thread met."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            with mlflow_errors(f"log the epochs of run {self._run_id}"):
                raise self._error

    def _drain(self) -> None:
        import contextlib
        import queue
        import time

        from mlflow.entities import Metric

        done = False
        while not done:
            items = [self._queue.get()]
            quiet_until = time.monotonic() + self._every
            while items[-1] is not None and (left := quiet_until - time.monotonic()) > 0:
                with contextlib.suppress(queue.Empty):
                    items.append(self._queue.get(timeout=left))
            while items[-1] is not None and not self._queue.empty():
                items.append(self._queue.get())
            done = items[-1] is None
            now = int(time.time() * 1000)
            batch = [Metric(k, float(v), now, step) for step, logs in filter(None, items) for k, v in logs.items()]
            if batch and self._error is None:
                try:
                    self._client.log_batch(self._run_id, metrics=batch)
                except Exception as err:  # kept for close(): the fit goes on
                    self._error = err


def log_datasets(ds: Dataset, split: Split, model: str) -> None:
    import mlflow
    from mlflow.data.numpy_dataset import from_numpy

    for context, x, y in (
        ("training", split.x_train, split.y_train),
        ("validation", split.x_val, split.y_val),
        ("test", split.x_test, split.y_test),
    ):
        key = {"training": "train", "validation": "validation", "test": "test"}[context]
        data = from_numpy(x, targets=y, name=f"{model}-{key}", digest=split.hashes[key][:36])
        mlflow.log_input(data, context=context, tags={"source": ds.source, "sha256": split.hashes[key]})


def log_inputs(client: Any, run_id: str, spec: TrainSpec, ds: Dataset, split: Split) -> None:
    """What is known before the fit ends: the spec, the dataset's facts, the held-out split
    (the gate reads it), parity and calibration rows (the export reads them) and the
    reference sample (drift checks read it). Runs beside the fit, in a thread, so the
    client names the run instead of MLflow's thread-local active run."""
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder in ("evaluation", "holdout", "reference"):
            (root / folder).mkdir()
        dataset = {
            "source": ds.source,
            "sha256": ds.content_hash,
            "splits": split.hashes,
            "classes": ds.classes,
            "features": ds.feature_names,
            "input_shape": list(ds.x.shape[1:]),
            "task": ds.task,
        }
        (root / "evaluation" / "dataset.json").write_text(json.dumps(dataset, indent=2, default=str))
        (root / "evaluation" / "spec.json").write_text(spec.model_dump_json(indent=2))
        rng = np.random.default_rng(spec.seed)
        calibration = split.x_train[rng.permutation(len(split.x_train))[:EXPORT_ROWS]]
        np.savez_compressed(root / HOLDOUT, x=split.x_test, y=split.y_test)
        np.savez_compressed(root / "holdout" / "validation.npz", x=split.x_val[:EXPORT_ROWS])
        np.savez_compressed(root / "holdout" / "calibration.npz", x=calibration)
        rows = np.random.default_rng(spec.seed).permutation(len(split.x_train))[:REFERENCE_ROWS]
        flat = split.x_train[rows].reshape(len(rows), -1)
        columns = (
            ds.feature_names if len(ds.feature_names) == flat.shape[1] else [f"f{i}" for i in range(flat.shape[1])]
        )
        reference = pd.DataFrame(flat, columns=columns)
        reference["label"] = split.y_train[rows]
        reference.to_parquet(root / "reference" / "reference_sample.parquet")
        with mlflow_errors(f"log the inputs of run {run_id}"):
            client.log_artifacts(run_id, str(root))


def log_outputs(
    client: Any,
    run_id: str,
    ds: Dataset,
    result: TrainResult,
    evaluation: Evaluation,
    baseline: tuple[str, Evaluation],
) -> None:
    """Metrics and artifacts of a finished training (but the model): one batch of metrics, one upload."""
    import time

    from mlflow.entities import Metric

    values = {
        **{f"test_{k}": v for k, v in evaluation.metrics.items()},
        **{f"baseline_{k}": v for k, v in baseline[1].metrics.items()},
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "fit_seconds": result.fit_seconds,
    }
    now = int(time.time() * 1000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "evaluation"
        folder.mkdir()
        metrics = {"test": evaluation.metrics, "baseline": {"name": baseline[0], **baseline[1].metrics}}
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (folder / "history.json").write_text(json.dumps(result.history))
        (folder / "hardware.json").write_text(json.dumps(result.device.as_dict()))
        if evaluation.confusion:
            (folder / "confusion_matrix.json").write_text(
                json.dumps({"classes": ds.classes, "matrix": evaluation.confusion}, default=str)
            )
            save_confusion_png(evaluation.confusion, ds.classes, folder / "confusion_matrix.png")
        with mlflow_errors(f"log the results of run {run_id}"):
            client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])
            client.log_artifacts(run_id, tmp)


def log_keras_model(model: Any, split: Split) -> str:
    """The model with signature and input example; pip requirements given (inferring them costs seconds)."""
    import keras
    import mlflow
    import mlflow.keras
    import tensorflow as tf
    from mlflow.models import infer_signature

    example = split.x_test[:2]
    # A direct call: model.predict on a new batch shape would trace its function again (0.1-0.3 s).
    signature = infer_signature(example, np.asarray(model(example, training=False)))
    requirements = [
        f"tensorflow=={tf.__version__}",
        f"keras=={keras.__version__}",
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
    ]
    # mlflow.keras.log_model writes the input example before creating its folder (MLflow 3.17),
    # so save into a folder made here and log that folder as the run's `model` artifact.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        path.mkdir()
        mlflow.keras.save_model(
            model, str(path), signature=signature, input_example=example, pip_requirements=requirements
        )
        mlflow.log_artifacts(str(path), "model")
    run = mlflow.active_run()
    assert run is not None, "log_keras_model needs an active run"
    return f"runs:/{run.info.run_id}/model"


def register(model_uri: str, name: str, tags: dict[str, str]) -> str:
    import mlflow

    with mlflow_errors(f"register '{name}'"):
        return str(mlflow.register_model(model_uri, name, tags=tags).version)


def load_holdout(run_id: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_arrays(run_id, HOLDOUT, ("x", "y"))
    return x, y


def load_arrays(run_id: str, artifact: str, keys: tuple[str, ...]) -> list[np.ndarray]:
    import mlflow

    with mlflow_errors(f"'{artifact}' of run {run_id}"):
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact)
    with np.load(path) as data:
        return [data[k] for k in keys]


def load_spec_of(run_id: str) -> TrainSpec:
    import mlflow

    from modelyard.trainers.spec import parse_spec

    with mlflow_errors(f"training spec of run {run_id}"):
        data = mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation/spec.json")
    return parse_spec(data, f"of run {run_id}")


def load_dataset_info(run_id: str) -> dict[str, Any]:
    import mlflow

    with mlflow_errors(f"dataset info of run {run_id}"):
        return dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation/dataset.json"))


def load_model(name: str, version: str) -> Any:
    import mlflow.keras

    with mlflow_errors(f"model '{name}/{version}'"):
        return mlflow.keras.load_model(f"models:/{name}/{version}")
