"""Celery tasks: validate the payload, call one plain function, return a small JSON result."""

from __future__ import annotations

import logging
import os
import time
from contextlib import suppress
from typing import Any

from celery import Task
from celery.signals import worker_init
from pydantic import ValidationError

from modelyard import retry
from modelyard.errors import SpecError
from modelyard.platform.context import Platform
from modelyard.platform.queue.app import (
    CHECK_TASK,
    EXPORT_TASK,
    FLEET_TICK_TASK,
    RECONCILE_TASK,
    RETENTION_TASK,
    TICK_TASK,
    TRAIN_TASK,
)
from modelyard.platform.queue.outbox import broker_epoch
from modelyard.platform.settings import Settings
from modelyard.platform.store.states import State
from modelyard.platform.worker.app import app


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


def backoff(retries: int) -> float:
    # 5 s doubling to 5 min (settings.max_retries says so); no jitter: each task's retries are already
    # spread by when it failed. The rule itself is modelyard.retry's, shared with the device agent.
    return retry.backoff(retries, base=5.0, cap=300.0)


def _retry_claim(task: Task, err: Exception, what: str, platform: Platform, request_id: str) -> Exception:
    """The request could not be claimed.

    Transient (the platform database is down): nothing records this delivery but the
    message itself, so it is never acknowledged as done; it is retried with backoff for as
    long as the failure lasts. Permanent (a spec that no longer parses): the request fails
    with the reason, if it was waiting, so nothing re-publishes it forever.
    """
    from modelyard.platform.faults import as_transient, describe, is_transient

    if is_transient(err):
        return task.retry(exc=as_transient(err, what), countdown=backoff(task.request.retries), max_retries=None)
    with suppress(Exception):
        platform.requests.fail(None, request_id, describe(err))
    return err


def _retry_or_raise(task: Task, err: Exception, retry_in: float | None) -> Exception:
    """After the claim: a transient failure (of any library, judged by type) is retried with
    backoff; the stage has already given its claim back, or will be taken over once stale."""
    from modelyard.platform.faults import as_transient, is_transient

    if retry_in is None or not is_transient(err):
        return err
    return task.retry(exc=as_transient(err, task.name), countdown=retry_in, max_retries=None)


