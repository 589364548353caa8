"""Inspect, unpack and verify a bundle.tar, refusing anything unsafe before it touches a slot.

Order matters: every tar member is inspected before a byte is written; the members go to a
staging folder only; the signature is checked against the PINNED public key (from enrollment,
never from the bundle or the control plane's later answers); then each file's digest against
the manifest, then whether this device can run it. Only a bundle that passed all of it moves
into a slot (slots.py).
"""

from __future__ import annotations

import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.bundle import (
    HASHED,
    MANIFEST,
    MEMBERS,
    SIGNATURE,
    Manifest,
    ManifestError,
    RuntimeSupport,
    agent_refusal,
    runtime_refusal,
    sha256_file,
)
from modelyard.edge.errors import BundleRefused, EdgeError


@dataclass(frozen=True)
class Limits:
    max_member_bytes: int = 512 * 1024 * 1024
    max_total_bytes: int = 1024 * 1024 * 1024


def inspect_members(tar_path: Path, label: str, limits: Limits) -> list[tarfile.TarInfo]:
    """Every member of the tar, checked; raises on the first unsafe one, writing nothing."""
    try:
        with tarfile.open(tar_path, "r:") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise EdgeError(f"{label}: {tar_path.name} is not a readable tar file ({exc}).", stage="unpack") from exc
    seen: set[str] = set()
    total = 0
    for info in members:
        name = info.name
        why = _unsafe(info, seen, limits)
        if why:
            raise EdgeError(f"{label}: member {name!r} {why}; refused before unpacking.", stage="unpack")
        seen.add(name)
        total += info.size
        if total > limits.max_total_bytes:
            raise EdgeError(
                f"{label}: members add up to more than {limits.max_total_bytes} bytes; refused before unpacking.",
                stage="unpack",
            )
    missing = sorted(set(MEMBERS) - seen)
    if missing:
        raise EdgeError(f"{label}: the bundle lacks {', '.join(missing)}; refused before unpacking.", stage="unpack")
    return members


def _unsafe(info: tarfile.TarInfo, seen: set[str], limits: Limits) -> str | None:
    name = info.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if ".." in parts:
        return "is outside the bundle"
    if info.issym() or info.islnk():
        return "is a link"
    if info.isdir():
        return "is a folder"
    if not info.isfile():
        return "is a device, fifo or other special file"
    if name not in MEMBERS:
        return f"is not one of the bundle's files ({', '.join(MEMBERS)})"
    if name in seen:
        return "appears twice"
    if info.size > limits.max_member_bytes:
        return f"is {info.size} bytes, over the {limits.max_member_bytes}-byte limit"
    return None


def unpack(tar_path: Path, staging: Path, label: str, limits: Limits) -> None:
    """Write the (inspected) members into an empty staging folder, by name, as plain files."""
    members = inspect_members(tar_path, label, limits)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    with tarfile.open(tar_path, "r:") as tar:
        for info in members:
            source = tar.extractfile(info)
            if source is None:  # unreachable after inspection; kept so a regular-file check never lapses
                raise EdgeError(f"{label}: member {info.name!r} has no data.", stage="unpack")
            # Copy by bytes with our own size cap rather than tar.extract: no modes, owners or links come along.
            with source, (staging / info.name).open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
                if out.tell() != info.size:
                    raise EdgeError(f"{label}: member {info.name!r} is truncated.", stage="unpack")


def verify_signature(staging: Path, public_key: Path, label: str) -> None:
    import model_signing

    try:
        verifier = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key)
        verifier.verify(staging, staging / SIGNATURE)
    except Exception as exc:
        # model-signing raises ValueError for a digest mismatch, an extra file or another key, other errors
        # for a malformed signature: all mean the bundle is not what the trusted key signed.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EdgeError(
            f"{label}: signature does not verify against the pinned public key ({reason[:200]}).", stage="verify"
        ) from exc


def parse_manifest(data: Any, *, where: str = MANIFEST) -> Manifest:
    """Manifest.from_dict, its ManifestError as the agent's EdgeError: a malformed manifest fails verification."""
    try:
        return Manifest.from_dict(data, where=where)
    except ManifestError as exc:
        raise EdgeError(str(exc), stage="verify") from exc


def read_manifest(staging: Path, label: str) -> Manifest:
    try:
        data = json.loads((staging / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise EdgeError(f"{label}: {MANIFEST} is not valid JSON ({exc}).", stage="verify") from exc
    return parse_manifest(data, where=f"{label}: {MANIFEST}")


def verify_files(staging: Path, manifest: Manifest, label: str) -> None:
    for name in HASHED:
        entry = manifest.files[name]
        path = staging / name
        if path.stat().st_size != entry.size or sha256_file(path) != entry.sha256:
            raise EdgeError(f"{label}: {name} does not match its sha256/size in {MANIFEST}.", stage="verify")


def verify_bundle(
    tar_path: Path,
    staging: Path,
    public_key: Path,
    *,
    label: str,
    support: RuntimeSupport,
    agent_version: str,
    limits: Limits | None = None,
) -> Manifest:
    """Unpack into staging and prove the bundle; returns its manifest. Staging is removed on failure."""
    try:
        unpack(tar_path, staging, label, limits or Limits())
        verify_signature(staging, public_key, label)
        manifest = read_manifest(staging, label)
        verify_files(staging, manifest, label)
        refusal = runtime_refusal(manifest, support) or agent_refusal(manifest, agent_version)
        if refusal:
            raise BundleRefused(refusal, stage="verify")
        return manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
