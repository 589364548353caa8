"""Measure a variant: accuracy against Keras, file size, latency per batch size, threads and provider."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.exporters.convert import ExportError

BATCHES = (1, 32)


@dataclass
class Latency:
    provider: str
    batch: int
    threads: int
    p50_ms: float
    p95_ms: float


@dataclass
class Measured:
    variant: str
    size_bytes: int
    metrics: dict[str, float]
    latencies: list[Latency] = field(default_factory=list)
    agreement: float | None = None  # identical decisions with Keras on the test split

    def latency(self, provider: str = "CPUExecutionProvider", batch: int = 1, threads: int = 1) -> float | None:
        for lat in self.latencies:
            if (lat.provider, lat.batch, lat.threads) == (provider, batch, threads):
                return lat.p50_ms
        return None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def session(path: Path, provider: str = "CPUExecutionProvider", threads: int = 0) -> Any:
    """An ONNX Runtime session that really runs on `provider` (CUDA's silent CPU fallback is an error)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), options, providers=providers)
    if sess.get_providers()[0] != provider:
        raise ExportError(f"{path.name}: ONNX Runtime fell back from {provider} to {sess.get_providers()[0]}.")
    return sess


def cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def time_runs(run: Any, runs: int, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 95))


def bound_runner(sess: Any, feeds: dict[str, np.ndarray]) -> Any:
    """A call of the session with inputs and outputs bound once: less per-call overhead than run()."""
    binding = sess.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cpu")
    return lambda: sess.run_with_iobinding(binding)


def batch_of(feeds: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """`size` rows, repeating the sample if it is shorter."""
    out = {}
    for name, arr in feeds.items():
        reps = -(-size // len(arr))
        out[name] = np.concatenate([arr] * reps)[:size] if reps > 1 else arr[:size]
    return out


def measure(
    variant: str,
    path: Path,
    test_feeds: dict[str, np.ndarray],
    evaluate: Any,
    keras_decisions: np.ndarray | None,
    runs: int,
    providers: list[str],
) -> Measured:
    """`evaluate(outputs) -> metrics` scores the variant's outputs on the whole test split."""
    full = session(path)
    outputs = full.run(None, test_feeds)
    result = Measured(variant, path.stat().st_size, evaluate(outputs[0]))
    if keras_decisions is not None:
        result.agreement = float((np.asarray(outputs[0]).argmax(axis=1) == keras_decisions).mean())
    all_threads = os.cpu_count() or 1
    for provider in providers:
        thread_counts = (1, all_threads) if provider == "CPUExecutionProvider" else (0,)
        for threads in dict.fromkeys(thread_counts):
            sess = session(path, provider, threads)
            for batch in BATCHES:
                p50, p95 = time_runs(bound_runner(sess, batch_of(test_feeds, batch)), runs)
                result.latencies.append(Latency(provider, batch, threads or all_threads, p50, p95))
    return result
