"""Enrollment tokens, devices and their credentials, and what devices report.

An enrollment token is shown once and stored as a SHA-256 hash; it names the group (and
tags) a device joins and is good for `uses` enrollments before it expires. Enrolling gives
the device its own credential (also stored as a hash), which decommissioning revokes.
A heartbeat records what the device runs and answers with what it should run.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from modelyard.errors import AuthError, ConflictError, InputError, NotFoundError
from modelyard.platform.settings import Settings
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import (
    Device,
    DeviceGroup,
    EnrollmentToken,
    Event,
    aware,
    ensure_schema,
    session_factory,
    utcnow,
)
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


class Devices:
    def __init__(self, settings: Settings) -> None:
        url = settings.platform_database_url
        ensure_schema(url, settings.run_folder)
        self.settings = settings
        self._sessions = session_factory(url)

    def create_token(self, group: str, tags: dict[str, str], uses: int, hours: float | None, actor: str) -> str:
        """A new enrollment token for `group` (created if new), returned once."""
        check_name(group, "group name")
        if uses < 1:
            raise InputError(f"an enrollment token needs at least one use, not {uses}.")
        token = ENROLL_PREFIX + secrets.token_urlsafe(32)
        expires = utcnow() + dt.timedelta(hours=hours or self.settings.enrollment_token_hours)
        with self._sessions.begin() as session:
            fleet_lock(session)
            ensure_group(session, group, self.settings)
            session.add(
                EnrollmentToken(
                    token_sha256=digest(token),
                    prefix=token[:10],
                    group=group,
                    tags=dict(tags),
                    uses_left=uses,
                    expires_at=expires,
                    created_by=actor,
                )
            )
        return token

    def enroll(
        self, token: str, device_id: str, tags: dict[str, str], profile: dict[str, Any], agent_version: str
    ) -> Enrolled:
        """Spend one use of the token; the device gets a new credential (a decommissioned id may enroll again)."""
        check_name(device_id, "device id")
        credential = DEVICE_PREFIX + secrets.token_urlsafe(32)
        try:
            return self._enroll(token, device_id, tags, profile, agent_version, credential)
        except IntegrityError:  # the same new id enrolled by another process at the same moment
            raise ConflictError(f"device '{device_id}' is enrolled already.", code="device_exists") from None

    def _enroll(
        self, token: str, device_id: str, tags: dict[str, str], profile: dict[str, Any], agent_version: str,
        credential: str,
    ) -> Enrolled:  # fmt: skip
        with self._sessions.begin() as session:
            fleet_lock(session)
            row = session.scalar(
                select(EnrollmentToken).where(EnrollmentToken.token_sha256 == digest(token)).with_for_update()
            )
            if row is None or row.uses_left < 1 or aware(row.expires_at) < utcnow():
                raise AuthError("the enrollment token is unknown, used up or expired.")
            device = session.get(Device, device_id, with_for_update=True)
            if device is not None and device.state == "active":
                raise ConflictError(
                    f"device '{device_id}' is enrolled already; decommission it first to enroll it again.",
                    code="device_exists",
                )
            # Spend the use with a conditional update: two enrollments racing for the last use cannot both win.
            spent = session.execute(
                update(EnrollmentToken)
                .where(EnrollmentToken.id == row.id, EnrollmentToken.uses_left > 0)
                .values(uses_left=EnrollmentToken.uses_left - 1)
            )
            if spent.rowcount != 1:  # type: ignore[attr-defined]
                raise AuthError("the enrollment token is unknown, used up or expired.")
            group = session.get(DeviceGroup, row.group)
            desired = _group_desired(session, group)
            values = {
                "group": row.group,
                "tags": {**row.tags, **tags},
                "profile": profile,
                "credential_sha256": digest(credential),
                "state": "active",
                "agent_version": agent_version,
                "desired": desired,
                "enrolled_at": utcnow(),
                "decommissioned_at": None,
                "status": {},
            }
            if device is None:
                session.add(Device(id=device_id, **values))
            else:
                for key, value in values.items():
                    setattr(device, key, value)
            session.add(_event(row.group, "device_enrolled", f"device {device_id} joined group {row.group}", device_id))
        return Enrolled(device_id, row.group, credential)

    def authenticate(self, credential: str) -> str | None:
        """The active device holding this credential, or None."""
        if not credential.startswith(DEVICE_PREFIX):
            return None
        with self._sessions() as session:
            row = session.scalar(
                select(Device.id).where(Device.credential_sha256 == digest(credential), Device.state == "active")
            )
            return row

    def heartbeat(self, device_id: str, report: dict[str, Any]) -> dict[str, Any] | None:
        """Record what the device says about itself; answer with the bundle it should run."""
        with self._sessions.begin() as session:
            device = session.get(Device, device_id)
            if device is None or device.state != "active":
                raise AuthError(f"device '{device_id}' is not enrolled.")
            device.agent_version = report.get("agent_version") or device.agent_version
            device.installed = report.get("installed")
            device.health = report.get("health")
            device.last_error = report.get("last_error")
            lost = (device.status or {}).get("telemetry_lost")
            device.status = {
                **{k: report.get(k) for k in ("serving", "free_disk_bytes", "buffered_records", "dropped_records")},
                "inferences": report.get("inferences"),  # counted on the device: rollouts judge error rates by it
                "telemetry_lost": lost,
            }
            device.last_seen_at = utcnow()
            return device.desired

    def count_dropped(self, device_id: str, dropped: int) -> None:
        """Telemetry a device lost (its buffer bound) or the control plane refused: kept as a running total."""
        if dropped <= 0:
            return
        with self._sessions.begin() as session:
            device = session.get(Device, device_id)
            if device is not None:
                status = dict(device.status or {})
                status["telemetry_lost"] = int(status.get("telemetry_lost") or 0) + dropped
                device.status = status

    def find(self, group: str | None = None) -> list[Device]:
        query = select(Device).order_by(Device.group, Device.id)
        if group is not None:
            query = query.where(Device.group == group)
        with self._sessions() as session:
            return list(session.scalars(query))

    def get(self, device_id: str) -> Device:
        with self._sessions() as session:
            device = session.get(Device, device_id)
        if device is None:
            raise NotFoundError(f"no device '{device_id}'.", code="device_not_found")
        return device

    def decommission(self, device_id: str, actor: str) -> Device:
        """Revoke the device's credential: it is refused from its next request on; rollouts stop waiting for it."""
        from modelyard.platform.store.db import RolloutDevice

        with self._sessions.begin() as session:
            fleet_lock(session)
            device = session.get(Device, device_id, with_for_update=True)
            if device is None:
                raise NotFoundError(f"no device '{device_id}'.", code="device_not_found")
            if device.state != "decommissioned":
                device.state = "decommissioned"
                device.credential_sha256 = None
                device.decommissioned_at = utcnow()
                session.execute(
                    update(RolloutDevice)
                    .where(RolloutDevice.device_id == device_id, RolloutDevice.state.in_(("assigned", "offline")))
                    .values(state="gone", reason="decommissioned", updated_at=utcnow())
                )
                session.add(_event(device.group, "device_decommissioned", f"device {device_id} decommissioned", actor))
            return device


