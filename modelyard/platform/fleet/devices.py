"""Enrollment tokens, devices and their credentials, and what devices report.

An enrollment token is shown once and stored as a SHA-256 hash; it names the group (and
tags) a device joins and is good for `uses` enrollments before it expires. Enrolling gives
the device its own credential (also stored as a hash), which decommissioning revokes.
A heartbeat records what the device runs and answers with what it should run. A credential
reaches only what the device's group runs (`Reach`): the bundles assigned to it, and telemetry
for the version it runs or is installing. The rules are here; the reads and writes are
store/fleet.py's.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any

from modelyard.errors import AuthError, ConflictError, InputError, NotFoundError
from modelyard.platform.settings import Settings
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import Bundle, Device, DeviceGroup, aware, utcnow
from modelyard.platform.store.fleet import FleetStore, FleetTx
from modelyard.platform.store.tokens import digest

ENROLL_PREFIX = "enr_"
DEVICE_PREFIX = "dev_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_name(value: str, what: str) -> str:
    if not NAME.match(value):
        raise InputError(f"{what} '{value[:120]}' is not valid: use 1 to 100 letters, digits, '_', '.' or '-'.")
    return value


@dataclass(frozen=True)
class Enrolled:
    device_id: str
    group: str
    credential: str


Version = tuple[str, str]  # model, version


@dataclass(frozen=True)
class Reach:
    """What a device's credential reaches now.

    assigned: the bundles (model, version, target) the platform has it run or may send it back to: its
    desired bundle, its group's current one, and the rollback target of every rollout in flight that touched
    it. vouched: the versions it was assigned (its desired and its group's current): its rows for them are
    evidence the guard judges by. ran: every version the platform ever assigned it (an installed version it
    reports counts only if it is one of these: the heartbeat's word alone is not enough).
    """

    device_id: str
    group: str
    assigned: frozenset[tuple[str, str, str]]
    vouched: frozenset[Version]
    ran: frozenset[Version]
    installed: Version | None

    def may_read(self, model: str, version: str, target: str) -> bool:
        return (model, version, target) in self.assigned

    def may_report(self, model: str, version: str) -> bool:
        """Telemetry for the version it runs (its installed one, if it was assigned it) or is installing."""
        key = (model, version)
        return key in {(m, v) for m, v, _ in self.assigned} or (key == self.installed and key in self.ran)

    def refusal(self, what: str, model: str, version: str, then: str = "") -> str:
        """One sentence: `what` the device may do only for what its group runs, and what it asked for."""
        return (
            f"device '{self.device_id}' may {what} what its group '{self.group}' runs: "
            f"{model}/{version} is not assigned to it{then}."
        )


class Devices:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store = FleetStore(settings)

    def create_token(self, group: str, tags: dict[str, str], uses: int, hours: float | None, actor: str) -> str:
        """A new enrollment token for `group` (created if new), returned once."""
        check_name(group, "group name")
        if uses < 1:
            raise InputError(f"an enrollment token needs at least one use, not {uses}.")
        token = ENROLL_PREFIX + secrets.token_urlsafe(32)
        expires = utcnow() + dt.timedelta(hours=hours or self.settings.enrollment_token_hours)
        with self._store.locked() as tx:
            tx.ensure_group(group, self.settings)
            tx.add_token(
                token_sha256=digest(token),
                prefix=token[:10],
                group=group,
                tags=dict(tags),
                uses_left=uses,
                expires_at=expires,
                created_by=actor,
            )
        return token

    def enroll(
        self, token: str, device_id: str, tags: dict[str, str], profile: dict[str, Any], agent_version: str
    ) -> Enrolled:
        """Spend one use of the token; the device gets a new credential (a decommissioned id may enroll again)."""
        check_name(device_id, "device id")
        credential = DEVICE_PREFIX + secrets.token_urlsafe(32)
        # the same new id enrolled by another process at the same moment
        racing = ConflictError(f"device '{device_id}' is enrolled already.", code="device_exists")
        with self._store.locked(duplicate=racing) as tx:
            row = tx.token(digest(token))
            if row is None or row.uses_left < 1 or aware(row.expires_at) < utcnow():
                raise AuthError("the enrollment token is unknown, used up or expired.")
            device = tx.device(device_id, for_update=True)
            if device is not None and device.state == "active":
                raise ConflictError(
                    f"device '{device_id}' is enrolled already; decommission it first to enroll it again.",
                    code="device_exists",
                )
            # Spend the use with a conditional update: two enrollments racing for the last use cannot both win.
            if not tx.spend_token(row.id):
                raise AuthError("the enrollment token is unknown, used up or expired.")
            values = {
                "group": row.group,
                "tags": {**row.tags, **tags},
                "profile": profile,
                "credential_sha256": digest(credential),
                "state": "active",
                "agent_version": agent_version,
                "desired": _group_desired(tx, tx.group(row.group)),
                "enrolled_at": utcnow(),
                "decommissioned_at": None,
                "status": {},
            }
            if device is None:
                tx.add_device(id=device_id, **values)
            else:
                tx.set_device(device, **values)
            tx.record(_event(row.group, "device_enrolled", f"device {device_id} joined group {row.group}", device_id))
        return Enrolled(device_id, row.group, credential)

    def authenticate(self, credential: str) -> str | None:
        """The active device holding this credential, or None."""
        if not credential.startswith(DEVICE_PREFIX):
            return None
        return self._store.device_with_credential(digest(credential))

    def reach(self, device_id: str) -> Reach:
        """What the device's credential reaches now (see Reach)."""
        from modelyard.platform.fleet.phases import ACTIVE

        device, group, touched = self._store.assignments(device_id)
        if device is None or device.state != "active":
            raise AuthError(f"device '{device_id}' is not enrolled.")
        assigned: set[tuple[str, str, str]] = set()
        vouched: set[Version] = set()
        ran: set[Version] = set()

        def add(entry: dict[str, Any] | None, target: str | None, to: set[Version] | None) -> None:
            if entry and entry.get("model") and entry.get("version"):
                key = (str(entry["model"]), str(entry["version"]))
                assigned.add((*key, str(entry.get("target") or target)))
                ran.add(key)
                if to is not None:
                    to.add(key)

        add(device.desired, group.target if group else None, vouched)
        if group is not None and group.current_model and group.current_version:
            add({"model": group.current_model, "version": group.current_version}, group.target, vouched)
        for rollout, row in touched:
            ran.add((rollout.model, rollout.version))
            if row.before:
                ran.add((str(row.before.get("model")), str(row.before.get("version"))))
            if rollout.state in ACTIVE:  # where a halt would send it back
                add(row.before, rollout.target, None)
        installed = device.installed or {}
        found = None
        if installed.get("model") and installed.get("version"):
            found = (str(installed["model"]), str(installed["version"]))
        return Reach(device_id, device.group, frozenset(assigned), frozenset(vouched), frozenset(ran), found)

    def heartbeat(self, device_id: str, report: dict[str, Any]) -> dict[str, Any] | None:
        """Record what the device says about itself; answer with the bundle it should run."""
        with self._store.writing() as tx:
            device = tx.device(device_id)
            if device is None or device.state != "active":
                raise AuthError(f"device '{device_id}' is not enrolled.")
            lost = (device.status or {}).get("telemetry_lost")
            tx.set_device(
                device,
                agent_version=report.get("agent_version") or device.agent_version,
                installed=report.get("installed"),
                health=report.get("health"),
                last_error=report.get("last_error"),
                status={
                    **{k: report.get(k) for k in ("serving", "free_disk_bytes", "buffered_records", "dropped_records")},
                    "inferences": report.get("inferences"),  # counted on the device: rollouts judge error rates by it
                    "telemetry_lost": lost,
                },
                last_seen_at=utcnow(),
            )
            return device.desired

    def count_dropped(self, device_id: str, dropped: int) -> None:
        """Telemetry a device lost (its buffer bound) or the control plane refused: kept as a running total."""
        if dropped <= 0:
            return
        with self._store.writing() as tx:
            device = tx.device(device_id)
            if device is not None:
                status = dict(device.status or {})
                status["telemetry_lost"] = int(status.get("telemetry_lost") or 0) + dropped
                tx.set_device(device, status=status)

    def find(self, group: str | None = None) -> list[Device]:
        return self._store.devices(group)

    def get(self, device_id: str) -> Device:
        device = self._store.device(device_id)
        if device is None:
            raise NotFoundError(f"no device '{device_id}'.", code="device_not_found")
        return device

    def decommission(self, device_id: str, actor: str) -> Device:
        """Revoke the device's credential: it is refused from its next request on; rollouts stop waiting for it."""
        with self._store.locked() as tx:
            device = tx.device(device_id, for_update=True)
            if device is None:
                raise NotFoundError(f"no device '{device_id}'.", code="device_not_found")
            if device.state != "decommissioned":
                now = utcnow()
                tx.set_device(device, state="decommissioned", credential_sha256=None, decommissioned_at=now)
                tx.settle_rows_of(
                    device_id, ("assigned", "offline"), state="gone", reason="decommissioned", updated_at=now
                )
                tx.record(_event(device.group, "device_decommissioned", f"device {device_id} decommissioned", actor))
            return device


def _group_desired(tx: FleetTx, group: DeviceGroup | None) -> dict[str, Any] | None:
    """What a device joining the group should run: the bundle of the group's last completed rollout."""
    if group is None or group.current_model is None or group.current_version is None:
        return None
    bundle = tx.bundle(group.current_model, group.current_version, group.target)
    return None if bundle is None else desired_entry(bundle, None, rollback=False)


def desired_entry(
    bundle: Bundle, rollout_id: int | None, rollback: bool, failed_inference_limit: int = 5
) -> dict[str, Any]:
    return {
        "model": bundle.model,
        "version": bundle.version,
        "target": bundle.target,
        "sha256": bundle.sha256,
        "size": bundle.size,
        "url": f"/v1/bundles/{bundle.model}/{bundle.version}/{bundle.target}",
        "rollout_id": rollout_id,
        "rollback": rollback,
        "failed_inference_limit": failed_inference_limit,
    }


def _event(group: str, kind: str, reason: str, actor: str, **evidence: Any) -> EventRecord:
    """Fleet events that concern no one model are filed under the pseudo-model `fleet:<group>`."""
    return EventRecord(f"fleet:{group}", kind, reason, actor, evidence=evidence)
