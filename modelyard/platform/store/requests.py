"""Training requests: one row per request id, moved only by fenced compare-and-set transitions.

A worker claims a stage (training, exporting) and gets a lease: a fencing token that
grows on every claim. Every write it makes afterwards names that lease; when another
worker has taken the request over (the first one paused past `stale_after_seconds`),
the write matches no row and raises `ClaimLost`: a stale worker learns it at its next
write or heartbeat, before it starts registering, moves an alias or records a result.
(A worker frozen inside the registry call itself can still register; training.py
archives such a second version.) The states and their transitions are in
states.py; the reconciler (services/reconcile.py) drives the rows nobody drives.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelyard.errors import ModelyardError
from modelyard.platform.settings import Settings
from modelyard.platform.store.db import TrainingRequest, ensure_schema, session_factory, utcnow
from modelyard.platform.store.states import FINAL, OWNED, WAITING, IllegalTransition, State, check, sources_of


def worker_name() -> str:
    """Who holds a claim: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Lease:
    """A claim on one stage of one request; `token` fences every later write."""

    request_id: str
    token: int
    owner: str


class ClaimLost(ModelyardError):
    """This worker's lease was taken over: it must stop without writing anything more."""

    def __init__(self, lease: Lease, row: TrainingRequest | None) -> None:
        now = "gone" if row is None else f"{row.status} under lease {row.lease} of {row.owner or 'nobody'}"
        super().__init__(
            f"request {lease.request_id}: lease {lease.token} of {lease.owner} was taken over (now {now}); "
            "this worker stops without writing."
        )
        self.lease = lease


ClaimState = Literal["claimed", "busy", "done", "failed"]


@dataclass
class Claim:
    state: ClaimState
    row: TrainingRequest
    lease: Lease | None = None
    took_over: bool = False  # the previous holder's lease had gone stale


def rowcount(result: Any) -> int:
    """Rows an UPDATE matched (a conditional UPDATE that matches none is no error: callers check)."""
    return int(result.rowcount)


def hold_lease(session: Session, lease: Lease, now: dt.datetime | None = None) -> None:
    """Inside a caller's transaction: check the lease and hold its row until the transaction ends.

    A write, not a read: it takes the row lock (PostgreSQL) or the write lock (SQLite), so
    no claim can take the request over before the caller commits. ClaimLost when not held.
    """
    changed = session.execute(update(TrainingRequest).where(*_held(lease)).values(heartbeat_at=now or utcnow()))
    if rowcount(changed) != 1:
        raise ClaimLost(lease, session.get(TrainingRequest, lease.request_id))


