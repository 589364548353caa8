"""How an attempt at a request's stage ends, the same for training and export.

A delivery that did not get the claim answers with what it found; a worker whose lease was
taken over records that it stopped; any other failure gives the claim back (transient) or
fails the request (permanent).
"""

from __future__ import annotations

import datetime as dt
from contextlib import suppress
from typing import Any

from modelyard.errors import ModelyardError
from modelyard.platform.context import Platform
from modelyard.platform.faults import as_transient, describe, is_transient
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import utcnow
from modelyard.platform.store.requests import Claim, ClaimLost, Lease


def unclaimed_answer(claim: Claim) -> dict[str, Any]:
    """What a delivery that did not get the claim answers: the result, or who holds it."""
    row = claim.row
    if claim.state == "failed":
        raise ModelyardError(row.error or f"request {row.request_id} failed.")
    if claim.state == "done":
        return {**(row.result or {}), "duplicate": True}
    # Busy: a live worker holds the lease. This message is dropped; if that worker dies,
    # the reconciler sends a new one (once per lease), so nothing piles up meanwhile.
    return {"request_id": row.request_id, "busy": True, "state": row.status, "owner": row.owner}


def stale_answer(platform: Platform, model: str, lease: Lease, err: ClaimLost) -> dict[str, Any]:
    """Record that a worker whose lease was taken over stopped; its message is done with."""
    platform.audit.record(
        EventRecord(model, "stale_worker_stopped", str(err), lease.owner, request_id=lease.request_id)
    )
    return {"request_id": lease.request_id, "stale": True, "reason": str(err)}


def end_attempt(
    platform: Platform, model: str, lease: Lease, err: BaseException, retry_in: float | None, stage: str
) -> BaseException:
    """After an attempt raised: give the claim back (transient), fail the request (permanent),
    or, when the lease was lost, only record that this worker stopped. Returns what to raise:
    a TransientError for a retry (whatever the library raised), else the error itself."""
    store, audit = platform.requests, platform.audit
    rid, owner = lease.request_id, lease.owner
    if isinstance(err, ClaimLost):
        stale_answer(platform, model, lease, err)
        return err
    if is_transient(err) and retry_in is not None:
        transient = as_transient(err, stage)
        with suppress(ClaimLost):
            store.release(
                lease, f"{transient} Retrying in {retry_in:.0f} s.", utcnow() + dt.timedelta(seconds=retry_in)
            )
        return transient
    if is_transient(err):
        message = f"{stage} gave up after MODELYARD_MAX_RETRIES retries: {as_transient(err, stage)}"
        err = ModelyardError(message)
    elif isinstance(err, ModelyardError):
        message = str(err)
    else:
        message = f"{stage} {describe(err)}"
    try:
        store.fail(lease, rid, message)
    except ClaimLost as lost:
        audit.record(EventRecord(model, "stale_worker_stopped", str(lost), owner, request_id=rid))
        return err
    kind = "training_failed" if stage == "training" else "request_failed"
    audit.record(EventRecord(model, kind, message, owner, request_id=rid))
    return err
