"""Queue a training and follow it: what `modelyard train` and the demo do on the client side."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.errors import DatasetError, ModelyardError, SpecError
from modelyard.platform.settings import Settings
from modelyard.trainers.spec import TrainSpec

TRAIN_HINT = "waiting for a train worker (start workers with `modelyard up`)"
EXPORT_HINT = "waiting for an export worker (start workers with `modelyard up`)"


@dataclass
class Submitted:
    request_id: str
    model: str
    new: bool


def submit_training(
    settings: Settings,
    spec_source: Path | str | TrainSpec,
    request_id: str,
    trigger: str = "manual",
    overrides: dict[str, Any] | None = None,
    actor: str = "cli",
    parent: str | None = None,
) -> Submitted:
    """Validate the request, the spec, its export block and a local dataset here, record the request, queue it.

    `spec_source` is a YAML file, or a spec already parsed (the HTTP API reads it from a body).
    """
    from modelyard.monitoring.spec import parse_monitoring
    from modelyard.platform.jobs.celery_app import create_app
    from modelyard.platform.jobs.exporting import export_spec_of
    from modelyard.platform.jobs.outbox import wake
    from modelyard.platform.store.audit import AuditLog, EventRecord
    from modelyard.platform.store.requests import RequestStore
    from modelyard.platform.store.states import State
    from modelyard.trainers.datasets import load_dataset
    from modelyard.trainers.spec import load_spec, parse_spec

    spec = spec_source if isinstance(spec_source, TrainSpec) else load_spec(spec_source)
    where = "in the request body" if isinstance(spec_source, TrainSpec) else f"in {spec_source}"
    if overrides:
        spec = parse_spec({**spec.model_dump(mode="json"), **overrides}, where)
    export_spec_of(spec.export, where)  # found now, not after an hour of training
    parse_monitoring(spec.monitoring, where)
    payload = train_request(request_id, spec.model_dump(mode="json"), trigger)
    store = RequestStore(settings)
    if _is_local(spec.dataset.source):
        try:  # fail in seconds, before anything is queued
            load_dataset(spec.dataset)
        except DatasetError as err:
            store.create(request_id, spec.name, payload.spec, trigger, parent)
            if store.fail(None, request_id, str(err)):
                AuditLog(settings).record(
                    EventRecord(spec.name, "training_failed", str(err), actor, request_id=request_id)
                )
            raise
    new = store.create(request_id, spec.name, payload.spec, trigger, parent)  # first the row: the source of truth
    row = store.get(request_id)
    if row is not None and not State(row.status).final:  # then its wake-up (a known request: harmless)
        wake(create_app(settings), settings, store, row)
    return Submitted(request_id, spec.name, new)


def train_request(request_id: str, spec: dict[str, Any], trigger: str) -> Any:
    """The task payload, or one sentence naming the bad request id or trigger."""
    from pydantic import ValidationError

    from modelyard.platform.jobs.training import TrainRequest

    try:
        return TrainRequest(request_id=request_id, spec=spec, trigger=trigger)  # type: ignore[arg-type]
    except ValidationError as err:
        field = str(err.errors()[0]["loc"][0])
        if field == "trigger":
            raise SpecError(f"trigger '{trigger}' is not one of manual, drift, schedule.") from None
        raise SpecError(
            f"request id '{request_id}' is not valid: use 1 to 100 letters, digits, '_', '.', ':' or '-'."
        ) from None


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
    waiting_since: dict[str, float] = {}  # stage -> since when its task waits for a worker
    said: set[str] = set()
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
            # The platform database says where the request is; the tasks only add progress.
            row = store.get(request_id)
            status = row.status if row else None
            if status == "succeeded" and row is not None:
                return dict(row.result or {})
            if status == "failed" and row is not None:
                # The task's own error keeps its type (DatasetError, ...). The worker fails the request
                # row first and Celery stores the task's result just after: a running task gets 5 s.
                deadline = time.monotonic() + 5
                state, info = read_task(train)
                while state in ("STARTED", "PROGRESS", "RETRY") and time.monotonic() < deadline:
                    time.sleep(0.1)
                    state, info = read_task(train)
                if state == "FAILURE" and isinstance(info, ModelyardError) and str(info) == row.error:
                    raise info
                raise ModelyardError(row.error or f"request {request_id} failed.")
            if until == "trained" and status in ("trained", "exporting") and row is not None:
                return dict(row.result or {})
            state, info = read_task(train)
            if state == "FAILURE" and row is None:  # refused before it was recorded (a bad message)
                raise _as_user_error(info)
            if status in ("trained", "exporting"):
                export_state, _ = read_task(export)
                bar.update(task, description="exporting to ONNX and gating", logs="")
                _hint(bar, waiting_since, said, "export", export_state == "PENDING", EXPORT_HINT)
            elif state == "PROGRESS" and isinstance(info, dict):
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
                _hint(bar, waiting_since, said, "train", state == "PENDING", TRAIN_HINT)
            if timeout is not None and time.monotonic() - started > timeout:
                raise ModelyardError(f"request {request_id} did not finish within {timeout:.0f} s; it goes on.")
            time.sleep(0.1)


def read_task(result: Any) -> tuple[str, Any]:
    """A task's state and its payload from one read of the result backend.

    `AsyncResult.state` and `.info` each fetch anew, so the state can change between
    checking one and using the other (a PROGRESS check, then a SUCCESS payload).
    """
    meta = result.backend.get_task_meta(result.id)
    return str(meta.get("status", "PENDING")), meta.get("result")


def wait_for_task(settings: Settings, task_id: str, what: str, timeout: float | None, quiet: bool = False) -> Any:
    """Wait for one task (an export by hand): its result, or its error as one sentence; a hint when nobody takes it."""
    from celery.result import AsyncResult
    from rich.console import Console

    from modelyard.platform.jobs.celery_app import create_app

    result = AsyncResult(task_id, app=create_app(settings))
    console = Console(stderr=True, quiet=quiet)
    started, hinted = time.monotonic(), False
    with console.status(what):
        while True:
            state, info = read_task(result)
            if state == "SUCCESS":
                return info
            if state == "FAILURE":
                raise _as_user_error(info)
            waited = time.monotonic() - started
            if state == "PENDING" and not hinted and waited > 10:
                hinted = True
                console.print(EXPORT_HINT)
            if timeout is not None and waited > timeout:
                nobody = " No worker has taken it: start one with `modelyard up`." if state == "PENDING" else ""
                raise ModelyardError(f"{what} did not finish within {timeout:.0f} s; it stays queued.{nobody}")
            time.sleep(0.2)


def _hint(bar: Any, waiting_since: dict[str, float], said: set[str], key: str, waiting: bool, text: str) -> None:
    """Say once that no worker takes a stage's task, after 10 s of it waiting without a break."""
    if not waiting:
        waiting_since.pop(key, None)
        return
    first = waiting_since.setdefault(key, time.monotonic())
    if key not in said and time.monotonic() - first > 10:
        said.add(key)
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
