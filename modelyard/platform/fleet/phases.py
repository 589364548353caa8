"""A rollout's phase transitions as one pure function: what it is and what was seen -> what it does next.

`step()` reads no database and no clock (like the Mender client's state machine, whose states and
transitions are written down apart from the code that persists them and runs the installs): it is
given the rollout's state and policy, the rows of the devices it touched, the canary's inference
counts since observing began, the ids of the group's devices it has not touched yet, and `now`; it
returns the rollout's next state and the actions that take it there, in order. fleet/rollouts.py
reads the inputs and carries the actions out in one transaction (store/fleet.py holds the SQL).

The rules, in the order they are applied:
- a device assigned longer than the install timeout without an outcome is `timed_out` (a failure);
- a phase whose failed share passes `max_failure_share` halts the rollout: the canary in every running
  state, the rest too while rolling. The canary stays judged after its window: an agent keeps a new
  bundle on probation (edge/probation.py) for longer than the usual window and rolls it back locally
  when it fails real inferences, so a canary device's late `failed` or `rolled_back` halts a rolling
  rollout (before it completes) as it would have halted an observed one, rather than leaving that
  device on its old bundle in a group that records the new one;
- a canary whose every row settled without one install halts it;
- a settled canary starts the observation window;
- while observing: a canary error rate above `max_error_rate` (over at least MIN_ERROR_ROWS counted
  inferences) halts it; a window that has passed assigns every other device (and completes at once
  when there is none);
- a rolling rollout completes when every row it touched settled (canary and rest).

Not seen here: whether an `installed` device is still on probation. `installed` is reported at the
switch, and neither the rows nor the heartbeat say when probation ended, so a device that rolls back
after the rollout completed is not judged by this function (record_outcome reverts that device alone).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RUNNING = ("canary", "observing", "rolling")
ACTIVE = (*RUNNING, "paused")
FAILED = ("failed", "rolled_back", "refused", "timed_out")
# Settled rows. `offline`: silent past device_offline_seconds when assigned: it installs when it is back, and
# neither holds the phase up nor counts as a failure; `gone`: decommissioned meanwhile.
DONE = ("installed", *FAILED, "offline", "gone")
MIN_ERROR_ROWS = 20  # fewer canary predictions than this say nothing about an error rate


@dataclass(frozen=True)
class RolloutState:
    """What the rule needs of the rollout: which it is (for the texts), where it stands, since when."""

    id: int
    version: str
    state: str  # canary, observing, rolling
    phase_started_at: dt.datetime


@dataclass(frozen=True)
class Policy:
    observe_seconds: float
    max_failure_share: float
    install_timeout_seconds: float
    max_error_rate: float
    min_error_rows: int = MIN_ERROR_ROWS


@dataclass(frozen=True)
class Row:
    """One device the rollout touched."""

    device_id: str
    phase: str  # canary, rest
    state: str  # assigned, installed, failed, rolled_back, refused, timed_out, offline, gone, reverted
    assigned_at: dt.datetime
    reason: str | None = None


@dataclass(frozen=True)
class Counts:
    """Inferences the canary's devices counted (and, of them, failed) since observing began."""

    total: int = 0
    failed: int = 0


# -- actions, carried out in order -----------------------------------------------------------------
@dataclass(frozen=True)
class TimeOut:
    """These assigned rows become `timed_out` with this reason (one event each)."""

    device_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Halt:
    """Stop the rollout: every device it touched goes back to what it had before."""

    reason: str


@dataclass(frozen=True)
class Observe:
    """The canary settled: start the observation window (keep each canary device's counts from now)."""

    summary: str


@dataclass(frozen=True)
class AssignRest:
    """The window passed without trouble: assign the bundle to these devices (the rest phase)."""

    device_ids: tuple[str, ...]
    summary: str


@dataclass(frozen=True)
class Complete:
    """The rollout is done: the group runs its version from now on."""

    reason: str


Action = TimeOut | Halt | Observe | AssignRest | Complete


@dataclass(frozen=True)
class Step:
    state: str  # the rollout's state after the actions
    actions: tuple[Action, ...]

    @property
    def moved(self) -> bool:
        return bool(self.actions)


