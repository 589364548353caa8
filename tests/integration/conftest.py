"""Real services for integration tests: Redis, PostgreSQL, an MLflow server, Celery workers.

Nothing here is mocked: workers are `modelyard worker` subprocesses, the broker is
the real Redis (or the filesystem queue), MLflow is SQLite or a real `mlflow server`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REDIS_URL = os.environ.get("MODELYARD_TEST_REDIS", "redis://127.0.0.1:6379/13")
PG_ADMIN = os.environ.get("MODELYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PROJECT = Path(__file__).resolve().parents[2]


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    if not _reachable("127.0.0.1", 6379):
        pytest.fail("Redis is not reachable on 127.0.0.1:6379: run scripts/services.sh")
    redis.Redis.from_url(REDIS_URL).flushdb()
    return REDIS_URL


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    import psycopg

    if not _reachable("127.0.0.1", 5432):
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432: run scripts/services.sh")
    name = f"modelyard_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    """A PostgreSQL database of this test's own: a reconciler here sees no other test's requests."""
    import psycopg

    if not _reachable("127.0.0.1", 5432):
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432: run scripts/services.sh")
    name = f"modelyard_chaos_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on its own PostgreSQL database, artifacts proxied to a folder."""
    import psycopg

    name = f"modelyard_mlflow_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed after the server stops
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"{base}/{name}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health", proc, folder / "server.log", timeout=120)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout} s: {log.read_text()[-3000:]}")


@dataclass
class Worker:
    proc: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker and its pool children: nothing gets to clean up."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


def _spawn(log: Path, args: list[str], env: dict[str, str], ready: str, what: str) -> Worker:
    """Run `modelyard ARGS` in its own session with the given environment; wait for `ready` in its log."""
    out = open(log, "wb")  # noqa: SIM115 - the process writes it until its fixture stops it
    full_env = {**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelyard.platform.cli.main", *args],
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=PROJECT,
    )
    started = Worker(proc, log)
    deadline = time.monotonic() + 60
    while ready not in started.text():
        if proc.poll() is not None or time.monotonic() > deadline:
            started.kill()
            raise RuntimeError(f"{what} did not start: {started.text()[-3000:]}")
        time.sleep(0.2)
    return started


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator:
    """Start `modelyard run Q` (a worker on those queues) with the given environment; killed after the test."""
    started: list[Worker] = []

    def start(env: dict[str, str], queues: str = "train") -> Worker:
        log = tmp_path / f"worker-{len(started)}.log"
        started.append(_spawn(log, ["run", *queues.split(",")], env, "ready.", "worker"))
        return started[-1]

    yield start
    for worker in started:  # disposable: no warm shutdown (it took 5 s a worker); the queue is the test's own
        worker.kill()


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator:
    """Start `modelyard up` (workers, beat, the reconciler) with the given environment; stopped after the test."""
    started: list[Worker] = []

    def start(env: dict[str, str], *only: str) -> Worker:
        only = only or ("train", "export", "monitor", "beat")  # the API only where a test asks for it: it has a port
        log = tmp_path / f"up-{len(started)}.log"
        args = ["up", *(a for part in only for a in ("--only", part))]
        started.append(_spawn(log, args, env, "modelyard up (", "modelyard up"))
        return started[-1]

    yield start
    for up in started:  # gracefully: `up` stops its children, which live in sessions of their own
        up.stop()


@dataclass
class Api:
    """A `modelyard run api` process and how to reach it."""

    url: str
    process: Worker

    def headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator:
    """Start `modelyard run api` on a free port of 127.0.0.1 with the given environment; stopped after the test."""
    started: list[Worker] = []

    def start(env: dict[str, str]) -> Api:
        port = _free_port()
        log = tmp_path / f"api-{len(started)}.log"
        env = {**env, "MODELYARD_API_PORT": str(port), "MODELYARD_API_HOST": "127.0.0.1"}
        started.append(_spawn(log, ["run", "api"], env, "Uvicorn running on", "modelyard run api"))
        return Api(f"http://127.0.0.1:{port}", started[-1])

    yield start
    for api in started:
        api.stop()


def env_of(settings) -> dict[str, str]:
    """The MODELYARD_* variables that reproduce these settings in a subprocess."""
    env = {}
    for key, value in settings.model_dump().items():
        if value is not None:
            env[f"MODELYARD_{key.upper()}"] = str(value)
    return env
