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


def log_outputs(
    spec: TrainSpec,
    ds: Dataset,
    split: Split,
    result: TrainResult,
    evaluation: Evaluation,
    baseline: tuple[str, Evaluation],
) -> None:
    """Metrics and artifacts of a finished training (everything but the model itself)."""
    import mlflow
    import pandas as pd

    mlflow.log_metrics({f"test_{k}": v for k, v in evaluation.metrics.items()})
    mlflow.log_metrics({f"baseline_{k}": v for k, v in baseline[1].metrics.items()})
    mlflow.log_metrics(
        {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "fit_seconds": result.fit_seconds}
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "metrics.json").write_text(
            json.dumps(
                {
                    "test": evaluation.metrics,
                    "baseline": {"name": baseline[0], **baseline[1].metrics},
                },
                indent=2,
            )
        )
        (folder / "dataset.json").write_text(
            json.dumps(
                {
                    "source": ds.source,
                    "sha256": ds.content_hash,
                    "splits": split.hashes,
                    "classes": ds.classes,
                    "features": ds.feature_names,
                    "input_shape": list(ds.x.shape[1:]),
                    "task": ds.task,
                },
                indent=2,
                default=str,
            )
        )
        (folder / "history.json").write_text(json.dumps(result.history))
        (folder / "hardware.json").write_text(json.dumps(result.device.as_dict()))
        if evaluation.confusion:
            (folder / "confusion_matrix.json").write_text(
                json.dumps({"classes": ds.classes, "matrix": evaluation.confusion}, default=str)
            )
            save_confusion_png(evaluation.confusion, ds.classes, folder / "confusion_matrix.png")
        mlflow.log_artifacts(str(folder), "evaluation")
        (folder / "spec.json").write_text(spec.model_dump_json(indent=2))
        mlflow.log_artifact(str(folder / "spec.json"), "evaluation")
        rng = np.random.default_rng(spec.seed)
        calibration = split.x_train[rng.permutation(len(split.x_train))[:EXPORT_ROWS]]
        np.savez_compressed(folder / "holdout.npz", x=split.x_test, y=split.y_test)
        np.savez_compressed(folder / "validation.npz", x=split.x_val[:EXPORT_ROWS])
        np.savez_compressed(folder / "calibration.npz", x=calibration)
        for name in ("holdout.npz", "validation.npz", "calibration.npz"):
            mlflow.log_artifact(str(folder / name), "holdout")
        rows = np.random.default_rng(spec.seed).permutation(len(split.x_train))[:REFERENCE_ROWS]
        flat = split.x_train[rows].reshape(len(rows), -1)
        columns = (
            ds.feature_names if len(ds.feature_names) == flat.shape[1] else [f"f{i}" for i in range(flat.shape[1])]
        )
        reference = pd.DataFrame(flat, columns=columns)
        reference["label"] = split.y_train[rows]
        reference.to_parquet(folder / "reference_sample.parquet")
        mlflow.log_artifact(str(folder / "reference_sample.parquet"), "reference")


def log_keras_model(model: Any, split: Split) -> str:
    """The model with signature and input example; pip requirements given (inferring them costs seconds)."""
    import keras
    import mlflow
    import mlflow.keras
    import tensorflow as tf
    from mlflow.models import infer_signature

    example = split.x_test[:2]
    signature = infer_signature(example, np.asarray(model.predict(example, verbose=0)))
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