def step(
    rollout: RolloutState,
    policy: Policy,
    rows: Sequence[Row],
    observed: Counts,
    others: Sequence[str],
    now: dt.datetime,
) -> Step:
    """The rollout's next state and the actions that take it there (none: nothing is due).

    `observed`: the canary's counts since observing began (canary_inferences); read only while
    observing. `others`: the group's active devices the rollout has not touched, in assignment
    order; read only when the observation window has passed.
    """
    actions: list[Action] = []
    limit = dt.timedelta(seconds=policy.install_timeout_seconds)
    late = [r for r in rows if r.state == "assigned" and now - r.assigned_at > limit]
    if late:
        reason = f"no outcome reported within {limit.total_seconds():g} s"
        actions.append(TimeOut(tuple(r.device_id for r in late), reason))
        timed_out = {r.device_id for r in late}
        rows = [
            dataclasses.replace(r, state="timed_out", reason=reason) if r.device_id in timed_out else r for r in rows
        ]
    # The canary is judged in every running state (a late rollback counts as much as an early one).
    judged = ("canary",) if rollout.state in ("canary", "observing") else ("canary", "rest")
    for phase in judged:
        trouble = failure_trouble(phase, [r for r in rows if r.phase == phase], policy)
        if trouble:
            return Step("halted", (*actions, Halt(trouble)))
    canary = [r for r in rows if r.phase == "canary"]
    if rollout.state == "canary" and all(r.state in DONE for r in canary):
        if canary and not any(r.state == "installed" for r in canary):
            return Step("halted", (*actions, Halt("no canary device installed it (offline or gone)")))
        return Step("observing", (*actions, Observe(summary(rollout, canary, "canary installed"))))
    if rollout.state == "observing":
        trouble = error_rate_trouble(observed, policy)
        if trouble:
            return Step("halted", (*actions, Halt(trouble)))
        if (now - rollout.phase_started_at).total_seconds() >= policy.observe_seconds:
            text = f"observed {policy.observe_seconds:g} s without trouble; assigned to the other {len(others)} devices"
            assign = AssignRest(tuple(others), text)
            if not others:
                return Step("completed", (*actions, assign, Complete("no other devices")))
            return Step("rolling", (*actions, assign))
    if rollout.state == "rolling" and all(r.state in DONE for r in rows):
        return Step("completed", (*actions, Complete(summary(rollout, rows, "done"))))
    return Step(rollout.state, tuple(actions))


def failure_trouble(phase: str, rows: Sequence[Row], policy: Policy) -> str | None:
    """Why the phase's failures halt the rollout (their share passes max_failure_share), or None."""
    failed = [r for r in rows if r.state in FAILED]
    if rows and len(failed) / len(rows) > policy.max_failure_share:
        first = failed[0]
        why = f"{first.device_id}: {first.state}: {first.reason or 'no reason'}"
        share = f"{policy.max_failure_share:.0%}"
        return f"{len(failed)} of {len(rows)} {phase} devices failed (more than {share}); first: {why}"
    return None


def error_rate_trouble(observed: Counts, policy: Policy) -> str | None:
    """Why the canary's error rate halts the rollout, or None (too few inferences say nothing)."""
    total, failed, limit = observed.total, observed.failed, policy.max_error_rate
    if total >= policy.min_error_rows and failed / total > limit:
        share = f"{failed / total:.0%}"
        return f"canary: {failed} of {total} inferences failed while observed ({share}, more than {limit:.0%})"
    return None


def canary_inferences(counts: Sequence[tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]]) -> Counts:
    """The canary's inferences since observing began, from (counted when it began, counted now) per device.

    Devices count every inference of the bundle they serve, and failures, and send the counts with
    each heartbeat (telemetry would not do: it holds every failure but only a sample of successes).
    The counts a device had when observing began are subtracted; a device that had none of this bundle
    then, or whose counts started again since (the agent restarted, or loaded the bundle again), is
    judged on all it has counted since, which is all on this bundle. A device with no counts of this
    bundle now (None) adds nothing.
    """
    total = failed = 0
    for then_, now in counts:
        if now is None:
            continue
        then = then_ if isinstance(then_, Mapping) else {}
        same = then.get("since") == now.get("since") and bool(then)
        total += max(0, int(now.get("total") or 0) - (int(then.get("total") or 0) if same else 0))
        failed += max(0, int(now.get("failed") or 0) - (int(then.get("failed") or 0) if same else 0))
    return Counts(total, failed)


def summary(rollout: RolloutState, rows: Sequence[Row], what: str) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    told = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no devices"
    return f"rollout {rollout.id} of v{rollout.version}: {what} ({told})"
