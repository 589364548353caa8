"""Training requests: one row per request id, so a redelivered task never trains twice.

A worker claims a request before training and keeps a heartbeat while it runs. A
second delivery of the same request finds it done (and returns the result), busy
(and retries later), or abandoned (heartbeat stale: the worker died) and takes over.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from modelyard.platform.settings import Settings
from modelyard.platform.store.db import TrainingRequest, ensure_schema, session_factory, utcnow


def worker_name() -> str:
    """Who holds a claim: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


ClaimState = Literal["claimed", "busy", "done", "failed"]


@dataclass
class Claim:
    state: ClaimState
    row: TrainingRequest


class RequestStore:
    def __init__(self, settings: Settings) -> None:
        url = settings.platform_database_url
        ensure_schema(url, settings.run_folder)
        self._sessions = session_factory(url)
        self.stale_after = dt.timedelta(seconds=settings.stale_after_seconds)

    def create(self, request_id: str, model: str, spec: dict[str, Any], trigger: str) -> bool:
        """Record a request as queued; False when the id is known already."""
        try:
            with self._sessions.begin() as session:
                session.add(
                    TrainingRequest(
                        request_id=request_id, model=model, status="queued", trigger=trigger, spec=spec, attempts=0
                    )
                )
            return True
        except IntegrityError:
            return False

    def get(self, request_id: str) -> TrainingRequest | None:
        with self._sessions() as session:
            return session.get(TrainingRequest, request_id)

    def claim(self, request_id: str, owner: str) -> Claim:
        now = utcnow()
        cutoff = now - self.stale_after
        with self._sessions.begin() as session:
            taken = session.execute(
                update(TrainingRequest)
                .where(TrainingRequest.request_id == request_id)
                .where(
                    or_(
                        TrainingRequest.status == "queued",
                        TrainingRequest.status.in_(("running", "registering"))
                        & (TrainingRequest.heartbeat_at < cutoff),
                    )
                )
                .values(
                    status="running",
                    owner=owner,
                    heartbeat_at=now,
                    attempts=TrainingRequest.attempts + 1,
                    updated_at=now,
                )
            ).rowcount
        row = self.get(request_id)
        assert row is not None, f"request {request_id} was never created"
        if taken:
            return Claim("claimed", row)
        if row.status in ("exporting", "succeeded"):  # trained and registered: nothing to train again
            return Claim("done", row)
        if row.status == "failed":
            return Claim("failed", row)
        return Claim("busy", row)

    def update(self, request_id: str, holder: str | None, **values: Any) -> None:
        """Change a request this holder owns (None: a request nobody has claimed)."""
        owned = TrainingRequest.owner.is_(None) if holder is None else TrainingRequest.owner == holder
        with self._sessions.begin() as session:
            session.execute(
                update(TrainingRequest)
                .where(TrainingRequest.request_id == request_id, owned)
                .values(updated_at=utcnow(), **values)
            )

    def hand_over(self, request_id: str, owner: str, **values: Any) -> None:
        """Finish this owner's stage: the row is free for the next stage's worker to take."""
        self.update(request_id, owner, owner=None, heartbeat_at=utcnow(), **values)

    def take_export(self, request_id: str, owner: str) -> Claim:
        """The export stage of a trained request: free, or held by a worker that stopped beating."""
        now = utcnow()
        with self._sessions.begin() as session:
            taken = session.execute(
                update(TrainingRequest)
                .where(TrainingRequest.request_id == request_id, TrainingRequest.status == "exporting")
                .where(or_(TrainingRequest.owner.is_(None), TrainingRequest.heartbeat_at < now - self.stale_after))
                .values(owner=owner, heartbeat_at=now, updated_at=now)
            ).rowcount
        row = self.get(request_id)
        if row is None:
            raise KeyError(request_id)
        if taken:
            return Claim("claimed", row)
        return Claim("done" if row.status == "succeeded" else "failed" if row.status == "failed" else "busy", row)

    def release(self, request_id: str, owner: str) -> None:
        """Give a claim back (a transient error): the retry claims it again."""
        self.update(request_id, owner, status="queued")

    @contextmanager
    def heartbeat(self, request_id: str, owner: str, every: float) -> Iterator[None]:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                with suppress(Exception):  # a missed beat is harmless; the next one may succeed
                    self.update(request_id, owner, heartbeat_at=utcnow())

        thread = threading.Thread(target=beat, name=f"heartbeat-{request_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def abandoned(self) -> list[TrainingRequest]:
        """Requests whose worker stopped beating: on a filesystem queue their message died with it."""
        cutoff = utcnow() - self.stale_after
        with self._sessions() as session:
            query = select(TrainingRequest).where(
                TrainingRequest.status.in_(("running", "registering")), TrainingRequest.heartbeat_at < cutoff
            )
            return list(session.scalars(query))