class RequestStore:
    def __init__(self, settings: Settings, clock: Callable[[], dt.datetime] = utcnow) -> None:
        """`clock` says what time it is for every lease, heartbeat and staleness rule (tests move it)."""
        self.clock = clock
        url = settings.platform_database_url
        ensure_schema(url, settings.run_folder)
        self._sessions = session_factory(url)
        self.stale_after = dt.timedelta(seconds=settings.stale_after_seconds)

    # --- reading -------------------------------------------------------------------------

    def get(self, request_id: str) -> TrainingRequest | None:
        with self._sessions() as session:
            return session.get(TrainingRequest, request_id)

    def find(
        self, states: Iterable[State] = (), model: str | None = None, limit: int | None = 200
    ) -> list[TrainingRequest]:
        """Requests, newest first; only these states and this model when given."""
        query = select(TrainingRequest).order_by(TrainingRequest.created_at.desc(), TrainingRequest.request_id)
        if states:
            query = query.where(TrainingRequest.status.in_([str(s) for s in states]))
        if model is not None:
            query = query.where(TrainingRequest.model == model)
        with self._sessions() as session:
            return list(session.scalars(query.limit(limit)))

    def unfinished(self) -> list[TrainingRequest]:
        """Every request not in a final state: what the reconciler looks at."""
        return self.find([s for s in State if s not in FINAL], limit=None)

    def is_stale(self, row: TrainingRequest, now: dt.datetime | None = None) -> bool:
        beat = row.heartbeat_at
        if beat is None:
            return True
        if beat.tzinfo is None:  # SQLite hands back naive datetimes
            beat = beat.replace(tzinfo=dt.UTC)
        return beat < (now or self.clock()) - self.stale_after

    # --- creating and claiming ---------------------------------------------------------

    def create(
        self, request_id: str, model: str, spec: dict[str, Any], trigger: str, parent_version: str | None = None
    ) -> bool:
        """Record a request as queued (its message not yet sent); False when the id is known already."""
        try:
            with self._sessions.begin() as session:
                session.add(
                    TrainingRequest(
                        request_id=request_id,
                        model=model,
                        status=State.QUEUED,
                        trigger=trigger,
                        spec=spec,
                        parent_version=parent_version,
                        attempts=0,
                        export_attempts=0,
                        takeovers=0,
                        republishes=0,
                        lease=0,
                    )
                )
            return True
        except IntegrityError:
            return False

    def in_flight(self, model: str, ignore: str | None = None) -> str | None:
        """The oldest request of a model that is queued or running (not final), if any, but `ignore`."""
        query = (
            select(TrainingRequest.request_id)
            .where(TrainingRequest.model == model, TrainingRequest.status.not_in([str(s) for s in FINAL]))
            .where(TrainingRequest.request_id != (ignore or ""))
            .order_by(TrainingRequest.created_at)
            .limit(1)
        )
        with self._sessions() as session:
            return session.scalar(query)

    def claim_training(self, request_id: str, owner: str) -> Claim:
        """Take the training stage: a queued request, or one whose training worker stopped beating."""
        stale = TrainingRequest.status.in_((State.TRAINING, State.REGISTERING))
        return self._claim(request_id, owner, State.QUEUED, stale, State.TRAINING, TrainingRequest.attempts)

    def claim_export(self, request_id: str, owner: str) -> Claim:
        """Take the export stage: a trained request, or one whose export worker stopped beating."""
        stale = TrainingRequest.status == State.EXPORTING
        return self._claim(request_id, owner, State.TRAINED, stale, State.EXPORTING, TrainingRequest.export_attempts)

    def _claim(self, request_id: str, owner: str, waiting: State, stale: Any, target: State, counter: Any) -> Claim:
        """Claim a waiting request, else take over a stale one (counted: its worker died)."""
        now = self.clock()
        taken = {
            "status": target,
            "owner": owner,
            "lease": TrainingRequest.lease + 1,
            "heartbeat_at": now,
            "updated_at": now,
            counter.key: counter + 1,
        }
        token, took_over = None, False
        with self._sessions.begin() as session:
            token = session.execute(
                update(TrainingRequest)
                .where(TrainingRequest.request_id == request_id, TrainingRequest.status == waiting)
                .values(**taken)
                .returning(TrainingRequest.lease)
            ).scalar()
            if token is None:
                token = session.execute(
                    update(TrainingRequest)
                    .where(TrainingRequest.request_id == request_id, stale)
                    .where(TrainingRequest.heartbeat_at < now - self.stale_after)
                    .values(**taken, takeovers=TrainingRequest.takeovers + 1)
                    .returning(TrainingRequest.lease)
                ).scalar()
                took_over = token is not None
        row = self.get(request_id)
        if row is None:
            raise KeyError(f"request {request_id} was never recorded")
        if token is not None:
            return Claim("claimed", row, Lease(request_id, int(token), owner), took_over)
        if row.status == State.FAILED:
            return Claim("failed", row)
        if row.republished_lease == row.lease and State(row.status).owned:
            # This may be the reconciler's one message for this lease, answered by a live holder:
            # should the holder die later, the reconciler may send another (one outstanding at most).
            self._update_one((*_unchanged(row), TrainingRequest.republished_lease == row.lease), republished_lease=None)
        stage_done = row.status == State.SUCCEEDED or (
            target == State.TRAINING and row.status in (State.TRAINED, State.EXPORTING)
        )
        return Claim("done" if stage_done else "busy", row)

    # --- fenced transitions --------------------------------------------------------------

    def advance(self, lease: Lease, target: State, **values: Any) -> None:
        """Move a request this lease holds to `target` (a compare-and-set); ClaimLost when it is not held."""
        sources = [s for s in sources_of(target) if s in OWNED]
        if not sources:
            raise IllegalTransition(f"no owned state leads to {target}")
        if not target.owned:
            values.setdefault("owner", None)
        now = self.clock()
        where = (*_held(lease), TrainingRequest.status.in_(sources))
        if not self._update_one(where, status=target, updated_at=now, heartbeat_at=now, **values):
            row = self.get(lease.request_id)
            if row is not None and row.lease == lease.token and State(row.status).owned:
                check(State(row.status), target)  # held, but this transition does not exist: a bug
            raise ClaimLost(lease, row)

    def release(self, lease: Lease, error: str, retry_at: dt.datetime) -> None:
        """Give a stage back after a transient error: waiting again, with its retry due at `retry_at`."""
        row = self.get(lease.request_id)
        back = State.TRAINED if row is not None and row.status == State.EXPORTING else State.QUEUED
        self.advance(lease, back, error=error, published_at=retry_at)

    def fail(self, lease: Lease | None, request_id: str, reason: str) -> bool:
        """End a request as failed: one this lease holds, or (no lease) one waiting for a worker.

        False when a waiting request was claimed meanwhile (its new owner decides); ClaimLost
        when the lease was taken over.
        """
        if lease is not None:
            self.advance(lease, State.FAILED, error=reason)
            return True
        waiting = (TrainingRequest.request_id == request_id, TrainingRequest.status.in_(list(WAITING)))
        return self._update_one(waiting, status=State.FAILED, owner=None, error=reason, updated_at=self.clock())

    def note(self, lease: Lease, **values: Any) -> None:
        """Record something (run id, version) on a request this lease holds; ClaimLost otherwise."""
        if not self._update_one(_held(lease), updated_at=self.clock(), **values):
            raise ClaimLost(lease, self.get(lease.request_id))

    def ensure(self, lease: Lease) -> None:
        """Raise ClaimLost unless this lease still holds its request."""
        with self._sessions.begin() as session:
            hold_lease(session, lease, self.clock())

    def beat(self, lease: Lease) -> bool:
        """Say the holder is alive; False when the lease is no longer held."""
        return self._update_one(_held(lease), heartbeat_at=self.clock())

    def _update_one(self, where: tuple[Any, ...], short_wait: bool = False, **values: Any) -> bool:
        """One conditional UPDATE in its own transaction: whether it matched the row (a miss is no error)."""
        with self._sessions.begin() as session:
            if short_wait:
                _short_lock_wait(session)
            return rowcount(session.execute(update(TrainingRequest).where(*where).values(**values))) == 1

    @contextmanager
    def heartbeat(self, lease: Lease, every: float) -> Iterator[threading.Event]:
        """Beat every `every` seconds while the block runs; the event is set once the lease is lost."""
        stop, lost = threading.Event(), threading.Event()

        def run() -> None:
            while not stop.wait(every):
                try:
                    if not self.beat(lease):
                        lost.set()
                        return
                except Exception:  # the database is unreachable: a missed beat; the lease may go stale
                    continue

        thread = threading.Thread(target=run, name=f"heartbeat-{lease.request_id}", daemon=True)
        thread.start()
        try:
            yield lost
        finally:
            stop.set()
            thread.join(timeout=5)

    # --- the outbox ----------------------------------------------------------------------

    def mark_published(self, request_id: str, state: State, epoch: str, resent: bool = False) -> bool:
        """Record that the message waking `state`'s worker was sent under this broker epoch
        (`resent`: by the reconciler, which counts them to space them out)."""
        values: dict[str, Any] = {"published_at": self.clock(), "broker_epoch": epoch}
        if resent:
            values["republishes"] = TrainingRequest.republishes + 1
        where = (TrainingRequest.request_id == request_id, TrainingRequest.status == state)
        return self._update_one(where, **values)

    def abandon(self, row: TrainingRequest, reason: str) -> bool:
        """Fail a request whose worker stopped beating, if nobody took it over since `row` was read."""
        where = (*_unchanged(row), TrainingRequest.heartbeat_at < self.clock() - self.stale_after)
        return self._update_one(
            where, short_wait=True, status=State.FAILED, owner=None, error=reason, updated_at=self.clock()
        )

    def take_republish(self, row: TrainingRequest, epoch: str, again_after: dt.timedelta) -> bool:
        """Reserve a re-publication for a stale lease (compare-and-set): once per lease, again only
        if the broker lost it (a new epoch) or `again_after` passed without a takeover."""
        now = self.clock()
        due = or_(
            TrainingRequest.republished_lease.is_(None),
            TrainingRequest.republished_lease != row.lease,
            TrainingRequest.broker_epoch.is_(None),
            TrainingRequest.broker_epoch != epoch,
            TrainingRequest.published_at < now - again_after,
        )
        return self._update_one(
            (*_unchanged(row), due),
            short_wait=True,
            republished_lease=row.lease,
            published_at=now,
            broker_epoch=epoch,
            republishes=TrainingRequest.republishes + 1,
        )

    def undo_republish(self, row: TrainingRequest) -> None:
        """The message could not be sent after all: put back what `row` (read before the
        reservation) had, so the next pass tries again."""
        self._update_one(
            (TrainingRequest.request_id == row.request_id, TrainingRequest.lease == row.lease),
            republished_lease=row.republished_lease,
            published_at=row.published_at,
            broker_epoch=row.broker_epoch,
        )


def _held(lease: Lease) -> tuple[Any, ...]:
    """The row, while this lease holds it (in an owned state)."""
    return (
        TrainingRequest.request_id == lease.request_id,
        TrainingRequest.lease == lease.token,
        TrainingRequest.status.in_(list(OWNED)),
    )


def _unchanged(row: TrainingRequest) -> tuple[Any, ...]:
    """The row, while nobody has claimed or moved it since `row` was read."""
    return (
        TrainingRequest.request_id == row.request_id,
        TrainingRequest.lease == row.lease,
        TrainingRequest.status == row.status,
    )


def _short_lock_wait(session: Session) -> None:
    """The reconciler does not queue behind a worker holding the row (an alias move in flight):
    on PostgreSQL it gives up after 2 s and the next pass tries again."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL lock_timeout = '2s'"))
