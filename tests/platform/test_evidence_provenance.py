"""Evidence with provenance, on a real platform database (SQLite under a temp home): every inference-log
row says who sent it and when the platform received it; the guard's counts read only what the platform
vouches for; the 0008 migration backfills older rows; a device credential reaches only what its group
runs; ingest and telemetry are held to a rate per source.

The same rules over HTTP, against a real API process: tests/integration/test_forged_evidence.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from modelyard.platform.store.db import Bundle, InferenceRecord, ensure_schema, session_factory, utcnow
from modelyard.platform.store.inference import InferenceLog, Prediction

FUTURE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def settings(settings):
    settings.ensure_folders()
    ensure_schema(settings.platform_database_url, settings.run_folder)
    return settings


def _rows(n: int, version: str = "2", prefix: str = "r", **provenance: Any) -> list[Prediction]:
    return [
        Prediction("m", version, f"{prefix}-{i}", {"x": [1.0, 2.0]}, {"y": [0.4, 0.6]}, **provenance) for i in range(n)
    ]


def test_rows_carry_the_servers_receive_time_and_a_senders_time_orders_nothing(settings) -> None:
    log = InferenceLog(settings)
    forged = _rows(5, prefix="early", sender_kind="token", sender="t-ingest", created_at=FUTURE)
    log.append(forged)
    promoted = utcnow()
    log.append(_rows(3, prefix="late", sender_kind="token", sender="t-ingest"))

    window = log.window("m", "2", 100, since=promoted)
    assert [r.request_id for r in window] == ["late-0", "late-1", "late-2"], "received before: not in the window"
    every = log.window("m", "2", 100)
    assert every[0].created_at.year == 2030, "the sender's time is kept, as data"
    assert all(r.received_at.year == promoted.year for r in every)


def test_the_guard_counts_only_rows_the_platform_vouches_for(settings) -> None:
    log = InferenceLog(settings)
    since = utcnow()
    failed: dict[str, Any] = {"meta": {"error": "x"}}
    log.append(_rows(40, prefix="upload", sender_kind="token", sender="t-ingest", attested=True, **failed))
    log.append(_rows(30, prefix="stray", sender_kind="device", sender="dev-9", attested=False, **failed))
    log.append(_rows(30, prefix="cli", sender_kind="local", sender="cli", **failed))  # not said: not vouched
    log.append(_rows(5, prefix="unnamed", **failed))  # a writer that names nobody is nobody the guard trusts
    assert log.counts("m", "2", since) == (0, 0, 0), "a token's rows are never evidence, whatever it claims"

    log.append(_rows(4, prefix="served", meta={"error": "inference_failed"}, sender_kind="server", sender="server"))
    log.append(_rows(6, prefix="assigned", sender_kind="device", sender="dev-1", attested=True))
    log.add_feedback("m", [("assigned-0", 1), ("upload-0", 0)], "labels", sender="t-ingest")
    assert log.counts("m", "2", since) == (10, 1, 4)
    with session_factory(settings.platform_database_url)() as session:
        kinds = {(r.sender_kind, r.sender, r.attested) for r in session.scalars(select(InferenceRecord))}
    assert kinds == {
        ("token", "t-ingest", False),
        ("token", "unknown", False),
        ("device", "dev-9", False),
        ("local", "cli", False),
        ("server", "server", True),
        ("device", "dev-1", True),
    }
    assert len(log.window("m", "2", 100, attested=True)) == 6, "failed rows only with errors=True"
    with pytest.raises(ValueError, match="sender kind"):
        log.append(_rows(1, prefix="odd", sender_kind="somebody"))


def test_migration_0008_backfills_who_sent_each_row_and_clamps_future_times(settings, tmp_path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from modelyard.platform.store.db import MIGRATIONS, SCHEMA_HEAD

    assert SCHEMA_HEAD == "0008"
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0007")
    rows = [  # request id, source, meta, created_at: as 0007's writers left them
        ("served", "server", "{}", "2024-05-01 10:00:00.000000"),
        ("served-failed", "server", '{"error": "inference_failed"}', "2024-05-01 10:00:01.000000"),
        ("forged-server", "server", '{"error": "x"}', "2024-05-01 10:00:02.000000"),
        ("uploaded", "upload", '{"error": "x"}', "2030-01-01 00:00:00.000000"),
        ("cli-computed", "upload", '{"file": "a.csv", "prediction": "computed by v2"}', "2024-05-01 10:00:03.000000"),
        ("cli-given", "demo", '{"file": "a.csv", "prediction": "given"}', "2024-05-01 10:00:04.000000"),
        ("device", "cam-7", '{"device": "cam-7", "error": "boom"}', "2024-05-01 10:00:05.000000"),
    ]
    with engine.begin() as conn:
        for rid, source, meta, created in rows:
            conn.execute(
                text(
                    "INSERT INTO inference_log (model, version, request_id, source, inputs, outputs, meta, created_at)"
                    " VALUES ('m', '2', :rid, :source, '{}', '{}', :meta, :created)"
                ),
                {"rid": rid, "source": source, "meta": meta, "created": created},
            )
        conn.execute(text("INSERT INTO feedback VALUES ('m', 'served', '1', 'api', '2024-05-01 10:01:00.000000')"))
    before = utcnow()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")

    with engine.connect() as conn:
        found = {
            r.request_id: r
            for r in conn.execute(
                text("SELECT request_id, sender_kind, sender, attested, received_at, created_at FROM inference_log")
            )
        }
        label_sender = conn.execute(text("SELECT sender FROM feedback")).scalar()
    assert {rid: (r.sender_kind, r.sender, bool(r.attested)) for rid, r in found.items()} == {
        "served": ("server", "server", True),
        "served-failed": ("server", "server", True),
        "forged-server": ("token", "unknown", False),  # the server logs no error but its own
        "uploaded": ("token", "unknown", False),
        "cli-computed": ("local", "cli", True),
        "cli-given": ("local", "cli", False),
        "device": ("device", "cam-7", False),  # which version it was assigned then is not known
    }
    assert found["served"].received_at == found["served"].created_at
    clamped = dt.datetime.fromisoformat(found["uploaded"].received_at).replace(tzinfo=dt.UTC)
    assert before - dt.timedelta(seconds=5) <= clamped <= utcnow(), "a future time is clamped to the upgrade"
    assert found["uploaded"].created_at.startswith("2030"), "the sender's time stays, as data"
    assert label_sender == "unknown"

    with engine.begin() as conn:  # and back
        config.attributes["connection"] = conn
        command.downgrade(config, "0007")
    with engine.connect() as conn:
        columns = {r[1] for r in conn.execute(text("PRAGMA table_info(inference_log)"))}
    assert "received_at" not in columns and "sender" not in columns


def _bundle(settings, model: str, version: str) -> None:
    with session_factory(settings.platform_database_url).begin() as session:
        session.merge(
            Bundle(
                model=model,
                version=version,
                target="edge-cpu",
                variant="fp32",
                sha256=f"{int(version):064x}",
                size=1000,
                artifact_uri="runs:/x/bundle/edge-cpu/bundle.tar",
                manifest={"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]},
                created_by="test",
            )
        )


def test_a_device_reaches_only_what_its_group_runs(settings) -> None:
    from modelyard.platform.fleet.devices import Devices
    from modelyard.platform.fleet.rollouts import Rollouts

    for version in ("1", "2", "3"):
        _bundle(settings, "m", version)
    devices = Devices(settings)
    rollouts = Rollouts(settings)
    for group, device_id in (("field", "cam-1"), ("empty", "lonely")):
        devices.enroll(devices.create_token(group, {}, 1, 1, "test"), device_id, {}, {}, "1.0.0")
    first = rollouts.start("m", "1", "field", "test", canary_percent=100, observe_seconds=0)
    devices.heartbeat("cam-1", {"installed": {"model": "m", "version": "1"}})
    rollouts.record_outcome("cam-1", {"rollout_id": first, "outcome": "installed"})
    rollouts.advance(), rollouts.advance()
    assert rollouts.status(first)["state"] == "completed"

    rollouts.start("m", "2", "field", "test", canary_percent=100, observe_seconds=3600)  # cam-1 installs v2
    cam = devices.reach("cam-1")
    assert cam.may_read("m", "2", "edge-cpu") and cam.may_read("m", "1", "edge-cpu"), "desired, current/rollback"
    assert not cam.may_read("m", "3", "edge-cpu") and not cam.may_read("m", "2", "server-cpu")
    assert cam.may_report("m", "1") and cam.may_report("m", "2") and not cam.may_report("m", "3")
    assert cam.vouched == {("m", "1"), ("m", "2")}

    # a device of an empty group reaches nothing, whatever it says it runs
    devices.heartbeat("lonely", {"installed": {"model": "m", "version": "2"}})
    lonely = devices.reach("lonely")
    assert not any(lonely.may_read("m", v, "edge-cpu") for v in ("1", "2", "3"))
    assert not lonely.may_report("m", "2") and lonely.vouched == frozenset()
    assert lonely.refusal("download only", "m", "2") == (
        "device 'lonely' may download only what its group 'empty' runs: m/2 is not assigned to it."
    )


def test_token_buckets_hold_each_source_to_its_rate() -> None:
    from modelyard.platform.api.auth import TokenBuckets

    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("a", now=10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", now=10.0) == pytest.approx(0.5), "past the burst: half a second until the next"
    assert buckets.take("b", now=10.0) == 0.0, "each source has its own bucket"
    assert buckets.take("a", now=10.5) == 0.0 and buckets.take("a", now=10.5) > 0
    assert buckets.take("a", now=100.0) == 0.0, "a quiet source is full again"
    assert all(TokenBuckets(rate=0, burst=1).take("a", now=1.0) == 0.0 for _ in range(10)), "0: no limit"
