"""The reconciler: drives every unfinished request forward, or fails it with a reason.

The platform database is the source of truth; the broker only carries wake-ups. One
pass looks at every request not in a final state:

- waiting (queued, trained) and its message never sent (the sender died between the
  database write and the broker), lost (the broker's epoch changed: restarted empty), or
  sent long ago (`republish_after_seconds`, doubling with each resend up to 64 times: a
  request waiting for a worker that does not exist yet gets a few messages, not a pile):
  send it again. A message can be lost without a broker restart: the filesystem queue
  hands a message to a worker by removing its file, so a worker killed before it claimed
  the request takes the message with it. In embedded mode `republish_after_seconds`
  defaults to 30 s, so such a request gets its message again within a minute (at the
  first pass after those 30 s; passes run every `reconcile_seconds`, 30 s);
- owned (training, registering, exporting) and its lease stale (the worker died or froze):
  send its stage's message again, once per lease (again only if the broker lost it or
  `republish_after_seconds` passed, doubling as above), so another worker takes it over;
  once `max_attempts` workers died holding it, fail it.

Runs on beat every `reconcile_seconds` and once when `modelyard up` starts. Two passes at
once may both send a message; that is harmless, since the claim lets one delivery work
and answers the others. Failing a request is a compare-and-set.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from typing import Any

from modelyard.platform.context import Platform
from modelyard.platform.faults import describe
from modelyard.platform.queue.outbox import broker_epoch, send_stage, wake
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import TrainingRequest, aware, utcnow
from modelyard.platform.store.states import WAITING, State

log = logging.getLogger(__name__)


@dataclass
class Action:
    request_id: str
    state: str
    action: str  # republished, failed, error
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def reconcile(platform: Platform, app: Any = None, now: dt.datetime | None = None) -> list[Action]:
    """One pass over the unfinished requests; what it did, one Action per request it touched.

    `now` (tests): the time the pass judges waiting and stale requests by.
    """
    from modelyard.platform.queue.app import create_app

    settings, store = platform.settings, platform.requests
    app = app or create_app(settings)
    epoch = broker_epoch(app, settings)
    now = now or utcnow()
    actions: list[Action] = []
    for row in store.unfinished():
        state = State(row.status)
        try:
            if state in WAITING:
                reason = _lost_message(row, epoch, now, store.stale_after, settings.effective_republish_after_seconds)
                if reason:
                    wake(app, settings, store, row, resent=True)
                    actions.append(Action(row.request_id, state, "republished", reason))
            elif store.is_stale(row, now):
                action = _stale(platform, app, row, state, epoch)
                if action:
                    actions.append(action)
        except Exception as err:  # one request's trouble (or a broker outage) must not stop the pass
            log.warning("reconcile %s: %s", row.request_id, describe(err))
            actions.append(Action(row.request_id, state, "error", describe(err)))
    for a in actions:
        log.info("reconcile %s (%s): %s, %s", a.request_id, a.state, a.action, a.reason)
    return actions


def _lost_message(
    row: TrainingRequest, epoch: str, now: dt.datetime, grace: dt.timedelta, republish_after: float
) -> str | None:
    """Why a waiting request's message must be sent again, or None if it is (probably) in the broker."""
    published = aware(row.published_at) if row.published_at else None
    if published is None:
        updated = aware(row.updated_at) if row.updated_at else now
        return "its message was never sent" if updated < now - grace else None
    if row.broker_epoch and row.broker_epoch != epoch:
        return "the broker restarted and lost its message"
    waited = resend_after(row, republish_after)
    if published < now - dt.timedelta(seconds=waited):
        return f"no worker took it for {waited:.0f} s; sent again in case its message was lost"
    return None


def resend_after(row: TrainingRequest, republish_after: float) -> float:
    """Seconds a sent message may wait before it is sent again: doubling with each resend, up to 64 times."""
    return republish_after * 2 ** min(row.republishes or 0, 6)


def _stale(platform: Platform, app: Any, row: TrainingRequest, state: State, epoch: str) -> Action | None:
    settings, store = platform.settings, platform.requests
    died = (row.takeovers or 0) + 1  # every takeover was a dead worker, and so is the stale holder now
    stage = "export" if state == State.EXPORTING else "training"
    if died >= settings.max_attempts:
        reason = (
            f"its workers stopped {died} times without finishing (last: {row.owner}, in {stage}); "
            f"given up (MODELYARD_MAX_ATTEMPTS is {settings.max_attempts})."
        )
        if store.abandon(row, reason):
            kind = "training_failed" if stage == "training" else "request_failed"
            platform.audit.record(EventRecord(row.model, kind, reason, "reconciler", request_id=row.request_id))
            return Action(row.request_id, state, "failed", reason)
        return None
    again_after = dt.timedelta(seconds=resend_after(row, settings.effective_republish_after_seconds))
    if not store.take_republish(row, epoch, again_after):
        return None
    try:
        send_stage(app, row)
    except BaseException:
        store.undo_republish(row)  # not sent: the next pass tries again
        raise
    return Action(row.request_id, state, "republished", f"its worker {row.owner} stopped beating")
