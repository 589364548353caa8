"""What the CLI and the HTTP API both do: one function per operation, the same rules and sentences.

The two faces (cli/, api/) only parse their input and present the result; every check
lives here or below.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from modelyard.errors import ModelyardError, NotFoundError

if TYPE_CHECKING:
    from modelyard.platform.context import Platform
    from modelyard.platform.store.audit import AuditLog, EventRecord
    from modelyard.platform.store.db import Event
    from modelyard.platform.store.reads import AuditReader, EventRow


def model_rows(audit: AuditLog | AuditReader) -> list[dict[str, Any]]:
    aliases = audit.aliases()
    return [
        {"name": name, "latest_version": latest, "aliases": aliases.get(name, {}), "description": ""}
        for name, latest in audit.models().items()
    ]


def version_rows(audit: AuditLog | AuditReader, name: str) -> list[dict[str, Any]]:
    found = audit.versions(name)
    if not found:
        raise NotFoundError(f"model '{name}' is not registered.", code="model_not_found")
    aliases = audit.aliases(name).get(name, {})
    return [
        {
            "version": v.version,
            "aliases": sorted(a for a, to in aliases.items() if to == v.version),
            "created": v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "run_id": v.run_id,
            "trigger": v.trigger,
            "request_id": v.request_id,
            "dataset_sha256": v.dataset_sha256,
            "parent_version": v.parent_version,
        }
        for v in found
    ]


def request_rows(rows: list[Any]) -> list[dict[str, Any]]:
    """Training requests as `modelyard trainings list` shows them (rows of store.db.TrainingRequest)."""
    return [
        {
            "request_id": r.request_id,
            "model": r.model,
            "state": r.status,
            "trigger": r.trigger,
            "version": r.version,
            "owner": r.owner,
            "lease": r.lease,
            "attempts": r.attempts,
            "export_attempts": r.export_attempts,
            "takeovers": r.takeovers,
            "heartbeat": r.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S") if r.heartbeat_at else None,
            "updated": r.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            "error": r.error,
        }
        for r in rows
    ]


def event_rows(events: list[Event] | list[EventRow]) -> list[dict[str, Any]]:
    return [
        {
            "id": e.id,
            "time": e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "model": e.model,
            "kind": e.kind,
            "alias": e.alias,
            "from": e.from_version,
            "to": e.to_version,
            "actor": e.actor,
            "reason": e.reason,
            "evidence": e.evidence,
            "request_id": e.request_id,
        }
        for e in events
    ]


def history_rows(audit: AuditLog | AuditReader, name: str) -> list[dict[str, Any]]:
    """Every lifecycle event of a model, oldest first; a clear error for an unknown model, not an empty list."""
    if not audit.knows(name):
        raise NotFoundError(f"model '{name}' is not registered.", code="model_not_found")
    return event_rows(audit.history(name))


def version_detail(platform: Platform, ref: str) -> dict[str, Any]:
    """One version: aliases, tags, test metrics, run, its export report (variants, targets)."""
    from modelyard.platform.registry.base import resolve

    registry = platform.registry
    info = resolve(registry, ref)
    metrics = registry.run_metrics(info.run_id) if info.run_id else {}
    return {
        **info.as_dict(),
        "metrics": {k: v for k, v in sorted(metrics.items())},
        "export": export_report(info.run_id),
    }


def promote(platform: Platform, ref: str, actor: str, reason: str, force: bool = False) -> list[EventRecord]:
    """Make a version champion (NAME/VERSION, or NAME@challenger by default); the champion becomes previous."""
    from modelyard.platform.registry.base import resolve

    lifecycle = platform.lifecycle
    info = resolve(lifecycle.registry, ref, default_alias="challenger")
    return lifecycle.promote(info.name, info.version, actor, reason, force=force)


def rollback(
    platform: Platform, name: str, actor: str, reason: str, to: str | None = None, force: bool = False
) -> list[EventRecord]:
    """Restore `previous` (or version `to`) as champion."""
    return platform.lifecycle.rollback(name, actor, reason, to, force=force)


def queue_export(platform: Platform, ref: str, targets: list[str] | None, actor: str) -> tuple[str, str, str]:
    """Queue an export by hand on the `export` queue: (task id, name, version)."""
    from modelyard.exporters.spec import TARGETS
    from modelyard.platform.queue.app import create_app
    from modelyard.platform.queue.outbox import send_export_by_hand
    from modelyard.platform.registry.base import resolve

    unknown = [t for t in targets or [] if t not in TARGETS]
    if unknown:
        raise ModelyardError(f"unknown target '{unknown[0]}' (targets: {', '.join(TARGETS)}).", code="invalid_target")
    info = resolve(platform.registry, ref)
    payload = {"name": info.name, "version": info.version, "targets": targets or None, "actor": actor}
    task_id = f"export-{info.name}-{info.version}-{uuid.uuid4().hex[:8]}"
    send_export_by_hand(create_app(platform.settings), payload, task_id)
    return task_id, info.name, info.version


def find_requests(platform: Platform, states: list[str] | None, model: str | None, limit: int) -> list[dict[str, Any]]:
    """Training requests in these states (`unfinished`: every non-final one), newest first."""
    from modelyard.platform.store.states import FINAL, State

    wanted: set[State] = set()
    for s in states or []:
        if s == "unfinished":
            wanted |= {x for x in State if x not in FINAL}
        elif s in {x.value for x in State}:
            wanted.add(State(s))
        else:
            names = ", ".join([x.value for x in State] + ["unfinished"])
            raise ModelyardError(f"unknown state '{s}' (states: {names}).", code="invalid_state")
    return request_rows(platform.requests.find(sorted(wanted), model, limit))


def request_status(platform: Platform, request_id: str) -> dict[str, Any]:
    """One training request: its state, version, attempts, last error, result, and the train task's progress."""
    row = platform.requests.get(request_id)
    if row is None:
        raise NotFoundError(f"no training request '{request_id}'.", code="request_not_found")
    data = request_rows([row])[0]
    data["result"] = row.result
    data["progress"] = _progress(platform, request_id) if row.status in ("queued", "training") else None
    return data


