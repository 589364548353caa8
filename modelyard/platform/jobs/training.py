"""One training request end to end: claim, train, log, register, gate, promote or reject.

Called by the `modelyard.train` Celery task, and directly by tests and benchmarks.
Idempotent on the request id: a redelivered request resumes where the last attempt
stopped and never registers a second version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, Field

from modelyard.errors import ModelyardError, TransientError
from modelyard.platform.context import Platform
from modelyard.platform.registry.base import TAG_PREFIX, VersionInfo
from modelyard.platform.registry.mlflow_store import MlflowRegistry
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.requests import worker_name
from modelyard.trainers.spec import TrainSpec, parse_spec

Progress = Callable[[dict[str, Any]], None]
ExportEnqueuer = Callable[[str, str, str], None]  # (model, version, request id)


class TrainRequest(BaseModel):
    request_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    spec: dict[str, Any]
    trigger: Literal["manual", "drift", "schedule"] = "manual"
    parent_version: str | None = None
    actor: str = "cli"


class Busy(Exception):
    """Another worker is training this request right now; try again later."""

    def __init__(self, request_id: str, owner: str | None, retry_in: float) -> None:
        super().__init__(f"request {request_id} is being trained by {owner}")
        self.retry_in = retry_in


def run_training(
    platform: Platform,
    request: TrainRequest,
    progress: Progress | None = None,
    enqueue_export: ExportEnqueuer | None = None,
) -> dict[str, Any]:
    """Claim, train, log, register as challenger, then hand the version to the export queue.

    The export task exports it, runs the gate and records the request's final result.
    Without `enqueue_export` (tests, benchmarks), the export and gate run here.
    """
    report = progress or (lambda _info: None)
    spec = parse_spec(request.spec, f"of request {request.request_id}")
    settings, store, audit = platform.settings, platform.requests, platform.audit
    store.create(request.request_id, spec.name, request.spec, request.trigger)
    owner = worker_name()
    claim = store.claim(request.request_id, owner)
    if claim.state == "done":
        return {**(claim.row.result or {}), "duplicate": True}
    if claim.state == "failed":
        raise ModelyardError(f"request {request.request_id} failed before: {claim.row.error}")
    if claim.state == "busy":
        raise Busy(request.request_id, claim.row.owner, retry_in=settings.heartbeat_seconds)
    if claim.row.attempts > 1:
        reason = f"attempt {claim.row.attempts}: the previous worker stopped before finishing; this one takes over"
        audit.record(EventRecord(spec.name, "training_resumed", reason, owner, request_id=request.request_id))
    try:
        with store.heartbeat(request.request_id, owner, settings.heartbeat_seconds):
            result = _train_and_register_once(platform, request, spec, owner, report)
    except TransientError:
        store.release(request.request_id, owner)
        raise
    except ModelyardError as err:
        store.update(request.request_id, owner, status="failed", error=str(err))
        audit.record(EventRecord(spec.name, "training_failed", str(err), owner, request_id=request.request_id))
        raise
    except BaseException as err:  # a bug or a time limit: record it, keep the message for the user
        message = f"training failed unexpectedly: {type(err).__name__}: {err}"
        store.update(request.request_id, owner, status="failed", error=message)
        audit.record(EventRecord(spec.name, "training_failed", message, owner, request_id=request.request_id))
        raise
    store.hand_over(request.request_id, owner, status="exporting", result=result)
    if enqueue_export is None:
        from modelyard.platform.jobs.exporting import finish_request

        return finish_request(platform, spec.name, result["version"], request.request_id)
    enqueue_export(spec.name, result["version"], request.request_id)
    return result


def _train_and_register_once(
    platform: Platform, request: TrainRequest, spec: TrainSpec, owner: str, report: Progress
) -> dict[str, Any]:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    registry, audit, lifecycle = platform.registry, platform.audit, platform.lifecycle
    existing = _registered_before(registry, spec.name, request.request_id)
    if existing is None:
        version, run_id, metrics = _train_and_register(platform, request, spec, owner, report, timings)
    else:  # a previous attempt registered it, then died
        version, run_id = existing.version, existing.run_id or ""
        metrics = {k.removeprefix("test_"): v for k, v in registry.run_metrics(run_id).items() if k.startswith("test_")}
        if not any(e.to_version == version for e in audit.history(spec.name, ("registered",))):
            evidence = {
                "metrics": metrics,
                "run_id": run_id,
                "trigger": request.trigger,
                "parent_version": request.parent_version,
                "dataset_sha256": existing.tags.get(f"{TAG_PREFIX}dataset_sha256"),
            }
            lifecycle.make_challenger(
                spec.name, version, owner, "registered by a resumed attempt", evidence, request.request_id
            )
    timings["total_s"] = time.perf_counter() - started
    return {
        "request_id": request.request_id,
        "model": spec.name,
        "version": version,
        "run_id": run_id,
        "status": "exporting",
        "metrics": metrics,
        "timings": timings,
        "duplicate": False,
    }


def _registered_before(registry: MlflowRegistry, name: str, request_id: str) -> VersionInfo | None:
    from modelyard.errors import NotFoundError

    try:
        return registry.find_by_tag(name, f"{TAG_PREFIX}request_id", request_id)
    except NotFoundError:
        return None


def _train_and_register(
    platform: Platform,
    request: TrainRequest,
    spec: TrainSpec,
    owner: str,
    report: Progress,
    timings: dict[str, float],
) -> tuple[str, str, dict[str, float]]:
    import mlflow

    from modelyard.platform.registry import tracking
    from modelyard.trainers import datasets, evaluate, train

    t = time.perf_counter()
    report({"stage": "loading data"})
    ds = datasets.load_dataset(spec.dataset)
    split = datasets.split_dataset(ds, spec.validation_fraction, spec.test_fraction, spec.seed)
    n_outputs = len(ds.classes) if ds.task == "classification" else 1
    timings["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    store = platform.requests
    experiment = tracking.experiment_for(platform.settings, spec.name)
    with mlflow.start_run(experiment_id=experiment, run_name=f"{spec.name}-{request.request_id[:8]}") as run:
        mlflow.set_tags(
            {
                f"{TAG_PREFIX}request_id": request.request_id,
                f"{TAG_PREFIX}trigger": request.trigger,
                f"{TAG_PREFIX}worker": owner,
            }
        )
        mlflow.log_params(tracking.flat_params(spec))
        tracking.log_datasets(ds, split, spec.name)
        store.update(request.request_id, owner, run_id=run.info.run_id)

        client, run_id = platform.registry.client, run.info.run_id
        epochs = tracking.EpochLogger(client, run_id)

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            epochs.log(epoch, logs)  # off the training loop
            report({"stage": "training", "epoch": epoch, "epochs": spec.epochs, "logs": logs})

        timings["setup_s"] = time.perf_counter() - t
        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="beside") as beside:
            # The held-out, parity, calibration and reference files need no trained model: written meanwhile.
            try:
                result = train.fit(spec, split, n_outputs, on_epoch)
            finally:
                epochs.close()
            inputs_logged = beside.submit(tracking.log_inputs, client, run_id, spec, ds, split)
            timings["fit_s"] = result.fit_seconds
            timings["build_s"] = time.perf_counter() - t - result.fit_seconds
            report({"stage": "evaluating"})
            t = time.perf_counter()
            evaluation = evaluate.evaluate_model(result.model, split.x_test, split.y_test, ds.task, n_outputs)
            base = evaluate.baseline(split, ds.task, n_outputs, spec.seed)
            beats = evaluate.beats(
                spec.primary_metric, evaluation.metrics[spec.primary_metric], base[1].metrics[spec.primary_metric]
            )
            timings["evaluate_s"] = time.perf_counter() - t
            t = time.perf_counter()
            mlflow.set_tags({f"{TAG_PREFIX}device": result.device.device, f"{TAG_PREFIX}beats_baseline": str(beats)})
            outputs_logged = beside.submit(tracking.log_outputs, client, run_id, ds, result, evaluation, base)
            model_uri = tracking.log_keras_model(result.model, split)
            outputs_logged.result()
            inputs_logged.result()  # a registered version always has its held-out data
        timings["log_s"] = time.perf_counter() - t
        report({"stage": "registering"})
        t = time.perf_counter()
        tags = {
            f"{TAG_PREFIX}request_id": request.request_id,
            f"{TAG_PREFIX}dataset_sha256": ds.content_hash,
            f"{TAG_PREFIX}trigger": request.trigger,
            f"{TAG_PREFIX}parent_version": request.parent_version or "",
            f"{TAG_PREFIX}device": result.device.device,
            f"{TAG_PREFIX}beats_baseline": str(beats),
        }
        store.update(request.request_id, owner, status="registering")
        version = tracking.register(model_uri, spec.name, tags)
        store.update(request.request_id, owner, version=version)
        evidence = {
            "metrics": evaluation.metrics,
            "baseline": base[0],
            "beats_baseline": beats,
            "device": result.device.as_dict(),
            "dataset_sha256": ds.content_hash,
            "run_id": run.info.run_id,
            "trigger": request.trigger,
            "parent_version": request.parent_version,
        }
        platform.lifecycle.make_challenger(
            spec.name, version, owner, f"trained ({request.trigger})", evidence, request.request_id
        )
        timings["register_s"] = time.perf_counter() - t
    return version, run.info.run_id, evaluation.metrics
