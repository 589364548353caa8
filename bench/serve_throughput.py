"""The digits CNN champion served three ways on this machine, the same single-row requests:
modelyard's server (`modelyard run api`; dynamic batching on, and off), `mlflow models serve` of the same version
(what a user of MLflow would run) and ONNX Runtime in-process without HTTP (the limit).

Trains the CNN of bench/digits-cnn.yaml once in a temporary home (embedded mode), starts each
server as a user would, and drives it with a keep-alive HTTP/1.1 load generator (asyncio,
one connection per concurrent client) at concurrency 1, 8 and 32 for --seconds each:
throughput and p50/p99 latency. The inference log is on (sample rate 1). Targets: modelyard
at least 10x `mlflow models serve` at concurrency 8; p99 at most 10 ms at concurrency 8;
dynamic batching at least 2x no batching at concurrency 32.

    .venv/bin/python bench/serve_throughput.py [--seconds 6] [--epochs 10] [--skip-mlflow]
    .venv/bin/python bench/serve_throughput.py --smoke   # 1 epoch, 0.5 s per level, every server: CI
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train(home: Path, epochs: int) -> tuple[str, str]:
    """One exported version of the digits CNN, champion; (name, version)."""
    import yaml

    os.environ["MODELYARD_HOME"] = str(home)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from modelyard.platform.context import Platform
    from modelyard.platform.services.operations import promote
    from modelyard.platform.services.training import TrainRequest, run_training

    spec = yaml.safe_load((ROOT / "bench" / "digits-cnn.yaml").read_text()) | {"epochs": epochs}
    platform = Platform()
    result = run_training(platform, TrainRequest(request_id="bench-serve", spec=spec))
    name, version = spec["name"], result["version"]
    if result["status"] != "promoted":  # the gate's verdict is not what this benchmark measures
        promote(platform, f"{name}/{version}", "bench", "serve benchmark")
    return name, version


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise SystemExit(f"server exited ({proc.returncode}) before answering {url}; its log ends:\n{said}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    stop(proc)
    said = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise SystemExit(f"{url} did not answer within {timeout} s; the server's log ends:\n{said}")


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


async def _client(port: int, request: bytes, until: float, latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - t)
            if status != b"200":
                errors.append(f"{status.decode()} {body[:200]!r}")
    finally:
        writer.close()


def load(port: int, path: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float) -> dict:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[str] = []

    async def run() -> float:
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(_client(port, request, until, latencies, errors) for _ in range(concurrency)))
        return time.perf_counter() - started

    load_for = seconds / 4  # a warm-up run, not counted
    asyncio.run(_warm(port, request, load_for, concurrency))
    elapsed = asyncio.run(run())
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, first: {errors[0]}")
    return summary(latencies, elapsed)


async def _warm(port: int, request: bytes, seconds: float, concurrency: int) -> None:
    until = time.perf_counter() + seconds
    await asyncio.gather(*(_client(port, request, until, [], []) for _ in range(concurrency)))


def summary(latencies: list[float], elapsed: float) -> dict:
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(ms),
        "rps": len(ms) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
    }


def in_process(model_file: Path, row: np.ndarray, concurrency: int, seconds: float) -> dict:
    """ONNX Runtime without HTTP: `concurrency` threads calling session.run on single rows."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    latencies: list[list[float]] = [[] for _ in range(concurrency)]

    def worker(i: int, until: float) -> None:
        while time.perf_counter() < until:
            t = time.perf_counter()
            session.run(None, {name: row})
            latencies[i].append(time.perf_counter() - t)

    with ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        list(pool.map(lambda i: worker(i, started + seconds), range(concurrency)))
        elapsed = time.perf_counter() - started
    return summary([x for lane in latencies for x in lane], elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="Measured seconds per concurrency level.")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="CI: 1 epoch, 0.5 s per concurrency level.")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.epochs = 0.5, 1

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        name, version = train(home, args.epochs)
        from modelyard.platform.settings import Settings
        from modelyard.platform.store.tokens import TokenStore

        settings = Settings()
        token = TokenStore(settings).create("bench", ["infer", "read"], "bench")
        from sklearn.datasets import load_digits

        row = (load_digits().images[:1].astype(np.float32) / 16.0)[:, :, :, None]
        oip = json.dumps(
            {
                "inputs": [
                    {"name": "images", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": row.reshape(-1).tolist()}
                ]
            }
        ).encode()
        results: dict[str, dict[int, dict]] = {}
        env = {**os.environ, "MODELYARD_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
        auth = {"Authorization": f"Bearer {token}"}

        for label, batch in (("modelyard (batching)", "32"), ("modelyard (no batching)", "1")):
            port, log = free_port(), Path(tmp) / f"serve-{batch}.log"
            proc = start(
                [sys.executable, "-m", "modelyard.platform.cli.main", "run", "api", "--port", str(port)],
                {**env, "MODELYARD_SERVE_MAX_BATCH": batch},
                log,
            )
            try:
                wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc, log)
                load(port, f"/v2/models/{name}/infer", oip, auth, 1, 1.0)  # loads the champion
                results[label] = {
                    c: load(port, f"/v2/models/{name}/infer", oip, auth, c, args.seconds) for c in CONCURRENCY
                }
            finally:
                stop(proc)
            print(f"{label}: done", file=sys.stderr)

        if not args.skip_mlflow:
            port, log = free_port(), Path(tmp) / "mlflow.log"
            proc = start(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "models",
                    "serve",
                    "-m",
                    f"models:/{name}/{version}",
                    "--env-manager",
                    "local",
                    "-p",
                    str(port),
                    "-h",
                    "127.0.0.1",
                ],
                # mlflow runs `uvicorn` from PATH: the one of this environment
                {
                    **env,
                    "MLFLOW_TRACKING_URI": settings.tracking_uri,
                    "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
                },
                log,
            )
            try:
                wait_http(f"http://127.0.0.1:{port}/ping", proc, log, timeout=180)
                body = json.dumps({"inputs": row.tolist()}).encode()
                load(port, "/invocations", body, {}, 1, 1.0)
                results["mlflow models serve"] = {
                    c: load(port, "/invocations", body, {}, c, args.seconds) for c in CONCURRENCY
                }
            finally:
                stop(proc)
            print("mlflow models serve: done", file=sys.stderr)

        model_file = next((home / "serving" / name / version).glob("*.onnx"))
        results["ONNX Runtime in-process"] = {c: in_process(model_file, row, c, args.seconds) for c in CONCURRENCY}

    print(f"\n{name} v{version}, single-row requests, {args.seconds:g} s per level, inference log on\n")
    print(f"{'server':28} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for label, levels in results.items():
        for c, r in levels.items():
            print(f"{label:28} {c:>4} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f}")
    ours, nobatch = results["modelyard (batching)"], results["modelyard (no batching)"]
    print()
    if "mlflow models serve" in results:
        ratio = ours[8]["rps"] / results["mlflow models serve"][8]["rps"]
        print(f"modelyard / mlflow models serve at concurrency 8: {ratio:.1f}x (target >= 10x)")
    print(f"modelyard p99 at concurrency 8: {ours[8]['p99']:.2f} ms (target <= 10 ms)")
    print(f"batching / no batching at concurrency 32: {ours[32]['rps'] / nobatch[32]['rps']:.2f}x (target >= 2x)")
    limit = results["ONNX Runtime in-process"]
    print(f"modelyard / in-process ORT at concurrency 8: {ours[8]['rps'] / limit[8]['rps']:.3f}")
    print(f"median p50 across levels, modelyard: {statistics.median(r['p50'] for r in ours.values()):.2f} ms")


if __name__ == "__main__":
    main()