def _progress(platform: Platform, request_id: str) -> dict[str, Any] | None:
    from modelyard.platform.queue.app import create_app
    from modelyard.platform.queue.outbox import read_task

    state, info = read_task(create_app(platform.settings), request_id)
    return dict(info) if state == "PROGRESS" and isinstance(info, dict) else None


def export_report(run_id: str | None) -> dict[str, Any] | None:
    """The version's export_report.json, or None before its first export."""
    if not run_id:
        return None
    import mlflow

    try:
        return dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/export/export_report.json"))
    except Exception:  # no export yet (MLflow raises several types for a missing artifact)
        return None


def check_remote_spec(spec: Any, settings: Any) -> None:
    """What a spec sent over HTTP may ask the platform to read and run.

    Its dataset must be `sklearn:NAME` or a file under MODELYARD_API_DATA_ROOT (the API reads
    it to validate it, and a worker trains on it: any other path or a URL would let a token
    holder make the platform read files or fetch addresses); its architecture must be a
    built-in one unless MODELYARD_API_ALLOW_CUSTOM_ARCHITECTURES (a `module:function` is
    imported and called on the worker).
    """
    from pathlib import Path

    from modelyard.errors import SpecError

    source = spec.dataset.source
    if not source.startswith("sklearn:"):
        root = settings.api_data_folder
        path = Path(source)
        inside = path.is_absolute() and path.resolve().is_relative_to(root)
        if not inside:
            raise SpecError(
                f"dataset.source '{source}': a spec sent over HTTP reads sklearn:NAME or a file under "
                f"{root} (MODELYARD_API_DATA_ROOT), given as an absolute path."
            )
    if ":" in spec.architecture.name and not settings.api_allow_custom_architectures:
        raise SpecError(
            f"architecture '{spec.architecture.name}' is custom code; a spec sent over HTTP uses a built-in "
            "architecture unless MODELYARD_API_ALLOW_CUSTOM_ARCHITECTURES is set."
        )
