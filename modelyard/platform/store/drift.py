"""Drift checks: one row per judged window, written once even when a check is delivered twice."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelyard.platform.settings import Settings
from modelyard.platform.store.db import DriftCheck, ensure_schema, session_factory


class DriftChecks:
    def __init__(self, settings: Settings) -> None:
        url = settings.platform_database_url
        ensure_schema(url, settings.run_folder)
        self._sessions = session_factory(url)

    def find(self, window_key: str) -> DriftCheck | None:
        with self._sessions() as session:
            return session.scalar(select(DriftCheck).where(DriftCheck.window_key == window_key))

    def record(self, values: dict[str, Any]) -> tuple[DriftCheck, bool]:
        """Insert the check; if its window was judged already (a redelivery, a race), the first row and False."""
        try:
            with self._sessions.begin() as session:
                row = DriftCheck(**values)
                session.add(row)
            return row, True
        except IntegrityError:
            found = self.find(values["window_key"])
            if found is None:
                raise
            return found, False

    @staticmethod
    def decision(session: Session, check_id: int) -> str | None:
        """What the policy did with a check, read in the caller's transaction (None: not decided yet)."""
        return session.scalar(select(DriftCheck.decision).where(DriftCheck.id == check_id))

    @staticmethod
    def decide(session: Session, check_id: int, decision: str) -> None:
        """Record the policy's decision in the caller's transaction (the one that records its events)."""
        session.execute(update(DriftCheck).where(DriftCheck.id == check_id).values(decision=decision))

    def get(self, check_id: int) -> DriftCheck | None:
        with self._sessions() as session:
            return session.get(DriftCheck, check_id)

    def report(self, check_id: int, uri: str) -> None:
        with self._sessions.begin() as session:
            session.execute(update(DriftCheck).where(DriftCheck.id == check_id).values(report_uri=uri))

    def recent(self, model: str, limit: int = 20, version: str | None = None) -> list[DriftCheck]:
        """The newest checks of a model, oldest first."""
        query = select(DriftCheck).where(DriftCheck.model == model)
        if version is not None:
            query = query.where(DriftCheck.version == version)
        with self._sessions() as session:
            return list(reversed(session.scalars(query.order_by(DriftCheck.id.desc()).limit(limit)).all()))
