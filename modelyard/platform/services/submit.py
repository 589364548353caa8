"""Submit a training: validate it, record it, wake a worker (`modelyard trainings start`, the API, retraining)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.errors import DatasetError, SpecError
from modelyard.platform.settings import Settings
from modelyard.trainers.spec import TrainSpec


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
    from modelyard.platform.queue.app import create_app
    from modelyard.platform.queue.outbox import wake
    from modelyard.platform.services.exporting import export_spec_of
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

    from modelyard.platform.services.training import TrainRequest

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
