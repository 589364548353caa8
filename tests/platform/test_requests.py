"""Idempotency of training requests on the real (SQLite) platform database."""

import time

from modelyard.platform.store.requests import RequestStore


def test_claims(settings) -> None:
    store = RequestStore(settings)
    assert store.create("r1", "m", {"name": "m"}, "manual")
    assert not store.create("r1", "m", {"name": "m"}, "manual")

    assert store.claim("r1", "w1").state == "claimed"
    assert store.claim("r1", "w2").state == "busy"  # w1 is alive
    store.update("r1", "w1", status="succeeded", version="4", result={"version": "4"})
    done = store.claim("r1", "w2")
    assert done.state == "done" and done.row.result == {"version": "4"}


def test_a_silent_worker_is_taken_over(settings, monkeypatch) -> None:
    monkeypatch.setenv("MODELYARD_STALE_AFTER_SECONDS", "0.3")
    from modelyard.platform.settings import Settings

    store = RequestStore(Settings())
    store.create("r2", "m", {}, "manual")
    assert store.claim("r2", "w1").state == "claimed"
    assert store.abandoned() == []
    time.sleep(0.5)
    assert [r.request_id for r in store.abandoned()] == ["r2"]
    taken = store.claim("r2", "w2")
    assert taken.state == "claimed" and taken.row.owner == "w2" and taken.row.attempts == 2
    store.update("r2", "w1", status="failed")  # the old owner can no longer write
    assert store.get("r2").status == "running"


def test_heartbeat_keeps_a_claim_alive(settings, monkeypatch) -> None:
    monkeypatch.setenv("MODELYARD_STALE_AFTER_SECONDS", "0.5")
    from modelyard.platform.settings import Settings

    store = RequestStore(Settings())
    store.create("r3", "m", {}, "manual")
    store.claim("r3", "w1")
    with store.heartbeat("r3", "w1", every=0.1):
        time.sleep(1.0)
        assert store.claim("r3", "w2").state == "busy"


def test_schema_head_constant_matches_the_migrations() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from modelyard.platform.store.db import MIGRATIONS, SCHEMA_HEAD

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD
