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
    from modelyard.platform.jobs.celery_app import create_app
    from modelyard.platform.jobs.submit import follow
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

    def finish() -> None:
        time.sleep(1.0)
        store.update("r-1", None, status="succeeded", result={"version": "1", "status": "promoted"})

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
    from modelyard.platform.jobs.submit import submit_training
    from modelyard.platform.store.requests import RequestStore

    args = {"request_id": "ok-1", "trigger": "manual", **kwargs}
    with pytest.raises(SpecError) as raised:
        submit_training(settings, write_spec(tmp_path, tiny_spec("m")), args["request_id"], args["trigger"])
    assert str(raised.value) == message
    assert RequestStore(settings).get(args["request_id"]) is None
    assert not list(settings.queue_folder.glob("*"))  # nothing was queued


def test_a_bad_export_block_is_found_at_submission(settings, tmp_path: Path) -> None:
    from modelyard.platform.jobs.submit import submit_training

    spec = write_spec(tmp_path, tiny_spec("m", export={"opset": 3, "variants": ["fp32", "fp8"]}))
    with pytest.raises(SpecError) as raised:
        submit_training(settings, spec, "exp-1")
    assert str(raised.value).startswith(f"invalid training spec in {spec}: field 'export.")
    assert not list(settings.queue_folder.glob("*"))
