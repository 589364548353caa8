"""The bundle builder: keys, manifest, signature, deterministic tar layout."""

from __future__ import annotations

import json
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest

from modelyard.bundle import MEMBERS, Manifest, sha256_file
from modelyard.errors import ModelyardError
from modelyard.exporters.bundle import build_bundle, create_keys
from tests.edge.conftest import INPUTS, NEEDS, OUTPUTS, make_onnx, smoke_rows


def test_create_keys_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path: Path) -> None:
    create_keys(tmp_path / "k.pem", tmp_path / "k.pub.pem")

    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert (tmp_path / "k.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "k.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(ModelyardError, match="exists already; refusing to overwrite"):
        create_keys(tmp_path / "k.pem", tmp_path / "other.pub.pem")


def test_build_bundle_writes_a_signed_deterministic_tar(tmp_path: Path) -> None:
    create_keys(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    onnx_path = make_onnx(tmp_path / "m.onnx")

    built = build_bundle(
        onnx_path, tmp_path / "out", model="tiny", version="3", variant="fp32", target="edge-cpu",
        inputs=INPUTS, outputs=OUTPUTS, runtime_needs=NEEDS, smoke_inputs=smoke_rows(), private_key=tmp_path / "k.pem",
        max_latency_ms=50.0,
    )  # fmt: skip

    assert built.path == tmp_path / "out" / "bundle.tar"
    assert built.sha256 == sha256_file(built.path) and built.size == built.path.stat().st_size
    with tarfile.open(built.path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(MEMBERS)
        assert all(m.isfile() and m.mode == 0o644 and m.uid == 0 and m.mtime == 1577836800 for m in members)
        tar.extractall(tmp_path / "x", filter="data")
    manifest = Manifest.from_dict(json.loads((tmp_path / "x" / "manifest.json").read_text()))
    assert (manifest.model, manifest.version, manifest.min_agent_version) == ("tiny", "3", "1.0.0")
    assert manifest.created.endswith("Z") and manifest.max_latency_ms == 50.0 and manifest.rows == 8
    assert manifest.files["model.onnx"].sha256 == sha256_file(onnx_path)
    assert manifest.domains == {"ai.onnx": 17}
    with np.load(tmp_path / "x" / "smoke.npz", allow_pickle=False) as smoke:
        assert sorted(smoke.files) == ["input:input", "output:probabilities"]
        np.testing.assert_allclose(smoke["output:probabilities"].sum(axis=1), 1.0, rtol=1e-5)

    import model_signing

    verifier = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "k.pub.pem")
    verifier.verify(tmp_path / "x", tmp_path / "x" / "model.sig")


def test_build_bundle_names_the_missing_onnx_file(tmp_path: Path) -> None:
    with pytest.raises(ModelyardError, match=r"bundle tiny/1 \(edge-cpu\): ONNX file .* does not exist"):
        build_bundle(
            tmp_path / "nope.onnx", tmp_path / "out", model="tiny", version="1", variant="fp32", target="edge-cpu",
            inputs=INPUTS, outputs=OUTPUTS, runtime_needs=NEEDS, smoke_inputs=smoke_rows(), private_key=tmp_path / "k",
        )  # fmt: skip
