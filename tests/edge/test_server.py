"""The local Open Inference Protocol server, called by httpx and by Triton's own HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelyard.edge.agent import Agent
from modelyard.edge.install import copy_fetch
from modelyard.edge.server import LocalServer
from modelyard.exporters.bundle import BuiltBundle
from tests.edge.conftest import desired_for, smoke_rows


@pytest.fixture
def served(home: Path, v1: BuiltBundle) -> Iterator[tuple[Agent, str]]:
    agent = Agent(home)
    agent.installer.fetch = copy_fetch(v1.path)
    agent.installer.install(desired_for(v1))
    server = LocalServer(agent)
    server.start()
    yield agent, f"http://127.0.0.1:{server.port}"
    server.stop()


def test_infer_answers_the_model_outputs(served: tuple[Agent, str]) -> None:
    agent, url = served
    rows = smoke_rows(3)
    body = {
        "id": "r1",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4], "data": rows["input"].ravel().tolist()}],
    }

    answer = httpx.post(f"{url}/v2/models/tiny/infer", json=body)

    assert answer.status_code == 200
    out = answer.json()
    assert (out["model_name"], out["model_version"], out["id"]) == ("tiny", "1", "r1")
    assert out["outputs"][0]["name"] == "probabilities" and out["outputs"][0]["shape"] == [3, 3]
    assert out["outputs"][0]["datatype"] == "FP32"
    expected = agent.model.session.run(None, rows)[0]
    np.testing.assert_allclose(np.array(out["outputs"][0]["data"]).reshape(3, 3), expected, rtol=1e-6)


def test_health_metadata_and_errors(served: tuple[Agent, str]) -> None:
    _, url = served
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(f"{url}/v2/models/tiny").json()
    assert meta == {
        "name": "tiny", "versions": ["1"], "platform": "onnxruntime",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
    }  # fmt: skip
    assert httpx.get(f"{url}/v2/models/tiny/versions/1/ready").json()["ready"] is True
    missing = httpx.get(f"{url}/v2/models/other")
    assert missing.status_code == 404 and "model other is not served here" in missing.json()["error"]
    bad = httpx.post(
        f"{url}/v2/models/tiny/infer",
        json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 5], "data": [0.0] * 10}]},
    )
    assert bad.status_code == 400
    assert (
        bad.json()["error"]
        == "model tiny/1 (edge-cpu) input 'input' has shape [2, 5], expected [-1, 4] (-1: any size)."
    )


def test_not_ready_without_a_model(home: Path) -> None:
    server = LocalServer(Agent(home))
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{url}/v2/health/ready").status_code == 503
        infer = httpx.post(f"{url}/v2/models/tiny/infer", json={"inputs": []})
        assert infer.status_code == 503 and infer.json()["error"] == "no model is installed on this device yet."
    finally:
        server.stop()


def test_tritonclient_http_talks_to_the_agent(served: tuple[Agent, str]) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    _, url = served
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    assert client.get_model_metadata("tiny")["platform"] == "onnxruntime"
    rows = smoke_rows(2)["input"]
    request = httpclient.InferInput("input", list(rows.shape), "FP32")
    request.set_data_from_numpy(rows, binary_data=False)
    wanted = httpclient.InferRequestedOutput("probabilities", binary_data=False)

    result = client.infer("tiny", [request], outputs=[wanted])

    assert result.as_numpy("probabilities").shape == (2, 3)
    np.testing.assert_allclose(result.as_numpy("probabilities").sum(axis=1), 1.0, rtol=1e-5)
