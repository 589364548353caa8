"""The audit log read straight from the embedded SQLite file: the read commands' fast path.

`modelyard models list`, `versions list` and `models history` are a person waiting at a prompt.
Through `Settings` and SQLAlchemy they paid about 0.6 s of imports (pydantic-settings and the
ORM) before reading a few rows; this module uses only the standard library, so those commands
answer in about a quarter of a second. It answers only what `AuditLog` answers (the same
method names and row attributes, kept equal by tests/platform/test_read_commands.py), and only
in embedded mode on a database whose schema it recognises; anything else (`MODELYARD_DATABASE_URL`
set, no database yet, an older schema) goes through `AuditLog`, which also migrates.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVENT_COLUMNS = "id, model, kind, alias, from_version, to_version, actor, reason, evidence, request_id, created_at"
VERSION_COLUMNS = "model, version, run_id, request_id, trigger, dataset_sha256, parent_version, created_at"


@dataclass(frozen=True)
class EventRow:
    id: int
    model: str
    kind: str
    alias: str | None
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str
    evidence: dict[str, Any]
    request_id: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class VersionRow:
    model: str
    version: str
    run_id: str | None
    request_id: str | None
    trigger: str | None
    dataset_sha256: str | None
    parent_version: str | None
    created_at: dt.datetime


def embedded_database(environ: Mapping[str, str] | None = None) -> Path | None:
    """The platform database file `Settings().platform_database_url` names, when it is embedded SQLite.

    Read as pydantic-settings reads MODELYARD_* (names in any case); None when a database URL is set.
    """
    env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    if env.get("MODELYARD_DATABASE_URL"):
        return None
    home = Path(env.get("MODELYARD_HOME") or "~/.modelyard")
    return home.expanduser().resolve() / "platform.db"


class AuditReader:
    """Read-only queries of the audit log and its projections over one SQLite connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def open(cls, path: Path) -> AuditReader | None:
        """A reader of this database file, or None when it is missing or its tables are not the ones read here."""
        if not path.is_file():
            return None
        try:
            db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
            for table, columns in (("events", EVENT_COLUMNS), ("model_versions", VERSION_COLUMNS)):
                db.execute(f"SELECT {columns} FROM {table} LIMIT 0")
            db.execute("SELECT model, alias, version FROM aliases LIMIT 0")
        except sqlite3.Error:
            return None
        return cls(db)

    def history(self, model: str | None = None, kinds: tuple[str, ...] = ()) -> list[EventRow]:
        where, args = [], []
        if model is not None:
            where.append("model = ?")
            args.append(model)
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args.extend(kinds)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(f"SELECT {EVENT_COLUMNS} FROM events{clause} ORDER BY id", args)
        found = []
        for row in rows.fetchall():
            fields = dict(zip(EVENT_COLUMNS.split(", "), row, strict=True))
            fields.update(evidence=json.loads(fields["evidence"] or "null") or {}, created_at=_time(row[-1]))
            found.append(EventRow(**fields))
        return found

    def knows(self, model: str) -> bool:
        return self._db.execute("SELECT 1 FROM events WHERE model = ? LIMIT 1", (model,)).fetchone() is not None

    def versions(self, model: str) -> list[VersionRow]:
        rows = self._db.execute(f"SELECT {VERSION_COLUMNS} FROM model_versions WHERE model = ?", (model,))
        found = [
            VersionRow(**{**dict(zip(VERSION_COLUMNS.split(", "), row, strict=True)), "created_at": _time(row[-1])})
            for row in rows.fetchall()
        ]
        return sorted(found, key=lambda v: int(v.version))

    def aliases(self, model: str | None = None) -> dict[str, dict[str, str]]:
        query, args = "SELECT model, alias, version FROM aliases", []
        if model is not None:
            query, args = query + " WHERE model = ?", [model]
        found: dict[str, dict[str, str]] = {}
        for name, alias, version in self._db.execute(query, args).fetchall():
            found.setdefault(name, {})[alias] = version
        return found

    def models(self) -> dict[str, str | None]:
        return latest_versions(self._db.execute("SELECT model, version FROM model_versions").fetchall())


def latest_versions(rows: Iterable[tuple[str, str]]) -> dict[str, str | None]:
    """(model, version) rows -> every model, by name, with its highest version number."""
    latest: dict[str, str | None] = {}
    for model, version in rows:
        if latest.get(model) is None or int(version) > int(latest[model] or 0):
            latest[model] = version
    return dict(sorted(latest.items()))


def _time(stored: str) -> dt.datetime:
    """SQLAlchemy's SQLite DateTime text (naive UTC) as an aware time."""
    when = dt.datetime.fromisoformat(stored)
    return when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)
