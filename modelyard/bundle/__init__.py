"""The edge bundle format (modelyard/edge/PROTOCOL.md, "Bundle"), which both sides speak.

The control plane's builder (modelyard.exporters.bundle) writes bundles, the platform serves
them (modelyard.platform.fleet.bundles), the agent (modelyard.edge) verifies and runs them; all
three read the format from here, so none owns it and none can drift from the others.

A leaf package: it imports no part of modelyard but the protocol vocabulary it names tensors in
(modelyard.oip.protocol), and nothing outside the standard library, so it installs with the agent.
"""

from __future__ import annotations

from modelyard.bundle.device import RuntimeSupport, agent_refusal, check_desired, runtime_refusal
from modelyard.bundle.manifest import (
    FORMAT,
    HASHED,
    MANIFEST,
    MEMBERS,
    MIN_AGENT_VERSION,
    MODEL,
    SIGNATURE,
    SMOKE,
    FileEntry,
    Manifest,
    ManifestError,
    parse_version,
    sha256_file,
)
from modelyard.oip.protocol import DATATYPES, TensorSpec

__all__ = [
    "DATATYPES",
    "FORMAT",
    "HASHED",
    "MANIFEST",
    "MEMBERS",
    "MIN_AGENT_VERSION",
    "MODEL",
    "SIGNATURE",
    "SMOKE",
    "FileEntry",
    "Manifest",
    "ManifestError",
    "RuntimeSupport",
    "TensorSpec",
    "agent_refusal",
    "check_desired",
    "parse_version",
    "runtime_refusal",
    "sha256_file",
]
