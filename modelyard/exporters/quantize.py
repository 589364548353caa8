"""int8 variants: dynamic (weights only) and static QDQ calibrated on training rows."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.exporters import graph
from modelyard.exporters.convert import ExportError
from modelyard.exporters.spec import CalibrationSpec

# Dynamic quantization touches only these: Conv stays float (it gets 5-7x slower on CPUs without VNNI).
DYNAMIC_OPS = ["MatMul", "Gemm", "LSTM", "GRU", "Attention"]
# Ops that carry a layer's weights: int8-static quantizes from the first of them onward.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "Einsum", "Gather"})


def int8_dynamic(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), op_types_to_quantize=DYNAMIC_OPS, weight_type=QuantType.QInt8)
    onnx.save(graph.tidy(onnx.load(str(target))), str(target))


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


def float_prefix(model: Any) -> list[str]:
    """Names of the nodes between the graph inputs and the first weight-bearing ops, which stay float.

    One int8 scale per tensor cannot hold raw inputs whose features differ in range by orders of
    magnitude (tabular data before a Normalization layer: 1e-3 next to 1e3), nor a Normalization's
    mean and variance constants; quantized, the small features become zero. From the first
    Dense/Conv on, activations are standardized and one scale holds them. Unnamed nodes get a name.
    """
    g = model.graph
    weights = {i.name for i in g.initializer}
    readers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(g.node):
        node.name = node.name or f"modelyard_node_{i}"
        for name in graph.reads(node):
            readers[name].append(i)
    frontier = [i.name for i in g.input if i.name not in weights]
    keep: set[int] = set()
    while frontier:
        for i in readers[frontier.pop()]:
            node = g.node[i]
            if i in keep or _carries_weights(node, weights):
                continue
            keep.add(i)
            frontier.extend(o for o in node.output if o)
    return [g.node[i].name for i in sorted(keep)]


def _carries_weights(node: Any, weights: set[str]) -> bool:
    if node.op_type == "Gather":  # an Embedding's table is its data; constant indices only pick columns or dims
        return bool(node.input) and node.input[0] in weights
    return node.op_type in WEIGHTED_OPS and any(name in weights for name in node.input)


def int8_static(source: Path, target: Path, feeds: dict[str, np.ndarray], spec: CalibrationSpec) -> None:
    """QDQ with signed int8 weights (per channel or per tensor), calibrated on a sample of the training data;
    the input's preprocessing stays float (see float_prefix)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    sample = {k: v[: spec.samples] for k, v in feeds.items()}
    with tempfile.TemporaryDirectory(prefix="modelyard-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
        except Exception:  # symbolic shape inference gives up on some graphs (several inputs): ONNX's own then
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        keep_float = float_prefix(model)
        onnx.save(model, str(prepared))  # with the names float_prefix gave
        quantize_static(
            str(prepared),
            str(target),
            _Reader(sample),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8 if spec.activations == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=spec.per_channel,
            calibrate_method=getattr(CalibrationMethod, spec.method),
            nodes_to_exclude=keep_float,
            extra_options={"ActivationSymmetric": True} if spec.activations == "int8" else {},
        )
    onnx.save(graph.tidy(onnx.load(str(target))), str(target))
