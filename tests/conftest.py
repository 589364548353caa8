"""Shared fixtures: tiny specs and settings for a temporary home.

Service fixtures (Redis, PostgreSQL, an MLflow server, Celery workers) live in
tests/integration/conftest.py and start real processes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Hypothesis (under schemathesis) keeps a cache in ./.hypothesis: the tests leave the checkout as they found it.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "modelyard-tests-hypothesis"))


def tiny_spec(name: str = "digits", **overrides: Any) -> dict[str, Any]:
    """A CNN on digits that trains in about a second."""
    spec: dict[str, Any] = {
        "name": name,
        "dataset": {"source": "sklearn:digits"},
        "architecture": {"name": "cnn", "params": {"filters": [4], "dense_units": 8, "dropout": 0.0}},
        "epochs": 2,
        "batch_size": 64,
        "learning_rate": 0.005,
        "seed": 1,
        # Too small to beat logistic regression, on purpose (speed): the gate's baseline
        # check has its own tests (tests/platform/test_gate.py, the demo).
        "gate": {"must_beat_baseline": False},
    }
    spec.update(overrides)
    return spec


def tiny_onnx(path: Path, input_type: int | None = None) -> Path:
    """A real ONNX model of one node: y = x @ [[1, 2], [3, 4], [5, 6]] (FP32, batch x 3 -> batch x 2),
    or, with `input_type`, one Identity of that ONNX type (enough for a signature)."""
    import onnx
    from onnx import TensorProto, helper

    if input_type is not None:
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "identity",
            [helper.make_tensor_value_info("x", input_type, ["batch"])],
            [helper.make_tensor_value_info("y", input_type, ["batch"])],
        )
    else:
        weight = helper.make_tensor("w", TensorProto.FLOAT, [3, 2], [1, 2, 3, 4, 5, 6])
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            "tiny",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
            [weight],
        )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def settings(home: Path, monkeypatch: pytest.MonkeyPatch):
    """Embedded-mode settings under a temporary home, also exported for code that reads the env."""
    from modelyard.platform.settings import Settings

    for key in list(os.environ):
        if key.startswith("MODELYARD_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MODELYARD_HOME", str(home))
    return Settings()
