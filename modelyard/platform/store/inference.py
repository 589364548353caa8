"""The inference log and its labels: production data in, read by the drift checks.

Each served or uploaded prediction is one row (one input row: a batched request is split);
labels arrive later as feedback and join by (model, request id). A batch is written in
one transaction: all of it or nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, select

from modelyard.errors import InputError
from modelyard.platform.settings import Settings
from modelyard.platform.store.db import Feedback, InferenceRecord, ensure_schema, session_factory, utcnow


@dataclass
class Prediction:
    model: str
    version: str
    request_id: str
    inputs: dict[str, Any]  # input name -> one row (nested lists)
    outputs: dict[str, Any]
    source: str = "server"
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: dt.datetime = field(default_factory=utcnow)


class InferenceLog:
    def __init__(self, settings: Settings) -> None:
        url = settings.platform_database_url
        ensure_schema(url, settings.run_folder)
        self._sessions = session_factory(url)

    def append(self, rows: Sequence[Prediction]) -> int:
        if not rows:
            return 0
        with self._sessions.begin() as session:
            table = InferenceRecord.__table__  # Core, not the ORM: no per-row bookkeeping
            session.execute(insert(table), [vars(r) for r in rows])  # type: ignore[arg-type]
        return len(rows)

    def add_feedback(self, model: str, labels: Sequence[tuple[str, Any]], source: str) -> int:
        """Labels by request id; every id must have been logged for this model, else nothing is stored."""
        ids = [rid for rid, _ in labels]
        seen: set[str] = set()
        for rid in ids:
            if rid in seen:
                raise InputError(f"request id '{rid}' appears twice in this feedback batch.", code="invalid_feedback")
            seen.add(rid)
        with self._sessions.begin() as session:
            logged: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                logged |= set(
                    session.scalars(
                        select(InferenceRecord.request_id).where(
                            InferenceRecord.model == model, InferenceRecord.request_id.in_(chunk)
                        )
                    )
                )
            missing = [rid for rid in ids if rid not in logged]
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise InputError(
                    f"feedback for request id '{missing[0]}'{more}: no prediction of model '{model}' was logged "
                    "under it; nothing was stored.",
                    code="unknown_request_id",
                )
            for rid, label in labels:  # a second label for the same request replaces the first
                session.merge(Feedback(model=model, request_id=rid, label=label, source=source, created_at=utcnow()))
        return len(labels)

    def recent(self, model: str, limit: int = 100) -> list[InferenceRecord]:
        query = select(InferenceRecord).where(InferenceRecord.model == model)
        with self._sessions() as session:
            return list(session.scalars(query.order_by(InferenceRecord.id.desc()).limit(limit)))

    def count(self, model: str) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).where(InferenceRecord.model == model)) or 0)

    def labels(self, model: str) -> dict[str, Any]:
        with self._sessions() as session:
            return {f.request_id: f.label for f in session.scalars(select(Feedback).where(Feedback.model == model))}
