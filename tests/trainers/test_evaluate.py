import numpy as np
import pytest

from modelyard.trainers.evaluate import classification_metrics, expected_calibration_error, regression_metrics


def test_perfect_confident_predictions() -> None:
    y = np.array([0, 1, 2, 1])
    ev = classification_metrics(y, np.eye(3)[y], 3)
    assert ev.metrics["accuracy"] == 1.0 and ev.metrics["f1_macro"] == 1.0 and ev.metrics["roc_auc"] == 1.0
    assert ev.metrics["ece"] == pytest.approx(0.0, abs=1e-6)
    assert ev.confusion == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]


def test_binary_roc_auc_uses_the_positive_column() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.3, 0.7], [0.35, 0.65], [0.2, 0.8]])
    assert classification_metrics(y, proba, 2).metrics["roc_auc"] == pytest.approx(0.75)


def test_ece_of_overconfident_wrong_answers() -> None:
    # Always 90% confident, right half the time: the gap is 0.4.
    y = np.array([0, 1, 0, 1])
    proba = np.array([[0.9, 0.1]] * 4)
    assert expected_calibration_error(y, proba) == pytest.approx(0.4)


def test_roc_auc_is_left_out_when_a_class_is_absent() -> None:
    assert "roc_auc" not in classification_metrics(np.array([0, 0]), np.array([[0.8, 0.1, 0.1]] * 2), 3).metrics


def test_regression_metrics() -> None:
    ev = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert ev.metrics["mae"] == pytest.approx(2 / 3) and ev.metrics["rmse"] == pytest.approx((4 / 3) ** 0.5)
