"""One training request end to end: claim, train, log, register, gate, promote or reject.

Called by the `modelyard.train` Celery task, and directly by tests and benchmarks.
Idempotent on the request id: a redelivered request resumes where the last attempt
stopped. Every write is fenced by the attempt's lease (store/requests.py): a worker that
was paused while another took over stops at its next epoch or write and registers
nothing; if it registered anyway (paused inside the registry call), the version first
registered for the request wins and the other is archived.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from threading import Event
from typing import Any, Literal

from pydantic import BaseModel, Field

from modelyard.platform.context import Platform
from modelyard.platform.failpoints import failpoint
from modelyard.platform.registry.base import TAG_PREFIX, VersionInfo
from modelyard.platform.registry.mlflow_store import MlflowRegistry
from modelyard.platform.services.attempts import end_attempt, stale_answer, unclaimed_answer
from modelyard.platform.services.exporting import finish_request
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.requests import Claim, ClaimLost, Lease, worker_name
from modelyard.platform.store.states import State
from modelyard.trainers.spec import TrainSpec, parse_spec

Progress = Callable[[dict[str, Any]], None]
ExportEnqueuer = Callable[[str, str, str], None]  # (model, version, request id)


class TrainRequest(BaseModel):
    request_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    spec: dict[str, Any]
    trigger: Literal["manual", "drift", "schedule"] = "manual"
    parent_version: str | None = None
    actor: str = "cli"


def claim_training(platform: Platform, request: TrainRequest) -> Claim:
    """Record the request (if new) and try to take its training stage. Cheap: no TensorFlow."""
    spec = parse_spec(request.spec, f"of request {request.request_id}")
    store = platform.requests
    store.create(request.request_id, spec.name, request.spec, request.trigger, request.parent_version)
    return store.claim_training(request.request_id, worker_name())


def run_training(
    platform: Platform,
    request: TrainRequest,
    progress: Progress | None = None,
    enqueue_export: ExportEnqueuer | None = None,
    claim: Claim | None = None,
    retry_in: float | None = 0.0,
) -> dict[str, Any]:
    """Claim (unless claimed), train, log, register as challenger, then hand over to the export stage.

    The export task exports it, runs the gate and records the request's final result.
    Without `enqueue_export` (tests, benchmarks), the export and gate run here.
    A transient failure gives the claim back with its retry due in `retry_in` seconds and
    raises TransientError; with `retry_in=None` (the last retry) it fails the request.
    """
    claim = claim or claim_training(platform, request)
    if claim.lease is None:
        return unclaimed_answer(claim)
    lease, row = claim.lease, claim.row
    report = progress or (lambda _info: None)
    settings, store, audit = platform.settings, platform.requests, platform.audit
    rid, owner = row.request_id, lease.owner
    try:  # from the claim on, every way out moves the request on (or records why this worker stopped)
        request = TrainRequest(  # the platform database is the source of truth, not the message
            request_id=row.request_id,
            spec=row.spec,
            trigger=row.trigger,  # type: ignore[arg-type]
            parent_version=row.parent_version,
        )
        spec = parse_spec(request.spec, f"of request {request.request_id}")
        if claim.took_over:
            reason = f"takeover {row.takeovers}: the previous worker stopped beating before finishing"
            audit.record(EventRecord(spec.name, "training_resumed", reason, owner, request_id=rid))
        with store.heartbeat(lease, settings.heartbeat_seconds) as lost:
            result = _train_and_register_once(platform, request, spec, lease, report, lost)
        store.advance(lease, State.TRAINED, result=result, published_at=None)  # hand over to the export stage
    except ClaimLost as err:  # taken over while frozen: the new owner carries the request
        return stale_answer(platform, row.model, lease, err)
    except BaseException as err:
        failure = end_attempt(platform, row.model, lease, err, retry_in, "training")
        if failure is err:
            raise
        raise failure from err
    failpoint("after-handover", settings.run_folder)
    if enqueue_export is None:
        return finish_request(platform, rid)
    enqueue_export(spec.name, result["version"], rid)
    return result


def _train_and_register_once(
    platform: Platform, request: TrainRequest, spec: TrainSpec, lease: Lease, report: Progress, lost: Event
) -> dict[str, Any]:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    existing = _registered_before(platform.registry, spec.name, request.request_id)
    if existing is None:
        version, run_id, metrics = _train_and_register(platform, request, spec, lease, report, timings, lost)
    else:  # a previous attempt registered it, then died (or met a transient error)
        platform.requests.advance(lease, State.REGISTERING)
        version, run_id, metrics = _adopt(platform, request, spec, lease, existing, "registered by a resumed attempt")
    timings["total_s"] = time.perf_counter() - started
    return {
        "request_id": request.request_id,
        "model": spec.name,
        "version": version,
        "run_id": run_id,
        "status": "trained",
        "metrics": metrics,
        "timings": timings,
        "duplicate": False,
    }


def _adopt(
    platform: Platform, request: TrainRequest, spec: TrainSpec, lease: Lease, info: VersionInfo, reason: str
) -> tuple[str, str, dict[str, float]]:
    """Take over a version registered for this request by another attempt: record it, make it challenger."""
    registry, audit, store = platform.registry, platform.audit, platform.requests
    version, run_id = info.version, info.run_id or ""
    store.note(lease, version=version, run_id=run_id)
    metrics = {k.removeprefix("test_"): v for k, v in registry.run_metrics(run_id).items() if k.startswith("test_")}
    if not any(e.to_version == version for e in audit.history(spec.name, ("registered",))):
        evidence = {
            "metrics": metrics,
            "run_id": run_id,
            "trigger": request.trigger,
            "parent_version": request.parent_version,
            "dataset_sha256": info.tags.get(f"{TAG_PREFIX}dataset_sha256"),
        }
        platform.lifecycle.make_challenger(spec.name, version, lease.owner, reason, evidence, request.request_id, lease)
    return version, run_id, metrics


def _archive_duplicate(platform: Platform, name: str, loser: str, winner: str, lease: Lease) -> None:
    """A second version registered for one request (a stale worker raced): mark it, never serve it."""
    registry = platform.registry
    for key, value in (
        (f"{TAG_PREFIX}duplicate_of", winner),
        (f"{TAG_PREFIX}deployable", "false"),
        (f"{TAG_PREFIX}archived", "true"),
    ):
        registry.set_version_tag(name, loser, key, value)
    reason = f"v{loser} was registered for request {lease.request_id}, which v{winner} already holds: archived"
    event = EventRecord(name, "duplicate_archived", reason, lease.owner, None, winner, loser, {}, lease.request_id)
    platform.audit.record(event)


def _registered_before(registry: MlflowRegistry, name: str, request_id: str) -> VersionInfo | None:
    from modelyard.errors import NotFoundError

    try:
        return registry.find_by_tag(name, f"{TAG_PREFIX}request_id", request_id)
    except NotFoundError:
        return None


def with_recent_rows(platform: Platform, spec: TrainSpec, ds: Any) -> Any:
    """The dataset a retraining learns from: the spec's, re-read, and/or the labeled rows of the inference log.

    The rows are fixed when the retraining is queued (`dataset.recent.until_id`, the newest
    `rows` labeled ones up to it); their labels are read when it trains (a label corrected
    meanwhile is used). The new content hash is recorded, and the re-read dataset's in its source.
    """
    import numpy as np

    from modelyard.errors import DatasetError
    from modelyard.trainers.datasets import Dataset, class_index, label_key

    recent = spec.dataset.recent
    if recent is None or recent.mode == "original":
        return ds
    rows = platform.inference.labeled(recent.model, recent.until_id, recent.rows)
    index = class_index(ds.classes)
    xs: list[np.ndarray] = []
    ys: list[float] = []
    for r in rows:
        value = next(iter(r.inputs.values()), None)
        x = np.asarray(value, dtype=np.float32)
        if x.size != int(np.prod(ds.x.shape[1:])):
            raise DatasetError(
                f"logged row {r.id} of '{recent.model}' has {x.size} values; the dataset's rows have "
                f"{int(np.prod(ds.x.shape[1:]))}."
            )
        if ds.task == "classification":
            if label_key(r.label) not in index:
                raise DatasetError(f"label {r.label!r} of logged row {r.id} is not one of the classes {ds.classes}.")
            ys.append(index[label_key(r.label)])
        else:
            ys.append(float(r.label))
        xs.append(x.reshape(ds.x.shape[1:]))
    if not rows:
        if recent.mode == "recent":
            raise DatasetError(f"no labeled rows of '{recent.model}' up to log row {recent.until_id} to retrain on.")
        return ds
    x_new = np.stack(xs).astype(np.float32)
    y_new = np.asarray(ys, dtype=ds.y.dtype)
    if recent.mode == "original+recent":
        x_new, y_new = np.concatenate([ds.x, x_new]), np.concatenate([ds.y, y_new])
    logged = f"{len(rows)} labeled rows of {recent.model}'s inference log"
    source = logged if recent.mode == "recent" else f"{ds.source} (re-read, sha256 {ds.content_hash[:16]}) + {logged}"
    return Dataset(x_new, y_new, ds.classes, ds.feature_names, source, ds.task)


def _train_and_register(
    platform: Platform,
    request: TrainRequest,
    spec: TrainSpec,
    lease: Lease,
    report: Progress,
    timings: dict[str, float],
    lost: Event,
) -> tuple[str, str, dict[str, float]]:
    import mlflow

    from modelyard.platform.registry import tracking
    from modelyard.trainers import datasets, evaluate, train

    t = time.perf_counter()
    report({"stage": "loading data"})
    ds = with_recent_rows(platform, spec, datasets.load_dataset(spec.dataset))
    split = datasets.split_dataset(ds, spec.validation_fraction, spec.test_fraction, spec.seed)
    n_outputs = len(ds.classes) if ds.task == "classification" else 1
    timings["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    store, owner = platform.requests, lease.owner

    def stop_if_lost() -> None:
        if lost.is_set():  # the heartbeat found the lease taken over: stop now, write nothing
            raise ClaimLost(lease, store.get(request.request_id))

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
        store.note(lease, run_id=run.info.run_id)

        client, run_id = platform.registry.client, run.info.run_id
        epochs = tracking.EpochLogger(client, run_id)

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            stop_if_lost()
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
            # The baseline needs no trained model either: it fits beside the evaluation and the model's logging.
            based = beside.submit(evaluate.baseline, split, ds.task, n_outputs, spec.seed)
            timings["fit_s"] = result.fit_seconds
            timings["build_s"] = time.perf_counter() - t - result.fit_seconds
            report({"stage": "evaluating"})
            t = time.perf_counter()
            evaluation = evaluate.evaluate_model(result.model, split.x_test, split.y_test, ds.task, n_outputs)
            timings["evaluate_s"] = time.perf_counter() - t
            t = time.perf_counter()

            def log_outputs() -> tuple[str, evaluate.Evaluation]:  # beside the model's own logging
                base = based.result()
                tracking.log_outputs(client, run_id, ds, result, evaluation, base)
                return base

            outputs_logged = beside.submit(log_outputs)
            model_uri = tracking.log_keras_model(result.model, split)
            base = outputs_logged.result()
            beats = evaluate.beats(
                spec.primary_metric, evaluation.metrics[spec.primary_metric], base[1].metrics[spec.primary_metric]
            )
            mlflow.set_tags({f"{TAG_PREFIX}device": result.device.device, f"{TAG_PREFIX}beats_baseline": str(beats)})
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
        stop_if_lost()
        store.advance(lease, State.REGISTERING)  # fenced: a worker that lost its claim registers nothing
        version = tracking.register(model_uri, spec.name, tags)
        failpoint("after-register", platform.settings.run_folder)
        first = _registered_before(platform.registry, spec.name, request.request_id)
        if first is not None and first.version != version:  # a stale attempt registered first: it wins
            _archive_duplicate(platform, spec.name, version, first.version, lease)
            timings["register_s"] = time.perf_counter() - t
            return _adopt(platform, request, spec, lease, first, "registered by an earlier attempt")
        store.note(lease, version=version)
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
            spec.name, version, owner, f"trained ({request.trigger})", evidence, request.request_id, lease
        )
        timings["register_s"] = time.perf_counter() - t
    return version, run.info.run_id, evaluation.metrics
