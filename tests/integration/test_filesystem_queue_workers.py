"""Real Celery workers on the embedded queue while several processes send big messages at once.

Two export+monitor workers, started with the argv `modelyard up` gives them, drain the queue
that four sender processes fill through create_app, as the API, beat and the CLI do. The
messages name a task no worker has, so nothing but the broker is exercised: each worker logs
the message's headers and records a NotRegistered failure, once per message it received.
With kombu's own filesystem transport a worker stopped with "Unrecoverable error:
JSONDecodeError" and messages were lost (tests/platform/test_filesystem_queue.py has the
side-by-side run); here both workers stay up and each message is received exactly once.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # two workers start in about 30 s

PROBE = "modelyard.monitor.fsq-probe"  # routed to the monitor queue, registered nowhere
SENDERS, PER_SENDER, PAD = 4, 25, 256 * 1024


def _send(settings: Any, ids: list[str]) -> None:
    from modelyard.platform.queue.app import create_app

    app = create_app(settings)
    pad = "x" * PAD
    with app.producer_or_acquire() as producer:
        for task_id in ids:
            app.send_task(PROBE, args=[pad], task_id=task_id, producer=producer)


def _start(settings: Any, log: Path, name: str) -> subprocess.Popen[bytes]:
    from modelyard.platform.worker.supervisor import worker_argv

    argv = worker_argv(settings, ["export", "monitor"], 2, name=name)
    out = open(log, "wb")  # noqa: SIM115 - the worker writes it until the test kills it
    env = {**os.environ, "MODELYARD_HOME": str(settings.home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120  # a worker preloads MLflow and the platform: 20 s on 2 busy cores
    while "ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_workers_survive_concurrent_big_messages_and_get_each_once(settings: Any, tmp_path: Path) -> None:
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [_start(settings, log, f"fsq{i}") for i, log in enumerate(logs)]  # started side by side
    try:
        for w, log in zip(workers, logs, strict=True):
            _wait_ready(w, log)
        ids = [[str(uuid.uuid4()) for _ in range(PER_SENDER)] for _ in range(SENDERS)]
        ctx = multiprocessing.get_context("fork")
        senders = [ctx.Process(target=_send, args=(settings, chunk)) for chunk in ids]
        for p in senders:
            p.start()
        for p in senders:
            p.join(60)
            assert p.exitcode == 0
        sent = {i for chunk in ids for i in chunk}
        results = settings.root / "celery" / "results"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = {p.name.removeprefix("celery-task-meta-") for p in results.iterdir()}
            if sent <= done or any(w.poll() is not None for w in workers):
                break
            time.sleep(0.2)
        text = "".join(log.read_text(errors="replace") for log in logs)
        for w, log in zip(workers, logs, strict=True):
            assert w.poll() is None, f"a worker died: {log.read_text(errors='replace')[-3000:]}"
        assert "Unrecoverable error" not in text
        assert "JSONDecodeError" not in text
        assert sent <= done, f"{len(sent - done)} of {len(sent)} messages never reached a worker"
        received = Counter(re.findall(r"'id': '([0-9a-f-]{36})'", text))
        assert set(received) == sent
        assert set(received.values()) == {1}, "a message reached a worker twice"
        left = [n for n in os.listdir(settings.queue_folder) if n.endswith(".msg") or n.endswith(".tmp")]
        assert left == []
    finally:
        for w in workers:
            _kill(w)
