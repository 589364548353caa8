"""Celery tasks: validate the payload, call one plain function, return a small JSON result."""

from __future__ import annotations

import os
import time
from contextlib import suppress
from typing import Any

from celery import Task
from celery.signals import worker_init
from pydantic import ValidationError

from modelyard.errors import SpecError, TransientError
from modelyard.platform.context import Platform
from modelyard.platform.jobs.celery_app import EXPORT_TASK, TRAIN_TASK, app
from modelyard.platform.settings import Settings


@worker_init.connect
def preload(**_: Any) -> None:
    """Import what every training needs, except TensorFlow, once in the worker's parent.

    The train worker forks a fresh child per task; children inherit these modules
    instead of spending seconds importing them. TensorFlow stays out: CUDA does not
    survive fork.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()  # the first drawing loads fonts: pay it once, here
    ax.text(0.5, 0.5, "0")
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)
    import mlflow.data.numpy_dataset
    import mlflow.models
    import mlflow.pyfunc
    import mlflow.store.model_registry.sqlalchemy_store
    import mlflow.store.tracking.sqlalchemy_store
    import mlflow.tracking  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.pandas_compat
    import pyarrow.parquet  # noqa: F401
    import sklearn.datasets
    import sklearn.linear_model
    import sklearn.metrics
    import sklearn.model_selection
    import sklearn.pipeline  # noqa: F401

    # Saving a model checks its pip requirements against the installed packages, and MLflow
    # first maps every installed distribution's files to its modules: 1.5 s in each fresh
    # child. Built once here (a private helper; skipped if MLflow renames it).
    from mlflow.utils import requirements_utils

    with suppress(Exception):
        requirements_utils._init_packages_to_modules_map()


def backoff(retries: int, base: float = 5.0, cap: float = 300.0) -> float:
    return min(cap, base * 2**retries)


@app.task(bind=True, name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def train(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Train, register, gate. TensorFlow is imported in here, in the worker's child."""
    from modelyard.platform.jobs.training import Busy, TrainRequest, run_training

    try:
        request = TrainRequest.model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        raise SpecError(f"bad training request: field '{'.'.join(map(str, first['loc']))}': {first['msg']}.") from None
    settings = Settings()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines drown the worker log
    t = time.perf_counter()
    import tensorflow  # noqa: F401 - timed apart: benchmarks exclude it, as they exclude it for plain Keras

    import_s = time.perf_counter() - t

    def progress(info: dict[str, Any]) -> None:
        self.update_state(state="PROGRESS", meta={"request_id": request.request_id, **info})

    def enqueue_export(name: str, version: str, request_id: str) -> None:
        export.apply_async(
            args=[{"name": name, "version": version, "request_id": request_id}], task_id=f"{request_id}:export"
        )

    try:
        result = run_training(Platform(settings), request, progress, enqueue_export)
    except Busy as busy:
        raise self.retry(countdown=busy.retry_in, max_retries=None) from None
    except TransientError as err:
        if self.request.retries >= settings.max_retries:
            raise
        raise self.retry(exc=err, countdown=backoff(self.request.retries)) from None
    result.setdefault("timings", {})["tensorflow_import_s"] = import_s
    return result


@app.task(bind=True, name=EXPORT_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def export(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Export a version to ONNX; for a training request, then gate it and record the final result."""
    from modelyard.platform.jobs.exporting import ExportBusy, export_version, finish_request

    name, version = str(payload.get("name", "")), str(payload.get("version", ""))
    if not name or not version.isdigit():
        raise SpecError(f"bad export request: needs a model name and a version number, got {payload!r}.")
    settings = Settings()
    platform = Platform(settings)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if payload.get("request_id"):
            return finish_request(platform, name, version, str(payload["request_id"]))
        return export_version(platform, name, version, str(payload.get("actor") or "cli"), payload.get("targets"))
    except ExportBusy:
        raise self.retry(countdown=settings.heartbeat_seconds, max_retries=None) from None
    except TransientError as err:
        if self.request.retries >= settings.max_retries:
            raise
        raise self.retry(exc=err, countdown=backoff(self.request.retries)) from None
