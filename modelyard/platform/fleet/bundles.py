"""Edge bundles of registered versions: built from the version's export, signed, stored as an MLflow
artifact of the version (`bundle/<target>/bundle.tar`), recorded in `bundles`, served from a local cache.

A version has at most one bundle per target: its checksum is what rollouts and devices
refer to, so it is never rebuilt under them. Builds of one model are serialized across
processes (the gate's export worker and the fleet's tick may both want one at once), and
`force` is refused while a rollout or a device still refers to the bundle it would replace.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import LifecycleError, ModelyardError, NotFoundError
from modelyard.oip import datatype_of
from modelyard.platform.context import Platform
from modelyard.platform.registry.base import EXPORT_TAG
from modelyard.platform.registry.mlflow_store import mlflow_errors
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import Bundle
from modelyard.platform.store.fleet import FleetStore

SMOKE_ROWS = 16


def create_keys(platform: Platform) -> tuple[Path, Path]:
    """The control plane's signing key pair (the private key mode 0600; the public key goes to devices)."""
    from modelyard.exporters.bundle import create_keys as write

    private, public = platform.settings.signing_key, platform.settings.public_key
    private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write(private, public)
    return private, public


def public_key_pem(platform: Platform) -> str:
    path = platform.settings.public_key
    if not path.is_file():
        raise LifecycleError(f"no edge signing key at {platform.settings.signing_key}; run `modelyard keys create`.")
    return path.read_text()


def find(platform: Platform, model: str, version: str, target: str) -> Bundle | None:
    return FleetStore(platform.settings).bundle(model, version, target)


def find_any(platform: Platform, model: str, version: str) -> Bundle | None:
    """A bundle of the version for any target (they share the version's signature)."""
    return FleetStore(platform.settings).any_bundle(model, version)


def build(platform: Platform, model: str, version: str, target: str, actor: str, force: bool = False) -> Bundle:
    """The version's bundle for the target: the one built before, or a new one (signed, logged, recorded)."""
    known = find(platform, model, version, target)
    if known is not None and not force:
        return known
    with platform.audit.moving(f"bundle:{model}"):  # a lock of its own, not the model's alias lock
        known = find(platform, model, version, target)  # built by another process while this one waited
        if known is not None and not force:
            return known
        if known is not None:
            _refuse_if_in_use(platform, known)
        return _build_and_record(platform, model, version, target, actor)


def _refuse_if_in_use(platform: Platform, bundle: Bundle) -> None:
    from modelyard.platform.fleet.phases import ACTIVE

    running, devices = FleetStore(platform.settings).bundle_users(bundle.sha256, ACTIVE)
    if running is not None or devices:
        users = f"rollout {running}" if running is not None else f"device {devices[0]}"
        raise LifecycleError(
            f"the {bundle.target} bundle of {bundle.model}/{bundle.version} is in use ({users} refers to it); "
            "a new build would change it under them."
        )


def _build_and_record(platform: Platform, model: str, version: str, target: str, actor: str) -> Bundle:
    settings, registry = platform.settings, platform.registry
    key = settings.signing_key
    if not key.is_file():
        raise LifecycleError(f"no edge signing key at {key}; run `modelyard keys create` first.")
    info = registry.get_version(model, version)
    variant = info.tags.get(f"{EXPORT_TAG}.{target}")
    if not variant or variant == "none":
        status = info.tags.get(f"{EXPORT_TAG}.status")
        why = "it has not been exported" if status is None else f"no variant met the {target} budget"
        raise LifecycleError(f"{model}/{version} has no {target} variant to bundle: {why}.")
    with tempfile.TemporaryDirectory(prefix="modelyard-bundle-") as tmp:
        built = _build(info, variant, target, key, Path(tmp))
        with mlflow_errors(f"store the {target} bundle of {model}/{version}"):
            registry.client.log_artifact(info.run_id, str(built.path), f"bundle/{target}")
        _cache(cache_path(settings, model, version, target, built.sha256), built.path)
    row = Bundle(
        model=model,
        version=version,
        target=target,
        variant=variant,
        sha256=built.sha256,
        size=built.size,
        artifact_uri=f"runs:/{info.run_id}/bundle/{target}/bundle.tar",
        manifest=built.manifest,
        created_by=actor,
    )
    event = EventRecord(
        model,
        "bundle_built",
        f"{target} bundle of v{version}: {variant}, {built.size} bytes, signed",
        actor,
        None,
        None,
        version,
        {"target": target, "variant": variant, "sha256": built.sha256, "size": built.size},
    )
    FleetStore(settings).save_bundle(row)
    platform.audit.record(event)
    return row


