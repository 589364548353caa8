"""The bundle format's leaf: manifest checks, the desired entry, runtime and agent refusals, its imports."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelyard.bundle import (
    FORMAT,
    MIN_AGENT_VERSION,
    Manifest,
    ManifestError,
    RuntimeSupport,
    TensorSpec,
    agent_refusal,
    check_desired,
    parse_version,
    runtime_refusal,
    sha256_file,
)

REPO = Path(__file__).resolve().parents[2]
DIGEST = "ab" * 32


def manifest_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": FORMAT, "model": "tiny", "version": "3", "variant": "fp32", "target": "edge-cpu",
        "created": "2026-01-01T00:00:00Z", "min_agent_version": "1.0.0",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
        "runtime": {"domains": {"": 17, "ai.onnx.ml": 3}, "ops": {"ai.onnx": ["Gemm"]}},
        "smoke": {"rows": 8, "atol": 1e-4, "rtol": 1e-3, "max_latency_ms": None},
        "files": {"model.onnx": {"sha256": DIGEST, "size": 10}, "smoke.npz": {"sha256": DIGEST, "size": 5}},
    }  # fmt: skip
    data.update(changes)
    return data


def test_a_valid_manifest_parses_into_oip_tensor_specs() -> None:
    m = Manifest.from_dict(manifest_dict())

    assert m.label == "tiny/3 (edge-cpu)"
    assert m.inputs == (TensorSpec("input", "FP32", (-1, 4)),)
    assert m.domains == {"ai.onnx": 17, "ai.onnx.ml": 3}  # the default domain is spelled ai.onnx
    assert (m.rows, m.max_latency_ms, m.files["smoke.npz"].size) == (8, None, 5)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"format": 2}, "manifest.json: format 2 is not 1, the one this agent reads."),
        ({"model": ""}, "manifest.json: field 'model' is missing or not a non-empty string."),
        ({"min_agent_version": "one"}, "manifest.json: min_agent_version 'one' is not a version like '1.0.0'."),
        (
            {"inputs": [{"name": "input", "datatype": "STRING", "shape": [1]}]},
            "manifest.json: inputs[0] datatype 'STRING' is not an Open Inference Protocol type.",
        ),
        (
            {"outputs": [{"name": "p", "datatype": "FP32", "shape": [-2]}]},
            "manifest.json: outputs[0] shape [-2] is not a list of sizes (-1 for dynamic).",
        ),
        ({"files": {"model.onnx": {"sha256": DIGEST, "size": 1}}}, "manifest.json: files.smoke.npz has no sha256"),
    ],
)
def test_each_bad_field_is_one_manifest_error_naming_it(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ManifestError) as err:
        Manifest.from_dict(manifest_dict(**change))
    assert str(err.value).startswith(words)
    assert isinstance(err.value, ValueError)  # the builder and other callers catch it as bad input


def test_a_bad_smoke_tolerance_and_extra_files_are_refused() -> None:
    bad_smoke = copy.deepcopy(manifest_dict())
    bad_smoke["smoke"]["atol"] = -1
    with pytest.raises(ManifestError, match=r"smoke.atol -1 is not a number >= 0"):
        Manifest.from_dict(bad_smoke)
    extra = copy.deepcopy(manifest_dict())
    extra["files"]["run.sh"] = {"sha256": DIGEST, "size": 1}
    with pytest.raises(ManifestError, match=r"files lists \['run.sh'\], which a bundle does not hold"):
        Manifest.from_dict(extra)


def test_versions_compare_as_numbers() -> None:
    assert parse_version("1.10.0") > parse_version("1.9.0")
    with pytest.raises(ManifestError, match=r"agent version '1\.x' is not a version"):
        parse_version("1.x", where="agent version")


def test_refusals_name_what_the_device_lacks() -> None:
    m = Manifest.from_dict(manifest_dict())
    assert runtime_refusal(m, RuntimeSupport("1.22.0", 22, {"ai.onnx": 22, "ai.onnx.ml": 5})) is None
    assert runtime_refusal(m, RuntimeSupport("1.14.0", 16, {"ai.onnx": 16, "ai.onnx.ml": 5})) == (
        "bundle tiny/3 (edge-cpu) needs ai.onnx opset 17, but onnxruntime 1.14.0 on this device "
        "implements opset 16 at most."
    )
    assert "needs operator domain 'ai.onnx.ml'" in str(
        runtime_refusal(m, RuntimeSupport("1.22.0", 22, {"ai.onnx": 22}))
    )
    newer = Manifest.from_dict(manifest_dict(min_agent_version="2.0.0"))
    assert agent_refusal(newer, "1.0.0") == "bundle tiny/3 (edge-cpu) needs agent 2.0.0 or newer; this agent is 1.0.0."
    assert agent_refusal(m, "1.0.0") is None


def test_the_builder_never_asks_for_an_agent_newer_than_the_one_in_this_checkout() -> None:
    from modelyard.edge.version import AGENT_VERSION

    assert parse_version(MIN_AGENT_VERSION) <= parse_version(AGENT_VERSION)


def _desired(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model": "tiny", "version": "3", "target": "edge-cpu", "sha256": DIGEST, "size": 10,
        "url": "/v1/bundles/tiny/3/edge-cpu", "rollout_id": 4, "rollback": False, "failed_inference_limit": 0,
    }  # fmt: skip
    entry.update(changes)
    return entry


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"url": "https://elsewhere.example/v1/bundles/tiny"}, "is not a /v1/bundles/ path on the control plane"),
        ({"url": "/v1/bundles/../../etc"}, "is not a /v1/bundles/ path"),
        ({"sha256": "../" * 20}, "is not 64 lowercase hex digits"),
        ({"version": 3}, "is not a string of digits"),
        ({"size": True}, "is not a positive integer"),
        ({"rollback": "yes"}, "is not true or false"),
        ({"failed_inference_limit": -1}, "is not an integer >= 0"),
    ],
)
def test_a_malformed_desired_entry_is_named_before_any_field_is_used(change: dict[str, Any], words: str) -> None:
    assert check_desired(_desired()) is None
    problem = check_desired(_desired(**change))
    assert problem is not None and problem.startswith("desired entry tiny/") and words in problem
    assert check_desired(["not", "an", "object"]) == "the desired entry is not a JSON object."


def test_sha256_file_reads_in_blocks(tmp_path: Path) -> None:
    import hashlib

    data = b"x" * ((1 << 20) + 3)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_the_format_loads_nothing_but_the_standard_library() -> None:
    """The agent, the builder and the server all import it: it must stay cheap and dependency-free."""
    script = (
        "import json, sys, modelyard.bundle\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('numpy', 'onnxruntime', 'pydantic', 'httpx') or m.startswith(('modelyard.edge', 'modelyard.platform', "
        "'modelyard.errors', 'modelyard.oip.tensors', 'modelyard.runtime')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
