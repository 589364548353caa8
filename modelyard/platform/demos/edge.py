"""`modelyard demo edge`: the edge fleet end to end, on real workers, a real API and five real agents.

v1 becomes champion and gets its signed bundle from the gate; five agents enroll into group
`field`; the champion goes out with a 20% canary and the group follows the champion from
then on. v2 is promoted by the gate and the fleet follows through the same phased path. v3
(challenger) is pushed by hand with a bundle whose smoke expectations do not match its model,
as a broken conversion would leave it: correctly signed, so only the canary's smoke test can
catch it; the rollout halts there and no other device installs it. Last, `rollback` moves the
champion back to v1 and the fleet with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

from modelyard.errors import ModelyardError
from modelyard.platform.context import Platform
from modelyard.platform.settings import Settings

AGENTS = 5
FAST = {  # a demo's pace: heartbeats every second, a 3 s observation window
    "MODELYARD_DEVICE_HEARTBEAT_SECONDS": "1",
    "MODELYARD_DEVICE_UPLOAD_SECONDS": "2",
    "MODELYARD_DEVICE_SAMPLE_RATE": "1",
}
OBSERVE = 3.0  # seconds of watching the canary (the group keeps it for the rollouts that follow)


class LocalFleet:
    """The demo's API process and agent processes, stopped together (rollouts move on by beat's fleet tick,
    on the workers the demo started or found)."""

    def __init__(self, settings: Settings, name: str, group: str) -> None:
        self.settings, self.group = settings, group
        self.folder = settings.root / "demo-edge" / name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **FAST, "MODELYARD_API_PORT": str(self.port), "MODELYARD_API_HOST": "127.0.0.1"}
        self.procs: list[subprocess.Popen] = []

    def start_api(self) -> None:
        import httpx

        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "api.log", "ab")  # noqa: SIM115 - the process writes it until it stops
        self.procs.append(_spawn([sys.executable, "-m", "modelyard.platform.cli.main", "run", "api"], self.env, log))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.procs[-1].poll() is not None:
                break
            time.sleep(0.3)
        raise ModelyardError(f"the demo's API did not start; see {self.folder / 'api.log'}.")

    def start_agents(self, token: str) -> list[str]:
        agent = [sys.executable, "-m", "modelyard.edge.cli"]
        ids = []
        for i in range(1, AGENTS + 1):
            device_id = f"{self.group}-{i:02d}"
            home = self.folder / "agents" / device_id
            tags = ["--tag", f"site=bay-{1 + i % 2}"]
            enroll = [*agent, "enroll", "--server", self.url, "--token", token, "--device-id", device_id, *tags]
            done = subprocess.run([*enroll, "--home", str(home)], capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise ModelyardError(f"agent {device_id} could not enroll: {done.stderr.strip()[-500:]}")
            log = open(self.folder / f"{device_id}.log", "ab")  # noqa: SIM115
            self.procs.append(_spawn([*agent, "run", "--home", str(home), "--threads", "1"], dict(os.environ), log))
            ids.append(device_id)
        return ids

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _spawn(args: list[str], env: dict[str, str], log: Any) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_edge_demo(settings: Settings, console: Console, wanted: str) -> None:
    from modelyard.platform.demos.lifecycle import (
        examples_folder,
        open_demo,
        start_workers,
        stop_workers,
        where_to_look,
    )
    from modelyard.platform.fleet import bundles
    from modelyard.platform.fleet import operations as fleet
    from modelyard.platform.fleet.devices import Devices
    from modelyard.platform.fleet.rollouts import Rollouts
    from modelyard.platform.views.fleet import print_devices, print_rollouts
    from modelyard.platform.views.registry import event_rows, print_timeline

    examples = examples_folder()
    platform, name = open_demo(settings, console, wanted, "modelyard demo edge")
    if not settings.signing_key.is_file():
        private, _ = bundles.create_keys(platform)
        console.print(f"signing key created: {private} (`modelyard keys create`)")
    workers = start_workers(settings, console)
    group = "field" + name.removeprefix(wanted)  # a demo run again (edge-demo-2) gets a fleet of its own
    local = LocalFleet(settings, name, group)
    started = time.monotonic()
    try:
        v1 = _train(settings, console, examples / "edge-v1.yaml", name, "v1: a small CNN; the gate makes it champion")
        console.rule(f"the API on {local.url} and {AGENTS} agents enrolling into group '{group}'")
        local.start_api()
        token = Devices(settings).create_token(group, {"fleet": "demo"}, AGENTS, 1.0, "demo")
        local.start_agents(token)
        console.rule(f"deploy {name}@champion (v{v1}): 20% canary, 3 s observation; the group follows the champion")
        status = fleet.deploy(platform, f"{name}@champion", group, "demo", 20.0, OBSERVE, None, True)
        _watch(platform, console, status["id"])

        v2 = _train(settings, console, examples / "edge-v2.yaml", name, "v2: trained longer; the gate promotes it")
        console.rule(f"the fleet follows the champion to v{v2}")
        _watch(platform, console, _next_rollout(settings, group, status["id"]))

        v3 = _train(settings, console, examples / "edge-v3.yaml", name, "v3: a candidate; never promoted by itself")
        console.rule("v3's bundle carries smoke expectations its model does not meet (a broken conversion), signed")
        _break_smoke(platform, name, v3)
        bad = fleet.deploy(platform, f"{name}/{v3}", group, "demo", 20.0, OBSERVE, None, None)
        halted = _watch(platform, console, bad["id"])
        if halted["state"] != "halted":
            raise ModelyardError(f"the bad bundle's rollout ended {halted['state']}, not halted.")

        console.rule(f"rollback: {name} goes back to v{v1}, and the following group with it")
        for e in fleet_rollback(platform, name):
            console.print(f"{e.alias}: {e.from_version or '-'} -> {e.to_version or '-'}")
        _watch(platform, console, _next_rollout(settings, group, bad["id"]))
        rows = fleet.device_rows(platform, group)
    finally:
        local.stop()
        stop_workers(workers)
    print_devices(console, rows)
    print_rollouts(console, Rollouts(settings).recent(name))
    events = event_rows(platform.audit.history(name))
    shown = [e for e in events if e["kind"] != "device_installed"]
    title = (
        f"timeline of {name} ({len(events) - len(shown)} device_installed events: `modelyard models history {name}`)"
    )
    print_timeline(console, shown, title=title)
    on = sorted({r["installed"] or "-" for r in rows})
    console.print(f"fleet now runs: {', '.join(on)}; demo took {time.monotonic() - started:.0f} s")
    where_to_look(
        console,
        settings,
        [
            f"modelyard devices list --group {group}",
            f"modelyard rollouts list --model {name}",
            f"modelyard models history {name}",
        ],
        f"  (the bundles: artifacts bundle/edge-cpu of each version's run; agents under {local.folder})",
    )


def _train(settings: Settings, console: Console, spec: Path, name: str, title: str) -> str:
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.submit import submit_training
    from modelyard.platform.views.registry import print_training_result

    console.rule(title)
    rid = uuid.uuid4().hex
    submit_training(settings, spec, rid, overrides={"name": name})
    result = follow(settings, rid, timeout=900)
    print_training_result(console, result)
    return str(result["version"])


def _watch(platform: Platform, console: Console, rollout_id: int) -> dict[str, Any]:
    from modelyard.platform.fleet.operations import wait
    from modelyard.platform.views.fleet import rollout_progress

    console.print(f"rollout {rollout_id}:")
    status = wait(platform, rollout_id, 300, lambda s: console.print(rollout_progress(s)))
    return status


def _next_rollout(settings: Settings, group: str, after: int, timeout: float = 300) -> int:
    """The rollout the fleet starts by itself (a follower's promotion or rollback) after rollout `after`."""
    from modelyard.platform.fleet.rollouts import Rollouts

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = Rollouts(settings).latest(group)
        if latest is not None and latest.id > after:
            return latest.id
        time.sleep(0.3)
    raise ModelyardError(f"group {group} started no rollout within {timeout:.0f} s.")


def fleet_rollback(platform: Platform, name: str) -> list[Any]:
    from modelyard.platform.services.operations import rollback

    return rollback(platform, name, "demo", "demo: the field reports trouble; back to the previous champion")


def _break_smoke(platform: Platform, name: str, version: str) -> None:
    """Rebuild the version's bundle with wrong expected outputs, signed with the control plane's key."""
    import io
    import tarfile
    import tempfile

    import numpy as np

    from modelyard.exporters.bundle import build_bundle
    from modelyard.platform.fleet import bundles
    from modelyard.platform.store.db import Bundle, session_factory

    settings = platform.settings
    row = bundles.build(platform, name, version, settings.edge_bundle_target, "demo")
    path, _ = bundles.bundle_file(platform, name, version, row.target)
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = row.manifest
    with tempfile.TemporaryDirectory() as tmp, np.load(io.BytesIO(members["smoke.npz"])) as smoke:
        (Path(tmp) / "model.onnx").write_bytes(members["model.onnx"])
        inputs = {k.removeprefix("input:"): smoke[k] for k in smoke.files if k.startswith("input:")}
        wrong = {k.removeprefix("output:"): smoke[k][:, ::-1].copy() for k in smoke.files if k.startswith("output:")}
        built = build_bundle(
            Path(tmp) / "model.onnx",
            Path(tmp) / "out",
            model=name,
            version=version,
            variant=row.variant,
            target=row.target,
            inputs=manifest["inputs"],
            outputs=manifest["outputs"],
            runtime_needs=manifest["runtime"],
            smoke_inputs=inputs,
            private_key=settings.signing_key,
            expected_override=wrong,
        )
        bundles._cache(bundles.cache_path(settings, name, version, row.target, built.sha256), built.path)
    with session_factory(settings.platform_database_url).begin() as session:
        stored = session.get(Bundle, (name, version, row.target))
        assert stored is not None
        stored.sha256, stored.size, stored.artifact_uri = built.sha256, built.size, f"file://{path}"
