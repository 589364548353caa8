"""The one way services reach the queue: wake-up messages, checks, manual exports, a task's state.

The platform database decides, the broker only carries wake-ups.

Every request row records when its current stage's message was sent and under which
*broker epoch*: a random id the broker itself keeps (a Redis key; a file beside the
filesystem queue). A broker restarted empty has lost the key along with its messages,
so a new epoch means every waiting request's message must be sent again. Sending twice
is harmless: the claim lets one delivery work and answers the others. (The embedded
epoch file lives in the queue folder, so wiping the queue wipes it too.)
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from celery import Celery

from modelyard.platform.queue.app import CHECK_TASK, EXPORT_TASK, TRAIN_TASK, train_queue
from modelyard.platform.settings import Settings
from modelyard.platform.store.db import TrainingRequest
from modelyard.platform.store.requests import RequestStore
from modelyard.platform.store.states import State

EPOCH_KEY = "modelyard:broker-epoch"


def broker_epoch(app: Celery, settings: Settings) -> str:
    """The broker's epoch, created on first use; a new one after the broker lost its data."""
    fresh = uuid.uuid4().hex
    if settings.mode == "embedded":
        path = settings.queue_folder / "broker-epoch"  # kombu reads only *.msg files: wiped with the queue
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return path.read_text().strip() or "unknown"
        with os.fdopen(fd, "w") as out:
            out.write(fresh)
        return fresh
    url = settings.effective_broker_url
    if not url.startswith(("redis://", "rediss://")):
        return "no-epoch"  # other brokers persist their queues; republish_after_seconds covers the rest
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        client.set(EPOCH_KEY, fresh, nx=True)
        value = client.get(EPOCH_KEY)
    return value.decode() if isinstance(value, bytes) else str(value)


def training_payload(row: TrainingRequest) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "spec": row.spec,
        "trigger": row.trigger,
        "parent_version": row.parent_version,
    }


def send_training(app: Celery, payload: dict[str, Any]) -> None:
    """Queue a training request (a TrainRequest as JSON) on the train queue its spec asks for."""
    queue = train_queue(payload["spec"])  # the routing key too: the default route would say `train`
    app.send_task(TRAIN_TASK, args=[payload], task_id=payload["request_id"], queue=queue, routing_key=queue)


def send_export(app: Celery, model: str, version: str, request_id: str) -> None:
    """Queue a trained request's export stage (its task id is the request's, so a repeat is recognisable)."""
    payload = {"name": model, "version": version, "request_id": request_id}
    app.send_task(EXPORT_TASK, args=[payload], task_id=f"{request_id}:export")


def send_export_by_hand(app: Celery, payload: dict[str, Any], task_id: str) -> None:
    """Queue an export an operator asked for (`modelyard export`), outside any training request."""
    app.send_task(EXPORT_TASK, args=[payload], task_id=task_id)


def send_check(app: Celery, model: str, last_id: int) -> None:
    """Queue a drift check of a model's newest window (the id names the window, so a repeat is recognisable)."""
    app.send_task(CHECK_TASK, args=[{"model": model}], task_id=f"check:{model}:{last_id}", expires=300)


def read_task(app: Celery, task_id: str) -> tuple[str, Any]:
    """A task's state and its payload from one read of the result backend.

    `AsyncResult.state` and `.info` each fetch anew, so the state can change between
    checking one and using the other (a PROGRESS check, then a SUCCESS payload).
    """
    meta = app.backend.get_task_meta(task_id)
    return str(meta.get("status", "PENDING")), meta.get("result")


def send_stage(app: Celery, row: TrainingRequest) -> None:
    """Send the message that wakes the worker of the row's current stage."""
    state = State(row.status)
    if state in (State.QUEUED, State.TRAINING, State.REGISTERING):
        send_training(app, training_payload(row))
    elif state in (State.TRAINED, State.EXPORTING):
        send_export(app, row.model, str(row.version), row.request_id)
    else:
        raise ValueError(f"request {row.request_id} is {state}: nothing to wake")


def wake(app: Celery, settings: Settings, store: RequestStore, row: TrainingRequest, resent: bool = False) -> None:
    """Send a waiting row's message and record it (the epoch is read first: a broker lost after
    this read makes the row look unsent, never sent)."""
    epoch = broker_epoch(app, settings)
    send_stage(app, row)
    store.mark_published(row.request_id, State(row.status), epoch, resent)
