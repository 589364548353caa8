"""A bundle writes no more than its signed manifest says, and nothing but the manifest before the signature.

Issue 18, item 9: a 10 KB tar whose model.onnx was a sparse member claiming 300 MiB wrote 314,658,816
bytes into staging before the signature check refused it. These tests run under a file-size limit
(RLIMIT_FSIZE): a write past it fails with EFBIG, so the old order shows as an OSError instead of a
refusal, without filling the disk.
"""

from __future__ import annotations

import contextlib
import io
import resource
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.bundle import sha256_file
from modelyard.edge.archive import verify_bundle
from modelyard.edge.errors import EdgeError
from modelyard.edge.slots import Slots
from modelyard.exporters.bundle import BuiltBundle
from tests.edge.conftest import SUPPORT, BuildFn, desired_for, installer

FILE_LIMIT = 8 * 1024 * 1024


@contextlib.contextmanager
def small_writes() -> Iterator[None]:
    """No file this process writes meanwhile may pass FILE_LIMIT bytes (EFBIG, not SIGXFSZ, past it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode() + b"\0"


def sparse_member(name: str, claimed: int, stored: bytes) -> bytes:
    """A GNU sparse ('S') member: `stored` at the end of a file of `claimed` bytes, the rest a hole."""
    info = tarfile.TarInfo(name)
    info.size = len(stored)
    info.type = tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[386:398] = _octal(claimed - len(stored), 12)  # one region: offset, length
    header[398:410] = _octal(len(stored), 12)
    header[482] = 0  # no extension headers
    header[483:495] = _octal(claimed, 12)  # the size it unpacks to
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}".encode() + b"\0 "
    padding = b"\0" * (-len(stored) % tarfile.BLOCKSIZE)
    return bytes(header) + stored + padding


def _with_model_replaced(source: Path, dest: Path, model: bytes) -> Path:
    """`source`'s members, with model.onnx's content replaced by `model` (a plain member of its own size)."""
    with tarfile.open(source) as src, tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as out:
        for info in src.getmembers():
            data = src.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == "model.onnx":
                data, info.size = model, len(model)
            out.addfile(info, io.BytesIO(data))
    return dest


def test_a_sparse_member_claiming_300_mib_is_refused_before_a_byte_is_written(
    home: Path, v1: BuiltBundle, v2: BuiltBundle, tmp_path: Path
) -> None:
    assert installer(home, v1.path).install(desired_for(v1)).outcome == "installed"
    claimed = 300 * 1024 * 1024
    hostile = tmp_path / "sparse.tar"
    with tarfile.open(v2.path) as src, tarfile.open(hostile, "w", format=tarfile.GNU_FORMAT) as out:
        for info in src.getmembers():
            if info.name != "model.onnx":
                out.addfile(info, src.extractfile(info))
    body = hostile.read_bytes()
    end = body.rstrip(b"\0")  # before the end-of-archive blocks
    end = body[: len(end) + (-len(end) % tarfile.BLOCKSIZE)]
    hostile.write_bytes(end + sparse_member("model.onnx", claimed, b"\x08" * 512) + b"\0" * tarfile.RECORDSIZE)
    with tarfile.open(hostile) as check:  # what a reader sees: a member of 300 MiB in an archive of a few KB
        assert check.getmember("model.onnx").size == claimed and hostile.stat().st_size < 32 * 1024

    with small_writes():
        outcome = installer(home, hostile).install(
            desired_for(v2, sha256=sha256_file(hostile), size=hostile.stat().st_size)
        )

    assert outcome is not None and (outcome.outcome, outcome.stage) == ("failed", "unpack")
    assert outcome.reason == "bundle tiny/2 (edge-cpu): member 'model.onnx' is a sparse file; refused before unpacking."
    assert Slots(home).active_info()["sha256"] == v1.sha256
    assert not (home / "staging").exists() or not any((home / "staging").iterdir())


def test_a_member_larger_than_the_signed_manifest_says_is_refused_before_it_is_written(
    home: Path, v2: BuiltBundle, tmp_path: Path
) -> None:
    padded = _with_model_replaced(v2.path, tmp_path / "padded.tar", b"\x08" * (2 * FILE_LIMIT))
    declared = v2.manifest["files"]["model.onnx"]["size"]
    staging = tmp_path / "staging"

    with small_writes(), pytest.raises(EdgeError) as refused:
        verify_bundle(padded, staging, home / "trust.pem", label="b", support=SUPPORT, agent_version="1.0.0")

    assert str(refused.value) == (
        f"b: member 'model.onnx' is {2 * FILE_LIMIT} bytes, but the signed manifest.json says {declared}; "
        "refused before unpacking."
    )
    assert refused.value.stage == "verify" and not staging.exists()


def test_nothing_but_the_manifest_is_written_before_the_signature_verifies(
    home: Path, build: BuildFn, other_keys: tuple[Path, Path], tmp_path: Path
) -> None:
    foreign = build("6", seed=6, private_key=other_keys[0])
    big = _with_model_replaced(foreign.path, tmp_path / "big.tar", b"\x08" * (2 * FILE_LIMIT))

    with (
        small_writes(),
        pytest.raises(EdgeError, match=r"^b: signature does not verify against the pinned public key \(") as refused,
    ):
        verify_bundle(big, tmp_path / "s", home / "trust.pem", label="b", support=SUPPORT, agent_version="1.0.0")
    assert refused.value.stage == "verify" and not (tmp_path / "s").exists()


def test_a_member_is_cut_off_at_its_declared_size(tmp_path: Path) -> None:
    from modelyard.edge.archive import extract

    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.size = 3 * 1024 * 1024
        tar.addfile(info, io.BytesIO(b"\x01" * info.size))

    with tarfile.open(archive) as tar, pytest.raises(EdgeError, match="runs past its 1000 bytes; stopped unpacking"):
        extract(tar, tar.getmember("model.onnx"), tmp_path / "out", 1000, "b")
    assert (tmp_path / "out").stat().st_size <= 1000
