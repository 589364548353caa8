"""Phased rollouts of a bundle to a device group: canary -> observing -> rolling -> completed.

A rollout assigns its bundle to a canary share of the group's devices (their `desired`
entry), waits until each reports an outcome, watches the canary for `observe_seconds`
(local rollbacks, and the share of the inferences the canary devices count, and send with
their heartbeats, that failed), then assigns the rest. It halts by
itself when a phase's failures pass `max_failure_share`: every device it touched gets its
previous bundle back, and no device it did not touch is assigned anything. `advance()` is
called on a short tick by the API process; each step is a conditional write plus an event in
the model's audit log, in one transaction, so two API processes cannot both take a step.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from modelyard.errors import ConflictError, InputError, LifecycleError, NotFoundError
from modelyard.platform.fleet.devices import check_name, desired_entry, ensure_group, fleet_lock
from modelyard.platform.settings import Settings
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import (
    Bundle,
    Device,
    DeviceGroup,
    Event,
    Rollout,
    RolloutDevice,
    aware,
    ensure_schema,
    session_factory,
    utcnow,
)

log = logging.getLogger("modelyard.fleet")
RUNNING = ("canary", "observing", "rolling")
ACTIVE = (*RUNNING, "paused")
FAILED = ("failed", "rolled_back", "refused", "timed_out")
# Settled rows. `offline`: silent past device_offline_seconds when assigned: it installs when it is back, and
# neither holds the phase up nor counts as a failure; `gone`: decommissioned meanwhile.
DONE = ("installed", *FAILED, "offline", "gone")
OUTCOMES = {"installed": "installed", "failed": "failed", "rolled_back": "rolled_back", "refused": "refused"}
MIN_ERROR_ROWS = 20  # fewer canary predictions than this say nothing about an error rate


class Rollouts:
    def __init__(self, settings: Settings) -> None:
        url = settings.platform_database_url
        ensure_schema(url, settings.run_folder)
        self.settings = settings
        self._sessions = session_factory(url)

    # -- starting ---------------------------------------------------------------------------------
    def start(
        self,
        model: str,
        version: str,
        group: str,
        actor: str,
        kind: str = "deploy",
        canary_percent: float | None = None,
        observe_seconds: float | None = None,
        max_failure_share: float | None = None,
        follow: bool | None = None,
    ) -> int:
        """Start a rollout of the version's bundle (built already) to the group; its id.

        A manual deploy to a group with a rollout in progress is refused; an automatic one
        (a follower's promotion or rollback) supersedes it: the devices it touched go back
        first, so every rollout starts from devices that run what they ran before.
        """
        check_name(group, "group name")
        with self._sessions.begin() as session:
            fleet_lock(session)
            g = ensure_group(session, group, self.settings)
            if follow is not None:
                g.follows = model if follow else None
            if kind != "deploy" or follow:  # the champion this group has been sent; the next move is news
                g.followed_version = version
            bundle = session.get(Bundle, (model, version, g.target))
            if bundle is None:
                raise LifecycleError(
                    f"{model}/{version} has no {g.target} bundle yet; build it with `modelyard bundle`."
                )
            for running in session.scalars(select(Rollout).where(Rollout.group == group, Rollout.state.in_(ACTIVE))):
                if kind == "deploy":
                    raise ConflictError(
                        f"rollout {running.id} ({running.model}/{running.version}) is in progress in group "
                        f"'{group}'; abort it first (`modelyard rollout abort {running.id}`).",
                        code="rollout_in_progress",
                    )
                self._stop(session, running, "superseded", f"superseded by {model}/{version} ({kind})", actor)
            if kind == "deploy":  # what an operator chose is the group's policy for the rollouts that follow
                g.canary_percent = g.canary_percent if canary_percent is None else canary_percent
                g.observe_seconds = g.observe_seconds if observe_seconds is None else observe_seconds
                g.max_failure_share = g.max_failure_share if max_failure_share is None else max_failure_share
            share = canary_percent if canary_percent is not None else g.canary_percent
            if not 0 < share <= 100:
                raise InputError(f"the canary share must be between 0 and 100 percent, not {share}.")
            rollout = Rollout(
                model=model,
                version=version,
                target=g.target,
                group=group,
                kind=kind,
                state="canary",
                sha256=bundle.sha256,
                size=bundle.size,
                canary_percent=share,
                observe_seconds=g.observe_seconds if observe_seconds is None else observe_seconds,
                max_failure_share=g.max_failure_share if max_failure_share is None else max_failure_share,
                created_by=actor,
            )
            session.add(rollout)
            session.flush()
            devices = self._candidates(session, group, rollout.id)
            canary = _choose_canary(devices, share, self._online_since())
            self._assign(session, rollout, bundle, canary, "canary")
            session.add(
                _event(
                    rollout,
                    "rollout_started",
                    f"rollout {rollout.id} of v{version} to group {group}: {len(canary)} of {len(devices)} "
                    f"devices in the canary ({kind})",
                    actor,
                    devices=len(devices),
                    canary=[d.id for d in canary],
                    canary_percent=share,
                    observe_seconds=rollout.observe_seconds,
                    max_failure_share=rollout.max_failure_share,
                    sha256=bundle.sha256,
                )
            )
            if not devices:  # nothing to update: the group's new members get this version when they enroll
                self._complete(session, rollout, g, "the group has no devices yet")
            return rollout.id

    def _candidates(self, session: Session, group: str, rollout_id: int) -> list[Device]:
        touched = select(RolloutDevice.device_id).where(RolloutDevice.rollout_id == rollout_id)
        query = select(Device).where(Device.group == group, Device.state == "active", Device.id.not_in(touched))
        return list(session.scalars(query.order_by(Device.id)))

    def _online_since(self) -> dt.datetime:
        return utcnow() - dt.timedelta(seconds=self.settings.device_offline_seconds)

    def _assign(self, session: Session, rollout: Rollout, bundle: Bundle, devices: list[Device], phase: str) -> None:
        now, online_since = utcnow(), self._online_since()
        for device in devices:
            running = (device.installed or {}).get("sha256") == bundle.sha256  # it has nothing to install
            offline = not _online(device, online_since)
            state, reason = "assigned", None
            if running:
                state, reason = "installed", "runs this bundle already"
            elif offline:
                state, reason = "offline", "offline when assigned: installs when it is back"
            session.add(
                RolloutDevice(
                    rollout_id=rollout.id,
                    device_id=device.id,
                    phase=phase,
                    state=state,
                    reason=reason,
                    before=device.desired,
                    assigned_at=now,
                    updated_at=now,
                )
            )
            device.desired = desired_entry(bundle, rollout.id, rollback=_downgrade(rollout, device))

    # -- reports from devices -------------------------------------------------------------------------
    def record_outcome(self, device_id: str, report: dict[str, Any]) -> None:
        """An agent's install outcome: moves its row in the rollout (if it is still that rollout's business)."""
        outcome = OUTCOMES.get(str(report.get("outcome")))
        if outcome is None:
            raise InputError(f"outcome '{report.get('outcome')}' is not one of {', '.join(OUTCOMES)}.")
        rollout_id = report.get("rollout_id")
        with self._sessions.begin() as session:
            fleet_lock(session)
            rollout = session.get(Rollout, rollout_id) if isinstance(rollout_id, int) else None
            if rollout is None:
                return
            allowed = ("assigned", "offline", "timed_out") + (("installed",) if outcome == "rolled_back" else ())
            moved = session.execute(
                update(RolloutDevice)
                .where(
                    RolloutDevice.rollout_id == rollout.id,
                    RolloutDevice.device_id == device_id,
                    RolloutDevice.state.in_(allowed),
                )
                .values(state=outcome, reason=str(report.get("reason") or "")[:2000], updated_at=utcnow())
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                return  # a repeated report, or one about a row the rollout already settled
            device = session.get(Device, device_id)
            if device is not None and outcome == "installed":  # the registry shows it now, not at the next heartbeat
                slot = (device.installed or {}).get("slot")
                device.installed = {"model": rollout.model, "version": rollout.version, "sha256": rollout.sha256,
                                    "slot": slot}  # fmt: skip
            elif device is not None and (device.desired or {}).get("rollout_id") == rollout.id:
                row = session.get(RolloutDevice, (rollout.id, device_id))
                # It runs its old bundle again (or still): tell it to stay there, not to retry this one later.
                device.desired = _revert(row.before if row is not None else None)
            why = str(report.get("reason") or "").strip()
            text = {
                "installed": f"device {device_id} installed v{rollout.version}",
                "failed": f"device {device_id} failed to install v{rollout.version} at {report.get('stage')}: {why}",
                "rolled_back": f"device {device_id} rolled back v{rollout.version} locally: {why}",
                "refused": f"device {device_id} refused v{rollout.version}: {why}",
            }[outcome]
            kind = "device_installed" if outcome == "installed" else f"device_{outcome}"
            session.add(
                _event(rollout, kind, text, device_id, stage=report.get("stage"), seconds=report.get("seconds"))
            )

    # -- the tick -----------------------------------------------------------------------------------
    def advance(self) -> list[int]:
        """Take every step that is due; the ids of the rollouts that moved."""
        moved = []
        with self._sessions() as session:
            ids = list(session.scalars(select(Rollout.id).where(Rollout.state.in_(RUNNING)).order_by(Rollout.id)))
        for rollout_id in ids:
            try:
                with self._sessions.begin() as session:
                    fleet_lock(session)
                    rollout = session.get(Rollout, rollout_id)
                    if rollout is not None and rollout.state in RUNNING and self._step(session, rollout):
                        moved.append(rollout_id)
            except Exception:  # one broken rollout must not hold up the others: it is tried again next tick
                log.exception("rollout %s could not take its step", rollout_id)
        return moved

    def _step(self, session: Session, rollout: Rollout) -> bool:
        now = utcnow()
        rows = list(session.scalars(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout.id)))
        changed = self._time_out(session, rollout, rows, now)
        phase = "canary" if rollout.state in ("canary", "observing") else "rest"
        mine = [r for r in rows if r.phase == phase]
        failed = [r for r in mine if r.state in FAILED]
        if mine and len(failed) / len(mine) > rollout.max_failure_share:
            first = failed[0]
            why = f"{first.device_id}: {first.state}: {first.reason or 'no reason'}"
            share = f"{rollout.max_failure_share:.0%}"
            reason = f"{len(failed)} of {len(mine)} {phase} devices failed (more than {share}); first: {why}"
            self._stop(session, rollout, "halted", reason, "rollout")
            return True
        done = all(r.state in DONE for r in mine)
        if rollout.state == "canary" and done and mine and not any(r.state == "installed" for r in mine):
            self._stop(session, rollout, "halted", "no canary device installed it (offline or gone)", "rollout")
            return True
        if rollout.state == "canary" and done:
            rollout.state, rollout.phase_started_at = "observing", now
            self._count_from_now(session, rollout, mine)
            session.add(
                _event(rollout, "rollout_observing", self._summary(rollout, mine, "canary installed"), "rollout")
            )
            return True
        if rollout.state == "observing":
            trouble = self._error_rate(session, rollout, mine)
            if trouble:
                self._stop(session, rollout, "halted", trouble, "rollout")
                return True
            if (now - aware(rollout.phase_started_at)).total_seconds() >= rollout.observe_seconds:
                bundle = session.get(Bundle, (rollout.model, rollout.version, rollout.target))
                assert bundle is not None  # a rollout starts only with its bundle, and bundles are never deleted
                rest = self._candidates(session, rollout.group, rollout.id)
                rollout.state, rollout.phase_started_at = "rolling", now
                self._assign(session, rollout, bundle, rest, "rest")
                session.add(
                    _event(
                        rollout,
                        "rollout_rolling",
                        f"observed {rollout.observe_seconds:g} s without trouble; "
                        f"assigned to the other {len(rest)} devices",
                        "rollout",
                        devices=[d.id for d in rest],
                    )
                )
                if not rest:
                    self._complete(session, rollout, session.get(DeviceGroup, rollout.group), "no other devices")
                return True
        if rollout.state == "rolling" and done:
            self._complete(
                session, rollout, session.get(DeviceGroup, rollout.group), self._summary(rollout, rows, "done")
            )
            return True
        return changed

    def _time_out(self, session: Session, rollout: Rollout, rows: list[RolloutDevice], now: dt.datetime) -> bool:
        limit = dt.timedelta(seconds=self.settings.rollout_install_timeout_seconds)
        late = [r for r in rows if r.state == "assigned" and now - aware(r.assigned_at) > limit]
        for row in late:
            row.state, row.updated_at = "timed_out", now
            row.reason = f"no outcome reported within {limit.total_seconds():g} s"
            session.add(_event(rollout, "device_timed_out", f"device {row.device_id}: {row.reason}", "rollout"))
        return bool(late)

    @staticmethod
    def _counted(session: Session, rollout: Rollout, device_id: str) -> dict[str, Any] | None:
        """What the device last said it counted, if it counts this rollout's bundle."""
        device = session.get(Device, device_id)
        seen = (device.status or {}).get("inferences") if device is not None else None
        if isinstance(seen, dict) and (seen.get("model"), seen.get("version")) == (rollout.model, rollout.version):
            return seen
        return None

    def _count_from_now(self, session: Session, rollout: Rollout, canary: list[RolloutDevice]) -> None:
        """Observing (again) from now: keep each canary device's counts, so only what comes after is judged."""
        for row in canary:
            row.counted_from = self._counted(session, rollout, row.device_id)

    def _error_rate(self, session: Session, rollout: Rollout, canary: list[RolloutDevice]) -> str | None:
        """The share of the canary's inferences that failed since observing began.

        Devices count every inference of the bundle they serve, and failures, and send the counts with
        each heartbeat (telemetry would not do: it holds every failure but only a sample of successes).
        The counts a device had when observing began are subtracted; a device that had none of this bundle
        then, or whose counts started again since (the agent restarted, or loaded the bundle again), is
        judged on all it has counted since, which is all on this bundle.
        """
        total = failed = 0
        for row in canary:
            now = self._counted(session, rollout, row.device_id) if row.state == "installed" else None
            if now is None:
                continue
            then = row.counted_from if isinstance(row.counted_from, dict) else {}
            same = then.get("since") == now.get("since") and bool(then)
            total += max(0, int(now.get("total") or 0) - (int(then.get("total") or 0) if same else 0))
            failed += max(0, int(now.get("failed") or 0) - (int(then.get("failed") or 0) if same else 0))
        limit = self.settings.rollout_max_error_rate
        if total >= MIN_ERROR_ROWS and failed / total > limit:
            return (
                f"canary: {failed} of {total} inferences failed while observed ({failed / total:.0%}, more than "
                f"{limit:.0%})"
            )
        return None

    @staticmethod
    def _summary(rollout: Rollout, rows: list[RolloutDevice], what: str) -> str:
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.state] = counts.get(r.state, 0) + 1
        told = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no devices"
        return f"rollout {rollout.id} of v{rollout.version}: {what} ({told})"

    def _complete(self, session: Session, rollout: Rollout, group: DeviceGroup | None, why: str) -> None:
        rollout.state, rollout.finished_at, rollout.reason = "completed", utcnow(), why
        if group is not None:
            group.current_model, group.current_version = rollout.model, rollout.version
            bundle = session.get(Bundle, (rollout.model, rollout.version, rollout.target))
            for late in self._candidates(session, rollout.group, rollout.id):  # enrolled after the assignments
                if bundle is not None and (late.desired or {}).get("sha256") != bundle.sha256:
                    late.desired = desired_entry(bundle, None, rollback=_downgrade(rollout, late))
        session.add(
            _event(
                rollout, "rollout_completed", f"rollout {rollout.id} of v{rollout.version} completed: {why}", "rollout"
            )
        )

    def _stop(self, session: Session, rollout: Rollout, state: str, reason: str, actor: str) -> None:
        """Halt, abort or supersede: every device this rollout touched gets what it had before (a rollback)."""
        rollout.state, rollout.reason, rollout.finished_at = state, reason, utcnow()
        rows = list(session.scalars(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout.id)))
        reverted, kept = [], []
        for row in rows:
            device = session.get(Device, row.device_id)
            if device is None or (device.desired or {}).get("rollout_id") != rollout.id:
                continue  # a later rollout owns this device now, or it went back already
            device.desired = _revert(row.before)
            if row.state in ("assigned", "offline"):
                row.state, row.reason = "reverted", f"rollout {state} before it installed"
            if row.before is None and row.state == "installed":
                kept.append(row.device_id)  # it ran nothing before: there is nothing to go back to
            else:
                reverted.append(row.device_id)
        text = f"rollout {rollout.id} of v{rollout.version} {state}: {reason}"
        session.add(_event(rollout, f"rollout_{state}", text, actor, reverted=reverted, kept_no_previous_bundle=kept))

    # -- operators ----------------------------------------------------------------------------------
    def pause(self, rollout_id: int, actor: str) -> None:
        with self._sessions.begin() as session:
            fleet_lock(session)
            rollout = self._get(session, rollout_id)
            if rollout.state not in RUNNING:
                raise LifecycleError(f"rollout {rollout_id} is {rollout.state}; only a running rollout can be paused.")
            rollout.paused_from, rollout.state = rollout.state, "paused"
            session.add(
                _event(rollout, "rollout_paused", f"rollout {rollout_id} paused in {rollout.paused_from}", actor)
            )

    def resume(self, rollout_id: int, actor: str) -> None:
        with self._sessions.begin() as session:
            fleet_lock(session)
            rollout = self._get(session, rollout_id)
            if rollout.state != "paused":
                raise LifecycleError(f"rollout {rollout_id} is {rollout.state}, not paused.")
            rollout.state, rollout.paused_from = rollout.paused_from or "canary", None
            rollout.phase_started_at = utcnow()  # the observation window starts again: nobody watched while paused
            session.add(_event(rollout, "rollout_resumed", f"rollout {rollout_id} resumed in {rollout.state}", actor))

    def abort(self, rollout_id: int, actor: str, reason: str) -> None:
        with self._sessions.begin() as session:
            fleet_lock(session)
            rollout = self._get(session, rollout_id)
            if rollout.state not in ACTIVE:
                raise LifecycleError(f"rollout {rollout_id} is {rollout.state} already.")
            self._stop(session, rollout, "aborted", reason, actor)

    def _get(self, session: Session, rollout_id: int) -> Rollout:
        rollout = session.get(Rollout, rollout_id)
        if rollout is None:
            raise NotFoundError(f"no rollout {rollout_id}.", code="rollout_not_found")
        return rollout

    # -- reading ------------------------------------------------------------------------------------
    def status(self, rollout_id: int) -> dict[str, Any]:
        with self._sessions() as session:
            rollout = session.get(Rollout, rollout_id)
            if rollout is None:
                raise NotFoundError(f"no rollout {rollout_id}.", code="rollout_not_found")
            rows = list(session.scalars(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id)))
            return {
                **_rollout_dict(rollout),
                "devices": [_row_dict(r) for r in sorted(rows, key=lambda r: r.device_id)],
            }

    def recent(self, model: str | None = None, group: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        query = select(Rollout).order_by(Rollout.id.desc()).limit(limit)
        if model is not None:
            query = query.where(Rollout.model == model)
        if group is not None:
            query = query.where(Rollout.group == group)
        with self._sessions() as session:
            found = list(session.scalars(query))
            counts: dict[int, dict[str, int]] = {}
            for row in session.scalars(
                select(RolloutDevice).where(RolloutDevice.rollout_id.in_([r.id for r in found]))
            ):
                per = counts.setdefault(row.rollout_id, {})
                per[row.state] = per.get(row.state, 0) + 1
        return [{**_rollout_dict(r), "counts": counts.get(r.id, {})} for r in found]

    def groups(self) -> list[DeviceGroup]:
        with self._sessions() as session:
            return list(session.scalars(select(DeviceGroup).order_by(DeviceGroup.name)))

    def latest(self, group: str) -> Rollout | None:
        with self._sessions() as session:
            return session.scalar(select(Rollout).where(Rollout.group == group).order_by(Rollout.id.desc()).limit(1))


def _downgrade(rollout: Rollout, device: Device) -> bool:
    """Whether the device must accept this bundle though it is older than what it runs (agents refuse that else)."""
    installed = device.installed or {}
    older = installed.get("model") == rollout.model and str(installed.get("version", "")).isdigit()
    return rollout.kind == "rollback" or (older and int(installed["version"]) > int(rollout.version))


def _online(device: Device, since: dt.datetime) -> bool:
    """Heard from lately, or enrolled lately (a device that just enrolled has not sent its first heartbeat yet)."""
    last = device.last_seen_at or device.enrolled_at
    return last is not None and aware(last) >= since


def _revert(before: dict[str, Any] | None) -> dict[str, Any] | None:
    """The desired entry that sends a device back to what it ran before (None: it ran nothing)."""
    return None if before is None else {**before, "rollback": True, "rollout_id": None}


def _choose_canary(devices: list[Device], percent: float, online_since: dt.datetime) -> list[Device]:
    """The canary: the share of the group (at least one device), healthy online devices first, then by id."""
    if not devices:
        return []
    count = max(1, math.ceil(len(devices) * percent / 100))

    def rank(d: Device) -> tuple[int, str]:
        return (0 if _online(d, online_since) and d.health in (None, "ok") else 1, d.id)

    return sorted(devices, key=rank)[:count]


def _event(rollout: Rollout, kind: str, reason: str, actor: str, **evidence: Any) -> Event:
    record = EventRecord(
        rollout.model,
        kind,
        reason,
        actor,
        None,
        None,
        rollout.version,
        {"rollout_id": rollout.id, "group": rollout.group, "kind": rollout.kind, **evidence},
    )
    return Event(**vars(record))


def _when(t: dt.datetime | None) -> str | None:
    return None if t is None else aware(t).strftime("%Y-%m-%d %H:%M:%S")


def _rollout_dict(r: Rollout) -> dict[str, Any]:
    return {
        "id": r.id,
        "model": r.model,
        "version": r.version,
        "target": r.target,
        "group": r.group,
        "kind": r.kind,
        "state": r.state,
        "reason": r.reason,
        "canary_percent": r.canary_percent,
        "observe_seconds": r.observe_seconds,
        "max_failure_share": r.max_failure_share,
        "sha256": r.sha256,
        "size": r.size,
        "created_by": r.created_by,
        "created": _when(r.created_at),
        "phase_started": _when(r.phase_started_at),
        "finished": _when(r.finished_at),
    }


def _row_dict(r: RolloutDevice) -> dict[str, Any]:
    return {
        "device": r.device_id,
        "phase": r.phase,
        "state": r.state,
        "reason": r.reason,
        "before": (r.before or {}).get("version"),
        "updated": _when(r.updated_at),
    }
