"""The modelyard device agent: enroll, pull, verify, swap, serve, report.

It depends on ONNX Runtime, numpy, httpx and OpenSSF model-signing only, and imports nothing of
modelyard outside this package but the leaves both sides share (modelyard.bundle, modelyard.oip,
modelyard.runtime, modelyard.retry), so it installs alone on a device (`pip install modelyard[edge]`).
Importing the package is cheap: the heavy modules load when `Agent` or a submodule is used.
The contract with the control plane is PROTOCOL.md beside this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelyard.edge.version import AGENT_VERSION

if TYPE_CHECKING:
    from modelyard.edge.agent import Agent

__all__ = ["AGENT_VERSION", "Agent"]


def __getattr__(name: str) -> Any:
    # Lazy so that `import modelyard.edge` does not load onnxruntime or httpx.
    if name == "Agent":
        from modelyard.edge.agent import Agent

        return Agent
    raise AttributeError(f"module 'modelyard.edge' has no attribute {name!r}")
