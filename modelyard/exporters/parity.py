"""Parity: the ONNX model must compute what the Keras model computes, on the same samples."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modelyard.exporters.convert import ExportError


class ParityError(ExportError):
    """The converted model's outputs differ from Keras's beyond tolerance."""


@dataclass
class Parity:
    samples: int
    max_abs_diff: float
    worst_output: str
    decision_agreement: float | None  # share of identical argmax decisions (classifiers)
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    onnx_out: list[np.ndarray],
    keras_out: list[np.ndarray],
    names: list[str],
    atol: float,
    rtol: float,
    classifier: bool,
) -> tuple[Parity, str]:
    """Parity figures, and a sentence about the worst element when it is past tolerance."""
    worst_excess, worst_text, max_diff, worst_name = -np.inf, "", 0.0, names[0]
    agreement = None
    for name, got, want in zip(names, onnx_out, keras_out, strict=True):
        got = np.asarray(got, dtype=np.float64).reshape(np.asarray(want).shape)
        want = np.asarray(want, dtype=np.float64)
        diff = np.abs(got - want)
        excess = diff - (atol + rtol * np.abs(want))
        idx = np.unravel_index(int(np.argmax(excess)), excess.shape)
        if diff.max() > max_diff:
            max_diff, worst_name = float(diff.max()), name
        if excess[idx] > worst_excess:
            worst_excess = float(excess[idx])
            worst_text = (
                f"output '{name}' at {tuple(int(i) for i in idx)}: ONNX {got[idx]:.6g} vs Keras "
                f"{want[idx]:.6g}, difference {diff[idx]:.3g} > atol {atol:g} + rtol {rtol:g} x |Keras|"
            )
        if classifier and want.ndim == 2 and want.shape[1] > 1:
            agreement = float((got.argmax(axis=1) == want.argmax(axis=1)).mean())
    passed = worst_excess <= 0 and (agreement is None or agreement == 1.0)
    if worst_excess <= 0 and agreement is not None and agreement < 1.0:
        worst_text = f"class decisions differ on {1 - agreement:.1%} of the samples"
    samples = len(keras_out[0])
    return Parity(samples, max_diff, worst_name, agreement, passed), worst_text


def check(
    session: Any, feeds: dict[str, np.ndarray], keras_out: list[np.ndarray], atol: float, rtol: float, classifier: bool
) -> Parity:
    """fp32 parity or an error naming the worst output: catches silent converter bugs."""
    names = [o.name for o in session.get_outputs()]
    result, worst = compare(session.run(None, feeds), keras_out, names, atol, rtol, classifier)
    if not result.passed:
        raise ParityError(f"the ONNX model fails parity with Keras on {result.samples} samples: {worst}.")
    return result
