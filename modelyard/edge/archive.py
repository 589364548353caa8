"""Inspect, unpack and verify a bundle.tar, refusing anything unsafe before it touches a slot.

Order matters: every tar member is inspected before a byte is written (no links, devices,
sparse files, absolute or `..` names, none larger than the archive itself); then the two small
members come out first, and the signature is checked against the PINNED public key (from
enrollment, never from the bundle or the control plane's later answers) over the manifest,
before any other member is written; then only the files the signed manifest names, each no
larger than it says (the copy stops there) and hashed as it is written; then the library's
own check of the whole folder, then whether this device can run it. All of it happens in a
staging folder; only a bundle that passed all of it moves into a slot (slots.py).
"""

from __future__ import annotations

import hashlib
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
    MODEL,
    SIGNATURE,
    SMOKE,
    Manifest,
    ManifestError,
    RuntimeSupport,
    agent_refusal,
    runtime_refusal,
)
from modelyard.edge.errors import BundleRefused, EdgeError


@dataclass(frozen=True)
class Limits:
    max_member_bytes: int = 512 * 1024 * 1024
    max_total_bytes: int = 1024 * 1024 * 1024
    # manifest.json and model.sig are read before anything is trusted: small, whatever the other limits.
    max_metadata_bytes: int = 1024 * 1024


# What a bundle's members are at most, before the signed manifest says what they are.
METADATA = (MANIFEST, SIGNATURE)


def inspect_members(tar_path: Path, label: str, limits: Limits) -> list[tarfile.TarInfo]:
    """Every member of the tar, checked; raises on the first unsafe one, writing nothing."""
    try:
        with tarfile.open(tar_path, "r:") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise EdgeError(f"{label}: {tar_path.name} is not a readable tar file ({exc}).", stage="unpack") from exc
    seen: set[str] = set()
    total = 0
    archive_bytes = tar_path.stat().st_size
    for info in members:
        name = info.name
        why = _unsafe(info, seen, limits, archive_bytes)
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


def _unsafe(info: tarfile.TarInfo, seen: set[str], limits: Limits, archive_bytes: int) -> str | None:
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
    if info.issparse():  # its holes would unpack to far more than the archive holds
        return "is a sparse file"
    if not info.isfile():
        return "is a device, fifo or other special file"
    if name not in MEMBERS:
        return f"is not one of the bundle's files ({', '.join(MEMBERS)})"
    if name in seen:
        return "appears twice"
    if info.size > archive_bytes:
        return f"claims {info.size} bytes, more than the whole {archive_bytes}-byte archive"
    cap = min(limits.max_member_bytes, limits.max_metadata_bytes) if name in METADATA else limits.max_member_bytes
    if info.size > cap:
        return f"is {info.size} bytes, over the {cap}-byte limit"
    return None


def extract(tar: tarfile.TarFile, info: tarfile.TarInfo, dest: Path, declared: int, label: str) -> str:
    """Copy one inspected member into `dest` as a plain file, never past `declared` bytes; its sha256."""
    source = tar.extractfile(info)
    if source is None:  # unreachable after inspection; kept so a regular-file check never lapses
        raise EdgeError(f"{label}: member {info.name!r} has no data.", stage="unpack")
    digest = hashlib.sha256()
    written = 0
    # Copied by bytes rather than tar.extract: no modes, owners or links come along, and the size is ours to cap.
    with source, dest.open("wb") as out:
        while block := source.read(min(1 << 20, declared - written + 1)):
            written += len(block)
            if written > declared:
                raise EdgeError(
                    f"{label}: member {info.name!r} runs past its {declared} bytes; stopped unpacking.", stage="unpack"
                )
            digest.update(block)
            out.write(block)
    if written != declared:
        raise EdgeError(f"{label}: member {info.name!r} is truncated.", stage="unpack")
    return digest.hexdigest()


def unpack(tar_path: Path, staging: Path, public_key: Path, label: str, limits: Limits) -> Manifest:
    """Write the bundle into an empty staging folder, trusting the manifest before the files it names.

    The signature and the manifest come out first (small: Limits.max_metadata_bytes) and the signature
    must cover the manifest; then each file the signed manifest names, refused when its tar entry
    claims another size, cut off past it, and checked against its signed sha256 as it is written.
    """
    members = {info.name: info for info in inspect_members(tar_path, label, limits)}
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    with tarfile.open(tar_path, "r:") as tar:
        for name in METADATA:
            extract(tar, members[name], staging / name, members[name].size, label)
        signed = signed_digests(staging / SIGNATURE, public_key, label)
        if hashlib.sha256((staging / MANIFEST).read_bytes()).hexdigest() != signed[MANIFEST]:
            raise not_verified(label, f"{MANIFEST} is not the one signed")
        manifest = read_manifest(staging, label)
        for name in HASHED:
            entry, info = manifest.files[name], members[name]
            if entry.sha256 != signed[name]:
                raise not_verified(label, f"{MANIFEST} and the signature disagree on {name}")
            if info.size != entry.size:
                raise EdgeError(
                    f"{label}: member {name!r} is {info.size} bytes, but the signed {MANIFEST} says "
                    f"{entry.size}; refused before unpacking.",
                    stage="verify",
                )
            if extract(tar, info, staging / name, entry.size, label) != entry.sha256:
                raise not_verified(label, f"{name} does not match its signed sha256")
    return manifest


def not_verified(label: str, reason: str) -> EdgeError:
    return EdgeError(f"{label}: signature does not verify against the pinned public key ({reason}).", stage="verify")


def signed_digests(signature: Path, public_key: Path, label: str) -> dict[str, str]:
    """Verify model.sig against the pinned key; the sha256 it signs for each file, with no file hashed yet.

    model-signing's public `verify` hashes the whole unpacked folder first; this asks its verifier for the
    signed statement alone (model-signing 1.x internals; pyproject pins <2), so the manifest is trusted
    before the members it sizes are written. verify_signature still runs the library's whole check after.
    """
    try:
        from model_signing._signing import sign_ec_key, sign_sigstore_pb

        statement = sign_ec_key.Verifier(public_key).verify(sign_sigstore_pb.Signature.read(signature))
        if statement.serialization_type.get("method") != "files":
            raise ValueError(f"signed as {statement.serialization_type.get('method')!r}, not file by file")
        digests = {}
        for resource in statement.resource_descriptors():
            if resource.digest.algorithm != "sha256":
                raise ValueError(f"{resource.identifier} is signed with {resource.digest.algorithm}, not sha256")
            digests[resource.identifier] = resource.digest.digest_hex
    except Exception as exc:
        # A malformed signature, another key, another payload: all mean it is not what the trusted key signed.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise not_verified(label, reason[:200]) from exc
    if set(digests) != {MANIFEST, MODEL, SMOKE}:
        raise not_verified(label, f"it signs {sorted(digests)}, not the bundle's three files")
    return digests


def verify_signature(staging: Path, public_key: Path, label: str) -> None:
    import model_signing

    try:
        verifier = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key)
        verifier.verify(staging, staging / SIGNATURE)
    except Exception as exc:
        # model-signing raises ValueError for a digest mismatch, an extra file or another key, other errors
        # for a malformed signature: all mean the bundle is not what the trusted key signed.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise not_verified(label, reason[:200]) from exc


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
        manifest = unpack(tar_path, staging, public_key, label, limits or Limits())
        verify_signature(staging, public_key, label)  # the library's whole check (unpack checked each file already)
        refusal = runtime_refusal(manifest, support) or agent_refusal(manifest, agent_version)
        if refusal:
            raise BundleRefused(refusal, stage="verify")
        return manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
