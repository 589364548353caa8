"""Read commands answer from the platform database (real SQLite), without importing MLflow, SQLAlchemy
or pydantic-settings (store/reads.py), and say the same as the AuditLog they stand in for."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from modelyard.platform.store.audit import AuditLog, EventRecord
from modelyard.platform.store.db import aware

HEAVY = ("mlflow", "tensorflow", "keras", "celery", "pandas", "sklearn", "sqlalchemy", "pydantic_settings")


def record_lifecycle(audit: AuditLog) -> None:
    """v1, then v2 promoted in turn (v1 previous), v3 waiting as challenger."""

    def registered(v: str) -> EventRecord:
        evidence = {"run_id": f"run{v}", "trigger": "manual", "dataset_sha256": "ab" * 32}
        return EventRecord("m", "registered", "trained", "w", None, None, v, evidence, f"req-{v}")

    def moved(alias: str, old: str | None, new: str | None) -> EventRecord:
        return EventRecord("m", "alias_set" if new else "alias_removed", "why", "w", alias, old, new)

    audit.record(registered("1"), moved("challenger", None, "1"))
    audit.record(moved("champion", None, "1"), moved("challenger", "1", None))
    audit.record(registered("2"), moved("challenger", None, "2"))
    audit.record(moved("previous", None, "1"), moved("champion", "1", "2"), moved("challenger", "2", None))
    audit.record(registered("3"), moved("challenger", None, "3"))


def run_cli(settings, *args: str) -> tuple[object, list[str]]:
    code = (
        "import json, sys\n"
        "from modelyard.platform.cli.main import cli\n"
        f"cli({[*args, '--json']!r}, standalone_mode=False)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    env = {**os.environ, "MODELYARD_HOME": str(settings.root)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    *data, imported = done.stdout.strip().splitlines()
    return json.loads("\n".join(data)), json.loads(imported)


def test_models_versions_and_history_need_no_mlflow(settings) -> None:
    record_lifecycle(AuditLog(settings))

    models, imported = run_cli(settings, "models", "list")
    assert models == [
        {
            "name": "m",
            "latest_version": "3",
            "aliases": {"champion": "2", "previous": "1", "challenger": "3"},
            "description": "",
        }
    ]
    assert imported == []
    versions, imported = run_cli(settings, "versions", "list", "m")
    assert [(v["version"], v["aliases"], v["request_id"]) for v in versions] == [
        ("1", ["previous"], "req-1"),
        ("2", ["champion"], "req-2"),
        ("3", ["challenger"], "req-3"),
    ]
    assert versions[0]["trigger"] == "manual" and versions[0]["dataset_sha256"] == "ab" * 32
    assert imported == []
    history, imported = run_cli(settings, "models", "history", "m")
    assert [e["kind"] for e in history][:2] == ["registered", "alias_set"]
    assert imported == []


def test_the_reader_answers_as_the_audit_log_does(settings) -> None:
    """store/reads.py repeats AuditLog's reads in plain SQL: every method, row for row, attribute for attribute."""
    from dataclasses import asdict

    from modelyard.platform.services.operations import event_rows, model_rows, version_rows
    from modelyard.platform.store.reads import AuditReader

    audit = AuditLog(settings)
    record_lifecycle(audit)
    audit.record(EventRecord("n", "registered", "r", "w", None, None, "10", {"run_id": "x"}, "q"))
    reader = AuditReader.open(settings.root / "platform.db")
    assert reader is not None

    assert reader.models() == audit.models() == {"m": "3", "n": "10"}
    for model in (None, "m", "n", "unknown"):
        assert reader.aliases(model) == audit.aliases(model)
        assert event_rows(reader.history(model)) == event_rows(audit.history(model))
    assert [e.id for e in reader.history("m", ("registered",))] == [e.id for e in audit.history("m", ("registered",))]
    for model in ("m", "n", "unknown"):
        assert reader.knows(model) is audit.knows(model)
        assert [asdict(v) for v in reader.versions(model)] == [
            {k: getattr(v, k) if k != "created_at" else aware(v.created_at) for k in asdict(r)}
            for v, r in zip(audit.versions(model), reader.versions(model), strict=True)
        ]
    assert model_rows(reader) == model_rows(audit)
    assert version_rows(reader, "m") == version_rows(audit, "m")
    assert all(e.created_at.tzinfo is not None for e in reader.history("m"))


