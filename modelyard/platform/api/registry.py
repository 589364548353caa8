"""The registry over HTTP (`/v1`): the same functions as the CLI (services/operations.py), the
token's name as the actor of every change."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from modelyard.platform.api.auth import Principal, require
from modelyard.platform.api.schemas import (
    ERRORS,
    AliasChange,
    ExportAccepted,
    ExportBody,
    ModelName,
    PromoteBody,
    RequestIdPath,
    RetrainAccepted,
    RetrainBody,
    RollbackBody,
    TrainAccepted,
    TrainBody,
    VersionNumber,
    VersionRef,
)
from modelyard.platform.context import Platform
from modelyard.platform.services import operations as ops

router = APIRouter(prefix="/v1", tags=["registry"], responses=ERRORS)


def _platform(request: Request) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]


@router.get("/models", summary="Registered models and their aliases")
def list_models(request: Request, _: Principal = require("read")) -> list[dict[str, Any]]:
    return ops.model_rows(_platform(request).audit)


@router.get("/models/{name}", summary="One model: latest version and aliases")
def get_model(request: Request, name: ModelName, _: Principal = require("read")) -> dict[str, Any]:
    rows = ops.version_rows(_platform(request).audit, name)  # raises model_not_found
    aliases = _platform(request).audit.aliases(name).get(name, {})
    return {"name": name, "latest_version": rows[-1]["version"], "aliases": aliases, "versions": len(rows)}


@router.get("/models/{name}/versions", summary="Versions with aliases and lineage")
def list_versions(request: Request, name: ModelName, _: Principal = require("read")) -> list[dict[str, Any]]:
    return ops.version_rows(_platform(request).audit, name)


@router.get("/models/{name}/versions/{version}", summary="One version: tags, metrics, export targets")
def get_version(
    request: Request,
    name: ModelName,
    version: VersionRef,
    _: Principal = require("read"),
) -> dict[str, Any]:
    ref = f"{name}/{version}" if version.isdigit() else f"{name}@{version}"
    return ops.version_detail(_platform(request), ref)


@router.get("/models/{name}/history", summary="The audit log of a model, oldest first")
def history(request: Request, name: ModelName, _: Principal = require("read")) -> list[dict[str, Any]]:
    return ops.history_rows(_platform(request).audit, name)


def _changes(events: list[Any]) -> list[AliasChange]:
    return [AliasChange(alias=e.alias, from_version=e.from_version, to_version=e.to_version) for e in events]


@router.post("/models/{name}/promote", summary="Make a version champion (default: the challenger)")
def promote(
    request: Request, name: ModelName, body: PromoteBody, who: Principal = require("operate")
) -> list[AliasChange]:
    ref = f"{name}/{body.version}" if body.version.isdigit() else f"{name}@{body.version}"
    return _changes(ops.promote(_platform(request), ref, who.name, body.reason, body.force))


@router.post("/models/{name}/rollback", summary="Restore previous (or a version) as champion")
def rollback(
    request: Request, name: ModelName, body: RollbackBody, who: Principal = require("operate")
) -> list[AliasChange]:
    return _changes(ops.rollback(_platform(request), name, who.name, body.reason, body.to, body.force))


@router.get("/models/{name}/drift", summary="Recent drift checks: verdict, scores, what the policy did")
def drift_checks(
    request: Request,
    name: ModelName,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    _: Principal = require("read"),
) -> list[dict[str, Any]]:
    from modelyard.platform.services.drift import drift_rows

    return drift_rows(_platform(request), name, limit)


@router.post(
    "/models/{name}/retrain", status_code=202, summary="Retrain the champion's spec on its data and the labels"
)
def retrain(
    request: Request, name: ModelName, body: RetrainBody, who: Principal = require("operate")
) -> RetrainAccepted:
    from modelyard.platform.services.retraining import retrain as queue

    return RetrainAccepted(**queue(_platform(request), name, body.reason, who.name))


@router.post("/models/{name}/versions/{version}/export", status_code=202, summary="Queue an export by hand")
def export(
    request: Request, name: ModelName, version: VersionNumber, body: ExportBody, who: Principal = require("operate")
) -> ExportAccepted:
    task_id, model, v = ops.queue_export(
        _platform(request), f"{name}/{version}", list(body.targets) if body.targets else None, who.name
    )
    return ExportAccepted(task_id=task_id, model=model, version=v)


@router.post("/trainings", status_code=202, summary="Queue a training (idempotent on request_id)")
def submit(request: Request, body: TrainBody, who: Principal = require("operate")) -> TrainAccepted:
    from modelyard.platform.services.submit import submit_training
    from modelyard.trainers.spec import parse_spec, parse_spec_text

    spec = (
        parse_spec(body.spec, "in the request body")
        if isinstance(body.spec, dict)
        else parse_spec_text(body.spec, "in the request body")
    )
    ops.check_remote_spec(spec, _platform(request).settings)
    rid = body.request_id or uuid.uuid4().hex
    submitted = submit_training(_platform(request).settings, spec, rid, body.trigger, actor=who.name)
    return TrainAccepted(request_id=rid, model=submitted.model, new=submitted.new)


@router.get("/trainings/{request_id}", summary="A training request: state, attempts, progress, result")
def training_status(request: Request, request_id: RequestIdPath, _: Principal = require("read")) -> dict[str, Any]:
    return ops.request_status(_platform(request), request_id)


@router.get("/trainings", summary="Training requests, newest first")
def list_trainings(
    request: Request,
    state: Annotated[list[str] | None, Query(description="States, or `unfinished`.")] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    _: Principal = require("read"),
) -> list[dict[str, Any]]:
    return ops.find_requests(_platform(request), state, model, limit)
