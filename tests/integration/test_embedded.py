"""Embedded mode: kombu's filesystem queue, MLflow on SQLite, the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_spec
from tests.integration.conftest import PROJECT, env_of

pytestmark = pytest.mark.integration


def cli(settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_of(settings), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "modelyard.platform.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT,
    )


def cli_json(settings, *args: str):
    done = cli(settings, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def write(folder: Path, name: str, spec: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


BAD_CSVS = {
    "nan": ("a,b,label\n1,2,0\n3,,1\n", "column 'b' of dataset nan.csv has a missing value (NaN) in row 2 (line 3)."),
    "nolabel": (
        "a,b,target\n1,2,0\n3,4,1\n",
        "dataset nolabel.csv has no label column 'label' (its columns: a, b, target).",
    ),
    "string": (
        "a,b,label\n1,2,0\n3,red,1\n",
        "column 'b' of dataset string.csv is not numeric: value 'red' in row 2 (line 3).",
    ),
}


def test_cli_trains_on_filesystem_queue_and_refuses_bad_csvs(settings, start_worker, tmp_path: Path) -> None:
    start_worker(env_of(settings))
    start_worker(env_of(settings), "export")
    good = write(tmp_path, "good", tiny_spec("fs"))

    trained = cli(settings, "trainings", "start", str(good), "--wait")
    assert trained.returncode == 0, trained.stderr + trained.stdout
    assert "version 1: promoted" in trained.stdout
    assert "export: edge-cpu -> " in trained.stdout
    shown = cli(settings, "versions", "show", "fs@champion")
    assert "ONNX variants" in shown.stdout and "int8-static" in shown.stdout
    tags = cli_json(settings, "versions", "show", "fs/1")["tags"]
    assert tags["modelyard.export.status"] == "passed" and tags["modelyard.deployable"] == "true"
    exported = {
        p.relative_to(settings.root / "mlartifacts").as_posix().split("/artifacts/export/")[-1]
        for p in (settings.root / "mlartifacts").rglob("*")
        if "/artifacts/export/" in p.as_posix()
    }
    assert {
        "export_report.json",
        "export_plot.png",
        "model.onnx",
        "variants/int8-static.onnx",
        "triton/server-cpu/fs/config.pbtxt",
        "triton/server-cpu/fs/1/model.onnx",
    } <= exported
    config = next((settings.root / "mlartifacts").rglob("config.pbtxt")).read_text()
    assert 'name: "images"' in config and "dims: [ 8, 8, 1 ]" in config and "dynamic_batching" in config
    assert tags["modelyard.export.edge-cpu"] in ("fp32", "fp16", "int8-dynamic", "int8-static")

    for stem, (content, message) in BAD_CSVS.items():
        csv = tmp_path / f"{stem}.csv"
        csv.write_text(content)
        spec = tiny_spec("fs", dataset={"source": str(csv)}, architecture={"name": "mlp"})
        refused = cli(settings, "trainings", "start", str(write(tmp_path, stem, spec)), "--wait")
        assert refused.returncode == 1
        assert " ".join(refused.stderr.split()) == f"error: {message}"

    models = cli_json(settings, "models", "list")
    assert models == [{"name": "fs", "latest_version": "1", "aliases": {"champion": "1"}, "description": ""}]
    assert [(v["version"], v["aliases"]) for v in cli_json(settings, "versions", "list", "fs")] == [("1", ["champion"])]
    history = cli_json(settings, "models", "history", "fs")
    assert [e["kind"] for e in history].count("training_failed") == 3
    assert [(e["alias"], e["to"]) for e in history if e["kind"] == "alias_set"] == [
        ("challenger", "1"),
        ("champion", "1"),
    ]


def test_worker_rejects_a_bad_dataset_and_records_it(settings, start_worker, tmp_path: Path) -> None:
    """Straight onto the queue, past the CLI's early check: the worker refuses it the same way."""
    from modelyard.errors import DatasetError
    from modelyard.platform.queue.app import TRAIN_TASK, create_app
    from modelyard.platform.services.follow import follow
    from modelyard.platform.store.audit import AuditLog
    from modelyard.platform.store.requests import RequestStore

    csv = tmp_path / "nan.csv"
    csv.write_text("a,b,label\n" + "1,2,0\n" * 6 + "3,4,1\n" * 5 + "inf,4,1\n")
    spec = tiny_spec("direct", dataset={"source": str(csv)}, architecture={"name": "mlp"})
    start_worker(env_of(settings))

    create_app(settings).send_task(TRAIN_TASK, args=[{"request_id": "bad-1", "spec": spec}], task_id="bad-1")
    with pytest.raises(DatasetError) as raised:
        follow(settings, "bad-1", quiet=True, timeout=180)

    assert str(raised.value) == "column 'a' of dataset nan.csv has an infinite value in row 12 (line 13)."
    row = RequestStore(settings).get("bad-1")
    assert row is not None and row.status == "failed" and row.version is None
    assert [e.kind for e in AuditLog(settings).history("direct")] == ["training_failed"]


