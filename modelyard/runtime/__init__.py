"""ONNX Runtime as both sides use it: the platform's server (modelyard.platform.serving) and the
device agent (modelyard.edge.runtime) open sessions, read signatures and run models through it,
so thread settings, provider checks and errors are decided once.

A leaf package: it imports no part of modelyard but the protocol vocabulary (modelyard.oip.protocol),
and onnxruntime only inside the functions that need it.
"""

from __future__ import annotations

from modelyard.runtime.ort import (
    CPU,
    CUDA,
    ORT_DOMAINS,
    ORT_MAX_OPSET,
    ProviderFallback,
    SessionError,
    UnsupportedTensor,
    domains_for,
    first_line,
    max_opset_for,
    open_session,
    run,
    signature,
)

__all__ = [
    "CPU",
    "CUDA",
    "ORT_DOMAINS",
    "ORT_MAX_OPSET",
    "ProviderFallback",
    "SessionError",
    "UnsupportedTensor",
    "domains_for",
    "first_line",
    "max_opset_for",
    "open_session",
    "run",
    "signature",
]
