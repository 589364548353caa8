"""Every model family exports with parity, variants, measurements and a choice per target.

Real Keras models (tiny instances), real tf2onnx, real ONNX Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelyard.exporters.convert import UnsupportedOperationError
from modelyard.exporters.pipeline import ExportData, export_model
from modelyard.exporters.spec import ExportSpec
from modelyard.trainers.architectures import build_model
from modelyard.trainers.evaluate import classification_metrics
from modelyard.trainers.spec import ArchitectureSpec

RNG = np.random.default_rng(0)
SPEC = ExportSpec(latency_runs=3, parity_samples=16, calibration={"samples": 16})


def data_for(x, n_classes: int = 3, rows: int = 48) -> ExportData:
    y = RNG.integers(0, n_classes, rows)
    return ExportData(x, x, x, lambda out: classification_metrics(y, out, n_classes).metrics, "accuracy", True)


def rand(*shape: int) -> np.ndarray:
    return RNG.random(shape, dtype=np.float32)


def check_export(model, data: ExportData, tmp_path: Path) -> dict:
    import onnx

    result = export_model(model, data, SPEC, tmp_path / "export", "m")
    report = json.loads((tmp_path / "export" / "export_report.json").read_text())
    assert report["parity"]["fp32"]["passed"] and report["parity"]["fp32"]["max_abs_diff"] <= 1e-4
    assert set(result.variant_files) == {"fp32", "fp16", "int8-dynamic", "int8-static"}
    assert result.targets["edge-cpu"] and result.targets["server-cpu"]
    assert (tmp_path / "export" / "export_plot.png").stat().st_size > 1000
    for path in result.variant_files.values():  # ONNX Runtime runs graphs the standard (and other runtimes) refuse
        onnx.checker.check_model(str(path), full_check=True)
    for target, selection in report["targets"].items():  # every variant has a verdict per target
        assert set(selection["reasons"]) == set(result.variant_files), target
    return report


@pytest.mark.parametrize(("name", "shape"), [("mlp", (6,)), ("cnn", (8, 8, 1)), ("lstm", (5, 3)), ("gru", (5, 3))])
def test_builtin_architectures(name: str, shape: tuple, tmp_path: Path) -> None:
    x = rand(48, *shape)
    check_export(build_model(ArchitectureSpec(name=name), x, 3, "classification"), data_for(x), tmp_path)


def test_conv1d_sequence_model(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((20, 4), name="signal")
    h = keras.layers.Conv1D(8, 3, activation="relu")(inputs)
    h = keras.layers.GlobalMaxPooling1D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    check_export(model, data_for(rand(48, 20, 4)), tmp_path)


def test_embedding_text_classifier(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((12,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(100, 8)(inputs)
    h = keras.layers.GlobalAveragePooling1D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    check_export(model, data_for(RNG.integers(0, 100, (48, 12)).astype(np.int32)), tmp_path)


def test_multi_input_functional_model(tmp_path: Path) -> None:
    import keras

    image = keras.Input((8, 8, 1), name="image")
    table = keras.Input((5,), name="table")
    a = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(image))
    b = keras.layers.Dense(4, activation="relu")(table)
    model = keras.Model([image, table], keras.layers.Dense(3, activation="softmax")(keras.layers.concatenate([a, b])))
    report = check_export(model, data_for({"image": rand(48, 8, 8, 1), "table": rand(48, 5)}), tmp_path)
    assert [i["name"] for i in report["inputs"]] == ["image", "table"]


@pytest.mark.slow
@pytest.mark.parametrize("application", ["MobileNetV2", "EfficientNetB0"])
def test_keras_applications(application: str, tmp_path: Path) -> None:
    import keras

    kwargs = {"alpha": 0.35} if application == "MobileNetV2" else {}
    model = getattr(keras.applications, application)(
        weights=None, input_shape=(32, 32, 3), classes=3, classifier_activation="softmax", **kwargs
    )
    check_export(model, data_for(rand(16, 32, 32, 3), rows=16), tmp_path)


def test_unsupported_operation_names_layer_and_op(tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    inputs = keras.Input((4,), name="x")
    h = keras.layers.Lambda(lambda t: tf.math.special.bessel_i0e(t), name="bessel")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    with pytest.raises(UnsupportedOperationError, match=r"layer 'bessel' uses operation '\w+'"):
        export_model(model, data_for(rand(16, 4), rows=16), SPEC, tmp_path / "export", "m")


def test_calibration_sample_of_the_wrong_shape(tmp_path: Path) -> None:
    from modelyard.exporters.convert import ExportError

    x = rand(16, 8, 8, 1)
    model = build_model(ArchitectureSpec(name="cnn"), x, 3, "classification")
    data = data_for(x, rows=16)
    data.calibration = rand(16, 8, 8)
    with pytest.raises(
        ExportError,
        match=r"calibration sample for input 'images' has shape \(16, 8, 8\); "
        r"the model expects \(batch, 8, 8, 1\)",
    ):
        export_model(model, data, SPEC, tmp_path / "export", "m")


def test_a_budget_nothing_meets_chooses_nothing_and_says_why(tmp_path: Path) -> None:
    x = rand(16, 6)
    model = build_model(ArchitectureSpec(name="mlp"), x, 3, "classification")
    spec = ExportSpec.model_validate({**SPEC.model_dump(), "budgets": {"edge-cpu": {"max_size_mb": 0.001}}})
    result = export_model(model, data_for(x, rows=16), spec, tmp_path / "export", "m")
    assert result.targets["edge-cpu"] is None and result.targets["server-cpu"]
    reasons = result.report["targets"]["edge-cpu"]["reasons"]
    assert all(why.startswith("rejected: ") for why in reasons.values())
    assert "over the 0.001 MB budget" in reasons["fp32"]


def test_parity_failure_names_the_worst_output() -> None:
    from modelyard.exporters.parity import compare

    keras_out = [np.array([[0.2, 0.8], [0.6, 0.4]])]
    onnx_out = [np.array([[0.2, 0.8], [0.4, 0.6]])]  # a dropped activation flips the second row
    result, worst = compare(onnx_out, keras_out, ["output"], 1e-4, 1e-3, classifier=True)
    assert not result.passed and result.decision_agreement == 0.5
    assert worst.startswith("output 'output' at (1, 1): ONNX 0.6 vs Keras 0.4, difference 0.2 > atol")


@pytest.mark.parametrize(("activations", "onnx_type"), [("uint8", 2), ("int8", 3)])
def test_int8_static_activation_type(activations: str, onnx_type: int, tmp_path: Path) -> None:
    """Weights are signed int8 either way; activations follow the spec (uint8 runs on x86's fast kernels)."""
    import onnx

    x = rand(16, 8, 8, 1)
    model = build_model(ArchitectureSpec(name="cnn"), x, 3, "classification")
    spec = ExportSpec.model_validate(
        {
            **SPEC.model_dump(),
            "variants": ["fp32", "int8-static"],
            "calibration": {"samples": 16, "activations": activations},
        }
    )
    result = export_model(model, data_for(x, rows=16), spec, tmp_path / "export", "m")
    graph = onnx.load(str(result.variant_files["int8-static"])).graph
    init = {i.name: i for i in graph.initializer}
    activation_zero_points = {
        init[n.input[2]].data_type for n in graph.node if n.op_type == "QuantizeLinear" and n.input[2] in init
    }
    assert activation_zero_points == {onnx_type}
