"""Chaos: each defect of the request lifecycle, reproduced with real processes and real sockets.

Server mode throughout (Redis, an `mlflow server` on PostgreSQL, the platform database on
PostgreSQL, `modelyard run` and `modelyard up` processes). Each test has its own
platform database and its own Redis, so the reconciler sees only its own requests.
Faults are real: SIGSTOP/SIGCONT and SIGKILL of workers, a Redis killed and restarted
empty, TCP proxies cut in front of PostgreSQL and MLflow, and failpoints that SIGKILL a
worker at an exact step (`MODELYARD_FAILPOINTS`, modelyard/platform/faults.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import tiny_spec
from tests.integration.conftest import PROJECT
from tests.integration.faults import RedisServer, TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def chaos(tmp_path: Path, redis_server: RedisServer, fresh_pg: str, mlflow_server: str, monkeypatch):
    """Environment for workers and this process: short heartbeats, a fast reconciler."""

    def make(**overrides: str) -> tuple[dict[str, str], Any]:
        from modelyard.platform.settings import Settings

        env = {
            "MODELYARD_HOME": str(tmp_path / "home"),
            "MODELYARD_BROKER_URL": redis_server.url(0),
            "MODELYARD_RESULT_BACKEND": redis_server.url(1),
            "MODELYARD_MLFLOW_TRACKING_URI": mlflow_server,
            "MODELYARD_DATABASE_URL": fresh_pg,
            # Redelivery comes from the reconciler here, not from Redis's visibility timeout.
            "MODELYARD_VISIBILITY_TIMEOUT": "3600",
            "MODELYARD_HEARTBEAT_SECONDS": "1",
            "MODELYARD_STALE_AFTER_SECONDS": "4",
            "MODELYARD_RECONCILE_SECONDS": "2",
            **overrides,
        }
        for key in list(os.environ):
            if key.startswith("MODELYARD_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return env, Settings()

    return make


def spec_file(folder: Path, name: str, **overrides: Any) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(name, **overrides)))
    return path


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)


def wait_for_epoch(settings, request_id: str, epoch: int, timeout: float = 180) -> None:

    from modelyard.platform.queue.app import create_app
    from modelyard.platform.queue.outbox import read_task

    app = create_app(settings)

    def reached() -> bool:
        state, info = read_task(app, request_id)
        return state == "PROGRESS" and isinstance(info, dict) and info.get("epoch", 0) >= epoch

    wait_until(reached, timeout, f"epoch {epoch} of {request_id}", every=0.05)


def registry_state(settings, name: str) -> tuple[list[str], dict[str, str]]:
    from modelyard.platform.registry.mlflow_store import MlflowRegistry

    registry = MlflowRegistry(settings.tracking_uri)
    model = registry.client.get_registered_model(name)
    versions = [v.version for v in registry.list_versions(name)]
    return versions, {a: str(v) for a, v in (model.aliases or {}).items()}


def history(settings, name: str) -> list[Any]:
    from modelyard.platform.store.audit import AuditLog

    return AuditLog(settings).history(name)


def test_a_frozen_worker_taken_over_registers_nothing(chaos, start_worker, tmp_path: Path) -> None:
    """Defect 1: SIGSTOP the train worker mid-epoch, let another take over and finish, SIGCONT the first."""
    from modelyard.platform.context import Platform
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.reconcile import reconcile
    from modelyard.platform.services.submit import submit_training

    env, settings = chaos()
    name = unique("frozen")
    frozen = start_worker(env)
    request = submit_training(settings, spec_file(tmp_path, name, epochs=40, early_stopping_patience=0), f"r-{name}")
    wait_for_epoch(settings, request.request_id, 2)
    os.killpg(frozen.proc.pid, signal.SIGSTOP)  # the worker and its training child freeze mid-epoch
    try:
        start_worker(env)
        start_worker(env, "export")

        def republished() -> list[Any]:  # what beat does every RECONCILE_SECONDS
            return [a for a in reconcile(Platform(settings)) if a.action == "republished"]

        actions = wait_until(republished, 60, "the reconciler to re-publish the frozen training", every=0.5)
        assert [(a.request_id, a.state) for a in actions] == [(request.request_id, "training")]
        result = follow(settings, request.request_id, quiet=True, timeout=300)
    finally:
        os.killpg(frozen.proc.pid, signal.SIGCONT)
    assert (result["version"], result["status"]) == ("1", "promoted")

    stopped = wait_until(
        lambda: [e for e in history(settings, name) if e.kind == "stale_worker_stopped"], 120, "the stale worker's end"
    )
    assert "was taken over" in stopped[0].reason and stopped[0].request_id == request.request_id
    time.sleep(3)  # the stale worker has ended; give it the chance to do harm, if it would
    versions, aliases = registry_state(settings, name)
    assert versions == ["1"] and aliases == {"champion": "1"}
    kinds = [e.kind for e in history(settings, name)]
    assert kinds.count("registered") == 1 and kinds.count("gate_passed") == 1
    assert kinds.count("training_resumed") == 1
    row = Platform(settings).requests.get(request.request_id)
    assert (row.status, row.version, row.attempts) == ("succeeded", "1", 2)


def test_queued_requests_survive_a_broker_restarted_empty(chaos, start_up, redis_server, tmp_path: Path) -> None:
    """Defect 2: three trainings queued with no worker, Redis restarted empty, then `modelyard up`."""
    from modelyard.platform.context import Platform
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.submit import submit_training

    env, settings = chaos()
    name = unique("broker")
    spec = spec_file(tmp_path, name)
    ids = [submit_training(settings, spec, f"r{i}-{name}").request_id for i in range(3)]
    redis_server.restart_empty()

    up = start_up(env)
    results = [follow(settings, rid, quiet=True, timeout=300) for rid in ids]

    assert sorted(r["version"] for r in results) == ["1", "2", "3"]
    versions, _ = registry_state(settings, name)
    assert versions == ["1", "2", "3"]  # none twice
    rows = [Platform(settings).requests.get(rid) for rid in ids]
    assert {(r.status, r.attempts) for r in rows} == {("succeeded", 1)}
    assert up.text().count("the broker restarted and lost its message") == 3, up.text()[-3000:]


def test_crashes_at_hand_over_and_inside_promotion_are_finished(chaos, start_up, tmp_path: Path) -> None:
    """Defects 3 and 4: SIGKILL right after registering, between the hand-over and the export's
    message, and between the gate's registry write and its commit. The registered version is
    taken over (never a second one), the export still happens, the promotion completes."""
    from modelyard.platform.context import Platform
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.submit import submit_training

    env, settings = chaos(MODELYARD_FAILPOINTS="after-register,after-handover,before-alias-commit")
    name = unique("crash")
    request = submit_training(settings, spec_file(tmp_path, name), f"r-{name}")
    up = start_up(env)
    result = follow(settings, request.request_id, quiet=True, timeout=300)

    fired = sorted(p.name for p in (settings.run_folder / "failpoints").iterdir())
    assert fired == ["after-handover", "after-register", "before-alias-commit"]  # every crash happened
    assert (result["version"], result["status"]) == ("1", "promoted")
    versions, aliases = registry_state(settings, name)
    assert versions == ["1"] and aliases == {"champion": "1"}
    events = history(settings, name)
    assert [e.kind for e in events].count("gate_passed") == 1 and [e.kind for e in events].count("registered") == 1
    assert [(e.alias, e.to_version) for e in events if e.kind == "alias_set" and e.alias == "champion"] == [
        ("champion", "1")
    ]
    row = Platform(settings).requests.get(request.request_id)
    # two training claims (a takeover after the crash after registering; the redelivery after the
    # hand-over crash found it trained), two export claims (a takeover after the promotion crash)
    assert (row.status, row.attempts, row.export_attempts, row.takeovers) == ("succeeded", 2, 2, 2), up.text()[-2000:]


def test_training_starts_while_the_platform_database_is_down(chaos, start_worker, fresh_pg, tmp_path: Path) -> None:
    """Defect 5: the platform database unreachable for 30 s when the task starts."""
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.submit import submit_training

    host_port = fresh_pg.rsplit("@", 1)[1].split("/", 1)[0]
    with TcpProxy("127.0.0.1", int(host_port.split(":")[1])) as proxy:
        env, settings = chaos(MODELYARD_DATABASE_URL=fresh_pg.replace(host_port, f"127.0.0.1:{proxy.port}"))
        name = unique("dbdown")
        request = submit_training(settings, spec_file(tmp_path, name), f"r-{name}")
        proxy.down()
        down_at = time.monotonic()
        worker = start_worker(env)
        start_worker(env, "export")
        wait_until(lambda: "Retry in" in worker.text(), 60, "the task to meet the database outage")
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
        proxy.up()
        result = follow(settings, request.request_id, quiet=True, timeout=300)

    assert (result["version"], result["status"]) == ("1", "promoted")
    assert "a service is unreachable or busy" in worker.text()
    versions, _ = registry_state(settings, name)
    assert versions == ["1"]


def test_an_mlflow_outage_mid_training_waits_and_never_half_registers(
    chaos, start_worker, mlflow_server: str, tmp_path: Path
) -> None:
    """Defect 5: MLflow unreachable mid-training. The request waits (retries with backoff) and
    registers one whole version when MLflow is back; MLflow's own client retries are turned
    down so the outage reaches our handling within the test's time."""
    from modelyard.platform.context import Platform
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.submit import submit_training

    port = int(mlflow_server.rsplit(":", 1)[1])
    with TcpProxy("127.0.0.1", port) as proxy:
        env, settings = chaos(MODELYARD_MLFLOW_TRACKING_URI=f"http://127.0.0.1:{proxy.port}")
        env = {**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
        name = unique("mlflowdown")
        worker = start_worker(env)
        start_worker(env, "export")
        spec = spec_file(tmp_path, name, epochs=40, early_stopping_patience=0)
        request = submit_training(settings, spec, f"r-{name}")
        wait_for_epoch(settings, request.request_id, 2)
        proxy.down()
        wait_until(lambda: "Retry in" in worker.text(), 60, "the training to meet the outage")
        error = Platform(settings).requests.get(request.request_id).error or ""
        assert "mlflow" in error.lower() and "Retrying in" in error, error
        time.sleep(12)  # past the first two retries (5 s, then 10 s later): the request waits it out
        proxy.up()
        result = follow(settings, request.request_id, quiet=True, timeout=300)
        versions, aliases = registry_state(settings, name)  # through the proxy: the only way to this MLflow

    assert (result["version"], result["status"]) == ("1", "promoted")
    assert versions == ["1"] and aliases == {"champion": "1"}
    row = Platform(settings).requests.get(request.request_id)
    assert row.status == "succeeded" and row.attempts >= 2


def test_concurrent_promotions_and_rollbacks_replay_exactly(chaos, tmp_path: Path) -> None:
    """Defect 6: 20 promote/rollback commands at once on one model; the audit log replays to the aliases."""
    from mlflow.tracking import MlflowClient

    from modelyard.platform.context import Platform

    env, settings = chaos()
    name = unique("race")
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    experiment = client.create_experiment(name)
    run = client.create_run(experiment)
    artifact = tmp_path / "model.txt"
    artifact.write_text("a stand-in artifact: the aliases are under test, not the model")
    client.log_artifact(run.info.run_id, str(artifact), "model")
    client.create_registered_model(name)
    for _ in range(4):
        mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
        client.set_model_version_tag(name, mv.version, "modelyard.deployable", "true")

    commands = []
    for i in range(20):
        if i % 3 == 2:
            commands.append(["models", "rollback", name] + ([] if i % 2 else ["--to", str(1 + i % 4)]))
        else:
            commands.append(["models", "promote", f"{name}/{1 + i % 4}"])
    full_env = {**os.environ, **env, "COLUMNS": "200"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "modelyard.platform.cli.main", *args, "--reason", f"race {i}"],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=PROJECT,
        )
        for i, args in enumerate(commands)
    ]
    outcomes = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]

    for code, err in outcomes:  # refusals are one sentence about the aliases, never a crash
        assert code == 0 or (code == 1 and err.startswith("error: ") and err.count("\n") == 1), err
    assert sum(code == 0 for code, _ in outcomes) >= 4

    platform = Platform(settings)
    replayed: dict[str, str] = {}
    for e in platform.audit.history(name, ("alias_set", "alias_removed")):
        assert replayed.get(e.alias) == e.from_version, f"event {e.id} moved {e.alias} from a stale value"
        if e.kind == "alias_set":
            replayed[e.alias] = e.to_version
        else:
            replayed.pop(e.alias, None)
    _, in_registry = registry_state(settings, name)
    assert replayed == in_registry == platform.audit.aliases(name).get(name, {})
    assert "champion" in replayed
