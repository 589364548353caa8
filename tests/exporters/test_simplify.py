"""The fp32 variant is simplified: the Flatten's shape computation under a dynamic batch is folded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelyard.exporters import graph
from modelyard.exporters.pipeline import ExportData, export_model
from modelyard.exporters.spec import ExportSpec
from modelyard.trainers.architectures import build_model
from modelyard.trainers.evaluate import classification_metrics
from modelyard.trainers.spec import ArchitectureSpec


def test_the_digits_cnn_exports_without_shape_computations(tmp_path: Path) -> None:
    import onnx

    rng = np.random.default_rng(0)
    x, y = rng.random((32, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 32)
    model = build_model(
        ArchitectureSpec(name="cnn", params={"filters": [4, 8], "dense_units": 8}), x, 10, "classification"
    )
    data = ExportData(x, x, x, lambda out: classification_metrics(y, out, 10).metrics, "accuracy", True)
    spec = ExportSpec(latency_runs=3, parity_samples=32, variants=["fp32", "fp16"])

    result = export_model(model, data, spec, tmp_path / "export", "digits")

    raw = [n.op_type for n in graph.all_nodes(onnx.load(str(tmp_path / "export" / "model.onnx")).graph)]
    for variant in ("fp32", "fp16"):
        ops = [n.op_type for n in graph.all_nodes(onnx.load(str(result.variant_files[variant])).graph)]
        assert "Shape" not in ops and "Gather" not in ops, variant
    fp32_ops = [n.op_type for n in graph.all_nodes(onnx.load(str(result.variant_files["fp32"])).graph)]
    assert "Shape" in raw and len(fp32_ops) <= len(raw) - 6
    assert result.report["runtime_needs"]["fp32"]["nodes"] == len(fp32_ops)
    assert result.report["converted_nodes"] == len(raw)
    fp32_parity = result.report["parity"]["fp32"]
    assert fp32_parity["passed"] and fp32_parity["max_abs_diff"] <= spec.atol
    assert fp32_parity["decision_agreement"] == 1.0
