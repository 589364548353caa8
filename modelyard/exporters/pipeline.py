"""One export: convert, check parity, make the variants, measure them, choose per target, package."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.exporters import graph, measure, parity, quantize, report, select, triton, variants
from modelyard.exporters.convert import ExportError, TensorInfo, to_onnx
from modelyard.exporters.spec import ExportSpec

Inputs = np.ndarray | dict[str, np.ndarray]
FP16_TOLERANCE = 1e-2  # float16 keeps about 3 significant digits


@dataclass
class ExportData:
    parity: Inputs  # validation rows: ONNX must match Keras on them
    calibration: Inputs  # training rows for int8-static
    test: Inputs  # the held-out split every variant is scored on
    evaluate: Callable[[np.ndarray], dict[str, float]]  # outputs on the test split -> metrics
    primary_metric: str
    classifier: bool


@dataclass
class ExportResult:
    folder: Path
    report: dict[str, Any]
    targets: dict[str, str | None]
    variant_files: dict[str, Path] = field(default_factory=dict)
    triton: dict[str, Path] = field(default_factory=dict)


def feeds_for(inputs: list[TensorInfo], data: Inputs) -> dict[str, np.ndarray]:
    if isinstance(data, dict):
        missing = [i.name for i in inputs if i.name not in data]
        if missing:
            raise ExportError(f"no data for model input '{missing[0]}' (given: {', '.join(data)}).")
        return {i.name: np.asarray(data[i.name], dtype=i.dtype) for i in inputs}
    if len(inputs) != 1:
        raise ExportError(f"the model has {len(inputs)} inputs; give its data as a dict by input name.")
    return {inputs[0].name: np.asarray(data, dtype=inputs[0].dtype)}


def _keras_outputs(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    args = list(feeds.values())
    out = model.predict(args[0] if len(args) == 1 else args, batch_size=256, verbose=0)
    return [np.asarray(o) for o in (out if isinstance(out, list | tuple) else [out])]


def export_model(model: Any, data: ExportData, spec: ExportSpec, out: Path, name: str) -> ExportResult:
    import onnx

    started = time.perf_counter()
    out = out.resolve()  # the ONNX tools run in a scratch folder as the current directory
    out.mkdir(parents=True, exist_ok=True)
    converted = to_onnx(model, spec.opset)
    raw = out / "model.onnx"
    onnx.save(converted.model, str(raw))
    parity_feeds = {k: v[: spec.parity_samples] for k, v in feeds_for(converted.inputs, data.parity).items()}
    keras_parity = _keras_outputs(model, parity_feeds)
    parity.check(measure.session(raw), parity_feeds, keras_parity, spec.atol, spec.rtol, data.classifier)
    calibration = feeds_for(converted.inputs, data.calibration)
    if "int8-static" in spec.variants:
        quantize.check_calibration(calibration, {i.name: i.shape for i in converted.inputs})
    test = feeds_for(converted.inputs, data.test)
    keras_test = _keras_outputs(model, test)[0]
    keras_metrics = data.evaluate(keras_test)
    keras_decisions = keras_test.argmax(axis=1) if data.classifier and keras_test.ndim == 2 else None

    with tempfile.TemporaryDirectory(prefix="modelyard-export-") as work:
        made = variants.make_variants(raw, out / "variants", Path(work), spec, calibration)
    files = made.files
    parity_rows = {
        variant: _variant_parity(variant, path, parity_feeds, keras_parity, data.classifier, spec)
        for variant, path in files.items()
    }
    parity_failed = {v for v, row in parity_rows.items() if row["passed"] is False}
    cuda = measure.cuda_available()
    providers = ["CPUExecutionProvider"] + (["CUDAExecutionProvider"] if cuda else [])
    measured = []
    for variant, path in files.items():
        use = providers if variant in ("fp32", "fp16") else ["CPUExecutionProvider"]
        measured.append(measure.measure(variant, path, test, data.evaluate, keras_decisions, spec.latency_runs, use))
    nonstandard = {v: graph.nonstandard(needs) for v, needs in made.needs.items()}
    selections = select.select(measured, keras_metrics, data.primary_metric, spec, parity_failed, cuda, nonstandard)
    for variant, why in made.rejected.items():
        for sel in selections:
            sel.reasons[variant] = f"rejected: {why}"
    result = ExportResult(out, {}, {s.target: s.chosen for s in selections}, files)
    for sel in selections:
        if sel.chosen and sel.target in ("server-cpu", "server-gpu"):
            result.triton[sel.target] = triton.write_repository(
                out / "triton" / sel.target, name, files[sel.chosen], sel.target == "server-gpu", spec.triton_max_batch
            )
    result.report = {
        "model": name,
        "opset": spec.opset,
        "inputs": [vars(i) for i in converted.inputs],
        "outputs": [vars(o) for o in converted.outputs],
        "primary_metric": data.primary_metric,
        "keras": {"metrics": keras_metrics},
        "parity": parity_rows,
        "providers": providers,
        "converted_nodes": graph.runtime_needs(converted.model)["nodes"],  # before optimization and onnxslim
        "runtime_needs": made.needs,  # per variant: nodes, domains with their opset, ops per domain
        "variants": [m.as_dict() for m in measured],
        "failed_variants": made.rejected,
        "targets": {s.target: s.as_dict() for s in selections},
        "seconds": time.perf_counter() - started,
        "export_spec": spec.model_dump(mode="json"),
    }
    report.write_report(out / "export_report.json", result.report)
    report.plot(
        out / "export_plot.png", data.primary_metric, result.report["variants"], keras_metrics[data.primary_metric]
    )
    return result


def _variant_parity(
    variant: str,
    path: Path,
    feeds: dict[str, np.ndarray],
    keras_out: list[np.ndarray],
    classifier: bool,
    spec: ExportSpec,
) -> dict[str, Any]:
    """fp32 (optimized and simplified) within the spec's tolerance; fp16 within float16's precision keeping
    99% of decisions; int8 is judged by accuracy."""
    sess = measure.session(path)
    names = [o.name for o in sess.get_outputs()]
    outputs = sess.run(None, feeds)
    if variant == "fp32":
        return parity.compare(outputs, keras_out, names, spec.atol, spec.rtol, classifier)[0].as_dict()
    result, _ = parity.compare(outputs, keras_out, names, FP16_TOLERANCE, FP16_TOLERANCE, classifier)
    row = result.as_dict()
    if variant == "fp16":
        within = row["passed"] or (
            result.decision_agreement is not None
            and result.decision_agreement >= 0.99
            and result.max_abs_diff <= 10 * FP16_TOLERANCE
        )
        row["passed"] = bool(within)
    else:
        row["passed"] = None  # not applicable: the accuracy budget decides
    return row
