"""Every variant the platform writes is valid ONNX, and the report says what each needs to run.

The float16 converter appends the Casts it adds at the end of the node list; ONNX Runtime
runs such a graph, ONNX's full checker (and stricter runtimes) refuse it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelyard.exporters import graph, variants
from modelyard.exporters.pipeline import ExportData, export_model
from modelyard.exporters.spec import ExportSpec
from modelyard.trainers.architectures import build_model
from modelyard.trainers.evaluate import classification_metrics
from modelyard.trainers.spec import ArchitectureSpec

RNG = np.random.default_rng(0)
SPEC = ExportSpec(latency_runs=3, parity_samples=16, calibration={"samples": 16})


def data_for(x: np.ndarray, n_classes: int = 3) -> ExportData:
    y = RNG.integers(0, n_classes, len(x))
    return ExportData(x, x, x, lambda out: classification_metrics(y, out, n_classes).metrics, "accuracy", True)


def attention_block(x: np.ndarray):
    import keras

    inputs = keras.Input(x.shape[1:], name="sequence")
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(inputs, inputs)
    h = keras.layers.LayerNormalization()(keras.layers.Add()([inputs, h]))
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))


def recurrent(cell: str, **params):
    return lambda x: build_model(ArchitectureSpec(name=cell, params={"units": 4, **params}), x, 3, "classification")


FAMILIES = {
    "bidirectional-lstm": recurrent("lstm", bidirectional=True),
    "stacked-gru": recurrent("gru", layers_count=2),
    "multi-head-attention": attention_block,
    "lstm-classifier": recurrent("lstm"),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_written_model_passes_the_full_checker(family: str, tmp_path: Path) -> None:
    import onnx

    x = RNG.random((24, 6, 4), dtype=np.float32)
    result = export_model(FAMILIES[family](x), data_for(x), SPEC, tmp_path / "export", "m")

    assert set(result.variant_files) == {"fp32", "fp16", "int8-dynamic", "int8-static"}
    written = sorted((tmp_path / "export").rglob("*.onnx"))
    assert len(written) >= 5  # the converted model, four variants, the Triton copies
    for path in written:
        onnx.checker.check_model(str(path), full_check=True)
    needs = result.report["runtime_needs"]
    assert set(needs) == set(result.variant_files)
    assert needs["fp16"]["domains"] == {"ai.onnx": SPEC.opset} and needs["fp16"]["standard_ops_only"]
    assert result.report["failed_variants"] == {}


def test_contrib_ops_are_reported_and_refused_where_standard_ops_are_required(tmp_path: Path) -> None:
    """An LSTM's int8-dynamic variant needs ONNX Runtime's DynamicQuantizeLSTM: fine on a server, not on edge."""
    x = RNG.random((24, 6, 4), dtype=np.float32)
    spec = ExportSpec.model_validate({**SPEC.model_dump(), "variants": ["fp32", "int8-dynamic"]})

    result = export_model(recurrent("lstm")(x), data_for(x), spec, tmp_path / "export", "m")

    needs = result.report["runtime_needs"]["int8-dynamic"]
    assert needs["domains"] == {"ai.onnx": spec.opset, "com.microsoft": 1}
    assert "DynamicQuantizeLSTM" in needs["ops"]["com.microsoft"] and not needs["standard_ops_only"]
    reasons = result.report["targets"]
    assert reasons["edge-cpu"]["reasons"]["int8-dynamic"] == (
        "rejected: needs ops outside standard ONNX (com.microsoft: DynamicQuantizeLSTM); "
        "edge-cpu takes standard ops only"
    )
    assert "standard" not in reasons["server-cpu"]["reasons"]["int8-dynamic"]


def test_standard_ops_only_defaults_per_target_and_can_be_turned_off() -> None:
    assert SPEC.budget("edge-cpu").standard_ops_only is True
    assert SPEC.budget("server-cpu").standard_ops_only is False
    relaxed = ExportSpec.model_validate({"budgets": {"edge-cpu": {"max_size_mb": 5, "standard_ops_only": False}}})
    assert relaxed.budget("edge-cpu").standard_ops_only is False


def unsorted_model(path: Path) -> Path:
    """Relu reads Neg's output but comes first: what the float16 converter wrote."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["negated"], ["y"]), helper.make_node("Neg", ["x"], ["negated"])]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 2]) for n in ("x", "y")]
    model = helper.make_model(
        helper.make_graph(nodes, "g", io[:1], io[1:]), opset_imports=[helper.make_opsetid("", 17)]
    )
    onnx.save(model, str(path))
    return path


def test_an_invalid_variant_is_rejected_with_the_checkers_reason(tmp_path: Path) -> None:
    made = variants.Variants()

    variants.accept(made, "fp16", unsorted_model(tmp_path / "fp16.onnx"))

    assert made.files == {} and not (tmp_path / "fp16.onnx").exists()
    assert made.rejected["fp16"].startswith(
        "not valid ONNX (full checker: Nodes in a graph must be topologically sorted, however input 'negated'"
    )


def test_sorting_makes_the_graph_valid(tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(unsorted_model(tmp_path / "m.onnx")))

    graph.sort_topologically(model.graph)

    assert [n.op_type for n in model.graph.node] == ["Neg", "Relu"]
    onnx.checker.check_model(model, full_check=True)
