"""The HTTP service as a client sees it: a real `modelyard run api` process on 127.0.0.1, real
sockets, MLflow and the platform database on SQLite (embedded mode), models trained and
exported for real. Clients not written here: tritonclient (the Open Inference Protocol) and
schemathesis (fuzzing from the OpenAPI schema)."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import tiny_spec
from tests.integration.conftest import Api, _free_port, _spawn

pytestmark = pytest.mark.integration

# The scope each operation needs; the auth test fails when a route is added without a row here.
SCOPES = {
    ("GET", "/v2"): "read",
    ("GET", "/v1/models"): "read",
    ("GET", "/v1/models/{name}"): "read",
    ("GET", "/v1/models/{name}/versions"): "read",
    ("GET", "/v1/models/{name}/versions/{version}"): "read",
    ("GET", "/v1/models/{name}/history"): "read",
    ("POST", "/v1/models/{name}/promote"): "operate",
    ("POST", "/v1/models/{name}/rollback"): "operate",
    ("POST", "/v1/models/{name}/versions/{version}/export"): "operate",
    ("GET", "/v1/models/{name}/drift"): "read",
    ("POST", "/v1/models/{name}/retrain"): "operate",
    ("POST", "/v1/trainings"): "operate",
    ("GET", "/v1/trainings"): "read",
    ("GET", "/v1/trainings/{request_id}"): "read",
    ("POST", "/v1/models/{name}/feedback"): "ingest",
    ("POST", "/v1/models/{name}/inferences"): "ingest",
    ("GET", "/v1/tokens"): "admin",
    ("POST", "/v1/tokens"): "admin",
    ("DELETE", "/v1/tokens/{name}"): "admin",
    ("GET", "/v2/models/{name}"): "read",
    ("GET", "/v2/models/{name}/versions/{version}"): "read",
    ("GET", "/v2/models/{name}/ready"): "read",
    ("GET", "/v2/models/{name}/versions/{version}/ready"): "read",
    ("POST", "/v2/models/{name}/infer"): "infer",
    ("POST", "/v2/models/{name}/versions/{version}/infer"): "infer",
    ("POST", "/v1/devices/enrollment-tokens"): "admin",
    ("GET", "/v1/devices"): "read",
    ("POST", "/v1/devices/{device_id}/decommission"): "operate",
    ("POST", "/v1/models/{name}/bundles"): "operate",
    ("GET", "/v1/bundles/{name}/{version}/{target}"): "read",  # or a device credential
    ("POST", "/v1/rollouts"): "operate",
    ("GET", "/v1/rollouts"): "read",
    ("GET", "/v1/rollouts/{rollout_id}"): "read",
    ("POST", "/v1/rollouts/{rollout_id}/pause"): "operate",
    ("POST", "/v1/rollouts/{rollout_id}/resume"): "operate",
    ("POST", "/v1/rollouts/{rollout_id}/abort"): "operate",
}
OPEN = {("GET", "/v2/health/live"), ("GET", "/v2/health/ready")}
# Devices authenticate with their own credential (from enrollment), never with an API token.
DEVICE = {
    ("POST", "/v1/devices/{device_id}/heartbeat"),
    ("POST", "/v1/devices/{device_id}/reports"),
    ("POST", "/v1/devices/{device_id}/telemetry"),
}
ENROLL = {("POST", "/v1/devices/enroll")}  # the one-time enrollment token is in the body
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class Served:
    def __init__(self, api: Api, home: Path, tokens: dict[str, str], env: dict[str, str]) -> None:
        self.api, self.home, self.tokens, self.env = api, home, tokens, env
        self.url = api.url

    def call(self, method: str, path: str, token: str | None = "admin", **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.tokens[token]}"} if token else {}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)


def _digits(n: int, seed: int = 0) -> np.ndarray:
    from sklearn.datasets import load_digits

    x = load_digits().images.astype(np.float32)[:, :, :, None] / 16.0
    return x[np.random.default_rng(seed).choice(len(x), n, replace=False)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Two exported versions of `digits` (v2 champion, v1 previous), a server, a token per scope."""
    from modelyard.platform.context import Platform
    from modelyard.platform.services.training import TrainRequest, run_training
    from modelyard.platform.settings import Settings
    from modelyard.platform.store.tokens import SCOPES as ALL_SCOPES
    from modelyard.platform.store.tokens import TokenStore

    folder = tmp_path_factory.mktemp("api")
    home = folder / "home"
    env = {"MODELYARD_HOME": str(home)}
    saved = {k: v for k, v in os.environ.items() if k.startswith("MODELYARD_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        settings = Settings()
        platform = Platform(settings)
        for seed in (1, 2):
            run_training(platform, TrainRequest(request_id=f"api-{seed}", spec=tiny_spec("digits", seed=seed)))
        from modelyard.platform.fleet.bundles import create_keys

        create_keys(platform)  # devices can enroll
        store = TokenStore(settings)
        tokens = {scope: store.create(f"t-{scope}", [scope], "test") for scope in ALL_SCOPES}
        tokens["revoked"] = store.create("t-revoked", list(ALL_SCOPES), "test")
        store.revoke("t-revoked")
    finally:
        for key in env:
            del os.environ[key]
        os.environ.update(saved)
    port = _free_port()
    env |= {"MODELYARD_API_PORT": str(port), "MODELYARD_SERVE_POLL_SECONDS": "0.2"}
    process = _spawn(folder / "api.log", ["run", "api"], env, "Uvicorn running on", "modelyard run api")
    try:
        yield Served(Api(f"http://127.0.0.1:{port}", process), home, tokens, env)
    finally:
        process.stop()


def _in_process(served: Served, version: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    path = next((served.home / "serving" / "digits" / version).glob("*.onnx"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})[0]


def test_an_existing_oip_client_gets_metadata_and_the_same_outputs_as_onnx_runtime(served: Served) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(served.url.removeprefix("http://"))

    def auth() -> dict[str, str]:  # tritonclient adds its own headers to the dict it is given
        return {"Authorization": f"Bearer {served.tokens['infer']}"}

    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits", headers={"Authorization": f"Bearer {served.tokens['read']}"})
    meta = client.get_model_metadata("digits", headers={"Authorization": f"Bearer {served.tokens['read']}"})
    assert meta["versions"] == ["2"]
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]

    x = _digits(5)
    for binary in (True, False):  # Triton's binary tensor extension, and plain JSON tensors
        tensor = triton.InferInput("images", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        wanted = triton.InferRequestedOutput("output", binary_data=binary)
        result = client.infer("digits", [tensor], outputs=[wanted], headers=auth(), request_id=f"oip-{binary}")
        assert result.get_response()["model_version"] == "2" and result.get_response()["id"] == f"oip-{binary}"
        np.testing.assert_allclose(result.as_numpy("output"), _in_process(served, "2", x), rtol=1e-6, atol=1e-7)

    pinned = client.infer("digits", [tensor], model_version="1", headers=auth())  # an explicit version
    assert pinned.get_response()["model_version"] == "1"
    np.testing.assert_allclose(pinned.as_numpy("output"), _in_process(served, "1", x), rtol=1e-6, atol=1e-7)


def test_inputs_are_checked_against_the_signature(served: Served) -> None:
    row = _digits(1).reshape(-1).tolist()

    def infer(tensor: dict[str, Any]) -> requests.Response:
        return served.call("POST", "/v2/models/digits/infer", "infer", json={"inputs": [tensor]})

    good = {"name": "images", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": row}
    assert infer(good).status_code == 200
    cases = [
        ({**good, "name": "image"}, "digits/2 has no input 'image' (inputs: images)."),
        ({**good, "datatype": "INT64"}, "input 'images' of digits/2 must have datatype FP32, not INT64."),
        (
            {**good, "shape": [1, 64]},
            "input 'images' of digits/2 must have shape [-1, 8, 8, 1] (-1: any size), not [1, 64].",
        ),
        ({**good, "data": row[:10]}, "input 'images' of digits/2 has 10 values; shape [1, 8, 8, 1] needs 64."),
        ({**good, "data": ["x"] * 64}, "input 'images' of digits/2 holds data that is not of its datatype."),
    ]
    for tensor, sentence in cases:
        answer = infer(tensor)
        assert (answer.status_code, answer.json()) == (400, {"error": sentence, "code": "invalid_input"})
    missing = served.call("POST", "/v2/models/nope/infer", "infer", json={"inputs": [good]})
    assert (missing.status_code, missing.json()["code"]) == (404, "model_not_found")
    big = served.call("POST", "/v2/models/digits/infer", "infer", data=b"x" * (9 * 1024 * 1024))
    assert (big.status_code, big.json()["code"]) == (413, "body_too_large")
    assert "Traceback" not in big.text


def test_every_endpoint_refuses_a_missing_revoked_or_underscoped_token(served: Served) -> None:
    schema = requests.get(served.url + "/openapi.json", timeout=10).json()
    operations = {(m.upper(), p) for p, item in schema["paths"].items() for m in item}
    assert operations == set(SCOPES) | OPEN | DEVICE | ENROLL, "a route without a row in SCOPES (or one gone)"
    values = {"name": "digits", "version": "2", "request_id": "api-1", "device_id": "d1", "rollout_id": "1"}
    values["target"] = "edge-cpu"
    for (method, path), scope in SCOPES.items():
        url = path.format(**values)
        body = {"json": {"bogus": 1}} if method == "POST" else {}  # invalid on purpose: no side effect once past auth
        for token, status, code in ((None, 401, "unauthenticated"), ("revoked", 401, "unauthenticated")):
            answer = served.call(method, url, token, **body)
            assert (answer.status_code, answer.json()["code"]) == (status, code), (method, path, token)
            assert answer.headers["www-authenticate"] == "Bearer"
        for other in ("read", "infer", "ingest", "operate", "admin"):
            answer = served.call(method, url, other, **body)
            allowed = other in (scope, "admin")
            if allowed:
                assert answer.status_code not in (401, 403), (method, path, other, answer.text)
            else:
                assert (answer.status_code, answer.json()["code"]) == (403, "forbidden"), (method, path, other)
                assert answer.json()["error"] == f"token 't-{other}' lacks the '{scope}' scope this endpoint needs."
    for method, path in OPEN:
        assert served.call(method, path, None).status_code == 200
    for method, path in DEVICE:  # no API token opens a device's route, not even admin
        for token in (None, "revoked", "admin"):
            answer = served.call(method, path.format(**values), token, json={"bogus": 1})
            assert (answer.status_code, answer.json()["code"]) == (401, "unauthenticated"), (path, token)
    answer = served.call("POST", "/v1/devices/enroll", None, json={"token": "enr_nope", "device_id": "d1"})
    assert answer.status_code == 401, answer.text
    metrics = served.call("GET", "/metrics", None)
    assert metrics.status_code == 401 and served.call("GET", "/metrics", "read").status_code == 200


def test_tokens_are_stored_hashed_and_revocation_through_the_api_is_immediate(served: Served) -> None:
    made = served.call("POST", "/v1/tokens", json={"name": "ci-bot", "scopes": ["read"]})
    assert made.status_code == 201
    token = made.json()["token"]
    assert requests.get(served.url + "/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=10).ok
    with open(served.home / "platform.db", "rb") as db:
        assert token.encode() not in db.read()  # only its SHA-256 is stored
    listed = {t["name"]: t for t in served.call("GET", "/v1/tokens").json()}
    assert listed["ci-bot"]["scopes"] == ["read"] and listed["ci-bot"]["last_used"] is not None
    assert served.call("DELETE", "/v1/tokens/ci-bot").json()["revoked"] is not None
    after = requests.get(served.url + "/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert after.status_code == 401
    again = served.call("POST", "/v1/tokens", json={"name": "ci-bot", "scopes": ["read"]})
    assert (again.status_code, again.json()["code"]) == (409, "token_exists")


def test_registry_routes_answer_like_the_cli(served: Served) -> None:
    import subprocess
    import sys

    def cli(*args: str) -> Any:
        env = {**os.environ, **served.env}
        done = subprocess.run(
            [sys.executable, "-m", "modelyard.platform.cli.main", *args, "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(done.stdout)

    assert served.call("GET", "/v1/models", "read").json() == cli("models", "list")
    assert served.call("GET", "/v1/models/digits/versions", "read").json() == cli("versions", "list", "digits")
    assert served.call("GET", "/v1/models/digits/history", "read").json() == cli("models", "history", "digits")
    detail = served.call("GET", "/v1/models/digits/versions/champion", "read").json()
    assert detail["version"] == "2" and detail["export"]["targets"]["server-cpu"]["chosen"]
    assert "test_accuracy" in detail["metrics"]
    unknown = served.call("GET", "/v1/models/nope/history", "read")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "model 'nope' is not registered.", "code": "model_not_found"}
    no_version = served.call("GET", "/v1/models/digits/versions/9", "read").json()
    assert no_version == {
        "error": "model 'digits' has no version 9 (it has versions 1 to 2).",
        "code": "version_not_found",
    }
    bad = served.call("POST", "/v1/trainings", "operate", json={"spec": "name: x\nepochs: [1"})
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_spec")
    # A spec sent over HTTP reads no file outside the data folder, fetches no URL, runs no custom code.
    for dataset in ("data.csv", "/etc/passwd", "https://169.254.169.254/latest", f"{served.home}/data/../platform.db"):
        refused = served.call(
            "POST", "/v1/trainings", "operate", json={"spec": {**tiny_spec("x"), "dataset": {"source": dataset}}}
        )
        assert (refused.status_code, refused.json()["code"]) == (422, "invalid_spec"), dataset
        assert "MODELYARD_API_DATA_ROOT" in refused.json()["error"]
    custom = {**tiny_spec("x"), "architecture": {"name": "os:system", "params": {"command": "true"}}}
    refused = served.call("POST", "/v1/trainings", "operate", json={"spec": custom})
    assert refused.status_code == 422 and "custom code" in refused.json()["error"]
    bomb = "a: &a [1, 1]\nb: &b [*a, *a]\nc: [*b, *b]\n"
    refused = served.call("POST", "/v1/trainings", "operate", json={"spec": bomb})
    assert refused.status_code == 422 and "YAML aliases" in refused.json()["error"]
    queued = served.call("POST", "/v1/trainings", "operate", json={"spec": tiny_spec("queued"), "request_id": "q-1"})
    assert queued.status_code == 202 and queued.json() == {"request_id": "q-1", "model": "queued", "new": True}
    again = served.call("POST", "/v1/trainings", "operate", json={"spec": tiny_spec("queued"), "request_id": "q-1"})
    assert again.json()["new"] is False  # idempotent on the request id
    status = served.call("GET", "/v1/trainings/q-1", "read").json()
    assert status["state"] == "queued" and status["model"] == "queued"
    nothing = served.call("POST", "/v1/models/digits/rollback", "operate", json={"to": "7"})
    assert nothing.status_code in (404, 409) and nothing.json()["code"] != "internal"


def test_predictions_are_logged_and_feedback_and_uploads_join_them(served: Served) -> None:
    x = _digits(2, seed=3)
    tensor = {"name": "images", "shape": [2, 8, 8, 1], "datatype": "FP32", "data": x.reshape(-1).tolist()}
    answer = served.call("POST", "/v2/models/digits/infer", "infer", json={"id": "fb-1", "inputs": [tensor]})
    assert answer.status_code == 200
    labels = {"labels": [{"request_id": "fb-1#0", "label": 3.0}, {"request_id": "fb-1#1", "label": "5"}]}
    stored = served.call("POST", "/v1/models/digits/feedback", "ingest", json=labels)
    assert (stored.status_code, stored.json()) == (200, {"stored": 2})
    outside = {"labels": [{"request_id": "fb-1#0", "label": 10}]}
    refused = served.call("POST", "/v1/models/digits/feedback", "ingest", json=outside)
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_label", refused.text
    assert "label 10 of feedback item 1 is not one of the classes of digits/2" in refused.json()["error"]
    unknown = served.call(
        "POST",
        "/v1/models/digits/feedback",
        "ingest",
        json={"labels": [{"request_id": "fb-1#0", "label": 1}, {"request_id": "never", "label": 1}]},
    )
    assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_request_id"
    assert "'never'" in unknown.json()["error"]

    row = {"images": x[0].tolist()}
    record = {"request_id": "dev-7", "version": "1", "inputs": row, "outputs": {"output": [0.1] * 10}}
    uploaded = served.call(
        "POST", "/v1/models/digits/inferences", "ingest", json={"records": [record], "source": "device-7"}
    )
    assert (uploaded.status_code, uploaded.json()) == (200, {"stored": 1})
    wrong = served.call(
        "POST",
        "/v1/models/digits/inferences",
        "ingest",
        json={"records": [record, {**record, "request_id": "dev-8", "inputs": {"pixels": [1.0]}}]},
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "record 1 (request id dev-8): digits/1 has no input 'pixels' (inputs: images)."
    short = {**record, "request_id": "dev-9", "outputs": {"output": [0.1] * 9}}  # outputs are checked too
    refused = served.call("POST", "/v1/models/digits/inferences", "ingest", json={"records": [short]})
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        "record 0 (request id dev-9): output 'output' of digits/1 must have shape [-1, 10] (-1: any size), not [1, 9]."
    )

    from modelyard.platform.settings import Settings
    from modelyard.platform.store.inference import InferenceLog

    log = InferenceLog(Settings(home=served.home))
    rows = {r.request_id: r for r in log.recent("digits", 1000)}
    assert rows["fb-1#1"].version == "2" and rows["fb-1#1"].source == "server"
    np.testing.assert_allclose(np.asarray(rows["fb-1#1"].inputs["images"]), x[1])
    assert rows["dev-7"].source == "device-7" and "dev-8" not in rows  # the bad batch stored nothing
    assert log.labels("digits") == {"fb-1#0": 3, "fb-1#1": 5}


def test_hot_swap_under_load_fails_no_request_and_serves_the_new_champion(served: Served) -> None:
    from modelyard.platform.settings import Settings
    from modelyard.platform.store.audit import AuditLog

    x = _digits(1, seed=4)
    body = json.dumps(
        {"inputs": [{"name": "images", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    )
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {served.tokens['infer']}"
            while not stop.is_set():
                try:
                    answer = session.post(served.url + "/v2/models/digits/infer", data=body, timeout=10)
                    if answer.status_code != 200:
                        failures.append(f"{answer.status_code} {answer.text}")
                    else:
                        seen.append(answer.json()["model_version"])
                except requests.RequestException as err:
                    failures.append(repr(err))

    def wait_for(version: str) -> None:
        deadline = time.monotonic() + 30
        start = len(seen)
        while version not in seen[start:]:
            assert time.monotonic() < deadline, f"v{version} never served; saw {set(seen[start:])}"
            time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        wait_for("2")
        promoted = served.call("POST", "/v1/models/digits/promote", "operate", json={"version": "1", "reason": "swap"})
        assert promoted.status_code == 200, promoted.text
        wait_for("1")
        back = served.call("POST", "/v1/models/digits/rollback", "operate", json={"reason": "swap back"})
        assert back.status_code == 200, back.text
        wait_for("2")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    switches = [b for a, b in itertools.pairwise(seen) if a != b]
    assert len(seen) > 100 and "1" in switches and "2" in switches
    moves = AuditLog(Settings(home=served.home)).history("digits", kinds=("alias_set",))
    champion = [(e.to_version, e.actor, e.reason) for e in moves if e.alias == "champion"]
    assert champion[-2:] == [("1", "t-operate", "swap"), ("2", "t-operate", "swap back")]  # the token's name
    metrics = served.call("GET", "/metrics", "read").text
    assert 'modelyard_hot_swaps_total{model="digits"}' in metrics and "modelyard_batch_rows_bucket" in metrics


def test_modelyard_up_serves_the_api(served: Served, start_up) -> None:
    """Embedded mode: `modelyard up --only api` (what plain `up` starts beside the workers) answers on its port."""
    port = _free_port()
    up = start_up({**served.env, "MODELYARD_API_PORT": str(port)}, "api")
    assert f"API on http://127.0.0.1:{port}" in up.text()
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, up.text()[-2000:]
        time.sleep(0.3)
    tensor = {"name": "images", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": _digits(1).reshape(-1).tolist()}
    answer = requests.post(
        f"http://127.0.0.1:{port}/v2/models/digits/infer",
        json={"inputs": [tensor]},
        headers={"Authorization": f"Bearer {served.tokens['infer']}"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["model_version"] == "2"


def test_fuzzing_from_the_openapi_schema_finds_no_server_error(served: Served) -> None:
    """Property-based, every operation, inputs valid and invalid by the schema (last in this module: it
    changes state): no 5xx, and every status, content type and body as the schema documents them."""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_url(served.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {served.tokens['admin']}"}
    failures: list[str] = []
    calls = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(SCOPES) + len(OPEN) + len(DEVICE) + len(ENROLL)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: Any) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                fuzz()
            except Unsatisfiable:  # nothing to make invalid: an operation without parameters or body
                assert mode == GenerationMode.NEGATIVE and not list(operation.iter_parameters()), operation.label
            except Exception as err:  # every operation's first failure, then one assertion
                failures.append(f"{operation.label} ({mode.value}): {str(err)[:800]}")
    assert failures == [], "\n\n".join(failures)
    assert calls > 400, calls
    assert "Traceback" not in served.api.process.text()
