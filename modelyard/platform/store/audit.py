"""The audit log: every alias change and lifecycle decision, in the platform database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from modelyard.platform.settings import Settings
from modelyard.platform.store.db import Event, ensure_schema, session_factory


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
        """Write the events in one transaction: all of them or none."""
        with self._sessions.begin() as session:
            session.add_all(Event(**vars(e)) for e in events)

    def history(self, model: str | None = None, kinds: tuple[str, ...] = ()) -> list[Event]:
        query = select(Event).order_by(Event.id)
        if model is not None:
            query = query.where(Event.model == model)
        if kinds:
            query = query.where(Event.kind.in_(kinds))
        with self._sessions() as session:
            return list(session.scalars(query))
