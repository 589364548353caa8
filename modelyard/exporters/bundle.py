"""Edge bundles: one ONNX variant + manifest + smoke sample, signed, in one deterministic tar.

The format is the one the agent reads (modelyard/edge/PROTOCOL.md; constants and checks in
modelyard.bundle, which both import), so builder and agent cannot drift apart. Expected smoke
outputs come from ONNX Runtime on the very file shipped, so a device that disagrees is running
something else, not a different conversion.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.bundle import (
    FORMAT,
    MANIFEST,
    MEMBERS,
    MIN_AGENT_VERSION,
    MODEL,
    SIGNATURE,
    SMOKE,
    Manifest,
    sha256_file,
)
from modelyard.errors import ModelyardError
from modelyard.runtime import open_session, run

# A fixed mtime keeps the tar byte-identical across builds of the same inputs (2020-01-01 UTC).
_TAR_MTIME = 1577836800


@dataclass(frozen=True)
class BuiltBundle:
    path: Path
    sha256: str
    size: int
    manifest: dict[str, Any]


def create_keys(private_path: Path, public_path: Path) -> None:
    """Write a new EC P-256 signing key (PKCS8 PEM, mode 0600) and its public key (SubjectPublicKeyInfo PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        # O_EXCL: an existing signing key is never overwritten (devices pin its public half).
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ModelyardError(
            f"signing key {private_path} exists already; refusing to overwrite it (devices trust its public key).",
            code="key_exists",
        ) from None
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(public_pem)


def build_bundle(
    onnx_path: Path,
    out_dir: Path,
    *,
    model: str,
    version: str,
    variant: str,
    target: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    runtime_needs: dict[str, Any],
    smoke_inputs: dict[str, np.ndarray],
    private_key: Path,
    max_latency_ms: float | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    expected_override: dict[str, np.ndarray] | None = None,
) -> BuiltBundle:
    """Build out_dir/bundle.tar for one variant.

    `expected_override` replaces the computed smoke outputs; it exists so tests can build a
    correctly signed bundle whose smoke test must fail on the device.
    """
    label = f"bundle {model}/{version} ({target})"
    if not onnx_path.is_file():
        raise ModelyardError(f"{label}: ONNX file {onnx_path} does not exist.", code="bundle_invalid")
    if not private_key.is_file():
        raise ModelyardError(f"{label}: signing key {private_key} does not exist.", code="bundle_invalid")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bundle-", dir=out_dir) as tmp:
        folder = Path(tmp)
        (folder / MODEL).write_bytes(onnx_path.read_bytes())
        expected = expected_override or _expected_outputs(folder / MODEL, smoke_inputs, label)
        _write_smoke(folder / SMOKE, smoke_inputs, expected)
        rows = len(next(iter(smoke_inputs.values())))
        manifest = _manifest(model, version, variant, target, inputs, outputs, runtime_needs, folder)
        manifest["smoke"] = {"rows": rows, "atol": atol, "rtol": rtol, "max_latency_ms": max_latency_ms}
        try:
            Manifest.from_dict(manifest)
        except Exception as exc:
            raise ModelyardError(f"{label}: {exc}", code="bundle_invalid") from exc
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _sign(folder, private_key)
        path = out_dir / "bundle.tar"
        _write_tar(folder, path)
    return BuiltBundle(path=path, sha256=sha256_file(path), size=path.stat().st_size, manifest=manifest)


def _expected_outputs(model_path: Path, smoke_inputs: dict[str, np.ndarray], label: str) -> dict[str, np.ndarray]:
    try:
        session = open_session(model_path, threads=1)  # CPU: what an edge device runs
        return run(session, [o.name for o in session.get_outputs()], smoke_inputs)
    except Exception as exc:
        raise ModelyardError(
            f"{label}: ONNX Runtime could not run the smoke sample ({exc}).", code="bundle_invalid"
        ) from exc


def _write_smoke(path: Path, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
    arrays = {f"input:{k}": np.asarray(v) for k, v in inputs.items()}
    arrays.update({f"output:{k}": np.asarray(v) for k, v in outputs.items()})
    with path.open("wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


def _manifest(
    model: str,
    version: str,
    variant: str,
    target: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    runtime_needs: dict[str, Any],
    folder: Path,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "model": model,
        "version": str(version),
        "variant": variant,
        "target": target,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "min_agent_version": MIN_AGENT_VERSION,
        "inputs": [_tensor(t) for t in inputs],
        "outputs": [_tensor(t) for t in outputs],
        "runtime": {
            "domains": dict(runtime_needs.get("domains", {})),
            "ops": {k: sorted(v) for k, v in dict(runtime_needs.get("ops", {})).items()},
        },
        "files": {
            name: {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size}
            for name in (MODEL, SMOKE)
        },
    }


def _tensor(spec: dict[str, Any]) -> dict[str, Any]:
    return {"name": spec["name"], "datatype": spec["datatype"], "shape": [int(d) for d in spec["shape"]]}


def _sign(folder: Path, private_key: Path) -> None:
    import model_signing

    hashing = model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE])
    signer = model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key)
    signer.set_hashing_config(hashing).sign(folder, folder / SIGNATURE)


def _write_tar(folder: Path, path: Path) -> None:
    # Written next to the target and renamed, so a half-written bundle.tar never exists.
    partial = path.with_suffix(".tar.partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(MEMBERS):
            data = (folder / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, _TAR_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    os.replace(partial, path)
