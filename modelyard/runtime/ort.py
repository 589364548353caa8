"""ONNX Runtime: open a session the way both the server and the agent need it, read its signature, run
it; and which opsets each release implements.

onnxruntime is imported inside the functions: importing this module stays cheap, and the
platform may have onnxruntime-gpu where the agent has onnxruntime (same module name).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelyard.oip.protocol import ONNX_TO_OIP, TensorSpec

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class SessionError(RuntimeError):
    """ONNX Runtime cannot open the model (a corrupt file, an operator this build lacks).

    `reason` is the first line of ONNX Runtime's own message: callers put it in their sentence.
    """

    def __init__(self, path: Path, cause: BaseException) -> None:
        self.reason = first_line(cause, 300)
        super().__init__(f"ONNX Runtime cannot load {path.name} ({self.reason}).")


class ProviderFallback(RuntimeError):
    """The session runs on another execution provider than the one asked for first."""

    def __init__(self, wanted: str, got: str) -> None:
        self.wanted, self.got = wanted, got
        super().__init__(f"ONNX Runtime fell back from {wanted} to {got}.")


class UnsupportedTensor(TypeError):
    """A model input or output has an ONNX type the Open Inference Protocol tables do not cover."""

    def __init__(self, name: str, onnx_type: str) -> None:
        self.name, self.onnx_type = name, onnx_type
        super().__init__(f"tensor '{name}' has type {onnx_type}, which has no Open Inference Protocol datatype.")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (ONNX Runtime's run on for pages), or its type's name."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def open_session(
    path: Path,
    *,
    providers: Sequence[str] = (CPU,),
    threads: int = 0,
    spinning: bool = True,
    log_severity: int | None = None,
) -> Any:
    """An InferenceSession on `providers` (in order of preference); raises SessionError or ProviderFallback.

    `threads` are intra-op threads (0: ONNX Runtime's default, one per core). Inter-op is one:
    graphs run sequentially, so more would only sit idle. `spinning=False` stops idle threads from
    spinning, which on a small machine takes the CPU an event loop needs.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if log_severity is not None:
        options.log_severity_level = log_severity
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as exc:
        raise SessionError(path, exc) from exc
    got = list(session.get_providers())
    if got[0] != providers[0]:  # CUDA (or any other provider that cannot start) falls back to CPU silently
        raise ProviderFallback(providers[0], got[0])
    return session


def _spec(arg: Any) -> TensorSpec:
    datatype = ONNX_TO_OIP.get(arg.type)
    if datatype is None:
        raise UnsupportedTensor(arg.name, arg.type)
    # A symbolic or unknown dimension (a str or None) accepts any size.
    return TensorSpec(arg.name, datatype, tuple(d if isinstance(d, int) and d > 0 else -1 for d in arg.shape))


def signature(session: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The session's inputs and outputs in Open Inference Protocol terms; UnsupportedTensor for other types."""
    return [_spec(i) for i in session.get_inputs()], [_spec(o) for o in session.get_outputs()]


def run(session: Any, names: Sequence[str], feeds: dict[str, Any]) -> dict[str, Any]:
    """{output name: array} for the outputs named, in that order."""
    return dict(zip(names, session.run(list(names), feeds), strict=True))


# What each release implements: facts about ONNX Runtime, not about a device. The agent builds its RuntimeSupport
# from them (modelyard/edge/runtime.py, local_support), and every bundle's needs are checked against that.
# The highest ai.onnx opset per release (onnxruntime.ai/docs/reference/compatibility).
# A release newer than the table gets the last known value: refusing a little too much beats crashing.
ORT_MAX_OPSET = {(1, 14): 18, (1, 15): 19, (1, 16): 19, (1, 17): 20, (1, 18): 21, (1, 19): 21, (1, 20): 21}
ORT_MAX_OPSET.update({(1, 21): 22, (1, 22): 22, (1, 23): 23})
# Domains ONNX Runtime's CPU build provides, with the highest opset it implements for each.
ORT_DOMAINS = {"ai.onnx.ml": 5, "com.microsoft": 1}


def max_opset_for(runtime_version: str) -> int:
    """The highest ai.onnx opset of a release ('1.22.0' -> 22); releases older than the table get its lowest."""
    release = tuple(int(p) for p in re.findall(r"\d+", runtime_version)[:2])
    known = [opset for ver, opset in sorted(ORT_MAX_OPSET.items()) if ver <= release]
    return known[-1] if known else min(ORT_MAX_OPSET.values())


def domains_for(runtime_version: str) -> dict[str, int]:
    """Every operator domain of a release with its highest opset (the default domain spelled ai.onnx)."""
    return {"ai.onnx": max_opset_for(runtime_version), **ORT_DOMAINS}
