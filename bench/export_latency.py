"""ONNX variants against Keras, tf.function and LiteRT: latency, size and accuracy, side by side.

For each reference model (the digits CNN, a tabular MLP, an LSTM, MobileNetV2 at 96x96),
in this one process, on the same inputs, batch 1, one thread, median of many runs:
Keras `model(x)`, a `tf.function`, LiteRT fp32 and dynamic-range int8, and every ONNX
variant of modelyard's export; size and test accuracy beside each. Then the ratios of
the variant modelyard selects for `edge-cpu` against LiteRT int8, Keras and fp32 size.
First the floor: ONNX Runtime's Python call on a one-Identity-node model, which no variant
can beat; read ratios of microsecond models against it.

    .venv/bin/python bench/export_latency.py [--runs 300] [--models cnn,mlp,lstm,mobilenetv2]
    .venv/bin/python bench/export_latency.py --smoke   # the CNN, 1 epoch, 20 runs per runtime: CI
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np


def one_thread() -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def median_ms(fn: Callable[[], object], runs: int) -> float:
    from modelyard.exporters.measure import time_runs

    return time_runs(fn, runs, warmup=max(3, runs // 20))[0]


def runtime_floor(runs: int, folder: Path) -> tuple[float, float]:
    """Median µs of `session.run` and of an IOBinding run on a model with one Identity node (batch 1, one thread)."""
    import onnx
    from onnx import TensorProto, helper

    from modelyard.exporters.measure import bound_runner, session

    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 1]) for name in ("x", "y")]
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    model = helper.make_model(
        helper.make_graph(nodes, "floor", io[:1], io[1:]), opset_imports=[helper.make_opsetid("", 17)], ir_version=8
    )
    path = folder / "identity.onnx"
    onnx.save(model, str(path))
    sess = session(path, threads=1)
    feeds = {"x": np.zeros((1, 1), np.float32)}
    plain = median_ms(lambda: sess.run(None, feeds), runs)
    bound = median_ms(bound_runner(sess, feeds), runs)
    return plain * 1000, bound * 1000


def dataset(kind: str):
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    if kind == "mlp":
        d = datasets.load_breast_cancer()
        x, y = d.data.astype(np.float32), d.target
    else:
        d = datasets.load_digits()
        x, y = (d.data / 16.0).astype(np.float32).reshape(-1, 8, 8, 1), d.target
        if kind == "lstm":
            x = x.reshape(-1, 8, 8)
        if kind == "mobilenetv2":  # 8x8 digits scaled up to 96x96x3
            import tensorflow as tf

            x = tf.image.resize(x, (96, 96)).numpy().repeat(3, axis=-1)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return xtr, ytr, xte, yte, int(y.max()) + 1


def build(kind: str, xtr: np.ndarray, ytr: np.ndarray, n: int, fit_epochs: int | None = None):
    import keras

    from modelyard.trainers.architectures import build_model
    from modelyard.trainers.spec import ArchitectureSpec

    keras.utils.set_random_seed(0)
    if kind == "mobilenetv2":
        model = keras.applications.MobileNetV2(
            weights=None, input_shape=(96, 96, 3), classes=n, classifier_activation="softmax"
        )
        epochs = 3
    else:
        params = {"cnn": {"filters": [16, 32]}, "mlp": {"hidden_units": [64, 32]}, "lstm": {"units": 32}}[kind]
        model = build_model(
            ArchitectureSpec(name=kind if kind != "lstm" else "lstm", params=params), xtr, n, "classification"
        )
        epochs = 15
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(xtr, ytr, epochs=fit_epochs or epochs, batch_size=32, verbose=0)
    if kind == "mobilenetv2":  # a few hundred steps leave BatchNorm's moving statistics unsettled: settle them
        for _ in range(3):
            for i in range(0, len(xtr), 64):
                model(xtr[i : i + 64], training=True)
    return model


def litert(model, x_example: np.ndarray, int8: bool) -> bytes:
    """LiteRT flatbuffer of the model at batch 1.

    TFLiteConverter.from_keras_model fails on Keras 3 recurrent layers (TensorList ops), and
    from_concrete_functions leaves Keras 3 variables unfrozen (READ_VARIABLE fails at run time),
    so the tf.function is frozen first, as for ONNX.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((1, *x_example.shape[1:]), tf.float32)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [convert_variables_to_constants_v2(fn.get_concrete_function())]
    )
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range int8 weights
    return converter.convert()


def litert_runner(blob: bytes) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=blob, num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

    def run(x: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp, x)
        interp.invoke()
        return interp.get_tensor(out)

    return run, len(blob)


def scores(
    predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, reference: np.ndarray, rows: int
) -> tuple[float, float]:
    """Test accuracy, and the share of rows where the class decision equals Keras's."""
    decisions = np.array([int(np.argmax(predict(x[i : i + 1]))) for i in range(rows)])
    return float((decisions == y[:rows]).mean()), float((decisions == reference).mean())


