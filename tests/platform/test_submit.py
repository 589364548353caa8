"""The client side of a request: validation before anything is queued, and following it.

Embedded mode, real Celery result backend (files under a temporary home), no worker.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from modelyard.errors import SpecError
from tests.conftest import tiny_spec


def write_spec(folder: Path, spec: dict) -> Path:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_follow_reads_each_task_once_per_poll(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state can change between two reads of the backend (here: every third read finds
    nothing, as when a worker rewrites its result file). A poll that checks one read and
    uses another crashes on that; follow() must not."""
    from modelyard.platform.queue.app import create_app
    from modelyard.platform.services.follow import follow
    from modelyard.platform.store.requests import RequestStore

    backend = create_app(settings).backend
    backend.store_result("r-1", {"stage": "training", "epoch": 1, "epochs": 2, "logs": {"loss": 0.5}}, "PROGRESS")
    real = type(backend).get_task_meta
    reads = {"n": 0}

    def flaky(self, task_id, cache=True):  # a real read, but every third one sees the state change
        reads["n"] += 1
        if task_id == "r-1" and reads["n"] % 3 == 0:
            return {"status": "PENDING", "result": None, "task_id": task_id}
        return real(self, task_id, cache)

    monkeypatch.setattr(type(backend), "get_task_meta", flaky)
    store = RequestStore(settings)
    store.create("r-1", "m", {}, "manual")

    from modelyard.platform.store.states import State

    def finish() -> None:  # the request goes through both stages, as workers would move it
        time.sleep(1.0)
        lease = store.claim_training("r-1", "w").lease
        store.advance(lease, State.REGISTERING)
        store.advance(lease, State.TRAINED, version="1")
        lease = store.claim_export("r-1", "e").lease
        store.advance(lease, State.SUCCEEDED, result={"version": "1", "status": "promoted"})

    threading.Thread(target=finish, daemon=True).start()
    assert follow(settings, "r-1", quiet=True, timeout=30) == {"version": "1", "status": "promoted"}
    assert reads["n"] >= 6  # it polled through several state changes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trigger": "foo"}, "trigger 'foo' is not one of manual, drift, schedule."),
        (
            {"request_id": "a b"},
            "request id 'a b' is not valid: use 1 to 100 letters, digits, '_', '.', ':' or '-'.",
        ),
    ],
)
def test_a_bad_request_is_one_sentence_and_queues_nothing(settings, tmp_path: Path, kwargs, message) -> None:
    from modelyard.platform.services.submit import submit_training
    from modelyard.platform.store.requests import RequestStore

    args = {"request_id": "ok-1", "trigger": "manual", **kwargs}
    with pytest.raises(SpecError) as raised:
        submit_training(settings, write_spec(tmp_path, tiny_spec("m")), args["request_id"], args["trigger"])
    assert str(raised.value) == message
    assert RequestStore(settings).get(args["request_id"]) is None
    assert not list(settings.queue_folder.glob("*"))  # nothing was queued


def test_a_bad_export_block_is_found_at_submission(settings, tmp_path: Path) -> None:
    from modelyard.platform.services.submit import submit_training

    spec = write_spec(tmp_path, tiny_spec("m", export={"opset": 3, "variants": ["fp32", "fp8"]}))
    with pytest.raises(SpecError) as raised:
        submit_training(settings, spec, "exp-1")
    assert str(raised.value).startswith(f"invalid training spec in {spec}: field 'export.")
    assert not list(settings.queue_folder.glob("*"))


def test_export_wait_gives_up_with_a_hint_when_no_worker_takes_it(settings) -> None:
    """A registered version (real MLflow on SQLite), no export worker: one sentence, exit 1, no hang."""
    import os
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from modelyard.platform.services.bootstrap import prepare_stores

    prepare_stores(settings)
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    client.create_registered_model("waits")
    client.create_model_version("waits", str(settings.root / "nowhere"))
    env = {**os.environ, "MODELYARD_HOME": str(settings.root), "COLUMNS": "300"}

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelyard.platform.cli.main",
            "versions",
            "export",
            "waits/1",
            "--wait",
            "--timeout",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: export of waits/1 did not finish within 2 s; it stays queued. "
        "No worker has taken it: start one with `modelyard up`."
    )
