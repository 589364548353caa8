"""The variants: fp32 (optimized and simplified), and fp16, int8 dynamic, int8 static QDQ made from it.

Every file written passes ONNX's full checker or is rejected with the checker's reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.exporters import graph, quantize, scratch
from modelyard.exporters.convert import ExportError
from modelyard.exporters.spec import ExportSpec


@dataclass
class Variants:
    files: dict[str, Path] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # variant -> why it is not offered
    needs: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> graph.runtime_needs


def optimize_fp32(source: Path, target: Path) -> None:
    """Offline optimization at ONNX Runtime's basic level (portable to any device's ONNX Runtime), then
    onnxslim, which folds what the basic level keeps: shape computations under a dynamic batch."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    onnx.save(graph.tidy(graph.simplify(onnx.load(str(target)))), str(target))


def to_fp16(source: Path, target: Path) -> None:
    """Weights and compute in float16, inputs and outputs kept float32 (for GPU servers).

    The converter appends the Casts it adds (after float32 inputs, around blocked ops) at the end
    of the node list, before none of their readers: the graph is sorted again before it is saved.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(graph.tidy(graph.simplify(graph.tidy(model))), str(target))


def make_variants(
    raw: Path, folder: Path, work: Path, spec: ExportSpec, calibration: dict[str, np.ndarray]
) -> Variants:
    """fp32 from the converted model, the others from fp32; tools run with `work` as their current directory."""
    folder.mkdir(parents=True, exist_ok=True)
    makers: dict[str, Callable[[Path, Path], None]] = {
        "fp32": optimize_fp32,
        "fp16": to_fp16,
        "int8-dynamic": quantize.int8_dynamic,
        "int8-static": lambda src, dst: quantize.int8_static(src, dst, calibration, spec.calibration),
    }
    made = Variants()
    for variant in sorted(spec.variants, key=lambda v: v != "fp32"):
        path = folder / f"{variant}.onnx"
        source = raw if variant == "fp32" else made.files["fp32"]
        try:
            with scratch.inside(work):
                makers[variant](source, path)
        except ExportError:
            raise
        except Exception as err:  # one variant's tool failing leaves the others usable
            text = str(err).splitlines()[0][:200] if str(err) else ""
            made.rejected[variant] = f"could not be made ({type(err).__name__}: {text})"
        else:
            accept(made, variant, path)
        if variant == "fp32" and variant in made.rejected:
            raise ExportError(f"the fp32 variant is unusable: {made.rejected[variant]}.")
    return made


def accept(made: Variants, variant: str, path: Path) -> None:
    """Offer the file if it passes the full checker; say which ops and domains it needs."""
    import onnx

    invalid = graph.check(path)
    if invalid:
        made.rejected[variant] = f"not valid ONNX (full checker: {invalid})"
        path.unlink()
        return
    made.files[variant] = path
    made.needs[variant] = graph.runtime_needs(onnx.load(str(path), load_external_data=False))
