"""When drift turns into a retraining: consecutive windows, one in flight, cooldown, daily budget.

A plain function over what the platform read (recent verdicts, requests, events); the
platform applies the decision under the model's lock, so concurrent checks decide once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from modelyard.monitoring.spec import MonitoringSpec

# What a judged window can say (monitoring.checks.judge).
TOO_FEW_ROWS = "too_few_rows"
NO_DRIFT = "no_drift"
HARMLESS_DRIFT = "drift_harmless"  # inputs or predictions moved, the metric (or its estimate) did not fall
HARMFUL_DRIFT = "harmful_drift"  # moved, and the metric fell
PERFORMANCE_DROP = "performance_drop"  # the live metric fell with no visible drift (concept drift)
VERDICTS = (TOO_FEW_ROWS, NO_DRIFT, HARMLESS_DRIFT, HARMFUL_DRIFT, PERFORMANCE_DROP)


@dataclass
class PolicyState:
    verdicts: list[str]  # judged windows of the served version, oldest first (too_few_rows left out)
    now: dt.datetime
    in_flight: str | None = None  # a retraining of this model that is queued or running
    last_retraining: dt.datetime | None = None  # the newest automatic retraining
    last_rollback: dt.datetime | None = None  # the newest automatic rollback
    retrainings_today: int = 0  # automatic retrainings since 00:00 UTC


@dataclass
class PolicyDecision:
    action: Literal["retrain", "skip", "wait", "none"]
    reason: str
    evidence: dict[str, object] = field(default_factory=dict)


def triggers(spec: MonitoringSpec) -> frozenset[str]:
    if spec.retrain_on == "any_drift":
        return frozenset({HARMFUL_DRIFT, PERFORMANCE_DROP, HARMLESS_DRIFT})
    return frozenset({HARMFUL_DRIFT, PERFORMANCE_DROP})


def decide(spec: MonitoringSpec, state: PolicyState) -> PolicyDecision:
    """Retrain, skip (and say why), wait for more windows, or nothing to do."""
    fire = triggers(spec)
    if not state.verdicts or state.verdicts[-1] not in fire:
        last = state.verdicts[-1] if state.verdicts else "no judged window"
        return PolicyDecision("none", f"latest window: {last}")
    run = 0
    for verdict in reversed(state.verdicts):
        if verdict not in fire:
            break
        run += 1
    evidence: dict[str, object] = {"consecutive": run, "needed": spec.consecutive}
    if run < spec.consecutive:
        return PolicyDecision("wait", f"drift in {run} of {spec.consecutive} consecutive windows needed", evidence)
    seen = f"drift seen in {run} consecutive windows, retraining skipped: "
    if spec.retrain_on == "never":
        return PolicyDecision("skip", seen + "monitoring.retrain_on is 'never'", evidence)
    if state.in_flight:
        return PolicyDecision("skip", seen + f"retraining {state.in_flight} is already queued or running", evidence)
    cooldown = dt.timedelta(minutes=spec.cooldown_minutes)
    recent = [
        (at, what) for what, at in (("retraining", state.last_retraining), ("rollback", state.last_rollback)) if at
    ]
    if recent:
        at, what = max(recent)  # the later one ends the cooldown
        if state.now < at + cooldown:
            until = (at + cooldown).strftime("%Y-%m-%d %H:%M:%S UTC")
            return PolicyDecision("skip", seen + f"cooldown until {until} (after the last {what})", evidence)
    if state.retrainings_today >= spec.daily_budget:
        tomorrow = (state.now + dt.timedelta(days=1)).strftime("%Y-%m-%d")
        return PolicyDecision(
            "skip",
            seen + f"daily budget of {spec.daily_budget} retrainings spent (next on {tomorrow} 00:00 UTC)",
            evidence,
        )
    return PolicyDecision("retrain", f"drift in {run} consecutive windows", evidence)
