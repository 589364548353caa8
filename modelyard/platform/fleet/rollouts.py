"""Phased rollouts of a bundle to a device group: canary -> observing -> rolling -> completed.

A rollout assigns its bundle to a canary share of the group's devices (their `desired`
entry), waits until each reports an outcome, watches the canary for `observe_seconds`
(local rollbacks, and the share of the inferences the canary devices count, and send with
their heartbeats, that failed), then assigns the rest. It halts by
itself when a phase's failures pass `max_failure_share`: every device it touched gets its
previous bundle back, and no device it did not touch is assigned anything.

When a phase moves on is fleet/phases.py's pure `step()`; this module reads its inputs and
carries out its actions, and holds the rest of the rules (who is in the canary, what each
device is told to run, what a halt reverts). `advance()` runs on beat's fleet tick (a task
on the monitor queue, fleet/driver.py); each step is its writes plus an event in the model's
audit log, in one transaction under the fleet lock (store/fleet.py holds the SQL), so two
workers, or a tick and an operator, cannot both take a step.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

from modelyard.errors import ConflictError, InputError, LifecycleError, NotFoundError
from modelyard.platform.fleet import phases
from modelyard.platform.fleet.devices import check_name, desired_entry
from modelyard.platform.fleet.phases import ACTIVE, RUNNING
from modelyard.platform.settings import Settings
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import Bundle, Device, DeviceGroup, Rollout, RolloutDevice, aware, utcnow
from modelyard.platform.store.fleet import FleetStore, FleetTx

log = logging.getLogger("modelyard.fleet")
OUTCOMES = {"installed": "installed", "failed": "failed", "rolled_back": "rolled_back", "refused": "refused"}


class Rollouts:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store = FleetStore(settings)

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
        with self._store.locked() as tx:
            return self._start(
                tx, model, version, group, actor, kind, canary_percent, observe_seconds, max_failure_share, follow
            )

    def follow(self, model: str, version: str, group: str, kind: str, sent: str | None) -> int | None:
        """A following group's rollout of its model's champion; None when the group was sent it meanwhile.

        `sent`: the champion the group had been sent when the caller read it. Ticks may overlap (two
        workers): the one that finds the group still at `sent` under the fleet lock starts the rollout,
        the other starts nothing, so one champion move is one rollout.
        """
        check_name(group, "group name")
        with self._store.locked() as tx:
            g = tx.group(group)
            if g is None or g.follows != model or g.followed_version != sent or sent == version:
                return None
            return self._start(tx, model, version, group, "fleet", kind, None, None, None, None)

    def _start(
        self,
        tx: FleetTx,
        model: str,
        version: str,
        group: str,
        actor: str,
        kind: str,
        canary_percent: float | None,
        observe_seconds: float | None,
        max_failure_share: float | None,
        follow: bool | None,
    ) -> int:
        g = tx.ensure_group(group, self.settings)
        if follow is not None:
            tx.set_group(g, follows=model if follow else None)
        if kind != "deploy" or follow:  # the champion this group has been sent; the next move is news
            tx.set_group(g, followed_version=version)
        bundle = tx.bundle(model, version, g.target)
        if bundle is None:
            raise LifecycleError(f"{model}/{version} has no {g.target} bundle yet; build it with `modelyard bundle`.")
        for running in tx.rollouts_in(group, ACTIVE):
            if kind == "deploy":
                raise ConflictError(
                    f"rollout {running.id} ({running.model}/{running.version}) is in progress in group "
                    f"'{group}'; abort it first (`modelyard rollout abort {running.id}`).",
                    code="rollout_in_progress",
                )
            self._stop(tx, running, "superseded", f"superseded by {model}/{version} ({kind})", actor)
        if kind == "deploy":  # what an operator chose is the group's policy for the rollouts that follow
            tx.set_group(
                g,
                canary_percent=g.canary_percent if canary_percent is None else canary_percent,
                observe_seconds=g.observe_seconds if observe_seconds is None else observe_seconds,
                max_failure_share=g.max_failure_share if max_failure_share is None else max_failure_share,
            )
        share = canary_percent if canary_percent is not None else g.canary_percent
        if not 0 < share <= 100:
            raise InputError(f"the canary share must be between 0 and 100 percent, not {share}.")
        rollout = tx.add_rollout(
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
        devices = tx.candidates(group, rollout.id)
        canary = _choose_canary(devices, share, self._online_since())
        self._assign(tx, rollout, bundle, canary, "canary")
        tx.record(
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
            self._complete(tx, rollout, g, "the group has no devices yet")
        return rollout.id

    def _online_since(self) -> dt.datetime:
        return utcnow() - dt.timedelta(seconds=self.settings.device_offline_seconds)

    def _assign(self, tx: FleetTx, rollout: Rollout, bundle: Bundle, devices: list[Device], phase: str) -> None:
        now, online_since = utcnow(), self._online_since()
        for device in devices:
            running = (device.installed or {}).get("sha256") == bundle.sha256  # it has nothing to install
            offline = not _online(device, online_since)
            state, reason = "assigned", None
            if running:
                state, reason = "installed", "runs this bundle already"
            elif offline:
                state, reason = "offline", "offline when assigned: installs when it is back"
            tx.add_row(
                rollout_id=rollout.id,
                device_id=device.id,
                phase=phase,
                state=state,
                reason=reason,
                before=device.desired,
                assigned_at=now,
                updated_at=now,
            )
            tx.set_device(device, desired=desired_entry(bundle, rollout.id, rollback=_downgrade(rollout, device)))

    # -- reports from devices -------------------------------------------------------------------------
    def record_outcome(self, device_id: str, report: dict[str, Any]) -> None:
        """An agent's install outcome: moves its row in the rollout (if it is still that rollout's business)."""
        outcome = OUTCOMES.get(str(report.get("outcome")))
        if outcome is None:
            raise InputError(f"outcome '{report.get('outcome')}' is not one of {', '.join(OUTCOMES)}.")
        rollout_id = report.get("rollout_id")
        with self._store.locked() as tx:
            rollout = tx.rollout(rollout_id) if isinstance(rollout_id, int) else None
            if rollout is None:
                return
            allowed = ("assigned", "offline", "timed_out") + (("installed",) if outcome == "rolled_back" else ())
            reason = str(report.get("reason") or "")[:2000]
            if not tx.settle_row(rollout.id, device_id, allowed, state=outcome, reason=reason, updated_at=utcnow()):
                return  # a repeated report, or one about a row the rollout already settled
            device = tx.device(device_id)
            if device is not None and outcome == "installed":  # the registry shows it now, not at the next heartbeat
                slot = (device.installed or {}).get("slot")
                tx.set_device(
                    device,
                    installed={
                        "model": rollout.model,
                        "version": rollout.version,
                        "sha256": rollout.sha256,
                        "slot": slot,
                    },
                )
            elif device is not None and (device.desired or {}).get("rollout_id") == rollout.id:
                row = tx.row(rollout.id, device_id)
                # It runs its old bundle again (or still): tell it to stay there, not to retry this one later.
                tx.set_device(device, desired=_revert(row.before if row is not None else None))
            why = str(report.get("reason") or "").strip()
            text = {
                "installed": f"device {device_id} installed v{rollout.version}",
                "failed": f"device {device_id} failed to install v{rollout.version} at {report.get('stage')}: {why}",
                "rolled_back": f"device {device_id} rolled back v{rollout.version} locally: {why}",
                "refused": f"device {device_id} refused v{rollout.version}: {why}",
            }[outcome]
            kind = "device_installed" if outcome == "installed" else f"device_{outcome}"
            tx.record(_event(rollout, kind, text, device_id, stage=report.get("stage"), seconds=report.get("seconds")))

    # -- the tick -----------------------------------------------------------------------------------
    def advance(self) -> list[int]:
        """Take every step that is due; the ids of the rollouts that moved."""
        moved = []
        for rollout_id in self._store.rollout_ids(RUNNING):
            try:
                with self._store.locked() as tx:
                    rollout = tx.rollout(rollout_id)
                    if rollout is not None and rollout.state in RUNNING and self._step(tx, rollout):
                        moved.append(rollout_id)
            except Exception:  # one broken rollout must not hold up the others: it is tried again next tick
                log.exception("rollout %s could not take its step", rollout_id)
        return moved

    def _step(self, tx: FleetTx, rollout: Rollout) -> bool:
        """Read what phases.step() needs, under the lock; carry out what it says, in its order."""
        now = utcnow()
        rows = tx.rows(rollout.id)
        observed, others = phases.Counts(), []
        if rollout.state == "observing":
            installed = [r for r in rows if r.phase == "canary" and r.state == "installed"]
            observed = phases.canary_inferences(
                [(r.counted_from, self._counted(tx, rollout, r.device_id)) for r in installed]
            )
            others = tx.candidates(rollout.group, rollout.id)
        step = phases.step(
            phases.RolloutState(rollout.id, rollout.version, rollout.state, aware(rollout.phase_started_at)),
            phases.Policy(
                observe_seconds=rollout.observe_seconds,
                max_failure_share=rollout.max_failure_share,
                install_timeout_seconds=self.settings.rollout_install_timeout_seconds,
                max_error_rate=self.settings.rollout_max_error_rate,
            ),
            [phases.Row(r.device_id, r.phase, r.state, aware(r.assigned_at), r.reason) for r in rows],
            observed,
            [d.id for d in others],
            now,
        )
        by_id = {r.device_id: r for r in rows}
        for action in step.actions:
            if isinstance(action, phases.TimeOut):
                for device_id in action.device_ids:
                    tx.set_row(by_id[device_id], state="timed_out", reason=action.reason, updated_at=now)
                    tx.record(_event(rollout, "device_timed_out", f"device {device_id}: {action.reason}", "rollout"))
            elif isinstance(action, phases.Halt):
                self._stop(tx, rollout, "halted", action.reason, "rollout")
            elif isinstance(action, phases.Observe):
                tx.set_rollout(rollout, state="observing", phase_started_at=now)
                self._count_from_now(tx, rollout, [r for r in rows if r.phase == "canary"])
                tx.record(_event(rollout, "rollout_observing", action.summary, "rollout"))
            elif isinstance(action, phases.AssignRest):
                bundle = tx.bundle(rollout.model, rollout.version, rollout.target)
                assert bundle is not None  # a rollout starts only with its bundle, and bundles are never deleted
                chosen = set(action.device_ids)
                rest = [d for d in others if d.id in chosen]
                tx.set_rollout(rollout, state="rolling", phase_started_at=now)
                self._assign(tx, rollout, bundle, rest, "rest")
                tx.record(_event(rollout, "rollout_rolling", action.summary, "rollout", devices=[d.id for d in rest]))
            elif isinstance(action, phases.Complete):
                self._complete(tx, rollout, tx.group(rollout.group), action.reason)
        return step.moved

    @staticmethod
    def _counted(tx: FleetTx, rollout: Rollout, device_id: str) -> dict[str, Any] | None:
        """What the device last said it counted, if it counts this rollout's bundle."""
        device = tx.device(device_id)
        seen = (device.status or {}).get("inferences") if device is not None else None
        if isinstance(seen, dict) and (seen.get("model"), seen.get("version")) == (rollout.model, rollout.version):
            return seen
        return None

    def _count_from_now(self, tx: FleetTx, rollout: Rollout, canary: list[RolloutDevice]) -> None:
        """Observing (again) from now: keep each canary device's counts, so only what comes after is judged."""
        for row in canary:
            tx.set_row(row, counted_from=self._counted(tx, rollout, row.device_id))

    def _complete(self, tx: FleetTx, rollout: Rollout, group: DeviceGroup | None, why: str) -> None:
        tx.set_rollout(rollout, state="completed", finished_at=utcnow(), reason=why)
        if group is not None:
            tx.set_group(group, current_model=rollout.model, current_version=rollout.version)
            bundle = tx.bundle(rollout.model, rollout.version, rollout.target)
            for late in tx.candidates(rollout.group, rollout.id):  # enrolled after the assignments
                if bundle is not None and (late.desired or {}).get("sha256") != bundle.sha256:
                    tx.set_device(late, desired=desired_entry(bundle, None, rollback=_downgrade(rollout, late)))
        tx.record(
            _event(
                rollout, "rollout_completed", f"rollout {rollout.id} of v{rollout.version} completed: {why}", "rollout"
            )
        )

    def _stop(self, tx: FleetTx, rollout: Rollout, state: str, reason: str, actor: str) -> None:
        """Halt, abort or supersede: every device this rollout touched gets what it had before (a rollback)."""
        tx.set_rollout(rollout, state=state, reason=reason, finished_at=utcnow())
        reverted, kept = [], []
        for row in tx.rows(rollout.id):
            device = tx.device(row.device_id)
            if device is None or (device.desired or {}).get("rollout_id") != rollout.id:
                continue  # a later rollout owns this device now, or it went back already
            tx.set_device(device, desired=_revert(row.before))
            if row.state in ("assigned", "offline"):
                tx.set_row(row, state="reverted", reason=f"rollout {state} before it installed")
            if row.before is None and row.state == "installed":
                kept.append(row.device_id)  # it ran nothing before: there is nothing to go back to
            else:
                reverted.append(row.device_id)
        text = f"rollout {rollout.id} of v{rollout.version} {state}: {reason}"
        tx.record(_event(rollout, f"rollout_{state}", text, actor, reverted=reverted, kept_no_previous_bundle=kept))

    # -- operators ----------------------------------------------------------------------------------
    def pause(self, rollout_id: int, actor: str) -> None:
        with self._store.locked() as tx:
            rollout = _get(tx, rollout_id)
            if rollout.state not in RUNNING:
                raise LifecycleError(f"rollout {rollout_id} is {rollout.state}; only a running rollout can be paused.")
            tx.set_rollout(rollout, paused_from=rollout.state, state="paused")
            tx.record(_event(rollout, "rollout_paused", f"rollout {rollout_id} paused in {rollout.paused_from}", actor))

    def resume(self, rollout_id: int, actor: str) -> None:
        with self._store.locked() as tx:
            rollout = _get(tx, rollout_id)
            if rollout.state != "paused":
                raise LifecycleError(f"rollout {rollout_id} is {rollout.state}, not paused.")
            # The observation window starts again: nobody watched while paused.
            tx.set_rollout(rollout, state=rollout.paused_from or "canary", paused_from=None, phase_started_at=utcnow())
            tx.record(_event(rollout, "rollout_resumed", f"rollout {rollout_id} resumed in {rollout.state}", actor))

    def abort(self, rollout_id: int, actor: str, reason: str) -> None:
        with self._store.locked() as tx:
            rollout = _get(tx, rollout_id)
            if rollout.state not in ACTIVE:
                raise LifecycleError(f"rollout {rollout_id} is {rollout.state} already.")
            self._stop(tx, rollout, "aborted", reason, actor)

    # -- reading ------------------------------------------------------------------------------------
    def status(self, rollout_id: int) -> dict[str, Any]:
        rollout, rows = self._store.rollout(rollout_id)
        if rollout is None:
            raise NotFoundError(f"no rollout {rollout_id}.", code="rollout_not_found")
        return {**_rollout_dict(rollout), "devices": [_row_dict(r) for r in sorted(rows, key=lambda r: r.device_id)]}

    def recent(self, model: str | None = None, group: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        found, counts = self._store.recent(model, group, limit)
        return [{**_rollout_dict(r), "counts": counts.get(r.id, {})} for r in found]

    def groups(self) -> list[DeviceGroup]:
        return self._store.groups()

    def latest(self, group: str) -> Rollout | None:
        return self._store.latest(group)


def _get(tx: FleetTx, rollout_id: int) -> Rollout:
    rollout = tx.rollout(rollout_id)
    if rollout is None:
        raise NotFoundError(f"no rollout {rollout_id}.", code="rollout_not_found")
    return rollout


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


def _event(rollout: Rollout, kind: str, reason: str, actor: str, **evidence: Any) -> EventRecord:
    return EventRecord(
        rollout.model,
        kind,
        reason,
        actor,
        None,
        None,
        rollout.version,
        {"rollout_id": rollout.id, "group": rollout.group, "kind": rollout.kind, **evidence},
    )


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
