"""The retraining policy on the platform: verdicts become a retraining request, or a recorded reason why not.

`apply_policy` decides once per drift check, under the model's lock; `retrain` is the
manual path (`modelyard models retrain`), without the policy's cooldown and budget.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Any

from modelyard.errors import ConflictError, InputError
from modelyard.platform.services.signatures import Signature, champion_of, signature
from modelyard.platform.services.verdicts import check_evidence
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import aware, utcnow

if TYPE_CHECKING:
    from modelyard.platform.context import Platform

AUTOMATIC = "policy"  # the actor of retrainings the policy queues


def policy_state(platform: Platform, sig: Signature, check: Any, own: str | None = None) -> Any:
    """What the policy decides on, as of `check`: the judged windows of the served version up to it (a window
    fewer than min_rows newer than the one before is the same data judged again: the newer verdict
    replaces it), the retraining in flight (but `own`, this window's own request), cooldowns, the budget."""
    from modelyard.monitoring.policy import TOO_FEW_ROWS, PolicyState
    from modelyard.platform.store.drift import DriftChecks

    now = utcnow()
    judged = [
        c
        for c in DriftChecks(platform.settings).recent(sig.model, 50, version=sig.version)
        if c.id <= check.id and c.verdict != TOO_FEW_ROWS
    ]
    windows: list[Any] = []
    for c in judged:
        if windows and c.last_id - windows[-1].last_id < sig.monitoring.min_rows:
            windows[-1] = c
        else:
            windows.append(c)
    events = platform.audit.history(sig.model, ("retraining_queued", "guard_rolled_back"))
    automatic = [e for e in events if e.kind == "retraining_queued" and e.actor == AUTOMATIC]
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rollbacks = [e for e in events if e.kind == "guard_rolled_back"]
    return PolicyState(
        verdicts=[c.verdict for c in windows],
        now=now,
        in_flight=platform.requests.in_flight(sig.model, ignore=own),
        last_retraining=aware(automatic[-1].created_at) if automatic else None,
        last_rollback=aware(rollbacks[-1].created_at) if rollbacks else None,
        retrainings_today=sum(aware(e.created_at) >= midnight for e in automatic),
    )


def apply_policy(platform: Platform, model: str, sig: Signature, check: Any) -> str:
    """Turn the newest verdicts into a retraining, or a recorded reason why not; one decision per check."""
    from modelyard.monitoring.policy import decide
    from modelyard.platform.faults import describe, is_transient
    from modelyard.platform.store.drift import DriftChecks

    rid = "drift-" + hashlib.sha256(f"{model}\0{check.window_key}".encode()).hexdigest()[:24]
    # One check of a model at a time, under the model's lock; the check's events and its decision commit
    # together at the end (on SQLite after the retraining request's own writes, which use other sessions).
    with platform.audit.moving(model) as tx:
        done = DriftChecks.decision(tx.session, check.id)
        if done is not None:  # another delivery of this window decided first
            return done
        reason = (check.scores or {}).get("reason")
        events = [
            EventRecord(model, "drift_checked", f"check {check.id} of v{sig.version}: {check.verdict}: {reason}",
                        "monitor", None, None, sig.version, check_evidence(check))
        ]  # fmt: skip
        # `own`: a delivery that died after queueing this window's retraining finds it, and finishes it
        decision = decide(sig.monitoring, policy_state(platform, sig, check, own=rid))
        said, skipped = decision.reason, decision.action == "skip"
        if decision.action == "retrain":
            why = f"{decision.reason} (check {check.id}: {check.verdict})"
            try:
                queued = queue_retraining(platform, sig, rid, "drift", AUTOMATIC, why, check.last_id, check.id)
                events += [queued] if queued else []  # after the check that fired it, in the same commit
                said = f"retraining {rid} queued: {decision.reason}"
            except Exception as err:
                if is_transient(err):  # the broker or a database is down: the task retries, nothing decided yet
                    raise
                said, skipped = f"{decision.reason}, but the retraining could not be queued: {describe(err)}", True
        if skipped:
            evidence = {**decision.evidence, "check_id": check.id}
            events.append(EventRecord(model, "retraining_skipped", said, AUTOMATIC, None, None, sig.version, evidence))
        tx.record(*events)
        DriftChecks.decide(tx.session, check.id, said)
    return said


def queue_retraining(
    platform: Platform,
    sig: Signature,
    request_id: str,
    trigger: str,
    actor: str,
    reason: str,
    until_id: int,
    check_id: int | None = None,
) -> EventRecord | None:
    """The champion's spec with its dataset re-read plus the labeled window (spec.monitoring.retrain_data), queued.

    The request id makes it happen once: a second call with the same id finds the request. Returns the
    `retraining_queued` event for the caller to record (None when it was recorded before).
    """
    from modelyard.platform.services.submit import submit_training
    from modelyard.trainers.spec import RecentData

    mode = sig.monitoring.retrain_data
    spec = sig.spec.model_copy(deep=True)
    spec.dataset.recent = (
        None if mode == "original" else RecentData(mode=mode, model=sig.model, until_id=until_id,
                                                    rows=sig.monitoring.window_rows)
    )  # fmt: skip
    if mode != "original":
        labeled = len(platform.inference.labeled(sig.model, until_id, sig.monitoring.window_rows))
        if mode == "recent" and labeled == 0:
            raise InputError(f"retraining '{sig.model}' on recent data only, but no logged row has a label yet.")
    else:
        labeled = 0
    submit_training(platform.settings, spec, request_id, trigger=trigger, actor=actor, parent=sig.version)
    queued = platform.audit.history(sig.model, ("retraining_queued",))
    if any(e.request_id == request_id for e in queued):  # a redelivery finishing the job: said already
        return None
    evidence = {"data": mode, "labeled_rows": labeled, "until_id": until_id, "parent_version": sig.version}
    if check_id is not None:
        evidence["check_id"] = check_id
    return EventRecord(sig.model, "retraining_queued", f"trigger {trigger}: {reason}", actor, None, sig.version,
                       None, evidence, request_id)  # fmt: skip


def retrain(platform: Platform, model: str, reason: str, actor: str) -> dict[str, Any]:
    """`modelyard models retrain`: the policy's path without its cooldown and budget; never two in flight."""
    version = champion_of(platform, model)
    sig = signature(platform, model, version)
    until = platform.inference.last_id(model)
    rid = f"retrain-{uuid.uuid4().hex[:24]}"  # each command is a new retraining; two at once are refused below
    with platform.audit.moving(model):
        busy = platform.requests.in_flight(model)
        if busy:
            raise ConflictError(f"a retraining of '{model}' is already queued or running ({busy}); wait for it.")
        queued = queue_retraining(platform, sig, rid, "manual", actor, reason, until)
        if queued:
            platform.audit.record(queued)
    return {"request_id": rid, "model": model, "parent_version": version, "data": sig.monitoring.retrain_data}
