"""What an export produces and how variants are judged, per model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

VARIANTS = ("fp32", "fp16", "int8-dynamic", "int8-static")
TARGETS = ("edge-cpu", "server-cpu", "server-gpu")
# Targets that take standard ONNX ops only unless their budget says otherwise. Edge devices update
# slowly and may run another ONNX Runtime version, a reduced-operator (mobile) build or another
# runtime: standard opsets carry ONNX's compatibility guarantee, ONNX Runtime's contrib ops
# (com.microsoft, e.g. DynamicQuantizeLSTM in an LSTM's int8-dynamic variant) do not. Servers run
# the ONNX Runtime this platform installs (and Triton's onnxruntime backend), which has them.
STANDARD_OPS_TARGETS = frozenset({"edge-cpu"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CalibrationSpec(_Strict):
    method: Literal["MinMax", "Entropy", "Percentile"] = "MinMax"
    activations: Literal["uint8", "int8"] = Field(
        "uint8",
        description="Activation type of int8-static (weights are always signed int8). On x86-64, ONNX Runtime "
        "runs uint8-activation/int8-weight QDQ on its fast kernels; signed activations took 1.7x as long on "
        "MobileNetV2 here (1.79 vs 1.03 ms) and lose to fp32. Choose int8 for runtimes that want S8S8.",
    )
    per_channel: bool = True
    samples: int = Field(128, ge=8, le=10_000, description="Training rows used to calibrate int8-static.")


class BudgetSpec(_Strict):
    max_accuracy_drop: float = Field(
        0.5, ge=0, description="Points (percent) of the primary metric a variant may lose against Keras."
    )
    max_size_mb: float | None = Field(None, gt=0, description="Largest file a target accepts.")
    max_latency_ms: float | None = Field(None, gt=0, description="Slowest batch-1 p50 a target accepts.")
    standard_ops_only: bool | None = Field(
        None,
        description="Reject variants that use operators outside the standard ONNX domains (ai.onnx, ai.onnx.ml), "
        "such as ONNX Runtime's com.microsoft ops. Unset: true for edge-cpu, false for the server targets.",
    )


class ExportSpec(_Strict):
    opset: int = Field(17, ge=13, le=21)
    atol: float = Field(1e-4, gt=0, description="Parity: largest absolute difference ONNX vs Keras (fp32).")
    rtol: float = Field(1e-3, ge=0, description="Parity: relative tolerance on top of atol.")
    parity_samples: int = Field(64, ge=1, le=10_000)
    variants: list[str] = Field(default_factory=lambda: list(VARIANTS), description=f"Of {', '.join(VARIANTS)}.")
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    budgets: dict[Literal["edge-cpu", "server-cpu", "server-gpu"], BudgetSpec] = Field(default_factory=dict)
    latency_runs: int = Field(30, ge=3, le=10_000, description="Timed runs per latency figure.")
    triton_max_batch: int = Field(32, ge=1)

    @field_validator("variants")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant '{unknown[0]}' (variants: {', '.join(VARIANTS)})")
        if "fp32" not in names:
            raise ValueError("fp32 is the reference every other variant is made from; keep it")
        return names

    def budget(self, target: str) -> BudgetSpec:
        budget: BudgetSpec = self.budgets.get(target, BudgetSpec())  # type: ignore[call-overload]
        if budget.standard_ops_only is None:
            budget = budget.model_copy(update={"standard_ops_only": target in STANDARD_OPS_TARGETS})
        return budget