def bench_model(kind: str, runs: int, folder: Path, epochs: int | None = None) -> dict:
    import tensorflow as tf

    from modelyard.exporters.measure import bound_runner, session
    from modelyard.exporters.pipeline import ExportData, export_model
    from modelyard.exporters.spec import ExportSpec
    from modelyard.trainers.evaluate import classification_metrics

    xtr, ytr, xte, yte, n = dataset(kind)
    model = build(kind, xtr, ytr, n, epochs)
    rows = len(xte) if kind != "mobilenetv2" else 120
    x1 = xte[:1]
    data = ExportData(
        xtr[:256], xtr[:256], xte[:rows], lambda o: classification_metrics(yte[:rows], o, n).metrics, "accuracy", True
    )
    result = export_model(model, data, ExportSpec(latency_runs=max(20, runs // 5)), folder / kind, kind)
    fn = tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec((None, *xte.shape[1:]), tf.float32)]
    )
    reference = np.asarray(model.predict(xte[:rows], verbose=0)).argmax(axis=1)
    rows_out: list[tuple[str, float, int, tuple[float, float]]] = []
    keras_size = sum(w.size * w.dtype.itemsize for w in model.get_weights())
    rows_out.append(
        (
            "keras model(x)",
            median_ms(lambda: model(x1, training=False), runs),
            keras_size,
            scores(lambda x: model(x, training=False).numpy(), xte, yte, reference, rows),
        )
    )
    rows_out.append(
        (
            "tf.function",
            median_ms(lambda: fn(x1), runs),
            keras_size,
            scores(lambda x: fn(x).numpy(), xte, yte, reference, rows),
        )
    )
    for label, int8 in (("LiteRT fp32", False), ("LiteRT int8 dynamic", True)):
        run, size = litert_runner(litert(model, xte, int8))
        rows_out.append((label, median_ms(lambda r=run: r(x1), runs), size, scores(run, xte, yte, reference, rows)))
    for variant, path in result.variant_files.items():
        sess = session(path, threads=1)
        name = sess.get_inputs()[0].name
        rows_out.append(
            (
                f"ONNX {variant}",
                median_ms(bound_runner(sess, {name: x1}), runs),
                path.stat().st_size,
                scores(lambda x, s=sess, k=name: s.run(None, {k: x})[0], xte, yte, reference, rows),
            )
        )
    return {"kind": kind, "rows": rows_out, "edge": result.targets["edge-cpu"], "reasons": result.report["targets"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--models", default="cnn,mlp,lstm,mobilenetv2")
    parser.add_argument("--epochs", type=int, help="training epochs of every model (default: 15; MobileNetV2 3)")
    parser.add_argument("--smoke", action="store_true", help="CI: the CNN, 1 epoch, 20 runs per runtime.")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.runs, args.epochs = "cnn", 20, 1
    one_thread()
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        plain, bound = runtime_floor(max(100 if args.smoke else 1000, args.runs * 10), Path(tmp))
        print("## floor: ONNX Runtime's Python call, one Identity node, batch 1, one thread, median µs")
        print(f"| session.run | IOBinding run |\n|---:|---:|\n| {plain:.2f} | {bound:.2f} |")
        print("(ONNX rows below use IOBinding: a variant cannot be faster than its floor.)")
        for kind in args.models.split(","):
            runs = args.runs if kind != "mobilenetv2" else max(30, args.runs // 5)
            out = bench_model(kind, runs, Path(tmp), args.epochs)
            print(f"\n## {kind}: batch 1, one thread, median ms")
            print("| runtime | latency ms | size kB | accuracy | decisions as Keras |\n|---|---:|---:|---:|---:|")
            for label, ms, size, (acc, agree) in out["rows"]:
                mark = " (edge-cpu)" if label == f"ONNX {out['edge']}" else ""
                print(f"| {label}{mark} | {ms:.4f} | {size / 1e3:.1f} | {acc:.4f} | {agree:.4f} |")
            rows = {label: (ms, size, acc) for label, ms, size, acc in out["rows"]}
            edge = rows.get(f"ONNX {out['edge']}")
            if edge:
                summary.append(
                    (
                        kind,
                        out["edge"],
                        edge[0] / rows["LiteRT int8 dynamic"][0],
                        edge[0] / rows["keras model(x)"][0],
                        edge[1] / rows["ONNX fp32"][1],
                        (rows["keras model(x)"][2][0] - edge[2][0]) * 100,
                    )
                )
            else:
                print(f"no edge-cpu variant: {out['reasons']['edge-cpu']['reasons']}")
    print("\n## edge-cpu choice: ratios (targets: latency vs LiteRT int8 <= 1.0, size vs fp32 <= 0.3, drop <= 0.5)")
    print(
        "| model | edge-cpu variant | latency / LiteRT int8 | latency / Keras model(x) | size / ONNX fp32 | "
        "accuracy drop (points) |\n|---|---|---:|---:|---:|---:|"
    )
    for kind, variant, vs_litert, vs_keras, size, drop in summary:
        print(f"| {kind} | {variant} | {vs_litert:.3f} | {vs_keras:.4f} | {size:.3f} | {drop:.2f} |")


if __name__ == "__main__":
    main()