def test_the_reader_finds_the_database_settings_name_and_steps_aside_otherwise(tmp_path, monkeypatch) -> None:
    from modelyard.platform.settings import Settings
    from modelyard.platform.store.reads import AuditReader, embedded_database

    for env in ({"MODELYARD_HOME": str(tmp_path / "h")}, {"modelyard_home": str(tmp_path / "x")}, {}):
        for key in ("MODELYARD_HOME", "modelyard_home", "MODELYARD_DATABASE_URL"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert f"sqlite:///{embedded_database()}" == Settings().platform_database_url
    monkeypatch.setenv("MODELYARD_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert embedded_database() is None  # server mode: the CLI goes through AuditLog

    assert AuditReader.open(tmp_path / "none.db") is None  # no database yet: AuditLog creates it
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE events (id INTEGER)").connection.commit()
    assert AuditReader.open(other) is None  # not the schema read here (an older one): AuditLog migrates it


@contextmanager
def database_at(settings, revision: str) -> Iterator[Any]:
    """The home's platform database migrated only up to `revision`, as an older modelyard left it."""
    from alembic import command
    from alembic.config import Config

    from modelyard.platform.store import db

    settings.run_folder.mkdir(parents=True)
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    with db.engine_for(settings.platform_database_url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        yield conn


def test_migration_fills_versions_and_aliases_from_existing_events(settings) -> None:
    """A home written before the projections existed: upgrading fills them from its events."""
    from sqlalchemy import text

    with database_at(settings, "0001") as conn:
        old_events = [
            ("registered", None, "1"),
            ("alias_set", "champion", "1"),
            ("registered", None, "2"),
            ("alias_set", "challenger", "2"),
            ("alias_removed", "challenger", None),
        ]
        for i, (kind, alias, to) in enumerate(old_events):
            conn.execute(
                text(
                    "INSERT INTO events (model, kind, alias, to_version, actor, reason, evidence, created_at) "
                    "VALUES ('old', :kind, :alias, :to, 'w', 'r', :ev, '2026-01-01 00:00:0' || :i)"
                ),
                {"kind": kind, "alias": alias, "to": to, "ev": json.dumps({"run_id": f"r{to}"}), "i": i},
            )

    audit = AuditLog(settings)  # upgrades to head

    assert [(v.version, v.run_id) for v in audit.versions("old")] == [("1", "r1"), ("2", "r2")]
    assert audit.aliases("old") == {"old": {"champion": "1"}}


def test_requests_lists_state_owner_attempts_and_error_without_mlflow(settings) -> None:
    from modelyard.platform.store.requests import RequestStore
    from modelyard.platform.store.states import State

    store = RequestStore(settings)
    for rid in ("done", "busy", "waiting", "bad"):
        store.create(rid, "m", {}, "manual")
    lease = store.claim_training("done", "w1").lease
    store.advance(lease, State.REGISTERING)
    store.advance(lease, State.TRAINED, version="1")
    store.claim_training("busy", "w2")
    store.fail(None, "bad", "dataset nan.csv has a missing value")

    rows, imported = run_cli(settings, "trainings", "list")
    assert set(imported) <= {"sqlalchemy", "pydantic_settings"}  # the request store is not on the fast path
    shown = {r["request_id"]: (r["state"], r["owner"], r["attempts"], r["version"], r["error"]) for r in rows}
    assert shown == {
        "done": ("trained", None, 1, "1", None),
        "busy": ("training", "w2", 1, None, None),
        "waiting": ("queued", None, 0, None, None),
        "bad": ("failed", None, 0, None, "dataset nan.csv has a missing value"),
    }
    unfinished, _ = run_cli(settings, "trainings", "list", "--state", "unfinished")
    assert sorted(r["request_id"] for r in unfinished) == ["busy", "done", "waiting"]
    failed, _ = run_cli(settings, "trainings", "list", "--state", "failed", "--model", "m")
    assert [r["request_id"] for r in failed] == ["bad"]

    env = {**os.environ, "MODELYARD_HOME": str(settings.root)}
    bogus = subprocess.run(
        [sys.executable, "-m", "modelyard.platform.cli.main", "trainings", "list", "--state", "bogus"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bogus.returncode == 1 and " ".join(bogus.stderr.split()) == (
        "error: unknown state 'bogus' (states: queued, training, registering, trained, exporting, "
        "succeeded, failed, unfinished)."
    )


def test_migration_renames_old_request_statuses(settings) -> None:
    """A home written before the state machine: `running` is `training`, an unowned `exporting` is `trained`."""
    from sqlalchemy import text

    from modelyard.platform.store.requests import RequestStore

    with database_at(settings, "0002") as conn:
        for rid, status, owner in (("a", "running", "w1"), ("b", "exporting", None), ("c", "exporting", "w2")):
            conn.execute(
                text(
                    'INSERT INTO training_requests (request_id, model, status, "trigger", spec, owner, attempts, '
                    "created_at, updated_at) VALUES (:r, 'm', :s, 'manual', '{}', :o, 1, :t, :t)"
                ),
                {"r": rid, "s": status, "o": owner, "t": "2026-01-01 00:00:00"},
            )

    store = RequestStore(settings)  # upgrades to head
    assert [(r.request_id, r.status, r.lease) for r in sorted(store.find(), key=lambda r: r.request_id)] == [
        ("a", "training", 1),
        ("b", "trained", 0),
        ("c", "exporting", 1),
    ]
