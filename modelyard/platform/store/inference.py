"""The inference log and its labels: production data in, read by the drift checks.

Each served or uploaded prediction is one row (one input row: a batched request is split);
labels arrive later as feedback and join by (model, request id). A batch is written in
one transaction: all of it or nothing.

Every row carries its provenance: who sent it (`sender_kind`: the server's own serving path, a
device by id, an API token by name, or the CLI, `local`), when the platform received it
(`received_at`, set here from the server's clock: a sender's time is data in `created_at`), and
whether the platform vouches that the named version produced it (`attested`: the server's own
rows, a device's rows for the version it was assigned, predictions the platform computed itself).
Windows select by received time; the guard reads attested rows only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, delete, func, insert, select

from modelyard.errors import InputError
from modelyard.platform.settings import Settings
from modelyard.platform.store.db import Feedback, InferenceRecord, ensure_schema, session_factory, utcnow

SENDER_KINDS = ("server", "device", "token", "local")


@dataclass
class Prediction:
    model: str
    version: str
    request_id: str
    inputs: dict[str, Any]  # input name -> one row (nested lists)
    outputs: dict[str, Any]
    source: str = "server"  # a label (free text); who sent the row is `sender`
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: dt.datetime = field(default_factory=utcnow)  # as the sender says: data, never an order
    # Who sent it. The defaults are the untrusted ones: every writer names itself (the serving path as "server").
    sender_kind: str = "token"
    sender: str = "unknown"
    attested: bool | None = None  # None: what the kind implies (the server's rows are, no one else's)


@dataclass
class LoggedRow:
    id: int
    version: str
    request_id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    meta: dict[str, Any]
    created_at: dt.datetime  # as the sender said
    received_at: dt.datetime  # the server's clock
    label: Any  # None until feedback arrives


class InferenceLog:
    def __init__(self, settings: Settings) -> None:
        url = settings.platform_database_url
        ensure_schema(url, settings.run_folder)
        self._sessions = session_factory(url)

    def append(self, rows: Sequence[Prediction], unique: bool = False) -> int:
        """Write a batch in one transaction. `unique`: refuse it whole if any request id was logged before."""
        if not rows:
            return 0
        with self._sessions.begin() as session:
            if unique:
                for model in {r.model for r in rows}:
                    known = _logged_ids(session, model, [r.request_id for r in rows if r.model == model])
                    if known:
                        raise InputError(
                            f"request id '{sorted(known)[0]}'{_more(known)} was logged for model '{model}' before; "
                            "nothing was stored.",
                            code="duplicate_request_id",
                        )
            table = InferenceRecord.__table__  # Core, not the ORM: no per-row bookkeeping
            session.execute(insert(table), _values(rows))  # type: ignore[arg-type]
        return len(rows)

    def append_new(self, rows: Sequence[Prediction]) -> tuple[int, int]:
        """Write the rows whose request ids the log does not hold yet (a device resending a batch whose
        answer it never got); (stored, skipped as duplicates)."""
        if not rows:
            return 0, 0
        with self._sessions.begin() as session:
            known: set[tuple[str, str]] = set()
            for model in {r.model for r in rows}:
                ids = _logged_ids(session, model, [r.request_id for r in rows if r.model == model])
                known |= {(model, i) for i in ids}
            fresh, seen = [], set(known)
            for r in rows:
                if (r.model, r.request_id) not in seen:
                    seen.add((r.model, r.request_id))
                    fresh.append(r)
            if fresh:
                session.execute(insert(InferenceRecord.__table__), _values(fresh))  # type: ignore[arg-type]
        return len(fresh), len(rows) - len(fresh)

    def add_feedback(self, model: str, labels: Sequence[tuple[str, Any]], source: str, sender: str = "cli") -> int:
        """Labels by request id; every id must have been logged for this model, else nothing is stored.
        `sender`: who sent them (a token's name; `cli` from a shell with the settings)."""
        ids = [rid for rid, _ in labels]
        seen: set[str] = set()
        for rid in ids:
            if rid in seen:
                raise InputError(f"request id '{rid}' appears twice in this feedback batch.", code="invalid_feedback")
            seen.add(rid)
        with self._sessions.begin() as session:
            logged = _logged_ids(session, model, ids)
            missing = [rid for rid in ids if rid not in logged]
            if missing:
                raise InputError(
                    f"feedback for request id '{missing[0]}'{_more(missing)}: no prediction of model '{model}' "
                    "was logged under it; nothing was stored.",
                    code="unknown_request_id",
                )
            for rid, label in labels:  # a second label for the same request replaces the first
                session.merge(
                    Feedback(
                        model=model, request_id=rid, label=label, source=source, sender=sender, created_at=utcnow()
                    )
                )
        return len(labels)

    def recent(self, model: str, limit: int = 100) -> list[InferenceRecord]:
        query = select(InferenceRecord).where(InferenceRecord.model == model)
        with self._sessions() as session:
            return list(session.scalars(query.order_by(InferenceRecord.id.desc()).limit(limit)))

    def count(self, model: str) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).where(InferenceRecord.model == model)) or 0)

    def window(
        self,
        model: str,
        version: str | None,
        limit: int,
        since: dt.datetime | None = None,
        until_id: int | None = None,
        errors: bool = False,
        attested: bool = False,
    ) -> list[LoggedRow]:
        """The newest `limit` rows of a model (of one served version), with their labels where known, oldest first;
        failed predictions (meta.error: inputs, no outputs) only with `errors`; `since`: received since then (the
        server's clock); `attested`: only rows the platform vouches for.

        One range scan of the (model, version, id) index: well under a second at millions of rows.
        """
        query = _with_labels(outer=True).where(InferenceRecord.model == model)
        if not errors:
            query = query.where(InferenceRecord.meta["error"].as_string().is_(None))
        if attested:
            query = query.where(InferenceRecord.attested.is_(True))
        if version is not None:
            query = query.where(InferenceRecord.version == version)
        if since is not None:
            query = query.where(InferenceRecord.received_at >= since)
        if until_id is not None:
            query = query.where(InferenceRecord.id <= until_id)
        return self._newest(query, limit)

    def labeled(self, model: str, until_id: int, limit: int) -> list[LoggedRow]:
        """The newest `limit` labeled rows of a model up to a log id, oldest first (what a retraining learns)."""
        query = _with_labels(outer=False).where(InferenceRecord.model == model, InferenceRecord.id <= until_id)
        return self._newest(query, limit)

    def _newest(self, query: Select, limit: int) -> list[LoggedRow]:
        with self._sessions() as session:
            found = session.execute(query.order_by(InferenceRecord.id.desc()).limit(limit)).all()
        return [LoggedRow(*r) for r in reversed(found)]

    def last_id(self, model: str, version: str | None = None) -> int:
        query = select(func.max(InferenceRecord.id)).where(InferenceRecord.model == model)
        if version is not None:
            query = query.where(InferenceRecord.version == version)
        with self._sessions() as session:
            return int(session.scalar(query) or 0)

    def counts(self, model: str, version: str, since: dt.datetime) -> tuple[int, int, int]:
        """Attested rows of a version received since a time, how many have labels, how many failed (meta.error):
        counted, not read. What the guard judges a new champion by: the server's own rows and those of devices
        assigned the version, never an upload's claims."""
        on = (Feedback.model == InferenceRecord.model) & (Feedback.request_id == InferenceRecord.request_id)
        query = (
            select(
                func.count(InferenceRecord.id),
                func.count(Feedback.request_id),
                func.count(InferenceRecord.meta["error"].as_string()),
            )
            .select_from(InferenceRecord)
            .join(Feedback, on, isouter=True)
            .where(InferenceRecord.model == model, InferenceRecord.version == version)
            .where(InferenceRecord.attested.is_(True), InferenceRecord.received_at >= since)
        )
        with self._sessions() as session:
            rows, labeled, errors = session.execute(query).one()
        return int(rows), int(labeled), int(errors)

    def labeled_since(self, model: str, since: dt.datetime) -> bool:
        """Whether labels of the model arrived after a time."""
        query = select(Feedback.request_id).where(Feedback.model == model, Feedback.created_at > since).limit(1)
        with self._sessions() as session:
            return session.scalar(query) is not None

    def models(self) -> list[str]:
        with self._sessions() as session:
            return sorted(session.scalars(select(InferenceRecord.model).distinct()))

    def trim(self, model: str, keep: int) -> int:
        """Keep the newest `keep` rows of a model (and the labels of those); remove the rest. Returns rows removed."""
        with self._sessions.begin() as session:
            cutoff = session.scalar(
                select(InferenceRecord.id)
                .where(InferenceRecord.model == model)
                .order_by(InferenceRecord.id.desc())
                .offset(keep)
                .limit(1)
            )
            if cutoff is None:
                return 0
            gone = session.execute(
                delete(InferenceRecord).where(InferenceRecord.model == model, InferenceRecord.id <= cutoff)
            ).rowcount
            kept = select(InferenceRecord.request_id).where(InferenceRecord.model == model)
            session.execute(delete(Feedback).where(Feedback.model == model, Feedback.request_id.not_in(kept)))
        return int(gone or 0)

    def labels(self, model: str) -> dict[str, Any]:
        with self._sessions() as session:
            return {f.request_id: f.label for f in session.scalars(select(Feedback).where(Feedback.model == model))}


