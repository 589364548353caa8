"""A simulated fleet: 100 real agents (the `modelyard.edge` Agent, 25 per process in 4 processes) against a
real `modelyard run api` on 127.0.0.1, enrolled with one token, all in group `bench`; rollouts move on by
beat's fleet tick (every 0.5 s) on a real monitor-queue worker (`modelyard up --only monitor --only beat`).

Measured side by side in one run:
- heartbeat load held by the control plane while the fleet idles (requests/s, p50/p99 server time
  from the API's access log, the API process's CPU share);
- two rollouts with a 10% canary and a 10 s observation window: the first install of v1 on every
  device, then the update to v2: seconds from the deploy to every device reporting the version
  installed (target: at most 60 s for 100 devices on this machine), and the API's CPU share meanwhile.

Trains two tiny versions of the digits CNN in a temporary home first (embedded mode). A rollout that
does not complete on every device fails the run (exit status 1).

    .venv/bin/python bench/fleet.py [--devices 100] [--per-process 25] [--heartbeat 5] [--idle 20] [--observe 10]
    .venv/bin/python bench/fleet.py --smoke   # 4 devices in 2 processes, heartbeat 1 s, observation 2 s: CI
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "name": "bench-fleet",
    "dataset": {"source": "sklearn:digits"},
    "architecture": {"name": "cnn", "params": {"filters": [8], "dense_units": 32, "dropout": 0.0}},
    "epochs": 3,
    "batch_size": 64,
    "learning_rate": 0.002,
    "gate": {"must_beat_baseline": False, "threshold": 0.5},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host(homes: list[str]) -> None:
    """Child mode: run one agent per home as threads of this process until stdin closes."""
    from modelyard.edge.agent import Agent
    from modelyard.edge.config import Options

    agents = [Agent(Path(h), Options(threads=1, backoff_cap_seconds=5)) for h in homes]
    threads = [threading.Thread(target=a.run, daemon=True) for a in agents]
    for t in threads:
        t.start()
    print("hosting", len(agents), flush=True)
    sys.stdin.read()  # the parent closes it to stop us
    for a in agents:
        a.stop()
    for t in threads:
        t.join(timeout=10)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def access_lines(log: Path, start: int) -> list[dict]:
    rows = []
    with open(log, "rb") as f:
        f.seek(start)
        for line in f.read().decode(errors="replace").splitlines():
            brace = line.find("{")
            if brace >= 0 and '"route"' in line:
                with contextlib.suppress(ValueError):
                    rows.append(json.loads(line[brace:]))
    return rows


def start_ticker(folder: Path, home: Path, env: dict[str, str]) -> subprocess.Popen:
    """Beat and a monitor worker (`modelyard up --only monitor --only beat`), once the worker is
    ready and beat has sent its first fleet tick."""
    with open(folder / "up.log", "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "modelyard.platform.cli.main", "up", "--only", "monitor", "--only", "beat"],
            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 180
    while True:
        logs = list((home / "logs").glob("*.log"))
        text = "".join(p.read_text(errors="replace") for p in logs)
        if " ready." in text and "Sending due task fleet-tick" in text:
            return up
        if up.poll() is not None or time.monotonic() > deadline:
            up.kill()
            raise SystemExit(f"beat and the monitor worker did not start: {(folder / 'up.log').read_text()[-2000:]}")
        time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--per-process", type=int, default=25)
    parser.add_argument("--heartbeat", type=float, default=5.0, help="agents' heartbeat (and poll) interval, s")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle heartbeats measured")
    parser.add_argument("--observe", type=float, default=10.0, help="rollouts' canary observation window, s")
    parser.add_argument("--smoke", action="store_true", help="CI: 4 devices, heartbeat 1 s, observation 2 s.")
    parser.add_argument("--host", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host is not None:
        return host(args.host)
    if args.smoke:
        args.devices, args.per_process, args.heartbeat, args.idle, args.observe = 4, 2, 1.0, 3.0, 2.0

    folder = Path(tempfile.mkdtemp(prefix="modelyard-bench-fleet-"))
    try:
        run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, folder: Path) -> None:
    home = folder / "home"
    env = {
        "MODELYARD_HOME": str(home),
        "MODELYARD_DEVICE_HEARTBEAT_SECONDS": str(args.heartbeat),
        "MODELYARD_DEVICE_SAMPLE_RATE": "0",
        "MODELYARD_ROLLOUT_OBSERVE_SECONDS": str(args.observe),
        "MODELYARD_ROLLOUT_CANARY_PERCENT": "10",
        "MODELYARD_FLEET_TICK_SECONDS": "0.5",
    }
    os.environ.update(env)
    from modelyard.platform.context import Platform
    from modelyard.platform.fleet import operations as fleet
    from modelyard.platform.fleet.bundles import create_keys
    from modelyard.platform.fleet.devices import Devices
    from modelyard.platform.services.training import TrainRequest, run_training

    platform = Platform()
    platform.settings.ensure_folders()
    create_keys(platform)
    versions = []
    for seed in (1, 2):
        result = run_training(platform, TrainRequest(request_id=f"bench-fleet-{seed}", spec={**SPEC, "seed": seed}))
        versions.append(str(result["version"]))
    print(f"trained {SPEC['name']} v{versions[0]} and v{versions[1]} in {home}", flush=True)

    port = free_port()
    log = folder / "api.log"
    with open(log, "wb") as out:  # the child keeps its own descriptor
        api = subprocess.Popen(
            [sys.executable, "-m", "modelyard.platform.cli.main", "run", "api", "--port", str(port)],
            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        ticker = start_ticker(folder, home, env)
    except BaseException:
        api.terminate()  # its own session: it would outlive us
        raise
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(240):
        try:
            if httpx.get(url + "/v2/health/live", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.25)
    else:
        api.terminate()
        ticker.terminate()
        raise SystemExit(f"the API did not answer on {url}; its log ends:\n{log.read_text()[-2000:]}")
    from modelyard.edge.agent import Agent

    token = Devices(platform.settings).create_token("bench", {}, args.devices, 1.0, "bench")
    homes = []
    started = time.perf_counter()
    for i in range(args.devices):
        h = folder / "agents" / f"dev-{i:03d}"
        Agent(h).enroll(url, token, f"dev-{i:03d}", {"rack": str(i // 10)})
        homes.append(str(h))
    print(f"enrolled {args.devices} devices in {time.perf_counter() - started:.1f} s", flush=True)
    hosts = [
        subprocess.Popen(
            [sys.executable, __file__, "--host", *homes[i : i + args.per_process]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ},
        )
        for i in range(0, len(homes), args.per_process)
    ]
    try:
        for proc in hosts:
            if not proc.stdout.readline():  # type: ignore[union-attr]
                raise SystemExit(f"an agent host process exited with code {proc.wait()} before hosting its agents")
        time.sleep(args.heartbeat * 1.5)
        results = {}
        mark, cpu0, t0 = log.stat().st_size, cpu_seconds(api.pid), time.perf_counter()
        time.sleep(args.idle)
        idle_s, idle_cpu = time.perf_counter() - t0, cpu_seconds(api.pid) - cpu0
        beats = [r for r in access_lines(log, mark) if r["route"].endswith("/heartbeat")]
        ms = sorted(r["ms"] for r in beats)
        results["idle"] = {
            "heartbeats_per_s": len(beats) / idle_s,
            "p50_ms": statistics.median(ms),
            "p99_ms": ms[int(0.99 * (len(ms) - 1))],
            "errors": sum(1 for r in beats if r["status"] >= 400),
            "api_cpu_percent": 100 * idle_cpu / idle_s,
        }
        for label, version in (("first install", versions[0]), ("update", versions[1])):
            mark, cpu0, t0 = log.stat().st_size, cpu_seconds(api.pid), time.perf_counter()
            status = fleet.deploy(platform, f"{SPEC['name']}/{version}", "bench", "bench", 10.0, args.observe)
            done = fleet.wait(platform, status["id"], 120 if args.smoke else 600)
            seconds = time.perf_counter() - t0
            rows = fleet.device_rows(platform, "bench")
            beats = [r for r in access_lines(log, mark) if r["route"].endswith("/heartbeat")]
            ms = sorted(r["ms"] for r in beats)
            results[label] = {
                "version": version,
                "state": done["state"],
                "seconds": seconds,
                "installed": sum(1 for r in rows if r["installed"] == f"{SPEC['name']}/{version}"),
                "heartbeat_p99_ms": ms[int(0.99 * (len(ms) - 1))] if ms else None,
                "api_cpu_percent": 100 * (cpu_seconds(api.pid) - cpu0) / seconds,
            }
            print(f"{label}: {done['state']} in {seconds:.1f} s", flush=True)
    finally:
        for proc in hosts:
            proc.stdin.close()  # type: ignore[union-attr]
        for proc in hosts:
            proc.wait(timeout=60)
        api.terminate()
        api.wait(timeout=60)
        ticker.terminate()  # `up` stops its worker and beat
        ticker.wait(timeout=120)
    idle = results["idle"]
    print(f"\n{args.devices} agents ({len(hosts)} processes), heartbeat every {args.heartbeat:g} s, "
          f"canary 10%, observation {args.observe:g} s")  # fmt: skip
    print("| measure | value | target |\n|---|---|---|")
    print(f"| heartbeats held (idle) | {idle['heartbeats_per_s']:.1f}/s, p50 {idle['p50_ms']:.1f} ms, "
          f"p99 {idle['p99_ms']:.1f} ms, {idle['errors']} errors | - |")  # fmt: skip
    print(f"| API CPU, idle fleet | {idle['api_cpu_percent']:.1f}% of one core | - |")
    for label in ("first install", "update"):
        r = results[label]
        met = "met" if r["state"] == "completed" and r["seconds"] <= 60 and r["installed"] == args.devices else "MISSED"
        print(f"| rollout, {label} (v{r['version']}) | {r['seconds']:.1f} s to {r['installed']}/{args.devices} "
              f"devices ({r['state']}) | <= 60 s: {met} |")  # fmt: skip
        print(f"| API CPU during it; heartbeat p99 | {r['api_cpu_percent']:.1f}% of one core; "
              f"{r['heartbeat_p99_ms']:.1f} ms | - |")  # fmt: skip
    print(json.dumps(results, indent=2))
    failed = [
        f"{label}: {results[label]['state']}, {results[label]['installed']}/{args.devices} devices"
        for label in ("first install", "update")
        if results[label]["state"] != "completed" or results[label]["installed"] != args.devices
    ]
    if failed:
        raise SystemExit("rollouts that did not complete on every device: " + "; ".join(failed))


if __name__ == "__main__":
    main()
