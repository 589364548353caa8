"""Follow a submitted training, or one task, until it ends: progress bars, hints, errors as one sentence."""

from __future__ import annotations

import time
from typing import Any

from modelyard.errors import ModelyardError
from modelyard.platform.settings import Settings

TRAIN_HINT = "waiting for a train worker (start workers with `modelyard up`)"
EXPORT_HINT = "waiting for an export worker (start workers with `modelyard up`)"


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
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from modelyard.platform.queue.app import create_app
    from modelyard.platform.queue.outbox import read_task
    from modelyard.platform.store.requests import RequestStore

    app = create_app(settings)
    store = RequestStore(settings)
    train, export = request_id, f"{request_id}:export"
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
                state, info = read_task(app, train)
                while state in ("STARTED", "PROGRESS", "RETRY") and time.monotonic() < deadline:
                    time.sleep(0.1)
                    state, info = read_task(app, train)
                if state == "FAILURE" and isinstance(info, ModelyardError) and str(info) == row.error:
                    raise info
                raise ModelyardError(row.error or f"request {request_id} failed.")
            if until == "trained" and status in ("trained", "exporting") and row is not None:
                return dict(row.result or {})
            state, info = read_task(app, train)
            if state == "FAILURE" and row is None:  # refused before it was recorded (a bad message)
                raise _as_user_error(info)
            if status in ("trained", "exporting"):
                export_state, _ = read_task(app, export)
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


def wait_for_task(settings: Settings, task_id: str, what: str, timeout: float | None, quiet: bool = False) -> Any:
    """Wait for one task (an export by hand): its result, or its error as one sentence; a hint when nobody takes it."""
    from rich.console import Console

    from modelyard.platform.queue.app import create_app
    from modelyard.platform.queue.outbox import read_task

    app = create_app(settings)
    console = Console(stderr=True, quiet=quiet)
    started, hinted = time.monotonic(), False
    with console.status(what):
        while True:
            state, info = read_task(app, task_id)
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