def test_pickled_message_is_refused(settings, start_worker) -> None:
    from modelyard.platform.queue.app import TRAIN_TASK, create_app

    worker = start_worker(env_of(settings))
    create_app(settings).send_task(
        TRAIN_TASK, args=[{"request_id": "p-1", "spec": tiny_spec("pickled")}], task_id="p-1", serializer="pickle"
    )
    import time

    deadline = time.monotonic() + 30
    while "untrusted content" not in worker.text().lower() and "contentdisallowed" not in worker.text().lower():
        assert time.monotonic() < deadline, worker.text()[-2000:]
        time.sleep(0.2)
    assert cli(settings, "versions", "list", "pickled").returncode == 1  # never registered


def test_demo_runs_the_whole_lifecycle(settings) -> None:
    done = cli(settings, "demo", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    models = cli_json(settings, "models", "list")
    assert models[0]["name"] == "digits-demo"
    assert models[0]["aliases"] == {"champion": "2", "challenger": "4"}
    versions = cli_json(settings, "versions", "list", "digits-demo")
    assert [v["aliases"] for v in versions] == [[], ["champion"], [], ["challenger"]]
    history = cli_json(settings, "models", "history", "digits-demo")
    assert [e["to"] for e in history if e["kind"] == "exported"] == ["1", "2", "3", "4"]
    assert "v1 exported to ONNX" in done.stdout
    gates = [(e["kind"], e["to"]) for e in history if e["kind"].startswith("gate_")]
    assert gates == [("gate_rejected", "1"), ("gate_passed", "2"), ("gate_passed", "3"), ("gate_rejected", "4")]
    v1_gate = next(e for e in history if e["kind"] == "gate_rejected")
    assert "does not beat the classical baseline's 0.9750" in v1_gate["reason"]
    champions = [(e["from"], e["to"], e["actor"]) for e in history if e["alias"] == "champion"]
    assert champions == [(None, "2", "gate"), ("2", "3", "gate"), ("3", "2", "demo")]
    assert "timeline of digits-demo" in done.stdout


def test_killed_worker_on_filesystem_queue_is_recovered(start_worker, tmp_path: Path, monkeypatch) -> None:
    """The filesystem queue has no visibility timeout: the reconciler re-publishes a stale training, once."""
    import time

    from celery.result import AsyncResult

    from modelyard.platform.context import Platform
    from modelyard.platform.queue.app import create_app
    from modelyard.platform.registry.mlflow_store import MlflowRegistry
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.reconcile import reconcile
    from modelyard.platform.services.submit import submit_training
    from modelyard.platform.settings import Settings
    from modelyard.platform.store.audit import AuditLog

    monkeypatch.setenv("MODELYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELYARD_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("MODELYARD_STALE_AFTER_SECONDS", "3")
    settings = Settings()
    doomed = start_worker(env_of(settings))
    submitted = submit_training(
        settings, write(tmp_path, "long", tiny_spec("fsk", epochs=25, early_stopping_patience=0)), "fs-kill-1"
    )
    progress = AsyncResult(submitted.request_id, app=create_app(settings))
    deadline = time.monotonic() + 180
    while not (progress.state == "PROGRESS" and (progress.info or {}).get("epoch", 0) >= 2):
        assert time.monotonic() < deadline, doomed.text()[-2000:]
        time.sleep(0.1)

    doomed.kill()
    start_worker(env_of(settings))  # no export worker: the takeover is under test, the export elsewhere
    deadline = time.monotonic() + 30
    while not (requeued := [a for a in reconcile(Platform(settings)) if a.action == "republished"]):
        assert time.monotonic() < deadline  # until its heartbeat is stale
        time.sleep(0.5)
    assert [(a.request_id, a.state) for a in requeued] == [("fs-kill-1", "training")]
    assert "stopped beating" in requeued[0].reason
    assert [a for a in reconcile(Platform(settings)) if a.action == "republished"] == []  # once per lease
    result = follow(settings, "fs-kill-1", quiet=True, timeout=300, until="trained")

    assert result["version"] == "1"
    assert [v.version for v in MlflowRegistry(settings.tracking_uri).list_versions("fsk")] == ["1"]
    assert "training_resumed" in [e.kind for e in AuditLog(settings).history("fsk")]
