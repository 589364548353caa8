"""The audit log: every alias change and lifecycle decision, in the platform database.

Recording an event also keeps its projections (`model_versions`, `aliases`) in the same
transaction, so the platform database answers "which versions, which aliases" on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from modelyard.platform.settings import Settings
from modelyard.platform.store.db import Alias, Event, ModelVersion, ensure_schema, session_factory, utcnow


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
            rows = session.execute(select(ModelVersion.model, ModelVersion.version)).all()
        latest: dict[str, str | None] = {}
        for model, version in rows:
            if latest.get(model) is None or int(version) > int(latest[model] or 0):
                latest[model] = version
        return dict(sorted(latest.items()))


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
