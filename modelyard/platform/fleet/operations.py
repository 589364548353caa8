"""The fleet's verbs, shared by the CLI and the API: bundle, deploy, follow, the rollout controls, the tables."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from modelyard.errors import InputError, NotFoundError
from modelyard.platform.context import Platform
from modelyard.platform.fleet import bundles
from modelyard.platform.fleet.devices import Devices
from modelyard.platform.fleet.phases import ACTIVE
from modelyard.platform.fleet.rollouts import Rollouts
from modelyard.platform.store.db import aware, utcnow


def resolve(platform: Platform, ref: str) -> tuple[str, str]:
    """NAME/VERSION or NAME@ALIAS (NAME alone: the champion), aliases as the platform database holds them."""
    from modelyard.platform.registry.base import parse_ref

    name, alias, version = parse_ref(ref)
    if version is not None:
        if not any(v.version == version for v in platform.audit.versions(name)):
            raise NotFoundError(f"model '{name}' has no version {version}.", code="version_not_found")
        return name, version
    alias = alias or "champion"
    found = platform.audit.aliases(name).get(name, {}).get(alias)
    if found is None:
        if not platform.audit.knows(name):
            raise NotFoundError(f"model '{name}' is not registered.", code="model_not_found")
        raise NotFoundError(f"model '{name}' has no '{alias}' version.", code="alias_not_found")
    return name, found


def bundle(platform: Platform, ref: str, target: str, actor: str, force: bool = False) -> dict[str, Any]:
    name, version = resolve(platform, ref)
    row = bundles.build(platform, name, version, target, actor, force)
    return bundle_dict(row)


def bundle_dict(row: Any) -> dict[str, Any]:
    return {
        "model": row.model,
        "version": row.version,
        "target": row.target,
        "variant": row.variant,
        "sha256": row.sha256,
        "size": row.size,
        "artifact": row.artifact_uri,
        "url": f"/v1/bundles/{row.model}/{row.version}/{row.target}",
        "manifest": row.manifest,
    }


def deploy(
    platform: Platform,
    ref: str,
    group: str,
    actor: str,
    canary_percent: float | None = None,
    observe_seconds: float | None = None,
    max_failure_share: float | None = None,
    follow: bool | None = None,
) -> dict[str, Any]:
    """Start a phased rollout of a version (its bundle built first if missing); the rollout's status."""
    name, version = resolve(platform, ref)
    rollouts = Rollouts(platform.settings)
    target = _group_target(rollouts, group) or platform.settings.edge_bundle_target
    bundles.build(platform, name, version, target, actor)
    rollout_id = rollouts.start(
        name, version, group, actor, "deploy", canary_percent, observe_seconds, max_failure_share, follow
    )
    return rollouts.status(rollout_id)


def _group_target(rollouts: Rollouts, group: str) -> str | None:
    return next((g.target for g in rollouts.groups() if g.name == group), None)


def wait(platform: Platform, rollout_id: int, timeout: float, on_change: Any = None) -> dict[str, Any]:
    """Poll a rollout until it stops running (or the timeout); `on_change(status)` on every change."""
    rollouts = Rollouts(platform.settings)
    deadline, seen = time.monotonic() + timeout, None
    while True:
        status = rollouts.status(rollout_id)
        shape = (status["state"], tuple((d["device"], d["state"]) for d in status["devices"]))
        if shape != seen and on_change is not None:
            on_change(status)
        seen = shape
        if status["state"] not in ACTIVE or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def device_rows(platform: Platform, group: str | None = None) -> list[dict[str, Any]]:
    settings = platform.settings
    offline = utcnow() - dt.timedelta(seconds=settings.device_offline_seconds)
    rows = []
    for d in Devices(settings).find(group):
        seen = None if d.last_seen_at is None else aware(d.last_seen_at)
        installed = d.installed or {}
        desired = d.desired or {}
        rows.append(
            {
                "id": d.id,
                "group": d.group,
                "tags": d.tags,
                "profile": d.profile,
                "state": d.state,
                "installed": f"{installed['model']}/{installed['version']}" if installed.get("model") else None,
                "desired": f"{desired['model']}/{desired['version']}" if desired.get("model") else None,
                "health": d.health if d.state == "active" else "decommissioned",
                "online": seen is not None and seen >= offline and d.state == "active",
                "last_seen": None if seen is None else seen.strftime("%Y-%m-%d %H:%M:%S"),
                "agent_version": d.agent_version,
                "last_error": d.last_error,
                **{k: v for k, v in (d.status or {}).items()},
            }
        )
    return rows


def set_follow(platform: Platform, group: str, model: str | None, actor: str) -> None:
    """Make a group follow a model's champion (None: stop following)."""
    from modelyard.platform.fleet.devices import check_name
    from modelyard.platform.store.audit import EventRecord
    from modelyard.platform.store.fleet import FleetStore

    check_name(group, "group name")
    if model is not None and not platform.audit.knows(model):
        raise InputError(f"model '{model}' is not registered; a group can only follow a registered model.")
    with FleetStore(platform.settings).locked() as tx:
        g = tx.ensure_group(group, platform.settings)
        before = g.follows
        tx.set_group(g, follows=model)
        if model != before:
            tx.set_group(g, followed_version=None)  # the driver sends the champion at its next tick
    if model or before:
        what = f"group {group} follows the champion of {model}" if model else f"group {group} stops following {before}"
        platform.audit.record(
            EventRecord(model or before or "", "fleet_follow", what, actor, evidence={"group": group})
        )
