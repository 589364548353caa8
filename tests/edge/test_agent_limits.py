"""Real `modelyard-agent run` processes against a real local control plane over HTTP (issue 18, items 7-8).

- A bundle that passes its smoke test but fails real inferences is rolled back locally and reported,
  while the heartbeats keep handing the agent the very same desired entry.
- A download that drips a byte now and then gives up within its limits, is reported, and the agent
  takes the newer desired bundle the control plane sent meanwhile.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.exporters.bundle import BuiltBundle
from tests.edge.conftest import desired_for, smoke_rows
from tests.edge.fake_control_plane import FakeControlPlane

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "modelyard.edge.cli"]


@pytest.fixture
def cp(keys: tuple[Path, Path]) -> Iterator[FakeControlPlane]:
    server = FakeControlPlane()
    server.state.public_key = keys[1].read_text()
    yield server
    server.close()


def _wait(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def _publish(cp: FakeControlPlane, bundle: BuiltBundle, **extra: Any) -> dict[str, Any]:
    desired = desired_for(bundle, **extra)
    cp.publish(desired["url"], bundle.path.read_bytes(), bundle.sha256)
    cp.state.desired = desired
    return desired


def _reports(cp: FakeControlPlane, rollout_id: int) -> list[dict[str, Any]]:
    return [r for r in list(cp.state.reports) if r["rollout_id"] == rollout_id]


class RunningAgent:
    def __init__(self, home: Path, cp: FakeControlPlane, device_id: str, *flags: str) -> None:
        self.home = home
        enrolled = subprocess.run(
            [*CLI, "enroll", "--server", cp.url, "--token", "t", "--device-id", device_id, "--home", str(home)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert enrolled.returncode == 0, enrolled.stderr
        self.log = (home / "agent.log").open("w")
        self.proc = subprocess.Popen(
            [*CLI, "run", "--home", str(home), "--heartbeat-seconds", "0.2", "--backoff-cap-seconds", "1", *flags],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def install_state(self) -> str:
        return str(json.loads((self.home / "install.json").read_text())["state"])

    def infer(self, rows: int) -> int:
        port = int((self.home / "port").read_text())
        data = smoke_rows(rows)["input"]
        body = {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": list(data.shape), "data": data.ravel().tolist()}]
        }
        return httpx.post(f"http://127.0.0.1:{port}/v2/models/tiny/infer", json=body, timeout=30).status_code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.log.close()


@pytest.fixture
def agents() -> Iterator[list[RunningAgent]]:
    started: list[RunningAgent] = []
    yield started
    for agent in started:
        agent.stop()


def test_a_bundle_failing_real_inferences_rolls_back_locally_and_reports_it(
    cp: FakeControlPlane, tmp_path: Path, v1: BuiltBundle, v9: BuiltBundle, agents: list[RunningAgent]
) -> None:
    flags = ["--probation-successes", "2", "--probation-seconds", "600", "--probation-max-failures", "2"]
    agent = RunningAgent(tmp_path / "agent", cp, "probe-01", *flags)
    agents.append(agent)
    _publish(cp, v1, rollout_id=1)
    _wait(lambda: _reports(cp, 1), 60, "v1 installed")
    _wait(lambda: (agent.home / "port").exists(), 10, "the local server's port")
    assert [agent.infer(2), agent.infer(2)] == [200, 200]
    _wait(lambda: agent.install_state() == "committed", 10, "v1 committed by two good inferences")

    _publish(cp, v9, rollout_id=5, failed_inference_limit=5)
    _wait(lambda: _reports(cp, 5), 30, "v9 installed")  # it passes its 8-row smoke test, fails other batches
    assert _reports(cp, 5)[0]["outcome"] == "installed"
    seen = len(cp.state.heartbeats)
    _wait(lambda: len(cp.state.heartbeats) >= seen + 5, 10, "five heartbeats re-sending v9's entry")
    assert agent.install_state() == "probation", "the same entry sent again does not commit the bundle"

    assert [agent.infer(2), agent.infer(2)] == [500, 500]

    _wait(lambda: len(_reports(cp, 5)) == 2, 10, "the local rollback reported")
    report = _reports(cp, 5)[1]
    assert (report["outcome"], report["stage"], report["version"], report["sha256"]) == (
        "rolled_back",
        "serve",
        "9",
        v9.sha256,
    )
    assert report["reason"].startswith("bundle tiny/9 (edge-cpu) failed its first 2 inferences after the switch")
    assert agent.infer(2) == 200  # v1 serves again
    _wait(lambda: (cp.state.heartbeats[-1]["installed"] or {}).get("version") == "1", 10, "heartbeat shows v1")
    assert len(_reports(cp, 5)) == 2, "the rolled back entry, still desired, is not installed again"


def test_a_dripping_download_gives_up_reports_and_takes_the_next_desired_bundle(
    cp: FakeControlPlane, tmp_path: Path, v1: BuiltBundle, v2: BuiltBundle, agents: list[RunningAgent]
) -> None:
    flags = ["--download-timeout-seconds", "4", "--download-min-rate", "1000", "--download-rate-window-seconds", "1"]
    agent = RunningAgent(tmp_path / "agent", cp, "drip-01", *flags)
    agents.append(agent)
    dripping = _publish(cp, v2, rollout_id=7)
    cp.state.drip[dripping["url"]] = 0.2  # 5 bytes/s: the 1 byte every 5 s of the report, sped up
    _wait(lambda: cp.state.range_headers, 60, "the download started")
    seen = len(cp.state.heartbeats)
    _publish(cp, v1, rollout_id=8)  # the control plane moves on while the download drips

    _wait(lambda: _reports(cp, 7), 10, "the stalled download reported")
    failed = _reports(cp, 7)[0]
    assert (failed["outcome"], failed["stage"]) == ("failed", "download")
    assert "below the 1000 bytes/s minimum; gave up" in failed["reason"]
    _wait(lambda: _reports(cp, 8), 30, "the newer desired bundle installed")
    assert _reports(cp, 8)[0]["outcome"] == "installed"
    assert len(cp.state.heartbeats) > seen, "heartbeats went on during the stalled download"
