"""int8-static on tabular data: the input's standardization stays float.

Breast-cancer features range from 1e-3 to 1e3: one int8 scale for the raw input (and for
the Normalization's mean) turns the small features into zero; the MLP lost 32 accuracy points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelyard.exporters import graph
from modelyard.exporters.pipeline import ExportData, export_model
from modelyard.exporters.select import accuracy_drop
from modelyard.exporters.spec import ExportSpec
from modelyard.trainers.architectures import build_model
from modelyard.trainers.evaluate import classification_metrics
from modelyard.trainers.spec import ArchitectureSpec


def breast_cancer_mlp():
    import keras
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    d = datasets.load_breast_cancer()
    xtr, xte, ytr, yte = train_test_split(
        d.data.astype(np.float32), d.target, test_size=0.2, random_state=0, stratify=d.target
    )
    keras.utils.set_random_seed(0)
    model = build_model(ArchitectureSpec(name="mlp", params={"hidden_units": [32, 16]}), xtr, 2, "classification")
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xtr, ytr, epochs=10, batch_size=32, verbose=0)
    return model, xtr, xte, yte


def test_int8_static_keeps_a_tabular_mlp_within_the_accuracy_budget(tmp_path: Path) -> None:
    import onnx

    model, xtr, xte, yte = breast_cancer_mlp()
    data = ExportData(
        xtr[:256], xtr[:256], xte, lambda out: classification_metrics(yte, out, 2).metrics, "accuracy", True
    )
    spec = ExportSpec(latency_runs=3, variants=["fp32", "int8-static"])

    result = export_model(model, data, spec, tmp_path / "export", "m")

    keras_accuracy = result.report["keras"]["metrics"]["accuracy"]
    int8 = next(v for v in result.report["variants"] if v["variant"] == "int8-static")
    drop = accuracy_drop("accuracy", keras_accuracy, int8["metrics"]["accuracy"])
    assert keras_accuracy > 0.9 and drop <= spec.budget("edge-cpu").max_accuracy_drop  # it was 34 points
    model_graph = onnx.load(str(result.variant_files["int8-static"])).graph
    produced_by = {out: n.op_type for n in graph.all_nodes(model_graph) for out in n.output}
    standardize = [n for n in model_graph.node if "standardize" in n.name]
    assert standardize and all(produced_by.get(i) != "DequantizeLinear" for n in standardize for i in n.input)
    assert sum(n.op_type == "QuantizeLinear" for n in model_graph.node) >= 3  # the Dense layers are quantized
