"""The fleet over HTTP: the agents' routes (modelyard/edge/PROTOCOL.md), authenticated by device
credentials, and the operators' routes (devices, bundles, rollouts), by tokens with scopes.

A device credential reaches only what its group runs (fleet/devices.py's Reach): it downloads the
bundles assigned to it and reports telemetry for the version it runs or is installing; anything
else is 403 and stores nothing. Telemetry is also held to a rate per device (429 past it)."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse

from modelyard.errors import AuthError, ForbiddenError
from modelyard.platform.api.auth import RATE_LIMITED, Principal, rate_limit, require
from modelyard.platform.api.fleet_schemas import (
    DEVICE_ID,
    AbortBody,
    BundleBody,
    DeployBody,
    EnrollAnswer,
    EnrollBody,
    EnrollmentTokenBody,
    EnrollmentTokenCreated,
    HeartbeatAnswer,
    HeartbeatBody,
    Recorded,
    ReportBody,
    TelemetryBody,
    TelemetryStored,
)
from modelyard.platform.api.schemas import ERRORS, ModelName, VersionNumber
from modelyard.platform.context import Platform
from modelyard.platform.fleet import bundles
from modelyard.platform.fleet import operations as fleet_ops
from modelyard.platform.fleet.devices import Devices
from modelyard.platform.fleet.rollouts import Rollouts

agents = APIRouter(prefix="/v1", tags=["devices (agents)"], responses=ERRORS)
router = APIRouter(prefix="/v1", tags=["fleet"], responses=ERRORS)
DeviceIdPath = Annotated[str, Path(pattern=DEVICE_ID)]
RolloutId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _platform(request: Request) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]


def _devices(request: Request) -> Devices:
    return request.app.state.devices  # type: ignore[no-any-return]


def _device(request: Request, device_id: str | None = None) -> str:
    """The device whose credential this request carries (and, if named in the path, that it is that one)."""
    header = request.headers.get("authorization", "")
    kind, _, credential = header.partition(" ")
    if kind.lower() != "bearer" or not credential.strip():
        raise AuthError(
            "this endpoint needs the device credential from enrollment (Authorization: Bearer <credential>)."
        )
    found = _devices(request).authenticate(credential.strip())
    if found is None:
        raise AuthError("the device credential is unknown or revoked (decommissioned).")
    if device_id is not None and found != device_id:
        raise ForbiddenError(f"this credential belongs to device '{found}', not '{device_id}'.")
    request.scope["modelyard.actor"] = f"device:{found}"
    return found


def _caller(request: Request, device_id: DeviceIdPath) -> str:
    return _device(request, device_id)


def _telemetry_caller(request: Request, device_id: DeviceIdPath) -> str:
    found = _device(request, device_id)
    rate_limit(request, "telemetry", found)
    return found


# A dependency, so the credential is checked before the body: no answer about a body to a stranger.
DeviceCaller = Annotated[str, Depends(_caller)]
TelemetryCaller = Annotated[str, Depends(_telemetry_caller)]  # and within its rate before the body is validated


# -- agents --------------------------------------------------------------------------------------
@agents.post("/devices/enroll", summary="Enroll a device with a one-time enrollment token")
def enroll(request: Request, body: EnrollBody) -> EnrollAnswer:
    platform = _platform(request)
    public_key = bundles.public_key_pem(platform)  # no key, no enrollment: devices must pin one
    done = _devices(request).enroll(body.token, body.device_id, body.tags, body.profile, body.agent_version)
    s = platform.settings
    return EnrollAnswer(
        device_id=done.device_id,
        group=done.group,
        credential=done.credential,
        public_key=public_key,
        heartbeat_seconds=s.device_heartbeat_seconds,
        upload_seconds=s.device_upload_seconds,
        sample_rate=s.device_sample_rate,
    )


@agents.post("/devices/{device_id}/heartbeat", summary="A device's state; answers with its desired bundle")
def heartbeat(request: Request, device_id: DeviceCaller, body: HeartbeatBody) -> HeartbeatAnswer:
    desired = _devices(request).heartbeat(device_id, body.model_dump(mode="json"))
    return HeartbeatAnswer(desired=desired, heartbeat_seconds=_platform(request).settings.device_heartbeat_seconds)


@agents.post("/devices/{device_id}/reports", summary="An install outcome: installed, failed, rolled back, refused")
def report(request: Request, device_id: DeviceCaller, body: ReportBody) -> Recorded:
    Rollouts(_platform(request).settings).record_outcome(device_id, body.model_dump(mode="json"))
    return Recorded(recorded=True)


@agents.post(
    "/devices/{device_id}/telemetry",
    summary="Sampled predictions into the inference log (resend-safe)",
    responses=RATE_LIMITED,
)
def telemetry(request: Request, device_id: TelemetryCaller, body: TelemetryBody) -> TelemetryStored:
    """A batch that names a model or version the device does not run (its installed version, if it was
    assigned it, or the one it is installing) is refused whole (403). Of the others, store what can be
    stored: a record that names no bundled version, or other inputs, is skipped and counted (one bad record
    must not jam a device's buffer); a batch resent after a lost answer stores nothing twice. Rows carry the
    server's receive time (windows compare it), the device's in meta; rows of a version the device was
    assigned (its desired one, its group's current one) are evidence the guard judges by."""
    from modelyard.platform.store.db import utcnow
    from modelyard.platform.store.inference import Prediction

    platform = _platform(request)
    reach = _devices(request).reach(device_id)
    foreign = next((r for r in body.records if not reach.may_report(r.model, r.version)), None)
    if foreign is not None:
        what = "report telemetry only for"
        raise ForbiddenError(reach.refusal(what, foreign.model, foreign.version, "; nothing was stored"))
    rows, problems, inputs_of = [], [], {}
    received = utcnow()
    for i, r in enumerate(body.records):
        key = (r.model, r.version)
        if key not in inputs_of:
            known = bundles.find_any(platform, r.model, r.version)
            inputs_of[key] = None if known is None else sorted(t["name"] for t in known.manifest.get("inputs", []))
        names = inputs_of[key]
        if names is None or sorted(r.inputs) != names:
            why = "was never bundled for devices" if names is None else f"takes inputs {names}, not {sorted(r.inputs)}"
            problems.append(f"record {i} ({r.request_id}): {r.model}/{r.version} {why}.")
            continue
        meta: dict[str, Any] = {"device": device_id}
        if r.latency_ms is not None:
            meta["latency_ms"] = r.latency_ms
        if r.error:
            meta["error"] = r.error
        if r.time is not None:
            meta["device_time"] = (r.time.astimezone(dt.UTC) if r.time.tzinfo else r.time).isoformat()
        rows.append(
            Prediction(
                model=r.model,
                version=r.version,
                request_id=r.request_id,
                inputs=r.inputs,
                outputs=r.outputs,
                source=device_id,
                meta=meta,
                created_at=received,
                sender_kind="device",
                sender=device_id,
                attested=(r.model, r.version) in reach.vouched,  # evidence the guard judges by
            )
        )
    with _upload_lock(device_id):  # a resend racing its slow original would both see the ids as new
        stored, duplicates = platform.inference.append_new(rows)
    _devices(request).count_dropped(device_id, body.dropped + len(problems))
    return TelemetryStored(stored=stored, duplicates=duplicates, rejected=len(problems), problems=problems[:5])


_upload_locks: dict[str, threading.Lock] = {}


def _upload_lock(device_id: str) -> threading.Lock:
    return _upload_locks.setdefault(device_id, threading.Lock())


@agents.get(
    "/bundles/{name}/{version}/{target}",
    summary="A signed bundle (ETag, Range: an interrupted download resumes)",
    response_class=FileResponse,
)
async def download(request: Request, name: ModelName, version: VersionNumber, target: str) -> FileResponse:
    from fastapi.concurrency import run_in_threadpool

    from modelyard.platform.api.auth import authorize

    if request.headers.get("authorization", "").partition(" ")[2].strip().startswith("dev_"):
        device_id = await run_in_threadpool(_device, request)
        reach = await run_in_threadpool(_devices(request).reach, device_id)
        if not reach.may_read(name, version, target):
            raise ForbiddenError(reach.refusal("download only", name, version))
    else:
        await authorize(request, "read")
    path, row = await run_in_threadpool(bundles.bundle_file, _platform(request), name, version, target)
    return FileResponse(
        path,
        media_type="application/x-tar",
        filename=f"{name}-{version}-{target}.tar",
        headers={"etag": f'"{row.sha256}"', "cache-control": "no-cache"},
    )


# -- operators -----------------------------------------------------------------------------------
@router.post("/devices/enrollment-tokens", status_code=201, summary="A token devices enroll with")
def enrollment_token(
    request: Request, body: EnrollmentTokenBody, who: Principal = require("admin")
) -> EnrollmentTokenCreated:
    token = _devices(request).create_token(body.group, body.tags, body.uses, body.hours, who.name)
    return EnrollmentTokenCreated(token=token, group=body.group, uses=body.uses)


@router.get("/devices", summary="Enrolled devices: group, installed and desired version, health, last seen")
def list_devices(
    request: Request,
    group: Annotated[str | None, Query(pattern=DEVICE_ID)] = None,
    _: Principal = require("read"),
) -> list[dict[str, Any]]:
    return fleet_ops.device_rows(_platform(request), group)


@router.post("/devices/{device_id}/decommission", summary="Revoke a device's credential")
def decommission(request: Request, device_id: DeviceIdPath, who: Principal = require("operate")) -> dict[str, Any]:
    device = _devices(request).decommission(device_id, who.name)
    return {"id": device.id, "state": device.state}


@router.post("/models/{name}/bundles", status_code=201, summary="Build (or return) a version's signed bundle")
def build_bundle(
    request: Request, name: ModelName, body: BundleBody, who: Principal = require("operate")
) -> dict[str, Any]:
    ref = f"{name}/{body.version}" if body.version.isdigit() else f"{name}@{body.version}"
    return fleet_ops.bundle(_platform(request), ref, body.target, who.name, body.force)


@router.post("/rollouts", status_code=201, summary="Deploy a version to a group: canary, observe, the rest")
def deploy(request: Request, body: DeployBody, who: Principal = require("operate")) -> dict[str, Any]:
    ref = f"{body.model}/{body.version}" if body.version.isdigit() else f"{body.model}@{body.version}"
    return fleet_ops.deploy(
        _platform(request),
        ref,
        body.group,
        who.name,
        body.canary_percent,
        body.observe_seconds,
        body.max_failure_share,
        body.follow,
    )


@router.get("/rollouts", summary="Rollouts, newest first")
def list_rollouts(
    request: Request,
    model: Annotated[str | None, Query(max_length=200)] = None,
    group: Annotated[str | None, Query(pattern=DEVICE_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    _: Principal = require("read"),
) -> list[dict[str, Any]]:
    return Rollouts(_platform(request).settings).recent(model, group, limit)


@router.get("/rollouts/{rollout_id}", summary="One rollout: phase, devices and their outcomes")
def rollout_status(request: Request, rollout_id: RolloutId, _: Principal = require("read")) -> dict[str, Any]:
    return Rollouts(_platform(request).settings).status(rollout_id)


@router.post("/rollouts/{rollout_id}/pause", summary="Stop assigning; installs under way finish")
def pause(request: Request, rollout_id: RolloutId, who: Principal = require("operate")) -> dict[str, Any]:
    rollouts = Rollouts(_platform(request).settings)
    rollouts.pause(rollout_id, who.name)
    return rollouts.status(rollout_id)


@router.post("/rollouts/{rollout_id}/resume", summary="Go on from where it paused")
def resume(request: Request, rollout_id: RolloutId, who: Principal = require("operate")) -> dict[str, Any]:
    rollouts = Rollouts(_platform(request).settings)
    rollouts.resume(rollout_id, who.name)
    return rollouts.status(rollout_id)


@router.post("/rollouts/{rollout_id}/abort", summary="Stop it; every device it touched goes back")
def abort(
    request: Request, rollout_id: RolloutId, body: AbortBody, who: Principal = require("operate")
) -> dict[str, Any]:
    rollouts = Rollouts(_platform(request).settings)
    rollouts.abort(rollout_id, who.name, body.reason)
    return rollouts.status(rollout_id)
