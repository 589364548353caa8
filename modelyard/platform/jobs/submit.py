"""Queue a training and follow it: what `modelyard train` and the demo do on the client side."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.errors import DatasetError, ModelyardError
from modelyard.platform.settings import Settings


@dataclass
class Submitted:
    request_id: str
    model: str
    new: bool


def submit_training(
    settings: Settings,
    spec_path: Path | str,
    request_id: str,
    trigger: str = "manual",
    overrides: dict[str, Any] | None = None,
) -> Submitted:
    """Validate the spec (and a local dataset) here, record the request, queue it."""
    from modelyard.platform.jobs.celery_app import TRAIN_TASK, create_app
    from modelyard.platform.jobs.training import TrainRequest
    from modelyard.platform.store.audit import AuditLog, EventRecord
    from modelyard.platform.store.requests import RequestStore
    from modelyard.trainers.datasets import load_dataset
    from modelyard.trainers.spec import load_spec, parse_spec

    spec = load_spec(spec_path)
    if overrides:
        spec = parse_spec({**spec.model_dump(mode="json"), **overrides}, str(spec_path))
    payload = TrainRequest(request_id=request_id, spec=spec.model_dump(mode="json"), trigger=trigger)  # type: ignore[arg-type]
    store = RequestStore(settings)
    if _is_local(spec.dataset.source):
        try:  # fail in seconds, before anything is queued
            load_dataset(spec.dataset)
        except DatasetError as err:
            store.create(request_id, spec.name, payload.spec, trigger)
            store.update(request_id, None, status="failed", error=str(err))
            AuditLog(settings).record(EventRecord(spec.name, "training_failed", str(err), "cli", request_id=request_id))
            raise
    new = store.create(request_id, spec.name, payload.spec, trigger)
    create_app(settings).send_task(TRAIN_TASK, args=[payload.model_dump()], task_id=request_id)
    return Submitted(request_id, spec.name, new)


def _is_local(source: str) -> bool:
    return source.startswith("sklearn:") or "://" not in source


def follow(
    settings: Settings,
    request_id: str,
    quiet: bool = False,
    timeout: float | None = None,
    until: str = "done",
) -> dict[str, Any]:
    """Wait for a training request, with a progress bar of its epochs, then of its export and gate.

    Returns the request's final result (`until="trained"`: the train task's own result),
    or raises its error.
    """
    from celery.result import AsyncResult
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from modelyard.platform.jobs.celery_app import create_app
    from modelyard.platform.store.requests import RequestStore

    app = create_app(settings)
    store = RequestStore(settings)
    train, export = AsyncResult(request_id, app=app), AsyncResult(f"{request_id}:export", app=app)
    started = time.monotonic()
    hints: set[str] = set()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[logs]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=quiet, transient=True) as bar:
        task = bar.add_task("queued", total=None, logs="")
        while True:
            state = train.state
            if state == "FAILURE":
                raise _as_user_error(train.result)
            if state == "SUCCESS" and until == "trained":
                return dict(train.result)
            row = store.get(request_id)
            status = row.status if row else "queued"
            if status == "succeeded" and row is not None:
                return dict(row.result or {})
            if status == "failed" and row is not None:
                raise ModelyardError(row.error or f"request {request_id} failed.")
            if status == "exporting":
                if export.state == "FAILURE":
                    raise _as_user_error(export.result)
                bar.update(task, description="exporting to ONNX and gating", logs="")
                _hint(
                    bar,
                    hints,
                    "export",
                    started,
                    export.state == "PENDING",
                    "waiting for an export worker (start workers with `modelyard up`)",
                )
            elif state == "PROGRESS" and isinstance(train.info, dict):
                info = train.info
                logs = info.get("logs") or {}
                shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", "val_loss", "val_accuracy"))
                bar.update(
                    task,
                    description=info.get("stage", "training"),
                    total=info.get("epochs"),
                    completed=info.get("epoch", 0),
                    logs=shown,
                )
            else:
                _hint(
                    bar,
                    hints,
                    "train",
                    started,
                    state == "PENDING",
                    "waiting for a train worker (start workers with `modelyard up`)",
                )
            if timeout is not None and time.monotonic() - started > timeout:
                raise ModelyardError(f"request {request_id} did not finish within {timeout:.0f} s; it goes on.")
            time.sleep(0.1)


def _hint(bar: Any, hints: set[str], key: str, started: float, waiting: bool, text: str) -> None:
    if waiting and key not in hints and time.monotonic() - started > 10:
        hints.add(key)
        bar.console.print(text)


def _as_user_error(exc: Any) -> ModelyardError:
    if isinstance(exc, ModelyardError):
        return exc
    name = type(exc).__name__
    if name == "WorkerLostError":
        return ModelyardError("the worker training this request died; it is redelivered to another worker.")
    if name in ("TimeLimitExceeded", "SoftTimeLimitExceeded"):
        return ModelyardError("training ran past MODELYARD_TRAIN_TIME_LIMIT and was stopped; no version registered.")
    return ModelyardError(f"training failed on the worker: {name}: {exc}")
