"""One drift check: a window of production rows against the version's reference -> a verdict with evidence.

Feature drift (Evidently, modelyard.monitoring.drift), prediction drift (predicted-class
shares), and performance: the live primary metric where enough labels arrived, else the
confidence-based estimate (CBPE) for classifiers. Drift that moved nothing the model is
judged on is `drift_harmless`, and by default retrains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.monitoring import performance
from modelyard.monitoring.policy import HARMFUL_DRIFT, HARMLESS_DRIFT, NO_DRIFT, PERFORMANCE_DROP
from modelyard.monitoring.spec import MonitoringSpec


@dataclass
class Reference:
    features: Any  # pandas DataFrame: one column per feature
    outputs: np.ndarray  # the version's outputs on those rows (class probabilities, or regression values)
    heldout: float | None  # the version's primary metric on its held-out split


@dataclass
class Window:
    features: Any  # pandas DataFrame, the same columns as the reference
    outputs: np.ndarray
    labels: np.ndarray  # class indexes (or values) of the labeled rows
    labeled: np.ndarray  # bool mask: which rows have a label


@dataclass
class CheckResult:
    verdict: str
    reason: str
    drift_share: float
    scores: dict[str, Any] = field(default_factory=dict)


def judge(
    reference: Reference,
    window: Window,
    spec: MonitoringSpec,
    metric: str,
    task: str,
    html: Path | None = None,
    always_report: bool = False,
) -> CheckResult:
    """The verdict and its evidence. With `html`, Evidently's report is written there when the window
    drifted or was harmful (or `always_report`): it costs about 0.1 s a column, the scores 0.01 s."""
    from modelyard.monitoring.drift import feature_drift

    features = feature_drift(reference.features, window.features, spec.drift)
    scores: dict[str, Any] = {"features": features.as_dict()}
    moved = [f"{len(features.drifted_columns())} of {len(features.columns)} columns drifted ({features.share:.0%})"]
    drifted = features.drifted
    if task == "classification":
        prediction = performance.prediction_drift(reference.outputs, window.outputs, spec.prediction_threshold)
        scores["prediction"] = prediction
        drifted = drifted or prediction["drifted"]
        moved.append(f"predicted classes moved by {prediction['distance']:.3f} (JS)")
    perf, fell, said = _performance(reference, window, spec, metric, task)
    scores["performance"] = perf
    if drifted and fell is None:  # a regression model without labels: nothing tells harm apart, so drift counts
        verdict, why = HARMFUL_DRIFT, "no labels or estimate to tell whether it hurts"
    elif drifted:
        verdict, why = (HARMFUL_DRIFT if fell else HARMLESS_DRIFT), said
    else:
        verdict, why = (PERFORMANCE_DROP if fell else NO_DRIFT), said
    if html is not None and (always_report or verdict != NO_DRIFT):  # the same sampled rows, tests, thresholds
        feature_drift(reference.features, window.features, spec.drift, html)
    return CheckResult(verdict, f"{'; '.join(moved)}; {why}", features.share, scores)


def _performance(
    reference: Reference, window: Window, spec: MonitoringSpec, metric: str, task: str
) -> tuple[dict[str, Any], bool | None, str]:
    n_labeled = int(window.labeled.sum())
    perf: dict[str, Any] = {"metric": metric, "heldout": reference.heldout, "labeled_rows": n_labeled}
    n_classes = int(reference.outputs.shape[1]) if task == "classification" else None
    if n_labeled >= spec.min_labels and reference.heldout is not None:
        live = performance.live_metric(metric, window.labels, window.outputs[window.labeled], n_classes)
        dropped = performance.drop(metric, reference.heldout, live)
        perf.update(source="live", live=live, drop=dropped)
        fell = dropped > spec.performance_drop
        said = f"live {metric} {live:.4f} on {n_labeled} labeled rows vs {reference.heldout:.4f} held-out"
        return perf, fell, said + (f": down {dropped:.4f}" if fell else "")
    if task != "classification":
        return {**perf, "source": "none"}, None, "no labels"
    before = performance.confidence_accuracy(reference.outputs)
    now = performance.confidence_accuracy(window.outputs)
    dropped = before - now
    perf.update(source="cbpe", estimated_accuracy=now, reference_estimate=before, drop=dropped)
    fell = dropped > spec.performance_drop
    said = f"estimated accuracy (CBPE, {n_labeled} labels) {now:.4f} vs {before:.4f} on the reference"
    return perf, fell, said + (f": down {dropped:.4f}" if fell else "")
