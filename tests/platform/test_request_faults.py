"""Faults in the request lifecycle without a worker process: error classification on real
exceptions from the real libraries, an unexpected export error, and the reconciler's
decisions against the real filesystem queue and the real (SQLite) platform database."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_spec


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def test_transient_errors_are_told_apart_by_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from modelyard.errors import NotFoundError, TransientError
    from modelyard.platform.faults import is_transient
    from modelyard.platform.registry.mlflow_store import mlflow_errors

    def raised(fn) -> BaseException:
        try:
            fn()
        except BaseException as err:
            return err
        raise AssertionError("it did not raise")

    port = closed_port()
    pg_down = raised(lambda: sqlalchemy.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x").connect())
    assert isinstance(pg_down, sqlalchemy.exc.OperationalError) and is_transient(pg_down)

    db = tmp_path / "x.db"
    missing_table = raised(
        lambda: sqlalchemy.create_engine(f"sqlite:///{db}").connect().execute(sqlalchemy.text("SELECT * FROM nope"))
    )
    assert isinstance(missing_table, sqlalchemy.exc.OperationalError) and not is_transient(missing_table)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    locked = raised(lambda: sqlite3.connect(db, timeout=0).execute("INSERT INTO t VALUES (1)"))
    holder.execute("ROLLBACK")
    assert "locked" in str(locked) and is_transient(locked)

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow_down = raised(lambda: MlflowClient(f"http://127.0.0.1:{port}").get_experiment("1"))
    assert isinstance(mlflow_down, MlflowException) and is_transient(mlflow_down)  # through __context__
    with pytest.raises(TransientError, match="MLflow is unreachable or busy"), mlflow_errors("read experiment 1"):
        raise mlflow_down

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    not_found = raised(lambda: client.get_registered_model("ghost"))
    assert not is_transient(not_found)
    with pytest.raises(NotFoundError), mlflow_errors("model 'ghost'"):
        raise not_found
    assert not is_transient(KeyError("accuracy")) and not is_transient(ValueError("connection"))


def test_an_unexpected_export_error_fails_the_request_with_its_reason(settings, monkeypatch) -> None:
    """A bug in the export (here a KeyError, as select.py raised for a missing metric) used to
    keep its owner forever; now the request fails with the error, and nothing holds it."""
    from modelyard.platform.context import Platform
    from modelyard.platform.services import exporting
    from modelyard.platform.services.training import TrainRequest, run_training

    def broken(*_args, **_kwargs):
        raise KeyError("accuracy")

    monkeypatch.setattr(exporting, "export_version", broken)
    platform = Platform(settings)
    with pytest.raises(KeyError):
        run_training(platform, TrainRequest(request_id="bug-1", spec=tiny_spec("bug")))

    row = platform.requests.get("bug-1")
    assert (row.status, row.owner, row.export_attempts) == ("failed", None, 1)
    assert row.error == "export failed unexpectedly: KeyError: 'accuracy'."
    events = [(e.kind, e.reason) for e in platform.audit.history("bug")]
    assert ("request_failed", row.error) in events
    assert platform.lifecycle.aliases("bug") == {"challenger": "1"}  # registered, never promoted


def test_the_reconciler_sends_what_was_lost_once(settings, monkeypatch) -> None:
    from modelyard.platform.context import Platform
    from modelyard.platform.queue.app import create_app
    from modelyard.platform.queue.outbox import broker_epoch, wake
    from modelyard.platform.services.reconcile import reconcile
    from modelyard.platform.settings import Settings

    monkeypatch.setenv("MODELYARD_STALE_AFTER_SECONDS", "0.5")
    monkeypatch.setenv("MODELYARD_MAX_ATTEMPTS", "2")
    settings = Settings()
    platform, app = Platform(settings), create_app(settings)
    store = platform.requests

    def queued_messages() -> int:
        return sum(1 for _ in settings.queue_folder.glob("*.msg"))

    # never sent: the sender died between the database and the broker
    store.create("never", "m", tiny_spec("m"), "manual")
    assert reconcile(platform, app) == []  # within the grace period: its sender may be sending now
    time.sleep(0.6)
    [action] = reconcile(platform, app)
    assert (action.request_id, action.action, action.reason) == ("never", "republished", "its message was never sent")
    assert queued_messages() == 1 and reconcile(platform, app) == []

    # sent, then the broker lost it: a new epoch
    store.create("lost", "m", tiny_spec("m"), "manual")
    wake(app, settings, store, store.get("lost"))
    for message in settings.queue_folder.iterdir():  # the queue folder wiped, as Redis restarted empty
        message.unlink()
    assert broker_epoch(app, settings) != store.get("lost").broker_epoch
    actions = {a.request_id: a.reason for a in reconcile(platform, app)}
    assert actions == {
        "never": "the broker restarted and lost its message",
        "lost": "the broker restarted and lost its message",
    }
    assert queued_messages() == 2 and reconcile(platform, app) == []

    # a stale lease: re-published once per lease, then given up after MAX_ATTEMPTS dead workers
    store.fail(None, "never", "out of the way")
    lease = store.claim_training("lost", "w1").lease
    time.sleep(0.6)
    assert [(a.action, a.state) for a in reconcile(platform, app)] == [("republished", "training")]
    assert reconcile(platform, app) == []  # once per lease
    assert store.claim_training("lost", "w2").lease.token == lease.token + 1
    time.sleep(0.6)
    [gave_up] = reconcile(platform, app)
    assert gave_up.action == "failed" and "stopped 2 times without finishing (last: w2, in training)" in gave_up.reason
    assert store.get("lost").status == "failed"
    assert [e.kind for e in platform.audit.history("m")] == ["training_failed"]


def test_a_version_registered_by_a_racing_attempt_wins_and_ours_is_archived(settings) -> None:
    """A stale worker frozen inside the registry call registers after the request's new owner
    started: the first version registered for the request wins, a later one is archived."""
    from modelyard.platform.context import Platform
    from modelyard.platform.registry.base import TAG_PREFIX
    from modelyard.platform.services.training import TrainRequest, run_training

    platform = Platform(settings)
    run_training(platform, TrainRequest(request_id="first", spec=tiny_spec("race")))  # v1: a real model to copy
    first = platform.registry.get_version("race", "1")
    raced: list[str] = []

    def stale_worker_registers(info: dict) -> None:  # mid-training, the stale attempt's registration lands
        if info.get("epoch") == 1 and not raced:
            tags = {f"{TAG_PREFIX}request_id": "second"}
            mv = platform.registry.client.create_model_version("race", first.source, first.run_id, tags=tags)
            raced.append(str(mv.version))

    result = run_training(
        platform, TrainRequest(request_id="second", spec=tiny_spec("race")), progress=stale_worker_registers
    )

    assert raced == ["2"] and result["version"] == "2"
    ours = platform.registry.get_version("race", "3")
    assert ours.tags[f"{TAG_PREFIX}duplicate_of"] == "2" and ours.tags[f"{TAG_PREFIX}deployable"] == "false"
    archived = [e for e in platform.audit.history("race") if e.kind == "duplicate_archived"]
    assert [(e.from_version, e.to_version, e.request_id) for e in archived] == [("2", "3", "second")]
    assert [v.version for v in platform.audit.versions("race")] == ["1", "2"]  # v3 never entered the platform
    assert platform.requests.get("second").version == "2"
