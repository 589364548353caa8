"""What a device checks besides the manifest: the desired entry naming a bundle, and whether it can run it.

The heartbeat's desired entry (PROTOCOL.md, 2) names one bundle (model, version, sha256, size,
url): the control plane writes it, and the agent checks it with `check_desired` before any
field becomes a file name, a URL or a report field. The agent sends its RuntimeSupport in the
enrollment profile and checks every bundle against it before installing; what a device's ONNX
Runtime supports is probed on the device only (modelyard/edge/runtime.py, local_support).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from modelyard.bundle.manifest import SHA256, Manifest, parse_version

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_VERSION = re.compile(r"^[0-9]{1,20}$")
_BUNDLE_URL = re.compile(r"^/v1/bundles/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def check_desired(desired: Any) -> str | None:
    """Why a heartbeat's desired entry must not be used (one sentence), or None when it is well formed.

    The entry comes over the network: its sha256 becomes file names under the agent home and its url is
    fetched with the device credential, so both are checked before anything uses them.
    """
    if not isinstance(desired, dict):
        return "the desired entry is not a JSON object."
    label = f"desired entry {str(desired.get('model'))[:200]}/{str(desired.get('version'))[:20]}"
    model, version, sha, url = (desired.get(k) for k in ("model", "version", "sha256", "url"))
    if not isinstance(model, str) or not _MODEL.match(model):
        return f"{label}: model {model!r:.100} is not a model name."
    if not isinstance(version, str) or not _VERSION.match(version):
        return f"{label}: version {version!r:.100} is not a string of digits."
    if not isinstance(sha, str) or not SHA256.match(sha):
        return f"{label}: sha256 {sha!r:.100} is not 64 lowercase hex digits."
    # A relative path on the control plane only: an absolute URL would send the credential to another host.
    if not isinstance(url, str) or not _BUNDLE_URL.match(url) or ".." in url:
        return f"{label}: url {url!r:.100} is not a /v1/bundles/ path on the control plane."
    size = desired.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        return f"{label}: size {size!r:.100} is not a positive integer."
    rollout = desired.get("rollout_id")
    if rollout is not None and (not isinstance(rollout, int) or isinstance(rollout, bool)):
        return f"{label}: rollout_id {rollout!r:.100} is not an integer or null."
    if not isinstance(desired.get("rollback", False), bool):
        return f"{label}: rollback {desired.get('rollback')!r:.100} is not true or false."
    limit = desired.get("failed_inference_limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        return f"{label}: failed_inference_limit {limit!r:.100} is not an integer >= 0."
    return None


@dataclass(frozen=True)
class RuntimeSupport:
    """What the local runtime can execute: sent in the enrollment profile, checked per bundle."""

    runtime_version: str
    max_opset: int
    domains: dict[str, int]


def runtime_refusal(manifest: Manifest, supported: RuntimeSupport) -> str | None:
    """The sentence explaining why this device cannot run the bundle, or None when it can."""
    for domain, opset in sorted(manifest.domains.items()):
        have = supported.domains.get(domain)
        if have is None:
            return (
                f"bundle {manifest.label} needs operator domain '{domain}', which onnxruntime "
                f"{supported.runtime_version} on this device does not provide."
            )
        if opset > have:
            return (
                f"bundle {manifest.label} needs {domain} opset {opset}, but onnxruntime "
                f"{supported.runtime_version} on this device implements opset {have} at most."
            )
    return None


def agent_refusal(manifest: Manifest, agent_version: str) -> str | None:
    """The sentence explaining why this agent is too old for the bundle, or None."""
    if parse_version(manifest.min_agent_version) > parse_version(agent_version):
        return (
            f"bundle {manifest.label} needs agent {manifest.min_agent_version} or newer; this agent is {agent_version}."
        )
    return None
