"""The audit log: every alias change and lifecycle decision, in the platform database.

Recording an event also keeps its projections (`model_versions`, `aliases`) in the same
transaction, so the platform database answers "which versions, which aliases" on its own.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from modelyard.platform.settings import Settings
from modelyard.platform.store.db import Alias, Event, ModelVersion, ensure_schema, session_factory, utcnow
from modelyard.platform.store.reads import latest_versions

if TYPE_CHECKING:
    from modelyard.platform.store.requests import Lease


@dataclass
class EventRecord:
    model: str
    kind: str  # alias_set, alias_removed, registered, gate_passed, gate_rejected, training_failed, ...
    reason: str
    actor: str
    alias: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None


class AuditLog:
    def __init__(self, settings: Settings) -> None:
        url = settings.platform_database_url
        ensure_schema(url, settings.run_folder)
        self._sessions = session_factory(url)
        self._locks = settings.run_folder / "locks"
        self._sqlite = url.startswith("sqlite")

    @contextmanager
    def moving(self, model: str, fence: Lease | None = None) -> Iterator[AliasMove]:
        """One alias move of one model at a time, its audit rows written in the same transaction.

        Movers of the same model wait for each other: a PostgreSQL advisory lock (many
        machines) or a file lock (embedded mode, one machine). With a fence, the lease is
        checked and held (its row locked) for the whole move: a worker that lost its claim
        moves nothing.
        """
        from modelyard.platform.store.requests import hold_lease

        with self._file_lock(model), self._sessions.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(model)})
            if fence is not None:
                hold_lease(session, fence)
            yield AliasMove(session, model)

    @contextmanager
    def _file_lock(self, model: str) -> Iterator[None]:
        if not self._sqlite:
            yield
            return
        self._locks.mkdir(parents=True, exist_ok=True)
        with open(self._locks / f"aliases-{_lock_key(model)}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def record(self, *events: EventRecord) -> None:
        """Write the events and their projections in one transaction: all of them or none."""
        with self._sessions.begin() as session:
            session.add_all(Event(**vars(e)) for e in events)
            for e in events:
                _project(session, e)

    def history(self, model: str | None = None, kinds: tuple[str, ...] = ()) -> list[Event]:
        query = select(Event).order_by(Event.id)
        if model is not None:
            query = query.where(Event.model == model)
        if kinds:
            query = query.where(Event.kind.in_(kinds))
        with self._sessions() as session:
            return list(session.scalars(query))

    def knows(self, model: str) -> bool:
        """Whether any event names this model."""
        with self._sessions() as session:
            return session.scalar(select(func.count()).select_from(Event).where(Event.model == model)) > 0

    def versions(self, model: str) -> list[ModelVersion]:
        with self._sessions() as session:
            rows = session.scalars(select(ModelVersion).where(ModelVersion.model == model))
            return sorted(rows, key=lambda v: int(v.version))

    def aliases(self, model: str | None = None) -> dict[str, dict[str, str]]:
        """model -> alias -> version, as the platform last moved them."""
        query = select(Alias) if model is None else select(Alias).where(Alias.model == model)
        found: dict[str, dict[str, str]] = {}
        with self._sessions() as session:
            for a in session.scalars(query):
                found.setdefault(a.model, {})[a.alias] = a.version
        return found

    def models(self) -> dict[str, str | None]:
        """Every model registered through the platform -> its latest version."""
        with self._sessions() as session:
            return latest_versions(session.execute(select(ModelVersion.model, ModelVersion.version)).tuples())


class AliasMove:
    """Inside `AuditLog.moving`: the model's aliases as the platform last moved them, and the recorder."""

    def __init__(self, session: Session, model: str) -> None:
        self._session, self.model = session, model

    @property
    def session(self) -> Session:
        """The move's transaction: other rows written with it commit (or not) with its events."""
        return self._session

    def aliases(self) -> dict[str, str]:
        rows = self._session.scalars(select(Alias).where(Alias.model == self.model))
        return {a.alias: a.version for a in rows}

    def history(self, kinds: tuple[str, ...]) -> list[Event]:
        query = select(Event).where(Event.model == self.model, Event.kind.in_(kinds)).order_by(Event.id)
        return list(self._session.scalars(query))

    def record(self, *events: EventRecord) -> None:
        self._session.add_all(Event(**vars(e)) for e in events)
        self._session.flush()
        for e in events:
            _project(self._session, e)


def _lock_key(model: str) -> int:
    """A stable 63-bit key per model name (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(model.encode()).digest()[:8], "big") >> 1


def _project(session: Session, e: EventRecord) -> None:
    if e.kind == "registered" and e.to_version and session.get(ModelVersion, (e.model, e.to_version)) is None:
        session.add(
            ModelVersion(
                model=e.model,
                version=e.to_version,
                run_id=e.evidence.get("run_id"),
                request_id=e.request_id,
                trigger=e.evidence.get("trigger"),
                dataset_sha256=e.evidence.get("dataset_sha256"),
                parent_version=e.evidence.get("parent_version") or None,
            )
        )
    elif e.kind == "alias_set" and e.alias and e.to_version:
        session.merge(Alias(model=e.model, alias=e.alias, version=e.to_version, updated_at=utcnow()))
    elif e.kind == "alias_removed" and e.alias:
        session.execute(delete(Alias).where(Alias.model == e.model, Alias.alias == e.alias))
