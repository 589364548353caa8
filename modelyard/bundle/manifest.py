"""The bundle's files and its manifest.json (modelyard/edge/PROTOCOL.md, "Bundle").

The control plane's builder (modelyard/exporters/bundle.py) writes a manifest and checks it
with `Manifest.from_dict` before signing; the agent checks the one it receives the same way.
Each bad field is one ManifestError naming it: the agent reports it as a verify failure.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.oip.protocol import DATATYPES, TensorSpec

FORMAT = 1
# The oldest agent that installs what the builder writes now, written into every manifest. Raise it with
# FORMAT, or when a field older agents would ignore must not be ignored; an agent's own version is
# modelyard.edge.version.AGENT_VERSION, never below this (tests/bundle checks).
MIN_AGENT_VERSION = "1.0.0"
MANIFEST = "manifest.json"
MODEL = "model.onnx"
SMOKE = "smoke.npz"
SIGNATURE = "model.sig"
MEMBERS = (MANIFEST, MODEL, SMOKE, SIGNATURE)
# The files manifest.json lists with their digest (the manifest itself and the signature cannot list themselves).
HASHED = (MODEL, SMOKE)

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest (or a version in it) is malformed: one sentence naming the field."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_version(text: str, *, where: str = "version") -> tuple[int, ...]:
    """'1.0.0' -> (1, 0, 0); compared as tuples, so 1.10.0 is newer than 1.9.0."""
    if not isinstance(text, str) or not re.fullmatch(r"\d+(\.\d+){0,3}", text):
        raise ManifestError(f"{where} {text!r} is not a version like '1.0.0'.")
    return tuple(int(part) for part in text.split("."))


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
            raise ManifestError(f"{where} is not a JSON object.")
        if data.get("format") != FORMAT:
            raise ManifestError(f"{where}: format {data.get('format')!r} is not {FORMAT}, the one this agent reads.")
        text = {key: _string(data, key, where) for key in ("model", "version", "variant", "target", "created")}
        parse_version(_string(data, "min_agent_version", where), where=f"{where}: min_agent_version")
        runtime = _object(data, "runtime", where)
        smoke = _object(data, "smoke", where)
        latency = smoke.get("max_latency_ms")
        if latency is not None and (not _number(latency) or latency <= 0):
            raise ManifestError(f"{where}: smoke.max_latency_ms {latency!r} is not a positive number or null.")
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
        raise ManifestError(f"{where}: field '{key}' is missing or not a non-empty string.")
    return value


def _object(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: field '{key}' is missing or not an object.")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive_int(data: dict[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ManifestError(f"{where}.{key} {value!r} is not a positive integer.")
    return value


def _tolerance(smoke: dict[str, Any], key: str, where: str) -> float:
    value: Any = smoke.get(key)
    if not _number(value) or value < 0:
        raise ManifestError(f"{where}: smoke.{key} {value!r} is not a number >= 0.")
    return float(value)


def _tensors(data: dict[str, Any], key: str, where: str) -> tuple[TensorSpec, ...]:
    items = data.get(key)
    if not isinstance(items, list) or not items:
        raise ManifestError(f"{where}: field '{key}' is missing or not a non-empty list.")
    specs = []
    for i, item in enumerate(items):
        at = f"{where}: {key}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ManifestError(f"{at} has no name.")
        if item.get("datatype") not in DATATYPES:
            raise ManifestError(f"{at} datatype {item.get('datatype')!r} is not an Open Inference Protocol type.")
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= -1 for d in shape):
            raise ManifestError(f"{at} shape {shape!r} is not a list of sizes (-1 for dynamic).")
        specs.append(TensorSpec(item["name"], item["datatype"], tuple(shape)))
    if len({spec.name for spec in specs}) != len(specs):
        raise ManifestError(f"{where}: field '{key}' names a tensor twice.")
    return tuple(specs)


def _domains(runtime: dict[str, Any], where: str) -> dict[str, int]:
    domains = runtime.get("domains")
    if not isinstance(domains, dict) or not all(isinstance(v, int) and v > 0 for v in domains.values()):
        raise ManifestError(f"{where}: runtime.domains is not an object of domain -> opset.")
    # ONNX writes the default domain as "" in a model; the manifest spells it ai.onnx.
    return {("ai.onnx" if k == "" else str(k)): int(v) for k, v in domains.items()}


def _files(data: dict[str, Any], where: str) -> dict[str, FileEntry]:
    files = _object(data, "files", where)
    entries = {}
    for name in HASHED:
        entry = files.get(name)
        if not isinstance(entry, dict) or not SHA256.match(str(entry.get("sha256", ""))):
            raise ManifestError(f"{where}: files.{name} has no sha256 digest.")
        if not isinstance(entry.get("size"), int) or entry["size"] < 0:
            raise ManifestError(f"{where}: files.{name} has no size.")
        entries[name] = FileEntry(entry["sha256"], entry["size"])
    if set(files) - set(HASHED):
        raise ManifestError(f"{where}: files lists {sorted(set(files) - set(HASHED))}, which a bundle does not hold.")
    return entries