def _with_labels(outer: bool) -> Select:
    """Logged rows joined with their labels (outer: unlabeled rows too, with label None)."""
    columns = (
        InferenceRecord.id,
        InferenceRecord.version,
        InferenceRecord.request_id,
        InferenceRecord.inputs,
        InferenceRecord.outputs,
        InferenceRecord.meta,
        InferenceRecord.created_at,
        InferenceRecord.received_at,
        Feedback.label,
    )
    on = (Feedback.model == InferenceRecord.model) & (Feedback.request_id == InferenceRecord.request_id)
    return select(*columns).join(Feedback, on, isouter=outer)


def _values(rows: Sequence[Prediction]) -> list[dict[str, Any]]:
    """The rows as the table takes them, stamped with the server's clock. The rules of provenance hold here,
    whoever the caller: a token's upload is never attested, and a sender that does not say is not trusted."""
    received = utcnow()
    values = []
    for r in rows:
        if r.sender_kind not in SENDER_KINDS:
            raise ValueError(f"sender kind '{r.sender_kind}' is not one of {', '.join(SENDER_KINDS)}")
        attested = r.sender_kind == "server" if r.attested is None else r.attested
        values.append({**vars(r), "attested": attested and r.sender_kind != "token", "received_at": received})
    return values


def _logged_ids(session: Any, model: str, ids: Sequence[str]) -> set[str]:
    """Which of these request ids the model's log holds (asked in chunks: databases cap bound parameters)."""
    logged: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        query = select(InferenceRecord.request_id).where(
            InferenceRecord.model == model, InferenceRecord.request_id.in_(chunk)
        )
        logged |= set(session.scalars(query))
    return logged


def _more(items: Any) -> str:
    return f" (and {len(items) - 1} more)" if len(items) > 1 else ""
