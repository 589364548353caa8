"""What the model's outputs say, with or without labels: prediction drift, live metrics, CBPE.

Plain functions on arrays of class probabilities (one row per prediction, one column per
class, as the served softmax answers) or of regression outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

LOWER_IS_BETTER = frozenset({"log_loss", "ece", "mae", "rmse"})


def class_shares(probs: np.ndarray, n_classes: int) -> np.ndarray:
    """Share of rows predicted as each class (the argmax)."""
    if len(probs) == 0:
        return np.zeros(n_classes)
    counts = np.bincount(np.asarray(probs).argmax(axis=1), minlength=n_classes)
    return counts / counts.sum()


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2: 0 same, 1 disjoint) between two discrete distributions."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    p, q = p / max(p.sum(), 1e-12), q / max(q.sum(), 1e-12)
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return float(np.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2)))


def prediction_drift(reference: np.ndarray, current: np.ndarray, threshold: float) -> dict[str, Any]:
    """Did the distribution of predicted classes move? (Classifiers: probability rows.)"""
    n = int(np.asarray(reference).shape[1])
    ref, cur = class_shares(reference, n), class_shares(current, n)
    distance = jensen_shannon(ref, cur)
    return {
        "distance": distance,
        "threshold": threshold,
        "drifted": bool(distance > threshold),
        "reference_shares": [float(v) for v in ref],
        "current_shares": [float(v) for v in cur],
    }


def confidence_accuracy(probs: np.ndarray) -> float:
    """CBPE's accuracy estimate without labels: the mean probability of the predicted class.

    For a calibrated classifier the chance that the argmax is right is its probability, so
    the mean is the expected accuracy (NannyML's confidence-based performance estimation).
    Compared with the same estimate on the reference, the model's miscalibration cancels out.
    """
    if len(probs) == 0:
        return float("nan")
    return float(np.asarray(probs, dtype=float).max(axis=1).mean())


def live_metric(metric: str, labels: np.ndarray, outputs: np.ndarray, n_classes: int | None) -> float:
    """The primary metric on labeled production rows. Classification: labels are class indexes."""
    from sklearn import metrics as m

    y = np.asarray(labels)
    out = np.asarray(outputs, dtype=float)
    if metric in ("mae", "rmse"):
        pred = out.reshape(len(out), -1)[:, 0]
        err = pred - y.astype(float)
        return float(np.mean(np.abs(err))) if metric == "mae" else float(np.sqrt(np.mean(err**2)))
    pred = out.argmax(axis=1)
    labels_all = list(range(n_classes or out.shape[1]))
    if metric == "accuracy":
        return float(np.mean(pred == y))
    if metric in ("precision_macro", "recall_macro", "f1_macro"):
        fn = {"precision_macro": m.precision_score, "recall_macro": m.recall_score, "f1_macro": m.f1_score}[metric]
        return float(fn(y, pred, labels=labels_all, average="macro", zero_division=0))
    if metric == "log_loss":
        return float(m.log_loss(y, np.clip(out, 1e-7, 1), labels=labels_all))
    if metric == "roc_auc":
        if len(set(y.tolist())) < 2:
            return float("nan")
        if out.shape[1] == 2:
            return float(m.roc_auc_score(y, out[:, 1]))
        return float(m.roc_auc_score(y, out, multi_class="ovr", labels=labels_all))
    if metric == "ece":
        conf = out.max(axis=1)
        bins = np.minimum((conf * 10).astype(int), 9)
        total = 0.0
        for b in range(10):
            mask = bins == b
            if mask.any():
                total += mask.mean() * abs(float(np.mean(pred[mask] == y[mask])) - float(conf[mask].mean()))
        return float(total)
    raise ValueError(f"no live value for metric '{metric}'")


def drop(metric: str, before: float, now: float) -> float:
    """How much worse `now` is than `before` (positive: worse), whichever way the metric points."""
    return now - before if metric in LOWER_IS_BETTER else before - now