def _build(info: Any, variant: str, target: str, key: Path, tmp: Path) -> Any:
    import mlflow

    from modelyard.exporters.bundle import build_bundle

    where = f"{info.name}/{info.version}"
    with mlflow_errors(f"the export of {where}"):
        onnx_path = mlflow.artifacts.download_artifacts(
            run_id=info.run_id, artifact_path=f"export/variants/{variant}.onnx", dst_path=str(tmp / "in")
        )
        report = mlflow.artifacts.load_dict(f"runs:/{info.run_id}/export/export_report.json")
        validation = mlflow.artifacts.download_artifacts(
            run_id=info.run_id, artifact_path="holdout/validation.npz", dst_path=str(tmp / "in")
        )
    with np.load(validation) as data:
        rows = np.asarray(data["x"][:SMOKE_ROWS])
    inputs, outputs = _tensors(report["inputs"]), _tensors(report["outputs"])
    if len(inputs) != 1:
        raise ModelyardError(f"{where} has {len(inputs)} inputs; edge bundles take single-input models for now.")
    budget = (report.get("export_spec", {}).get("budgets", {}) or {}).get(target, {}) or {}
    return build_bundle(
        Path(onnx_path),
        tmp / "out",
        model=info.name,
        version=info.version,
        variant=variant,
        target=target,
        inputs=inputs,
        outputs=outputs,
        runtime_needs=report["runtime_needs"][variant],
        smoke_inputs={inputs[0]["name"]: rows.astype(np.float32 if inputs[0]["datatype"] == "FP32" else rows.dtype)},
        private_key=key,
        max_latency_ms=budget.get("max_latency_ms"),
    )


def _tensors(described: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": t["name"],
            "datatype": datatype_of(str(t.get("dtype", "float32"))) or "FP32",
            "shape": [-1 if d is None else int(d) for d in t["shape"]],
        }
        for t in described
    ]


def cache_path(settings: Any, model: str, version: str, target: str, sha256: str) -> Path:
    """Where the API serves a bundle from: named by its checksum, so a file never changes under its name."""
    return Path(settings.bundle_cache) / model / version / target / f"{sha256}.tar"


def _cache(path: Path, source: Path) -> Path:
    """Copy into the serving cache whole or not at all (a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".bundle-")
    os.close(fd)
    shutil.copyfile(source, tmp)
    os.replace(tmp, path)
    return path


def bundle_file(platform: Platform, model: str, version: str, target: str) -> tuple[Path, Bundle]:
    """The bundle's file for serving: from the cache, or fetched from MLflow once and checked."""
    from modelyard.bundle import sha256_file

    row = find(platform, model, version, target)
    if row is None:
        raise NotFoundError(f"{model}/{version} has no {target} bundle.", code="bundle_not_found")
    path = cache_path(platform.settings, model, version, target, row.sha256)
    if path.is_file():
        return path, row
    import mlflow

    with tempfile.TemporaryDirectory(prefix="modelyard-bundle-") as tmp:
        with mlflow_errors(f"fetch the {target} bundle of {model}/{version}"):
            got = Path(mlflow.artifacts.download_artifacts(row.artifact_uri, dst_path=tmp))
        if sha256_file(got) != row.sha256:
            raise ModelyardError(f"the stored {target} bundle of {model}/{version} does not match its checksum.")
        return _cache(path, got), row
