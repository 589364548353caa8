"""Hostile and tampered bundles are refused, and refused before anything reaches a slot."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from modelyard.edge.archive import Limits, verify_bundle
from modelyard.edge.errors import EdgeError
from modelyard.edge.runtime import LoadedModel
from modelyard.edge.slots import Slots
from modelyard.exporters.bundle import BuiltBundle
from tests.edge.conftest import SUPPORT, BuildFn, add_bytes, desired_for, installer, rewrite_tar, smoke_rows


def _serving(home: Path, v1: BuiltBundle) -> Slots:
    """Install v1 so every test can check that the serving slot survives."""
    assert installer(home, v1.path).install(desired_for(v1)).outcome == "installed"
    return Slots(home)


def _assert_v1_still_serves(home: Path, v1: BuiltBundle) -> None:
    slots = Slots(home)
    assert slots.active_info()["sha256"] == v1.sha256
    model = LoadedModel(slots.path(slots.active()))
    assert model.predict(smoke_rows(2))["probabilities"].shape == (2, 3)


def _symlink(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("model.onnx.link")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tar.addfile(info)


def _hardlink(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("extra")
    info.type, info.linkname = tarfile.LNKTYPE, "model.onnx"
    tar.addfile(info)


def _folder(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("sub")
    info.type = tarfile.DIRTYPE
    tar.addfile(info)


def _fifo(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("pipe")
    info.type = tarfile.FIFOTYPE
    tar.addfile(info)


HOSTILE = {
    "traversal": (lambda tar: add_bytes(tar, "../evil"), "is outside the bundle"),
    "nested-traversal": (lambda tar: add_bytes(tar, "a/../../evil"), "is outside the bundle"),
    "absolute": (lambda tar: add_bytes(tar, "/tmp/evil"), "is an absolute path"),
    "symlink": (_symlink, "is a link"),
    "hardlink": (_hardlink, "is a link"),
    "folder": (_folder, "is a folder"),
    "fifo": (_fifo, "is a device, fifo or other special file"),
    "extra": (lambda tar: add_bytes(tar, "README.txt"), "is not one of the bundle's files"),
    "duplicate": (lambda tar: add_bytes(tar, "model.onnx", b"second"), "appears twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_before_anything_is_written(
    case: str, home: Path, v1: BuiltBundle, v2: BuiltBundle, tmp_path: Path
) -> None:
    slots = _serving(home, v1)
    edit, why = HOSTILE[case]
    tar = rewrite_tar(v2.path, tmp_path / "hostile.tar", edit)
    inactive_before = sorted(p.name for p in slots.root.iterdir())

    outcome = installer(home, tar).install(desired_for(v2, sha256=_sha(tar), size=tar.stat().st_size))

    assert (outcome.outcome, outcome.stage) == ("failed", "unpack")
    assert why in outcome.reason and "refused before unpacking" in outcome.reason
    assert outcome.reason.startswith("bundle tiny/2 (edge-cpu): member ")
    assert sorted(p.name for p in slots.root.iterdir()) == inactive_before  # no new slot, nothing staged
    assert not (home / "staging" / _sha(tar)).exists()
    assert not (tmp_path.parent / "evil").exists() and not Path("/tmp/evil").exists()
    _assert_v1_still_serves(home, v1)


def test_oversized_member_and_total_are_refused(home: Path, v2: BuiltBundle, tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    pub = home / "trust.pem"
    with pytest.raises(
        EdgeError, match=r"member '[a-z.]+' is \d+ bytes, over the 100-byte limit; refused before unpacking"
    ) as exc:
        verify_bundle(v2.path, staging, pub, label="b", support=SUPPORT, agent_version="1.0.0", limits=Limits(100))
    assert exc.value.stage == "unpack" and not staging.exists()
    with pytest.raises(EdgeError, match="members add up to more than 2000 bytes"):
        limits = Limits(max_member_bytes=10**6, max_total_bytes=2000)
        verify_bundle(v2.path, staging, pub, label="b", support=SUPPORT, agent_version="1.0.0", limits=limits)


def test_a_byte_changed_in_model_onnx_inside_the_tar_fails_verification(
    home: Path, v1: BuiltBundle, v2: BuiltBundle, tmp_path: Path
) -> None:
    _serving(home, v1)
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(v2.path) as src, tarfile.open(tampered, "w") as out:
        for info in src.getmembers():
            data = bytearray(src.extractfile(info).read())
            if info.name == "model.onnx":
                data[len(data) // 2] ^= 0x01
            out.addfile(info, io.BytesIO(bytes(data)))

    outcome = installer(home, tampered).install(desired_for(v2, sha256=_sha(tampered), size=tampered.stat().st_size))

    assert (outcome.outcome, outcome.stage) == ("failed", "verify")
    assert "signature does not verify against the pinned public key" in outcome.reason
    _assert_v1_still_serves(home, v1)


def test_a_byte_changed_in_the_tar_is_caught_by_the_desired_digest(
    home: Path, v1: BuiltBundle, v2: BuiltBundle, tmp_path: Path
) -> None:
    _serving(home, v1)
    flipped = tmp_path / "flipped.tar"
    data = bytearray(v2.path.read_bytes())
    data[2048] ^= 0x01
    flipped.write_bytes(bytes(data))

    outcome = installer(home, flipped).install(desired_for(v2))  # the control plane's sha256 of the real tar

    assert (outcome.outcome, outcome.stage) == ("failed", "download")
    assert "does not match the desired sha256 and size" in outcome.reason
    # Even with a digest that matches the flipped file, verification catches it.
    with pytest.raises(EdgeError) as exc:
        verify_bundle(flipped, tmp_path / "s", home / "trust.pem", label="b", support=SUPPORT, agent_version="1.0.0")
    assert exc.value.stage in ("unpack", "verify")
    _assert_v1_still_serves(home, v1)


def test_a_bundle_signed_by_another_key_is_refused(
    home: Path, v1: BuiltBundle, build: BuildFn, other_keys: tuple[Path, Path]
) -> None:
    _serving(home, v1)
    foreign = build("5", seed=5, private_key=other_keys[0])

    outcome = installer(home, foreign.path).install(desired_for(foreign))

    assert (outcome.outcome, outcome.stage) == ("failed", "verify")
    assert outcome.reason.startswith(
        "bundle tiny/5 (edge-cpu): signature does not verify against the pinned public key"
    )
    _assert_v1_still_serves(home, v1)


def test_a_manifest_edited_after_signing_is_refused(home: Path, v2: BuiltBundle, tmp_path: Path) -> None:
    edited = tmp_path / "edited.tar"
    with tarfile.open(v2.path) as src, tarfile.open(edited, "w") as out:
        for info in src.getmembers():
            data = src.extractfile(info).read()
            if info.name == "manifest.json":
                manifest = json.loads(data)
                manifest["smoke"]["atol"] = 10.0
                data = json.dumps(manifest).encode()
                info.size = len(data)
            out.addfile(info, io.BytesIO(data))

    with pytest.raises(EdgeError, match="signature does not verify"):
        verify_bundle(edited, tmp_path / "s", home / "trust.pem", label="b", support=SUPPORT, agent_version="1.0.0")
    assert not (tmp_path / "s").exists()


def test_verified_bundle_is_staged_with_its_four_files(home: Path, v2: BuiltBundle, tmp_path: Path) -> None:
    manifest = verify_bundle(
        v2.path, tmp_path / "s", home / "trust.pem", label="b", support=SUPPORT, agent_version="1.0.0"
    )
    assert (manifest.model, manifest.version) == ("tiny", "2")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "manifest.json",
        "model.onnx",
        "model.sig",
        "smoke.npz",
    ]
    assert np.load(tmp_path / "s" / "smoke.npz")["input:input"].shape == (8, 4)
    shutil.rmtree(tmp_path / "s")


def _sha(path: Path) -> str:
    from modelyard.bundle import sha256_file

    return sha256_file(path)
