"""The bundle format (PROTOCOL.md, "Bundle"): file names, manifest.json, runtime needs.

Shared by the agent, which validates a received manifest, and by the control plane's builder
(modelyard/exporters/bundle.py), which writes one; so both read the format from one place.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.edge.errors import EdgeError

FORMAT = 1
MANIFEST = "manifest.json"
MODEL = "model.onnx"
SMOKE = "smoke.npz"
SIGNATURE = "model.sig"
MEMBERS = (MANIFEST, MODEL, SMOKE, SIGNATURE)
# The files manifest.json lists with their digest (the manifest itself and the signature cannot list themselves).
HASHED = (MODEL, SMOKE)

DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}

# Highest ai.onnx opset each ONNX Runtime release implements (onnxruntime.ai/docs/reference/compatibility).
# A release newer than the table gets the last known value: refusing a little too much beats crashing.
ORT_MAX_OPSET = {(1, 14): 18, (1, 15): 19, (1, 16): 19, (1, 17): 20, (1, 18): 21, (1, 19): 21, (1, 20): 21}
ORT_MAX_OPSET.update({(1, 21): 22, (1, 22): 22, (1, 23): 23})
# Domains ONNX Runtime's CPU build provides, with the highest opset it implements for each.
ORT_DOMAINS = {"ai.onnx.ml": 5, "com.microsoft": 1}

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The fields of a heartbeat's desired entry (PROTOCOL.md, 2) that become file names, URLs and report fields.
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_VERSION = re.compile(r"^[0-9]{1,20}$")
_BUNDLE_URL = re.compile(r"^/v1/bundles/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    if not isinstance(sha, str) or not _SHA256.match(sha):
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


def parse_version(text: str, *, where: str = "version") -> tuple[int, ...]:
    """'1.0.0' -> (1, 0, 0); compared as tuples, so 1.10.0 is newer than 1.9.0."""
    if not isinstance(text, str) or not re.fullmatch(r"\d+(\.\d+){0,3}", text):
        raise EdgeError(f"{where} {text!r} is not a version like '1.0.0'.", stage="verify")
    return tuple(int(part) for part in text.split("."))


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    model: str
    version: str
    variant: str
    target: str
    created: str
    min_agent_version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    domains: dict[str, int]
    ops: dict[str, list[str]]
    rows: int
    atol: float
    rtol: float
    max_latency_ms: float | None
    files: dict[str, FileEntry] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        return f"{self.model}/{self.version} ({self.target})"

    @classmethod
    def from_dict(cls, data: Any, *, where: str = MANIFEST) -> Manifest:
        """Validate a parsed manifest.json; each bad field is one sentence naming it."""
        if not isinstance(data, dict):
            raise EdgeError(f"{where} is not a JSON object.", stage="verify")
        if data.get("format") != FORMAT:
            raise EdgeError(f"{where}: format {data.get('format')!r} is not {FORMAT}, the one this agent reads.")
        text = {key: _string(data, key, where) for key in ("model", "version", "variant", "target", "created")}
        parse_version(_string(data, "min_agent_version", where), where=f"{where}: min_agent_version")
        runtime = _object(data, "runtime", where)
        smoke = _object(data, "smoke", where)
        latency = smoke.get("max_latency_ms")
        if latency is not None and (not _number(latency) or latency <= 0):
            raise EdgeError(f"{where}: smoke.max_latency_ms {latency!r} is not a positive number or null.")
        return cls(
            **text,
            min_agent_version=data["min_agent_version"],
            inputs=_tensors(data, "inputs", where),
            outputs=_tensors(data, "outputs", where),
            domains=_domains(runtime, where),
            ops={str(k): [str(op) for op in v] for k, v in dict(runtime.get("ops") or {}).items()},
            rows=_positive_int(smoke, "rows", f"{where}: smoke"),
            atol=_tolerance(smoke, "atol", where),
            rtol=_tolerance(smoke, "rtol", where),
            max_latency_ms=float(latency) if latency is not None else None,
            files=_files(data, where),
            raw=data,
        )


def _string(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise EdgeError(f"{where}: field '{key}' is missing or not a non-empty string.", stage="verify")
    return value


def _object(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise EdgeError(f"{where}: field '{key}' is missing or not an object.", stage="verify")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive_int(data: dict[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise EdgeError(f"{where}.{key} {value!r} is not a positive integer.", stage="verify")
    return value


def _tolerance(smoke: dict[str, Any], key: str, where: str) -> float:
    value: Any = smoke.get(key)
    if not _number(value) or value < 0:
        raise EdgeError(f"{where}: smoke.{key} {value!r} is not a number >= 0.", stage="verify")
    return float(value)


def _tensors(data: dict[str, Any], key: str, where: str) -> tuple[TensorSpec, ...]:
    items = data.get(key)
    if not isinstance(items, list) or not items:
        raise EdgeError(f"{where}: field '{key}' is missing or not a non-empty list.", stage="verify")
    specs = []
    for i, item in enumerate(items):
        at = f"{where}: {key}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise EdgeError(f"{at} has no name.", stage="verify")
        if item.get("datatype") not in DATATYPES:
            raise EdgeError(f"{at} datatype {item.get('datatype')!r} is not an Open Inference Protocol type.")
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= -1 for d in shape):
            raise EdgeError(f"{at} shape {shape!r} is not a list of sizes (-1 for dynamic).", stage="verify")
        specs.append(TensorSpec(item["name"], item["datatype"], tuple(shape)))
    if len({spec.name for spec in specs}) != len(specs):
        raise EdgeError(f"{where}: field '{key}' names a tensor twice.", stage="verify")
    return tuple(specs)


def _domains(runtime: dict[str, Any], where: str) -> dict[str, int]:
    domains = runtime.get("domains")
    if not isinstance(domains, dict) or not all(isinstance(v, int) and v > 0 for v in domains.values()):
        raise EdgeError(f"{where}: runtime.domains is not an object of domain -> opset.", stage="verify")
    # ONNX writes the default domain as "" in a model; the manifest spells it ai.onnx.
    return {("ai.onnx" if k == "" else str(k)): int(v) for k, v in domains.items()}


def _files(data: dict[str, Any], where: str) -> dict[str, FileEntry]:
    files = _object(data, "files", where)
    entries = {}
    for name in HASHED:
        entry = files.get(name)
        if not isinstance(entry, dict) or not _SHA256.match(str(entry.get("sha256", ""))):
            raise EdgeError(f"{where}: files.{name} has no sha256 digest.", stage="verify")
        if not isinstance(entry.get("size"), int) or entry["size"] < 0:
            raise EdgeError(f"{where}: files.{name} has no size.", stage="verify")
        entries[name] = FileEntry(entry["sha256"], entry["size"])
    if set(files) - set(HASHED):
        raise EdgeError(f"{where}: files lists {sorted(set(files) - set(HASHED))}, which a bundle does not hold.")
    return entries


@dataclass(frozen=True)
class RuntimeSupport:
    """What the local runtime can execute: sent in the enrollment profile, checked per bundle."""

    runtime_version: str
    max_opset: int
    domains: dict[str, int]


def max_opset_for(runtime_version: str) -> int:
    release = tuple(int(p) for p in re.findall(r"\d+", runtime_version)[:2])
    known = [opset for ver, opset in sorted(ORT_MAX_OPSET.items()) if ver <= release]
    return known[-1] if known else min(ORT_MAX_OPSET.values())


def local_support() -> RuntimeSupport:
    import onnxruntime

    version = onnxruntime.__version__
    opset = max_opset_for(version)
    return RuntimeSupport(version, opset, {"ai.onnx": opset, **ORT_DOMAINS})


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
    if parse_version(manifest.min_agent_version) > parse_version(agent_version):
        return (
            f"bundle {manifest.label} needs agent {manifest.min_agent_version} or newer; this agent is {agent_version}."
        )
    return None