@app.task(bind=True, name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def train(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Claim, then (only with the claim) import TensorFlow and train, register, hand over to export."""
    from modelyard.platform.services.attempts import end_attempt, unclaimed_answer
    from modelyard.platform.services.training import TrainRequest, claim_training, run_training

    try:
        request = TrainRequest.model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        raise SpecError(f"bad training request: field '{'.'.join(map(str, first['loc']))}': {first['msg']}.") from None
    settings = Settings()
    platform = Platform(settings)
    try:
        claim = claim_training(platform, request)
    except Exception as err:
        raise _retry_claim(self, err, f"claim request {request.request_id}", platform, request.request_id) from None
    if claim.lease is None:
        return unclaimed_answer(claim)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines drown the worker log
    retry_in = None if self.request.retries >= settings.max_retries else backoff(self.request.retries)
    t = time.perf_counter()
    try:  # seconds on a busy machine: the lease is kept alive meanwhile, or the reconciler would think it dead
        with platform.requests.heartbeat(claim.lease, settings.heartbeat_seconds):
            import tensorflow  # noqa: F401 - timed apart: benchmarks exclude it, as they exclude it for plain Keras
    except BaseException as err:  # a broken install: the request fails with the reason, not silently
        raise end_attempt(platform, claim.row.model, claim.lease, err, None, "training") from err
    import_s = time.perf_counter() - t

    def progress(info: dict[str, Any]) -> None:
        self.update_state(state="PROGRESS", meta={"request_id": request.request_id, **info})

    def enqueue_export(name: str, version: str, request_id: str) -> None:
        from modelyard.platform.queue.outbox import send_export

        # the epoch is read first: a broker lost after this read makes the row look unsent
        epoch = broker_epoch(self.app, settings)
        send_export(self.app, name, version, request_id)
        platform.requests.mark_published(request_id, State.TRAINED, epoch)

    try:
        result = run_training(platform, request, progress, enqueue_export, claim, retry_in)
    except Exception as err:
        raise _retry_or_raise(self, err, retry_in) from None
    result.setdefault("timings", {})["tensorflow_import_s"] = import_s
    return result


@app.task(bind=True, name=EXPORT_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def export(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Export a version to ONNX; for a training request, then gate it and record the final result."""
    from modelyard.platform.services.attempts import unclaimed_answer
    from modelyard.platform.services.exporting import claim_export, export_version, finish_request

    name, version = str(payload.get("name", "")), str(payload.get("version", ""))
    if not name or not version.isdigit():
        raise SpecError(f"bad export request: needs a model name and a version number, got {payload!r}.")
    settings = Settings()
    platform = Platform(settings)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    retry_in = None if self.request.retries >= settings.max_retries else backoff(self.request.retries)
    if payload.get("request_id"):
        request_id = str(payload["request_id"])
        try:
            claim = claim_export(platform, request_id)
        except Exception as err:
            raise _retry_claim(self, err, f"claim the export of request {request_id}", platform, request_id) from None
        if claim.lease is None:
            return unclaimed_answer(claim)
        try:
            return finish_request(platform, request_id, claim, retry_in)
        except Exception as err:
            raise _retry_or_raise(self, err, retry_in) from None
    try:
        return export_version(platform, name, version, str(payload.get("actor") or "cli"), payload.get("targets"))
    except Exception as err:
        raise _retry_or_raise(self, err, retry_in) from None


@app.task(bind=True, name=RECONCILE_TASK, ignore_result=True)
def reconcile(self: Task) -> list[dict[str, str]]:
    """Beat's periodic pass: drive every request nobody drives (services/reconcile.py)."""
    from modelyard.platform.services.reconcile import reconcile as run

    return [a.as_dict() for a in run(Platform(Settings()), self.app)]


@app.task(bind=True, name=CHECK_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def check(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """One drift check of a model's newest window, then the retraining policy (services/drift.py, retraining.py).

    A worker killed mid-check leaves the message unacknowledged: it is redelivered and the
    check runs again; the window's key makes it one row, one decision.
    """
    from modelyard.platform.faults import as_transient, is_transient
    from modelyard.platform.services.drift import run_check

    model = str(payload.get("model", ""))
    if not model:
        raise SpecError(f"bad drift check request: needs a model name, got {payload!r}.")
    try:
        return run_check(Platform(Settings()), model)
    except Exception as err:
        if is_transient(err) and self.request.retries < Settings().max_retries:
            raise self.retry(exc=as_transient(err, "drift check"), countdown=backoff(self.request.retries)) from None
        raise


@app.task(bind=True, name=TICK_TASK, ignore_result=True)
def tick(self: Task) -> None:
    """Beat's monitoring pass: queue the drift checks that are due, give the guard's verdicts."""
    import logging

    from modelyard.platform.queue.outbox import send_check
    from modelyard.platform.services.guard import guard, guarded_models
    from modelyard.platform.services.schedule import due_checks

    platform = Platform(Settings())
    log = logging.getLogger("modelyard.monitor")
    for model in due_checks(platform):
        send_check(self.app, model, platform.inference.last_id(model))
    for model in guarded_models(platform):
        try:
            verdict = guard(platform, model)
        except Exception as err:  # one model's failure must not stop the others' guards
            log.warning("guard of %s: %s", model, err)
            continue
        if verdict and verdict["verdict"] in ("guard_baked", "guard_rolled_back"):
            log.info("guard of %s: %s", model, verdict["reason"])


@app.task(bind=True, name=RETENTION_TASK, ignore_result=True)
def retention(self: Task) -> dict[str, int]:
    """Beat's hourly pass: at most MODELYARD_INFERENCE_LOG_MAX_ROWS logged rows per model."""
    from modelyard.platform.services.schedule import retention as trim

    return trim(Platform(Settings()))


@app.task(bind=True, name=FLEET_TICK_TASK, ignore_result=True)
def fleet_tick(self: Task) -> dict[str, list[int]]:
    """Beat's fleet pass (every `fleet_tick_seconds`): followers follow their champion, rollouts move on."""
    from modelyard.platform.services.fleet import fleet_tick as run

    return run(Platform(Settings()))


class QuietFleetTicks(logging.Filter):
    """The fleet's tick comes every second or so: its lines at INFO (received, succeeded, expired) would
    drown the worker's log. Its failures still show: Celery logs them above INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or FLEET_TICK_TASK not in record.getMessage()


for _logger in ("celery.worker.strategy", "celery.app.trace", "celery.worker.request"):
    logging.getLogger(_logger).addFilter(QuietFleetTicks())