FLEET_LOCK = 7244197  # the PostgreSQL advisory lock key of fleet writes (migrations use 7244196)


def fleet_lock(session: Any) -> None:
    """Serialize the fleet's state-changing transactions, taken first thing in the transaction.

    Rollout steps read, decide and write (a phase change, assignments, a revert); two API
    processes, or the tick and an operator's abort, must not decide on the same read. On
    PostgreSQL an advisory transaction lock does it; SQLite ignores FOR UPDATE and pysqlite
    starts no transaction on a SELECT, so a first statement that writes takes the database's
    write lock before anything is read (WAL readers are never blocked by it).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FLEET_LOCK})
    else:
        session.execute(text("UPDATE device_groups SET name = name WHERE 1 = 0"))


def ensure_group(session: Any, name: str, settings: Settings) -> DeviceGroup:
    group = session.get(DeviceGroup, name)
    if group is None:
        group = DeviceGroup(
            name=name,
            target=settings.edge_bundle_target,
            canary_percent=settings.rollout_canary_percent,
            observe_seconds=settings.rollout_observe_seconds,
            max_failure_share=settings.rollout_max_failure_share,
        )
        session.add(group)
        session.flush()
    return group  # type: ignore[no-any-return]


def _group_desired(session: Any, group: DeviceGroup | None) -> dict[str, Any] | None:
    """What a device joining the group should run: the bundle of the group's last completed rollout."""
    from modelyard.platform.store.db import Bundle

    if group is None or group.current_model is None or group.current_version is None:
        return None
    bundle = session.get(Bundle, (group.current_model, group.current_version, group.target))
    return None if bundle is None else desired_entry(bundle, None, rollback=False)


def desired_entry(
    bundle: Any, rollout_id: int | None, rollback: bool, failed_inference_limit: int = 5
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


def _event(group: str, kind: str, reason: str, actor: str, **evidence: Any) -> Event:
    """Fleet events that concern no one model are filed under the pseudo-model `fleet:<group>`."""
    record = EventRecord(f"fleet:{group}", kind, reason, actor, evidence=evidence)
    return Event(**vars(record))
