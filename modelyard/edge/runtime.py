"""One installed bundle as an ONNX Runtime session: smoke test and predictions; what the local runtime runs.

CPU provider with few threads: the device runs other things, and one edge model per agent
does not need them all. The session itself is opened by modelyard.runtime, as the server's is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.bundle import MANIFEST, MODEL, SMOKE, RuntimeSupport, TensorSpec
from modelyard.edge.archive import parse_manifest
from modelyard.edge.errors import EdgeError, InferenceError
from modelyard.oip import fits
from modelyard.oip.tensors import numpy_dtype
from modelyard.runtime import SessionError, domains_for, first_line, max_opset_for, open_session, run

SMOKE_RUNS = 5


def local_support() -> RuntimeSupport:
    """What this device's ONNX Runtime implements (sent at enrollment, checked against every bundle)."""
    import onnxruntime

    version = onnxruntime.__version__
    return RuntimeSupport(version, max_opset_for(version), domains_for(version))


class LoadedModel:
    def __init__(self, slot_dir: Path, *, threads: int = 2) -> None:
        self.slot_dir = slot_dir
        self.manifest = parse_manifest(json.loads((slot_dir / MANIFEST).read_text()))
        try:
            # Log severity 3 (errors only): ONNX Runtime's warnings about the graph would fill a device's log.
            self.session = open_session(slot_dir / MODEL, threads=threads, log_severity=3)
        except SessionError as exc:
            raise EdgeError(
                f"bundle {self.manifest.label}: ONNX Runtime cannot load model.onnx ({exc.reason[:200]}).",
                stage="smoke",
            ) from exc
        self.output_names = [spec.name for spec in self.manifest.outputs]

    @property
    def label(self) -> str:
        return self.manifest.label

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model; a request that does not fit the manifest's signature is an InferenceError (client's)."""
        feed = {spec.name: _checked(spec, inputs, self.label) for spec in self.manifest.inputs}
        extra = sorted(set(inputs) - set(feed))
        if extra:
            raise InferenceError(f"model {self.label} has no input named {extra[0]!r}.")
        try:
            return run(self.session, self.output_names, feed)
        except Exception as exc:
            raise InferenceError(
                f"model {self.label} failed to run ({first_line(exc, 200)}).", client_error=False
            ) from exc

    def smoke_test(self) -> float:
        """Run smoke.npz; returns the p50 latency in ms, or raises naming the first output that disagrees."""
        with np.load(self.slot_dir / SMOKE, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        feed = {spec.name: arrays.get(f"input:{spec.name}") for spec in self.manifest.inputs}
        expected = {spec.name: arrays.get(f"output:{spec.name}") for spec in self.manifest.outputs}
        for kind, table in (("input", feed), ("output", expected)):
            missing = [name for name, value in table.items() if value is None]
            if missing:
                raise EdgeError(f"bundle {self.label}: smoke.npz lacks {kind} '{missing[0]}'.", stage="smoke")
        timings = []
        got: dict[str, np.ndarray] = {}
        for _ in range(SMOKE_RUNS):
            start = time.perf_counter()
            try:
                got = self.predict(feed)  # type: ignore[arg-type]
            except InferenceError as exc:
                raise EdgeError(f"smoke test: {exc}", stage="smoke") from exc
            timings.append((time.perf_counter() - start) * 1000)
        for name, want in expected.items():
            self._compare(name, got[name], want)  # type: ignore[arg-type]
        p50 = float(np.median(timings))
        budget = self.manifest.max_latency_ms
        if budget is not None and p50 > budget:
            raise EdgeError(
                f"bundle {self.label}: smoke batch p50 latency {p50:.1f} ms exceeds the {budget:g} ms budget.",
                stage="smoke",
            )
        return p50

    def _compare(self, name: str, got: np.ndarray, want: np.ndarray) -> None:
        m = self.manifest
        if got.shape != want.shape:
            raise EdgeError(
                f"bundle {self.label}: smoke output '{name}' has shape {got.shape}, expected {want.shape}.",
                stage="smoke",
            )
        if got.dtype.kind in "fc":
            ok = np.allclose(got, want, atol=m.atol, rtol=m.rtol, equal_nan=True)
            worst = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if got.size else 0.0
        else:
            ok, worst = bool(np.array_equal(got, want)), float("nan")
        if not ok:
            raise EdgeError(
                f"bundle {self.label}: smoke output '{name}' differs from the expected values "
                f"(max abs diff {worst:.3g}, atol {m.atol:g}, rtol {m.rtol:g}).",
                stage="smoke",
            )


def _checked(spec: TensorSpec, inputs: dict[str, Any], label: str) -> np.ndarray:
    if spec.name not in inputs:
        raise InferenceError(f"model {label} needs input '{spec.name}', which the request lacks.")
    value = np.asarray(inputs[spec.name])
    dtype = numpy_dtype(spec.datatype)
    if value.dtype != dtype:
        if value.dtype.kind in "iuf" and dtype.kind in "iuf" and np.can_cast(value.dtype, dtype, "same_kind"):
            value = value.astype(dtype)
        else:
            raise InferenceError(f"model {label} input '{spec.name}' must be {spec.datatype}, got {value.dtype}.")
    if not fits(value.shape, spec.shape):
        raise InferenceError(
            f"model {label} input '{spec.name}' has shape {list(value.shape)}, expected {list(spec.shape)} "
            "(-1: any size)."
        )
    return value
