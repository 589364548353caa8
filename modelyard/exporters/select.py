"""Choose a variant per target profile by rule, and say why every other one was not chosen."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from modelyard.exporters.measure import Measured
from modelyard.exporters.spec import ExportSpec

LOWER_IS_BETTER = frozenset({"log_loss", "ece", "mae", "rmse"})
# "Not slower than fp32" on a noisy machine: within 5% counts as not slower.
NOISE = 1.05


@dataclass
class Selection:
    target: str
    chosen: str | None
    reasons: dict[str, str] = field(default_factory=dict)  # variant -> "chosen: ..." or "rejected: ..."

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Checks:
    """What the export found out about each variant before measuring it."""

    parity_failed: set[str]
    nonstandard: dict[str, str]


def accuracy_drop(metric: str, keras: float, variant: float) -> float:
    """Points lost against Keras (percentage points for metrics in [0, 1])."""
    loss = variant - keras if metric in LOWER_IS_BETTER else keras - variant
    return loss * 100


def select(
    measured: list[Measured],
    keras_metrics: dict[str, float],
    primary: str,
    spec: ExportSpec,
    parity_failed: set[str],
    cuda: bool,
    nonstandard: dict[str, str],
) -> list[Selection]:
    """`nonstandard`: variant -> its ops outside the standard ONNX domains, for targets that refuse them."""
    by_name = {m.variant: m for m in measured}
    fp32 = by_name.get("fp32")
    checks = _Checks(parity_failed, nonstandard)
    return [
        _edge_cpu(measured, keras_metrics, primary, spec, checks, fp32),
        _server_cpu(measured, keras_metrics, primary, spec, checks),
        _server_gpu(measured, keras_metrics, primary, spec, checks, cuda),
    ]


def _common(
    m: Measured,
    keras: dict[str, float],
    primary: str,
    spec: ExportSpec,
    target: str,
    checks: _Checks,
    latency: float | None,
) -> str | None:
    """Why a variant is out for this target, or None."""
    budget = spec.budget(target)
    if m.variant in checks.parity_failed:
        return "rejected: fails parity with Keras"
    if budget.standard_ops_only and checks.nonstandard.get(m.variant):
        ops = checks.nonstandard[m.variant]
        return f"rejected: needs ops outside standard ONNX ({ops}); {target} takes standard ops only"
    drop = accuracy_drop(primary, keras[primary], m.metrics[primary])
    if drop > budget.max_accuracy_drop:
        return f"rejected: {primary} drops {drop:.2f} points (budget {budget.max_accuracy_drop})"
    if budget.max_size_mb is not None and m.size_bytes > budget.max_size_mb * 1e6:
        return f"rejected: {m.size_bytes / 1e6:.2f} MB is over the {budget.max_size_mb} MB budget"
    if budget.max_latency_ms is not None and latency is not None and latency > budget.max_latency_ms:
        return f"rejected: p50 {latency:.3f} ms is over the {budget.max_latency_ms} ms budget"
    return None


def _edge_cpu(
    measured: list[Measured],
    keras: dict[str, float],
    primary: str,
    spec: ExportSpec,
    checks: _Checks,
    fp32: Measured | None,
) -> Selection:
    """The smallest variant within budget that is not slower than fp32 (batch 1, one thread)."""
    sel = Selection("edge-cpu", None)
    ok = []
    base = fp32.latency(batch=1, threads=1) if fp32 else None
    for m in measured:
        lat = m.latency(batch=1, threads=1)
        why = _common(m, keras, primary, spec, "edge-cpu", checks, lat)
        if why is None and base is not None and lat is not None and lat > base * NOISE:
            why = f"rejected: slower than fp32 ({lat:.3f} vs {base:.3f} ms p50, batch 1, one thread)"
        sel.reasons[m.variant] = why or ""
        if why is None:
            ok.append(m)
    return _pick(
        sel, ok, key=lambda m: m.size_bytes, why=lambda m: f"smallest within budget ({m.size_bytes / 1e3:.1f} kB)"
    )


def _server_cpu(
    measured: list[Measured], keras: dict[str, float], primary: str, spec: ExportSpec, checks: _Checks
) -> Selection:
    """The fastest variant within budget (batch 32, all threads, CPU)."""
    sel = Selection("server-cpu", None)
    ok = []
    for m in measured:
        why = _common(m, keras, primary, spec, "server-cpu", checks, _cpu_batch32(m))
        sel.reasons[m.variant] = why or ""
        if why is None:
            ok.append(m)
    return _pick(
        sel,
        ok,
        key=_cpu_batch32,
        why=lambda m: f"fastest within budget ({_cpu_batch32(m):.3f} ms p50, batch 32, all threads)",
    )


def _cpu_batch32(m: Measured) -> float:
    """Batch-32 p50 on the CPU with the most threads measured."""
    cpu = [x for x in m.latencies if x.provider == "CPUExecutionProvider" and x.batch == 32]
    return max(cpu, key=lambda x: x.threads).p50_ms if cpu else float("inf")


def _cuda_batch32(m: Measured) -> float | None:
    return next((x.p50_ms for x in m.latencies if x.provider == "CUDAExecutionProvider" and x.batch == 32), None)


def _server_gpu(
    measured: list[Measured],
    keras: dict[str, float],
    primary: str,
    spec: ExportSpec,
    checks: _Checks,
    cuda: bool,
) -> Selection:
    """fp16 or fp32 on CUDA, the faster within budget."""
    sel = Selection("server-gpu", None)
    ok = []
    for m in measured:
        if m.variant not in ("fp16", "fp32"):
            sel.reasons[m.variant] = "rejected: server-gpu serves fp16 or fp32 only"
            continue
        if not cuda:
            sel.reasons[m.variant] = "rejected: no CUDA execution provider on the exporting machine"
            continue
        lat = _cuda_batch32(m)
        why = _common(m, keras, primary, spec, "server-gpu", checks, lat)
        sel.reasons[m.variant] = why or ""
        if why is None and lat is not None:
            ok.append(m)
    return _pick(
        sel,
        ok,
        key=lambda m: _cuda_batch32(m) or float("inf"),
        why=lambda m: f"fastest on CUDA within budget ({_cuda_batch32(m):.3f} ms p50, batch 32)",
    )


def _pick(sel: Selection, ok: list[Measured], key: Any, why: Any) -> Selection:
    if ok:
        best = min(ok, key=key)
        sel.chosen = best.variant
        for m in ok:
            sel.reasons[m.variant] = f"chosen: {why(m)}" if m is best else f"rejected: {best.variant} is better here"
    return sel
