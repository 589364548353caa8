"""Wake-up messages for requests: the platform database decides, the broker only carries them.

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

from modelyard.platform.jobs.celery_app import EXPORT_TASK, send_training
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


def send_export(app: Celery, model: str, version: str, request_id: str) -> None:
    payload = {"name": model, "version": version, "request_id": request_id}
    app.send_task(EXPORT_TASK, args=[payload], task_id=f"{request_id}:export")


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
