"""The variants made from the fp32 ONNX model: optimized fp32, fp16, int8 dynamic, int8 static QDQ."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from modelyard.exporters.convert import ExportError
from modelyard.exporters.spec import CalibrationSpec

# Dynamic quantization touches only these: Conv stays float (it gets 5-7x slower on CPUs without VNNI).
DYNAMIC_OPS = ["MatMul", "Gemm", "LSTM", "GRU", "Attention"]


def optimize_fp32(source: Path, target: Path) -> None:
    """Offline graph optimization at the basic level: portable to any device's ONNX Runtime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def to_fp16(source: Path, target: Path) -> None:
    """Weights and compute in float16, inputs and outputs kept float32 (for GPU servers)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))


def int8_dynamic(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), op_types_to_quantize=DYNAMIC_OPS, weight_type=QuantType.QInt8)


class _Reader:
    """Feeds calibration batches to ONNX Runtime's calibrator."""

    def __init__(self, feeds: dict[str, np.ndarray], batch: int = 16) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            {k: v[i : i + batch] for k, v in feeds.items()} for i in range(0, len(next(iter(feeds.values()))), batch)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # ONNX Runtime reads the data once
        pass


def check_calibration(feeds: dict[str, np.ndarray], expected: dict[str, list[int | None]]) -> None:
    for name, dims in expected.items():
        if name not in feeds:
            raise ExportError(f"the calibration sample has no input '{name}' (it has {', '.join(feeds)}).")
        shape = feeds[name].shape
        if len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims[1:], shape[1:], strict=False)):
            want = ", ".join("batch" if d is None else str(d) for d in dims)
            raise ExportError(
                f"the calibration sample for input '{name}' has shape {tuple(shape)}; the model expects ({want})."
            )


def int8_static(source: Path, target: Path, feeds: dict[str, np.ndarray], spec: CalibrationSpec) -> None:
    """QDQ with signed int8 weights (per channel or per tensor), calibrated on a sample of the training data."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    sample = {k: v[: spec.samples] for k, v in feeds.items()}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
        except Exception:  # symbolic shape inference gives up on some graphs (several inputs): ONNX's own then
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _Reader(sample),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8 if spec.activations == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=spec.per_channel,
            calibrate_method=getattr(CalibrationMethod, spec.method),
            extra_options={"ActivationSymmetric": True} if spec.activations == "int8" else {},
        )
