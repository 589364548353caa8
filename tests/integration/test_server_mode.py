"""Server mode: Redis broker and results, an `mlflow server` on PostgreSQL, the platform
database on PostgreSQL, and real `modelyard run` processes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_spec
from tests.integration.conftest import env_of

pytestmark = pytest.mark.integration


@pytest.fixture
def server_settings(tmp_path: Path, redis_url: str, pg_url: str, mlflow_server: str, monkeypatch: pytest.MonkeyPatch):
    from modelyard.platform.settings import Settings

    env = {
        "MODELYARD_HOME": str(tmp_path / "home"),
        "MODELYARD_BROKER_URL": redis_url,
        "MODELYARD_RESULT_BACKEND": redis_url,
        "MODELYARD_MLFLOW_TRACKING_URI": mlflow_server,
        "MODELYARD_DATABASE_URL": pg_url,
        # Short enough that a killed worker's task comes back within the test.
        "MODELYARD_VISIBILITY_TIMEOUT": "8",
        "MODELYARD_REDELIVERY_CHECK_SECONDS": "1",
        "MODELYARD_HEARTBEAT_SECONDS": "1",
        "MODELYARD_STALE_AFTER_SECONDS": "4",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.mode == "server"
    return settings


def write_spec(folder: Path, spec: dict) -> Path:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_train_registers_promotes_and_dedups_on_redis(server_settings, start_worker, start_api, tmp_path: Path) -> None:
    from modelyard.platform.registry.mlflow_store import MlflowRegistry
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.submit import submit_training
    from modelyard.platform.store.audit import AuditLog

    name = f"srv-{uuid.uuid4().hex[:6]}"
    spec = write_spec(tmp_path, tiny_spec(name))
    first = submit_training(server_settings, spec, "req-1-" + name)
    second = submit_training(server_settings, spec, "req-1-" + name)  # the same request id, sent again
    worker = start_worker(env_of(server_settings))
    start_worker(env_of(server_settings), "export")

    result = follow(server_settings, first.request_id, quiet=True, timeout=240)
    deadline = time.monotonic() + 120
    done = f"Task modelyard.train[{first.request_id}] succeeded"
    while worker.text().count(done) < 2:  # Celery keeps the first success; the log shows the second delivery
        assert time.monotonic() < deadline, "the second delivery was never answered"
        time.sleep(0.2)

    registry = MlflowRegistry(server_settings.tracking_uri)
    assert first.new and not second.new
    assert result["status"] == "promoted" and result["version"] == "1"
    assert "'duplicate': True" in worker.text()
    assert [(v.version, v.aliases) for v in registry.list_versions(name)] == [("1", ["champion"])]
    champion = registry.get_alias(name, "champion")
    assert champion is not None and champion.version == "1"
    assert champion.tags["modelyard.request_id"] == "req-1-" + name
    assert len(champion.tags["modelyard.dataset_sha256"]) == 64
    kinds = [e.kind for e in AuditLog(server_settings).history(name)]
    assert kinds[:4] == ["registered", "alias_set", "exported", "gate_passed"]
    assert "alias_set" in kinds[4:]

    # The API in server mode: the champion served from the MLflow server's artifacts, the prediction
    # logged in PostgreSQL, the token checked against PostgreSQL.
    import requests

    from modelyard.platform.store.inference import InferenceLog
    from modelyard.platform.store.tokens import TokenStore

    token = TokenStore(server_settings).create(f"srv-{name}", ["infer"], "test")
    api = start_api(env_of(server_settings))
    tensor = {"name": "images", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.5] * 64}
    answer = requests.post(
        f"{api.url}/v2/models/{name}/infer",
        json={"id": f"srv-{name}", "inputs": [tensor]},
        headers=api.headers(token),
        timeout=60,
    )
    assert answer.status_code == 200 and answer.json()["model_version"] == "1", answer.text
    assert requests.get(f"{api.url}/v1/models", headers=api.headers(token), timeout=10).status_code == 403
    deadline = time.monotonic() + 10
    while not InferenceLog(server_settings).recent(name):
        assert time.monotonic() < deadline, "the prediction never reached the inference log"
        time.sleep(0.2)
    assert InferenceLog(server_settings).recent(name)[0].request_id == f"srv-{name}"
