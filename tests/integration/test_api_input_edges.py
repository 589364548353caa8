"""The API's input edges as a client meets them: a real `modelyard run api` process on 127.0.0.1, raw
sockets where a client library would tidy the request up, tritonclient (the Open Inference Protocol)
where one exists. The model is the tiny ONNX graph of tests/conftest.py, registered as exported."""

from __future__ import annotations

import http.client
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from modelyard import __version__
from modelyard.trainers.spec import MAX_SPEC_CHARS, MAX_SPEC_DEPTH
from tests.conftest import tiny_onnx, tiny_spec
from tests.integration.conftest import Worker, _free_port, _spawn

pytestmark = pytest.mark.integration
INFER = "/v2/models/tiny/versions/1/infer"
GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}


@dataclass
class Server:
    url: str
    port: int
    token: str
    process: Worker

    def call(self, method: str, path: str, token: bool = True, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def raw(self, request: bytes) -> bytes:
        """Send bytes as they are on a new connection; what comes back before the server closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)


def _register_tiny(settings: Any, folder: Path) -> None:
    """Version 1 of `tiny`, exported for server-cpu as variant fp32 (y = x @ w, FP32 batch x 3 -> batch x 2)."""
    from mlflow.tracking import MlflowClient

    from modelyard.platform.registry.base import EXPORT_TAG
    from modelyard.platform.registry.tracking import experiment_for, use_tracking

    use_tracking(settings)
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    run = client.create_run(experiment_for(settings, "tiny"))
    client.log_artifact(run.info.run_id, str(tiny_onnx(folder / "fp32.onnx")), "export/variants")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("tiny")
    version = client.create_model_version("tiny", f"runs:/{run.info.run_id}/export", run.info.run_id).version
    client.set_model_version_tag("tiny", version, f"{EXPORT_TAG}.server-cpu", "fp32")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from modelyard.platform.services.bootstrap import prepare_stores
    from modelyard.platform.settings import Settings
    from modelyard.platform.store.tokens import TokenStore

    folder = tmp_path_factory.mktemp("edges")
    env = {"MODELYARD_HOME": str(folder / "home")}
    saved = {k: v for k, v in os.environ.items() if k.startswith("MODELYARD_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        settings = Settings()
        prepare_stores(settings)
        _register_tiny(settings, folder)
        token = TokenStore(settings).create("t-edges", ["read", "infer", "operate"], "test")
    finally:
        for key in env:
            del os.environ[key]
        os.environ.update(saved)
    port = _free_port()
    env |= {"MODELYARD_API_PORT": str(port), "MODELYARD_API_HOST": "127.0.0.1"}
    process = _spawn(folder / "api.log", ["run", "api"], env, "Uvicorn running on", "modelyard run api")
    try:
        yield Server(f"http://127.0.0.1:{port}", port, token, process)
    finally:
        process.stop()
        assert "Traceback" not in process.text()  # every bad input above was one sentence, never a 500


def _triton(server: Server) -> Any:
    import tritonclient.http as triton

    return triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=30)


def test_binary_tensors_with_nan_or_infinity_are_refused_as_json_ones_are(server: Server) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = _triton(server)
    for bad in (np.nan, np.inf):
        tensor = triton.InferInput("x", [1, 3], "FP32")
        tensor.set_data_from_numpy(np.array([[1.0, bad, 2.0]], dtype=np.float32), binary_data=True)
        with pytest.raises(InferenceServerException) as err:
            client.infer("tiny", [tensor], model_version="1", headers={"Authorization": f"Bearer {server.token}"})
        assert err.value.message() == "input 'x' of tiny/1 holds NaN or infinite values."
        assert err.value.status() == "400"
    good = triton.InferInput("x", [1, 3], "FP32")
    good.set_data_from_numpy(np.array([[1.0, 2.0, 3.0]], dtype=np.float32), binary_data=True)
    result = client.infer("tiny", [good], model_version="1", headers={"Authorization": f"Bearer {server.token}"})
    np.testing.assert_allclose(result.as_numpy("y"), [[22.0, 28.0]])


def test_json_fp32_data_takes_numbers_not_strings_or_booleans(server: Server) -> None:
    assert server.call("POST", INFER, json=GOOD).status_code == 200
    for data in (["0.5", 2.0, 3.0], [True, 2.0, 3.0], [1.0, 2.0, False]):
        body = {"inputs": [{**GOOD["inputs"][0], "data": data}]}
        answer = server.call("POST", INFER, json=body)
        assert (answer.status_code, answer.json()) == (
            400,
            {"error": "input 'x' of tiny/1 holds data that is not of its datatype.", "code": "invalid_input"},
        ), data


def test_server_metadata_is_served_at_v2(server: Server) -> None:
    meta = _triton(server).get_server_metadata(headers={"Authorization": f"Bearer {server.token}"})
    assert meta == {"name": "modelyard", "version": __version__, "extensions": ["binary_tensor_data"]}
    assert server.call("GET", "/v2", token=False).status_code == 401  # like the models' metadata: scope read


def test_server_metadata_answers_as_the_openapi_schema_documents(server: Server) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")  # the schema stays valid
    operations = {op.label: op for op in (result.ok() for result in schema.get_all_operations())}
    assert "POST /v2/models/{name}/infer" in operations
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    calls = 0

    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operations["GET /v2"].as_strategy())
    def fuzz(case: Any) -> None:
        nonlocal calls
        calls += 1
        case.call_and_validate(headers={"Authorization": f"Bearer {server.token}"}, checks=checks)

    fuzz()
    assert calls >= 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", INFER + "%0A"),
        ("POST", "/v2/models/tiny/infer%0a"),
        ("GET", "/v2/health/live%0A"),
        ("GET", "/v2/models/tiny%0D"),
        ("GET", "/v1/models%00"),
        ("GET", "/v1/mod%09els"),
    ],
)
def test_a_path_with_a_control_character_routes_nowhere(server: Server, method: str, path: str) -> None:
    answer = server.call(method, path, json=GOOD if method == "POST" else None)
    assert (answer.status_code, answer.json()["code"]) == (404, "not_found")
    # the path as sent (requests writes %0a as %0A)
    assert answer.json()["error"].lower() == f"no route {method} {path}: the path holds a control character.".lower()


def test_a_request_head_over_the_limit_is_refused_and_the_server_keeps_serving(server: Server) -> None:
    from modelyard.platform.api.middleware import MAX_HEADER_BYTES

    pad = b"a" * 1_000_000
    refusal = b'{"error": "the request\'s headers are larger than %d bytes.", "code": "headers_too_large"}'
    for request in (
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + pad + b"\r\n\r\n",
        b"GET /v2/health/live?" + pad + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # the request line counts too
    ):
        started = time.perf_counter()
        answer = server.raw(request)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert answer.endswith(refusal % MAX_HEADER_BYTES)
        assert time.perf_counter() - started < 5
    # Under the limit, request after request on one connection: each head is counted on its own.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    sockets = set()
    for _ in range(4):
        connection.request("GET", "/v2/health/live", headers={"X-Pad": "b" * (MAX_HEADER_BYTES // 2)})
        reply = connection.getresponse()
        assert (reply.status, reply.read()) == (200, b'{"live":true}')
        sockets.add(id(connection.sock))
    assert len(sockets) == 1  # one connection, kept alive
    connection.close()
    # A large body sent in one write is no head: it reaches the app (which names what is wrong with it).
    big = server.call("POST", "/v1/trainings", json={"spec": "#" * (2 * MAX_SPEC_CHARS)})
    assert big.status_code == 422 and "is longer than" in big.json()["error"]
    assert server.call("GET", "/v2/health/live", token=False).json() == {"live": True}


@pytest.mark.timeout(120)
def test_a_training_spec_too_deep_or_too_long_is_one_sentence_at_once(server: Server) -> None:
    lists: list = []
    for _ in range(MAX_SPEC_DEPTH):
        lists = [lists]
    deep_json = tiny_spec("deep", export={"k": lists})  # a JSON object, MAX_SPEC_DEPTH + 3 levels deep
    cases = [
        ("[" * 3_000 + "]" * 3_000, f"nests lists or mappings deeper than {MAX_SPEC_DEPTH} levels at line 1."),
        ("- " * 3_000 + "x", f"nests lists or mappings deeper than {MAX_SPEC_DEPTH} levels at line 1."),
        (deep_json, f"nests lists or mappings deeper than {MAX_SPEC_DEPTH} levels."),
        ("name: x\n" + "#" * MAX_SPEC_CHARS, f"is longer than {MAX_SPEC_CHARS} characters."),
    ]
    for spec, tail in cases:
        started = time.perf_counter()
        answer = server.call("POST", "/v1/trainings", json={"spec": spec})
        assert time.perf_counter() - started < 5
        assert (answer.status_code, answer.json()) == (
            422,
            {"error": f"training spec in the request body {tail}", "code": "invalid_spec"},
        )
