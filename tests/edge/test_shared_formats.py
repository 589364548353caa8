"""The agent on the shared leaves: bundle format errors stay the agent's own, backoff keeps its jitter."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from modelyard.bundle import ManifestError, sha256_file
from modelyard.edge import loops
from modelyard.edge.archive import parse_manifest
from modelyard.edge.errors import EdgeError
from modelyard.edge.runtime import LoadedModel
from modelyard.exporters.bundle import BuiltBundle, _sign, _write_tar
from modelyard.retry import backoff
from tests.edge.conftest import desired_for, installer


def test_a_manifest_error_reaches_the_agent_as_a_verify_failure() -> None:
    with pytest.raises(EdgeError) as err:
        parse_manifest({"format": 1}, where="b: manifest.json")
    assert not isinstance(err.value, ManifestError)
    assert (str(err.value), err.value.stage, err.value.outcome) == (
        "b: manifest.json: field 'model' is missing or not a non-empty string.",
        "verify",
        "failed",
    )


def test_a_signed_bundle_with_a_malformed_manifest_is_reported_as_before(
    home: Path, v1: BuiltBundle, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    """Signed by the trusted key, so only the manifest check can refuse it: one sentence, stage verify."""
    folder = tmp_path / "b"
    with tarfile.open(v1.path) as tar:
        tar.extractall(folder, filter="data")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["inputs"][0]["datatype"] = "STRING"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "model.sig").unlink()
    _sign(folder, keys[0])
    _write_tar(folder, tmp_path / "bundle.tar")
    tar_path = tmp_path / "bundle.tar"

    desired = desired_for(v1, sha256=sha256_file(tar_path), size=tar_path.stat().st_size)
    outcome = installer(home, tar_path).install(desired)

    assert (outcome.outcome, outcome.stage) == ("failed", "verify")
    assert outcome.reason == (
        "bundle tiny/1 (edge-cpu): manifest.json: inputs[0] datatype 'STRING' is not an Open Inference Protocol type."
    )


def test_a_slot_whose_manifest_is_malformed_does_not_load(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 9}))
    with pytest.raises(EdgeError, match="format 9 is not 1") as err:
        LoadedModel(tmp_path)
    assert err.value.stage == "verify"


def test_backoff_doubles_to_its_cap_and_the_agent_draws_below_it() -> None:
    assert [backoff(n) for n in range(8)] == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    assert backoff(10_000, base=1.0, cap=30.0) == 30.0  # a task retried for days does not overflow
    draws = [backoff(3, base=2.0, cap=100.0, jitter=True) for _ in range(200)]
    assert all(0.0 <= d <= 16.0 for d in draws) and len(set(draws)) > 1
    assert loops.backoff is backoff  # the agent's loops call it with jitter=True (loops.py)
