"""The reconciler: drives every unfinished request forward, or fails it with a reason.

The platform database is the source of truth; the broker only carries wake-ups. One
pass looks at every request not in a final state:

- waiting (queued, trained) and its message never sent (the sender died between the
  database write and the broker), lost (the broker's epoch changed: restarted empty), or
  sent longer ago than `republish_after_seconds`: send it again;
- owned (training, registering, exporting) and its lease stale (the worker died or froze):
  send its stage's message again, once per lease, so another worker takes it over; after
  `max_attempts` dead workers, fail it.

Runs on beat every `reconcile_seconds` and once when `modelyard up` starts. Every action
is a compare-and-set, so two reconcilers at once do no harm; a duplicate message is
answered by the claim.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass

from celery import Celery

from modelyard.platform.context import Platform
from modelyard.platform.faults import describe
from modelyard.platform.jobs.outbox import broker_epoch, send_stage, wake
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import TrainingRequest, utcnow
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


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)  # SQLite hands back naive UTC datetimes


def reconcile(platform: Platform, app: Celery | None = None) -> list[Action]:
    """One pass over the unfinished requests; what it did, one Action per request it touched."""
    from modelyard.platform.jobs.celery_app import create_app

    settings, store = platform.settings, platform.requests
    app = app or create_app(settings)
    epoch = broker_epoch(app, settings)
    now = utcnow()
    actions: list[Action] = []
    for row in store.unfinished():
        state = State(row.status)
        try:
            if state in WAITING:
                reason = _lost_message(row, epoch, now, store.stale_after, settings.republish_after_seconds)
                if reason:
                    wake(app, settings, store, row)
                    actions.append(Action(row.request_id, state, "republished", reason))
            elif store.is_stale(row, now):
                action = _stale(platform, app, row, state, now)
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
    published = _aware(row.published_at)
    if published is None:
        updated = _aware(row.updated_at) or now
        return "its message was never sent" if updated < now - grace else None
    if row.broker_epoch and row.broker_epoch != epoch:
        return "the broker restarted and lost its message"
    if published < now - dt.timedelta(seconds=republish_after):
        return f"no worker took it for {republish_after:.0f} s; sent again in case its message was lost"
    return None


def _stale(platform: Platform, app: Celery, row: TrainingRequest, state: State, now: dt.datetime) -> Action | None:
    settings, store = platform.settings, platform.requests
    attempts = row.export_attempts if state == State.EXPORTING else row.attempts
    stage = "export" if state == State.EXPORTING else "training"
    if attempts >= settings.max_attempts:
        reason = (
            f"its {stage} worker stopped {attempts} times without finishing (last: {row.owner}); "
            f"given up (MODELYARD_MAX_ATTEMPTS is {settings.max_attempts})."
        )
        if store.abandon(row, reason):
            kind = "training_failed" if stage == "training" else "request_failed"
            platform.audit.record(EventRecord(row.model, kind, reason, "reconciler", request_id=row.request_id))
            return Action(row.request_id, state, "failed", reason)
        return None
    if store.take_republish(row):  # once per lease: a takeover gets a new lease, and a new chance
        send_stage(app, row)
        return Action(row.request_id, state, "republished", f"its worker {row.owner} stopped beating")
    return None
