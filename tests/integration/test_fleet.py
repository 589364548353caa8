"""The edge fleet end to end: a real `modelyard run api`, real `modelyard-agent` processes, real HTTP on
127.0.0.1, bundles built from real exports and signed with model-signing, and rollouts moved on by
beat's fleet tick on a real worker of the monitor queue (`modelyard up --only monitor --only beat`).

The agents enroll with a one-time token, follow rollouts, refuse bad bundles, serve locally
while the control plane is down and upload their buffered telemetry when it is back.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.conftest import tiny_spec
from tests.integration.conftest import PROJECT, _free_port, _spawn

pytestmark = pytest.mark.integration
AGENT = str(Path(sys.executable).with_name("modelyard-agent"))
FAST = {
    "MODELYARD_DEVICE_HEARTBEAT_SECONDS": "0.5",
    "MODELYARD_DEVICE_UPLOAD_SECONDS": "0.5",
    "MODELYARD_DEVICE_SAMPLE_RATE": "1",
    "MODELYARD_FLEET_TICK_SECONDS": "0.5",  # beat's interval, and how long each tick's message lives
    "MODELYARD_ROLLOUT_OBSERVE_SECONDS": "1",
    "MODELYARD_SERVE_POLL_SECONDS": "0.2",
}
# Big enough (about 2 MB of fp32 weights) that a bundle takes several chunks to download.
SPEC = tiny_spec(
    "fleet",
    architecture={"name": "cnn", "params": {"filters": [8], "dense_units": 1024, "dropout": 0.0}},
)


class Fleet:
    def __init__(self, folder: Path, home: Path, env: dict[str, str], port: int, token: str) -> None:
        self.folder, self.home, self.env, self.port, self.token = folder, home, env, port, token
        self.url = f"http://127.0.0.1:{port}"
        self.api: Any = None
        self.ticker: Any = None
        self.agents: dict[str, Agent] = {}

    def start_api(self) -> None:
        env = {**self.env, "MODELYARD_API_PORT": str(self.port)}
        log = self.folder / f"api-{time.monotonic_ns()}.log"
        self.api = _spawn(log, ["run", "api"], env, "Uvicorn running on", "modelyard run api")

    def start_ticker(self) -> None:
        """Beat and a monitor worker: the fleet's tick runs there, as every periodic pass does."""
        log = self.folder / "up.log"
        self.ticker = _spawn(log, ["up", "--only", "monitor", "--only", "beat"], self.env, "modelyard up (", "up")
        logs = self.home / "logs"
        deadline = time.monotonic() + 180
        while True:  # the worker is ready and beat has sent a first tick
            text = "".join(p.read_text(errors="replace") for p in logs.glob("*.log")) if logs.exists() else ""
            if " ready." in text and "Sending due task fleet-tick" in text:
                return
            assert self.ticker.proc.poll() is None and time.monotonic() < deadline, (log.read_text(), text[-3000:])
            time.sleep(0.3)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = requests.request(
            method, self.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=60, **kwargs
        )
        assert answer.status_code < 300, (method, path, answer.status_code, answer.text)
        return answer.json()

    def enroll(self, group: str, count: int, env: dict[str, str] | None = None) -> list[Agent]:
        token = self.call("POST", "/v1/devices/enrollment-tokens", json={"group": group, "uses": count})["token"]
        started = []
        for i in range(count):
            device_id = f"{group}-{i}"
            home = self.folder / "agents" / device_id
            subprocess.run(
                [AGENT, "enroll", "--server", self.url, "--token", token, "--device-id", device_id,
                 "--tag", "site=lab", "--home", str(home)],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            agent = Agent(device_id, home, self.folder / f"{device_id}.log")
            agent.start(env or {})
            self.agents[device_id] = agent
            started.append(agent)
        return started

    def devices(self, group: str) -> dict[str, dict[str, Any]]:
        return {d["id"]: d for d in self.call("GET", f"/v1/devices?group={group}")}

    def wait_rollout(self, rollout_id: int, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.call("GET", f"/v1/rollouts/{rollout_id}")
            if status["state"] not in ("canary", "observing", "rolling", "paused"):
                return status
            time.sleep(0.3)
        raise AssertionError(f"rollout {rollout_id} still {status['state']} after {timeout} s: {status}")

    def wait_installed(self, group: str, version: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.devices(group)
            if all(d["installed"] == f"fleet/{version}" for d in found.values()):
                return
            time.sleep(0.3)
        raise AssertionError(f"not every device of {group} runs v{version}: {self.devices(group)}")


class Agent:
    def __init__(self, device_id: str, home: Path, log: Path) -> None:
        self.device_id, self.home, self.log = device_id, home, log
        self.proc: subprocess.Popen | None = None

    def start(self, env: dict[str, str]) -> None:
        (self.home / "port").unlink(missing_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - the agent writes it until it stops
        self.proc = subprocess.Popen(
            [AGENT, "run", "--home", str(self.home), "--port", "0", "--backoff-cap-seconds", "1"],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=PROJECT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not (self.home / "port").exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()[-2000:]
            time.sleep(0.1)

    @property
    def port(self) -> int:
        return int((self.home / "port").read_text())

    def infer(self, x: np.ndarray, model: str = "fleet") -> requests.Response:
        body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
        return requests.post(f"http://127.0.0.1:{self.port}/v2/models/{model}/infer", json=body, timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """`fleet` v1 (champion, bundled by the gate) and v2 (registered), keys, an API, an admin token."""
    from modelyard.platform.context import Platform
    from modelyard.platform.fleet.bundles import create_keys
    from modelyard.platform.services.training import TrainRequest, run_training
    from modelyard.platform.settings import Settings
    from modelyard.platform.store.tokens import TokenStore

    folder = tmp_path_factory.mktemp("fleet")
    home = folder / "home"
    env = {"MODELYARD_HOME": str(home), **FAST}
    saved = {k: v for k, v in os.environ.items() if k.startswith("MODELYARD_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        settings = Settings()
        settings.ensure_folders()
        platform = Platform(settings)
        create_keys(platform)
        for seed in (1, 2):
            run_training(platform, TrainRequest(request_id=f"fleet-{seed}", spec={**SPEC, "seed": seed}))
        token = TokenStore(settings).create("fleet-admin", ["admin"], "test")
    finally:
        for key in env:
            del os.environ[key]
        os.environ.update(saved)
    plane = Fleet(folder, home, env, _free_port(), token)
    try:
        plane.start_ticker()
        plane.start_api()
        yield plane
    finally:
        for agent in plane.agents.values():
            agent.stop(signal.SIGKILL)
        if plane.api is not None:
            plane.api.stop()
        if plane.ticker is not None:
            plane.ticker.stop()


@pytest.fixture(autouse=True)
def _stop_agents(fleet: Fleet) -> Iterator[None]:
    """Each test's agents stop with it: idle agents still heartbeat, and the suite shares two cores."""
    before = set(fleet.agents)
    yield
    for device_id in set(fleet.agents) - before:
        fleet.agents[device_id].stop(signal.SIGKILL)


def _holdout(n: int = 8) -> np.ndarray:
    from sklearn.datasets import load_digits

    x = load_digits().images[-n:].astype(np.float32) / 16.0
    return x[..., None]


def test_deploy_follow_promotion_and_rollback_reach_every_device(fleet: Fleet) -> None:
    import onnxruntime as ort

    history = fleet.call("GET", "/v1/models/fleet/history")
    built = [e for e in history if e["kind"] == "bundle_built"]
    champion = fleet.call("GET", "/v1/models/fleet")["aliases"]["champion"]
    assert [(e["to"], e["actor"]) for e in built] == [(champion, "gate")], "the gate's promotion bundles at once"
    agents = fleet.enroll("field", 5)

    status = fleet.call(
        "POST", "/v1/rollouts",
        json={"model": "fleet", "version": champion, "group": "field", "canary_percent": 20, "follow": True},
    )  # fmt: skip
    assert status["state"] == "canary" and len(status["devices"]) == 1
    done = fleet.wait_rollout(status["id"])
    assert done["state"] == "completed", done
    assert [d["phase"] for d in done["devices"]].count("canary") == 1 and len(done["devices"]) == 5
    fleet.wait_installed("field", champion)

    x = _holdout()
    (bundle,) = (fleet.home / "bundles" / "fleet" / champion / "edge-cpu").glob("*.tar")
    with tarfile.open(bundle) as tar:
        model = tar.extractfile("model.onnx").read()  # type: ignore[union-attr]
    expected = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    for agent in agents:
        answer = agent.infer(x)
        assert answer.status_code == 200, answer.text
        out = answer.json()["outputs"][0]
        np.testing.assert_allclose(np.asarray(out["data"]).reshape(out["shape"]), expected, rtol=1e-5, atol=1e-6)

    other = "2" if champion == "1" else "1"
    fleet.call("POST", "/v1/models/fleet/promote", json={"version": other, "reason": "test: the fleet follows"})
    fleet.wait_installed("field", other)
    fleet.wait_rollout(fleet.call("GET", "/v1/rollouts?group=field")[0]["id"])
    fleet.call("POST", "/v1/models/fleet/rollback", json={"reason": "test: the fleet goes back"})
    fleet.wait_installed("field", champion)
    fleet.wait_rollout(fleet.call("GET", "/v1/rollouts?group=field")[0]["id"])  # its last step follows the reports
    rollouts = fleet.call("GET", "/v1/rollouts?group=field")
    assert [(r["kind"], r["version"], r["state"]) for r in rollouts][:2] == [
        ("rollback", champion, "completed"),
        ("follow", other, "completed"),
    ]
    kinds = [e["kind"] for e in fleet.call("GET", "/v1/models/fleet/history")]
    for kind in ("rollout_started", "rollout_observing", "rollout_rolling", "rollout_completed", "device_installed"):
        assert kind in kinds


def _bad_bundle(fleet: Fleet, version: str, make: Any) -> None:
    """A bundle row for a new version number whose archive `make(good_tar_bytes)` spoiled."""
    import hashlib

    from modelyard.platform.fleet.bundles import cache_path
    from modelyard.platform.settings import Settings
    from modelyard.platform.store.db import Bundle, session_factory

    settings = Settings(home=fleet.home)
    with session_factory(settings.platform_database_url)() as session:
        good = session.query(Bundle).filter_by(model="fleet").order_by(Bundle.created_at).first()
        good_bytes = cache_path(settings, "fleet", good.version, "edge-cpu", good.sha256).read_bytes()
        manifest = dict(good.manifest)
    data = make(good_bytes)
    path = cache_path(settings, "fleet", version, "edge-cpu", hashlib.sha256(data).hexdigest())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    from modelyard.platform.store.audit import AuditLog, EventRecord

    # A version number the registry never gave: the platform database alone is what rollouts read.
    AuditLog(settings).record(EventRecord("fleet", "registered", "test: a spoiled bundle", "test", to_version=version))
    with session_factory(settings.platform_database_url).begin() as session:
        session.merge(
            Bundle(model="fleet", version=version, target="edge-cpu", variant=good.variant,
                   sha256=hashlib.sha256(data).hexdigest(), size=len(data), artifact_uri="test", manifest=manifest,
                   created_by="test")
        )  # fmt: skip


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _tar(members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:  # type: ignore[assignment]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for info in extra:
            tar.addfile(info)
    return buffer.getvalue()


def _tampered(data: bytes) -> bytes:
    members = _members(data)
    weights = bytearray(members["model.onnx"])
    weights[len(weights) // 2] ^= 0x01  # one bit of one weight
    return _tar({**members, "model.onnx": bytes(weights)})


def _other_key(data: bytes) -> bytes:
    import tempfile

    from modelyard.exporters.bundle import create_keys

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "b"
        folder.mkdir()
        for name, content in _members(data).items():
            if name != "model.sig":
                (folder / name).write_bytes(content)
        create_keys(Path(tmp) / "k.pem", Path(tmp) / "k.pub")
        import model_signing

        signer = model_signing.signing.Config().use_elliptic_key_signer(private_key=Path(tmp) / "k.pem")
        signer.set_hashing_config(model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"]))
        signer.sign(folder, folder / "model.sig")
        return _tar({p.name: p.read_bytes() for p in sorted(folder.iterdir())})


def _traversal(data: bytes) -> bytes:
    return _tar({**_members(data), "../evil.py": b"print('owned')\n"})


def _symlink(data: bytes) -> bytes:
    link = tarfile.TarInfo("smoke.npz.link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return _tar(_members(data), [link])


@pytest.mark.parametrize(
    ("version", "spoil", "stage"),
    [("101", _tampered, "verify"), ("102", _other_key, "verify"), ("103", _traversal, "unpack"),
     ("104", _symlink, "unpack")],
    ids=["one-bit-changed", "signed-by-another-key", "dotdot-path", "symlink"],
)  # fmt: skip
def test_every_device_refuses_a_bad_bundle_and_keeps_serving(
    fleet: Fleet, version: str, spoil: Any, stage: str
) -> None:
    group = f"sec{version}"
    agents = fleet.enroll(group, 2)
    first = fleet.call("POST", "/v1/rollouts", json={"model": "fleet", "group": group, "canary_percent": 100,
                                                     "observe_seconds": 0})  # fmt: skip
    assert fleet.wait_rollout(first["id"])["state"] == "completed"
    served = fleet.devices(group)[agents[0].device_id]["installed"]
    _bad_bundle(fleet, version, spoil)

    status = fleet.call("POST", "/v1/rollouts", json={"model": "fleet", "version": version, "group": group,
                                                      "canary_percent": 100, "max_failure_share": 0.5})  # fmt: skip
    done = fleet.wait_rollout(status["id"])
    assert done["state"] == "halted", done
    assert {d["state"] for d in done["devices"]} == {"failed"}, done["devices"]
    for d in done["devices"]:
        assert d["reason"], d
    for agent in agents:
        assert agent.infer(_holdout(2)).status_code == 200
        assert fleet.devices(group)[agent.device_id]["installed"] == served
        slots = list((agent.home / "slots").rglob("*")) if (agent.home / "slots").exists() else []
        assert not [p for p in slots if "evil" in p.name or p.is_symlink()], slots
    assert not (fleet.folder / "agents" / "evil.py").exists()
    events = [e for e in fleet.call("GET", "/v1/models/fleet/history") if e.get("to") == version]
    assert events[-1]["kind"] == "rollout_halted"
    failed = [e["reason"] for e in events if e["kind"] == "device_failed"]
    assert len(failed) == 2 and all(f" at {stage}:" in r for r in failed), failed


def test_a_bundle_failing_its_smoke_test_halts_at_the_canary(fleet: Fleet) -> None:
    from modelyard.exporters.bundle import build_bundle

    group = "smoke"
    agents = fleet.enroll(group, 5)
    first = fleet.call("POST", "/v1/rollouts", json={"model": "fleet", "group": group, "canary_percent": 100,
                                                     "observe_seconds": 0})  # fmt: skip
    assert fleet.wait_rollout(first["id"])["state"] == "completed"

    def wrong_expectations(good: bytes) -> bytes:  # correctly signed; its expected outputs are not the model's
        import tempfile

        members = _members(good)
        manifest = json.loads(members["manifest.json"])
        with tempfile.TemporaryDirectory() as tmp, np.load(io.BytesIO(members["smoke.npz"])) as smoke:
            (Path(tmp) / "m.onnx").write_bytes(members["model.onnx"])
            inputs = {k.removeprefix("input:"): smoke[k] for k in smoke.files if k.startswith("input:")}
            wrong = {k.removeprefix("output:"): 1 - smoke[k] for k in smoke.files if k.startswith("output:")}
            built = build_bundle(
                Path(tmp) / "m.onnx", Path(tmp) / "out", model="fleet", version="201", variant=manifest["variant"],
                target="edge-cpu", inputs=manifest["inputs"], outputs=manifest["outputs"],
                runtime_needs=manifest["runtime"], smoke_inputs=inputs, private_key=fleet.home / "keys" /
                "edge-signing.pem", expected_override=wrong,
            )  # fmt: skip
            return built.path.read_bytes()

    _bad_bundle(fleet, "201", wrong_expectations)
    status = fleet.call("POST", "/v1/rollouts", json={"model": "fleet", "version": "201", "group": group,
                                                      "canary_percent": 20})  # fmt: skip
    (canary,) = [d["device"] for d in status["devices"]]
    done = fleet.wait_rollout(status["id"])
    assert done["state"] == "halted" and "1 of 1 canary devices failed" in done["reason"], done
    assert [(d["device"], d["state"]) for d in done["devices"]] == [(canary, "failed")], "nobody else was touched"
    devices = fleet.devices(group)
    assert {d["installed"] for d in devices.values()} == {f"fleet/{first['version']}"}
    assert all(a.infer(_holdout(2)).status_code == 200 for a in agents)
    reason = next(e["reason"] for e in fleet.call("GET", "/v1/models/fleet/history") if e["kind"] == "device_failed"
                  and e.get("to") == "201")  # fmt: skip
    assert " at smoke:" in reason, reason


def test_an_agent_killed_mid_download_resumes_where_it_stopped(fleet: Fleet) -> None:
    group = "resume"
    (agent,) = fleet.enroll(group, 1, env={"MODELYARD_EDGE_FAILPOINT": "mid-download"})
    status = fleet.call("POST", "/v1/rollouts", json={"model": "fleet", "group": group, "canary_percent": 100,
                                                      "observe_seconds": 0})  # fmt: skip
    assert agent.proc is not None
    agent.proc.wait(timeout=60)
    assert agent.proc.returncode == -signal.SIGKILL, agent.log.read_text()[-2000:]
    parts = list((agent.home / "downloads").glob("*.part"))
    assert len(parts) == 1, list(agent.home.rglob("*"))
    assert 0 < parts[0].stat().st_size < status["size"], "killed with part of the bundle on disk"
    agent.start({})
    done = fleet.wait_rollout(status["id"])
    assert done["state"] == "completed", (done, agent.log.read_text()[-3000:])
    ranged = [
        line for line in fleet.api.text().splitlines() if "/v1/bundles/fleet/" in line and '"status": 206' in line
    ]
    assert ranged, "the second download asked for the rest only (Range), and got it"


def test_devices_serve_while_the_control_plane_is_down_and_upload_later(fleet: Fleet) -> None:
    from modelyard.platform.settings import Settings
    from modelyard.platform.store.inference import InferenceLog

    group = "offline"
    agents = fleet.enroll(group, 2)
    first = fleet.call("POST", "/v1/rollouts", json={"model": "fleet", "group": group, "canary_percent": 100,
                                                     "observe_seconds": 0})  # fmt: skip
    assert fleet.wait_rollout(first["id"])["state"] == "completed"
    fleet.api.stop()
    try:
        for _ in range(20):
            for agent in agents:
                assert agent.infer(_holdout(1)).status_code == 200
        time.sleep(1.5)  # several upload attempts fail meanwhile
    finally:
        fleet.start_api()
    log = InferenceLog(Settings(home=fleet.home))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sources = [r.source for r in log.recent("fleet", 1000)]
        if all(sources.count(a.device_id) >= 20 for a in agents):
            break
        time.sleep(0.3)
    sources = [r.source for r in log.recent("fleet", 1000)]
    assert [sources.count(a.device_id) for a in agents] == [20, 20], "every buffered prediction, once"
    version = first["version"]
    counted = {"model": "fleet", "version": version, "total": 20, "failed": 0}  # what rollouts judge error rates by

    def counts() -> list[dict[str, Any]]:
        rows = fleet.devices(group).values()
        return [{k: v for k, v in (d.get("inferences") or {}).items() if k != "since"} for d in rows]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and counts() != [counted, counted]:
        time.sleep(0.3)
    assert counts() == [counted, counted]

    credential = json.loads((agents[0].home / "agent.json").read_text())["credential"]

    def send(record: dict[str, Any]) -> requests.Response:
        return requests.post(
            f"{fleet.url}/v1/devices/{agents[0].device_id}/telemetry", json={"records": [record], "dropped": 0},
            headers={"Authorization": f"Bearer {credential}"}, timeout=10,
        )  # fmt: skip

    foreign = send({"request_id": "r-1", "model": "fleet", "version": "999", "inputs": {"images": [[0.0]]}})
    assert foreign.status_code == 403, foreign.text  # a device reports only for what it was assigned
    assert "fleet/999 is not assigned to it" in foreign.json()["error"]
    odd = send({"request_id": "r-2", "model": "fleet", "version": version, "inputs": {"pixels": [[0.0]]}})
    assert odd.status_code == 200, odd.text  # its own version, but rows the model cannot have seen: rejected
    assert odd.json() | {"problems": None} == {"stored": 0, "duplicates": 0, "rejected": 1, "problems": None}
    assert "takes inputs ['images']" in odd.json()["problems"][0]


def test_a_decommissioned_device_is_refused_and_keeps_serving(fleet: Fleet) -> None:
    (agent,) = fleet.enroll("retired", 1)
    first = fleet.call("POST", "/v1/rollouts", json={"model": "fleet", "group": "retired", "canary_percent": 100,
                                                     "observe_seconds": 0})  # fmt: skip
    assert fleet.wait_rollout(first["id"])["state"] == "completed"
    fleet.call("POST", f"/v1/devices/{agent.device_id}/decommission")
    credential = json.loads((agent.home / "agent.json").read_text())["credential"]
    answer = requests.post(f"{fleet.url}/v1/devices/{agent.device_id}/heartbeat", json={},
                           headers={"Authorization": f"Bearer {credential}"}, timeout=10)  # fmt: skip
    assert answer.status_code == 401
    time.sleep(1)
    assert agent.infer(_holdout(1)).status_code == 200
