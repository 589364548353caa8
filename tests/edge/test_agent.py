"""The whole agent against a real (in-memory) control plane over HTTP: enroll, install, report, telemetry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from modelyard.edge import config
from modelyard.edge.agent import Agent
from modelyard.edge.config import Enrollment, Options
from modelyard.edge.errors import EdgeError
from modelyard.exporters.bundle import BuiltBundle
from tests.edge.conftest import desired_for, smoke_rows
from tests.edge.fake_control_plane import FakeControlPlane

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cp(keys: tuple[Path, Path]) -> Iterator[FakeControlPlane]:
    server = FakeControlPlane()
    server.state.public_key = keys[1].read_text()
    yield server
    server.close()


def _wait(condition: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _publish(cp: FakeControlPlane, bundle: BuiltBundle, **extra: object) -> None:
    desired = desired_for(bundle, **extra)
    cp.publish(desired["url"], bundle.path.read_bytes(), bundle.sha256)
    cp.state.desired = desired


def test_enrolled_agent_installs_reports_serves_and_uploads(
    cp: FakeControlPlane, tmp_path: Path, v1: BuiltBundle
) -> None:
    home = tmp_path / "agent"
    agent = Agent(home, Options(heartbeat_seconds=0.1, backoff_cap_seconds=0.5))
    agent.enroll(cp.url, "tok", "edge-01", {"site": "lab"})
    assert (home / "trust.pem").read_text() == cp.state.public_key
    assert oct((home / "agent.json").stat().st_mode)[-3:] == "600"
    with pytest.raises(EdgeError, match="is enrolled already as edge-01"):
        agent.enroll(cp.url, "tok", "edge-01", {})
    _publish(cp, v1, rollout_id=4)
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    try:
        _wait(lambda: cp.state.reports)
        assert cp.state.reports[0]["outcome"] == "installed" and cp.state.reports[0]["rollout_id"] == 4
        _wait(lambda: (home / "port").exists())
        port = int((home / "port").read_text())
        rows = smoke_rows(2)["input"]
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": rows.ravel().tolist()}]}
        assert httpx.post(f"http://127.0.0.1:{port}/v2/models/tiny/infer", json=body).status_code == 200
        _wait(lambda: len(cp.state.telemetry) == 2)
        _wait(lambda: cp.state.heartbeats and (cp.state.heartbeats[-1]["installed"] or {}).get("sha256") == v1.sha256)
        assert cp.state.heartbeats[-1]["health"] == "ok" and cp.state.heartbeats[-1]["serving"] is True

        cp.state.down = True  # the control plane goes away: local inference goes on
        assert agent.predict(smoke_rows(1))["probabilities"].shape == (1, 3)
        cp.state.down, cp.state.revoked = False, True
        _wait(lambda: agent.status()["decommissioned"])
        assert agent.predict(smoke_rows(1))["probabilities"].shape == (1, 3)
        assert len(cp.state.reports) == 1  # installed once, never again for the same entry
    finally:
        agent.stop()
        runner.join(timeout=15)
    assert not runner.is_alive()


def test_cli_run_writes_its_port_and_stops_on_sigterm(cp: FakeControlPlane, tmp_path: Path, v1: BuiltBundle) -> None:
    home = tmp_path / "agent"
    cli = [sys.executable, "-m", "modelyard.edge.cli"]
    enrolled = subprocess.run(
        [*cli, "enroll", "--server", cp.url, "--token", "t", "--device-id", "cli-01", "--tag", "a=b",
         "--home", str(home)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    _publish(cp, v1)
    proc = subprocess.Popen([*cli, "run", "--home", str(home), "--heartbeat-seconds", "0.2"], cwd=REPO)
    try:
        _wait(lambda: cp.state.reports, timeout=30)
        port = int((home / "port").read_text())
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    status = subprocess.run([*cli, "status", "--home", str(home)], cwd=REPO, capture_output=True, text=True, timeout=60)
    state = json.loads(status.stdout)
    assert state["installed"]["sha256"] == v1.sha256 and state["device_id"] == "cli-01"
    bad = subprocess.run(
        [*cli, "enroll", "--server", cp.url, "--token", "t", "--device-id", "x", "--tag", "k=v", "--home", str(home)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.strip() == f"error: agent home {home} is enrolled already as cli-01."


def _running(agent: Agent) -> threading.Thread:
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    return runner


def test_a_401_pauses_installs_and_a_later_200_resumes_them(
    cp: FakeControlPlane, tmp_path: Path, v1: BuiltBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "UNAUTHORIZED_HEARTBEAT_S", 0.3)
    agent = Agent(tmp_path / "agent", Options(heartbeat_seconds=0.1, backoff_cap_seconds=0.5))
    agent.enroll(cp.url, "tok", "edge-02", {})
    cp.state.revoked = True  # a restored database, a proxy eating the header: not necessarily for good
    runner = _running(agent)
    try:
        _wait(lambda: agent.status()["decommissioned"])
        agent.wanted.put(desired_for(v1))  # queued before the 401 was known: must not start now
        time.sleep(0.5)
        assert agent.installer.slots.active_info() is None and not (agent.home / "downloads").exists()

        _publish(cp, v1)
        cp.state.revoked = False
        _wait(lambda: not agent.status()["decommissioned"])
        _wait(lambda: cp.state.reports)
        assert cp.state.reports[0]["outcome"] == "installed"
        assert not Enrollment.load(agent.home).decommissioned  # type: ignore[union-attr]
    finally:
        agent.stop()
        runner.join(timeout=15)


def test_a_report_the_control_plane_refuses_does_not_stop_the_heartbeats(cp: FakeControlPlane, tmp_path: Path) -> None:
    agent = Agent(tmp_path / "agent", Options(heartbeat_seconds=0.1, backoff_cap_seconds=0.5))
    agent.enroll(cp.url, "tok", "edge-03", {})
    state = agent.installer.store.load()
    state.pending_report = {"model": "tiny", "version": "1", "outcome": "failed", "reason": "x"}
    agent.installer.store.save(state)
    cp.state.reports_status = 422
    runner = _running(agent)
    try:
        _wait(lambda: len(cp.state.heartbeats) >= 3)
        cp.state.reports_status = 200
        _wait(lambda: cp.state.reports)  # kept, and sent once the control plane takes it
    finally:
        agent.stop()
        runner.join(timeout=15)


def test_failed_inferences_are_recorded_whatever_the_sample_rate(tmp_path: Path) -> None:
    agent = Agent(tmp_path / "agent")
    agent.buffer.sample_rate = 0.0
    model = SimpleNamespace(manifest=SimpleNamespace(model="tiny", version="1"))
    rows = smoke_rows(3)

    agent._after(model, rows, {"probabilities": np.zeros((3, 3))}, time.perf_counter(), None)  # type: ignore[arg-type]
    assert agent.buffer.count() == 0  # successes are sampled
    agent._after(model, rows, None, time.perf_counter(), "the session failed")  # type: ignore[arg-type]

    sent: list[dict[str, object]] = []
    agent.buffer.upload(lambda records, dropped: sent.extend(records))
    assert len(sent) == 3 and all(r["error"] == "the session failed" for r in sent)


def test_the_heartbeat_reports_every_record_dropped_since_the_start(tmp_path: Path) -> None:
    agent = Agent(tmp_path / "agent", Options(max_telemetry_bytes=4096))
    model = SimpleNamespace(manifest=SimpleNamespace(model="tiny", version="1"))
    for _ in range(10):
        agent._after(model, smoke_rows(8), None, time.perf_counter(), "boom")  # type: ignore[arg-type]
    dropped = agent.status()["dropped_records"]
    assert dropped > 0

    agent.buffer.upload(lambda records, d: None)  # the upload reports them to the telemetry endpoint

    assert agent.heartbeat_body()["dropped_records"] == dropped


def test_agent_json_is_never_readable_by_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "agent"
    home.mkdir()
    (home / ".agent.json.tmp").write_text("{}")  # left by a crash, with the umask's mode
    os.chmod(home / ".agent.json.tmp", 0o644)
    modes: list[int] = []
    replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        modes.append(os.stat(src).st_mode & 0o777)  # what the file had while it was being written
        replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    Enrollment(server_url="http://cp", device_id="d", credential="secret").save(home)

    assert modes == [0o600] and (home / "agent.json").stat().st_mode & 0o777 == 0o600
