"""Evaluate predictions on a held-out split, and train a classical baseline beside the network."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.trainers.datasets import Split
from modelyard.trainers.spec import LOWER_IS_BETTER


@dataclass
class Evaluation:
    metrics: dict[str, float]
    confusion: list[list[int]] = field(default_factory=list)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, n_classes: int) -> Evaluation:
    from sklearn import metrics as skm

    proba = np.clip(np.asarray(proba, dtype=np.float64), 1e-7, 1.0)
    proba = proba / proba.sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    labels = list(range(n_classes))
    result = {
        "accuracy": float(skm.accuracy_score(y_true, pred)),
        "precision_macro": float(skm.precision_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
        "recall_macro": float(skm.recall_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
        "f1_macro": float(skm.f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
        "log_loss": float(skm.log_loss(y_true, proba, labels=labels)),
        "ece": expected_calibration_error(y_true, proba),
    }
    present = np.unique(y_true)
    if len(present) == n_classes:  # ROC-AUC is undefined when a class is absent from the split
        if n_classes == 2:
            result["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
        else:
            result["roc_auc"] = float(skm.roc_auc_score(y_true, proba, multi_class="ovr", labels=labels))
    confusion = skm.confusion_matrix(y_true, pred, labels=labels).tolist()
    return Evaluation(result, confusion)


def regression_metrics(y_true: np.ndarray, pred: np.ndarray) -> Evaluation:
    err = np.asarray(pred, dtype=np.float64).reshape(-1) - np.asarray(y_true, dtype=np.float64)
    return Evaluation({"mae": float(np.abs(err).mean()), "rmse": float(math.sqrt((err**2).mean()))})


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 15) -> float:
    """Weighted gap between confidence and accuracy over equal-width confidence bins."""
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def predict(model: Any, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Outputs in inference mode by direct calls: model.predict first traces a function (0.1-0.3 s),
    which a held-out split of a few thousand rows does not repay."""
    return np.concatenate([np.asarray(model(x[i : i + batch], training=False)) for i in range(0, len(x), batch)])


def evaluate_model(model: Any, x: np.ndarray, y: np.ndarray, task: str, n_classes: int) -> Evaluation:
    out = predict(model, x)
    if task == "regression":
        return regression_metrics(y, out)
    return classification_metrics(y, out, n_classes)


def baseline(split: Split, task: str, n_classes: int, seed: int) -> tuple[str, Evaluation]:
    """A scikit-learn model on flattened, standardized features and the same split."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train = split.x_train.reshape(len(split.x_train), -1)
    x_test = split.x_test.reshape(len(split.x_test), -1)
    if task == "regression":
        reg = make_pipeline(StandardScaler(), Ridge(random_state=seed)).fit(x_train, split.y_train)
        return "ridge", regression_metrics(split.y_test, reg.predict(x_test))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    clf.fit(x_train, split.y_train)
    proba = np.zeros((len(x_test), n_classes))
    proba[:, clf.classes_] = clf.predict_proba(x_test)
    return "logistic_regression", classification_metrics(split.y_test, proba, n_classes)


def beats(metric: str, ours: float, theirs: float) -> bool:
    return ours < theirs if metric in LOWER_IS_BETTER else ours > theirs


def save_confusion_png(confusion: list[list[int]], classes: list[Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    size = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), [str(c) for c in classes], rotation=45)
    ax.set_yticks(range(len(classes)), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
