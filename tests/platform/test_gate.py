from modelyard.platform.registry.gate import decide
from modelyard.trainers.spec import GateSpec


def test_first_version_with_no_threshold_passes() -> None:
    assert decide("accuracy", {"accuracy": 0.3}, None, GateSpec()).passed


def test_first_version_must_meet_the_threshold() -> None:
    assert decide("accuracy", {"accuracy": 0.91}, None, GateSpec(threshold=0.9)).passed
    rejected = decide("accuracy", {"accuracy": 0.89}, None, GateSpec(threshold=0.9))
    assert not rejected.passed and "misses the threshold 0.9" in rejected.reasons[0]


def test_lower_is_better_threshold() -> None:
    assert decide("log_loss", {"log_loss": 0.2}, None, GateSpec(threshold=0.3)).passed
    assert not decide("log_loss", {"log_loss": 0.4}, None, GateSpec(threshold=0.3)).passed


def test_primary_metric_must_improve_by_min_delta() -> None:
    champion = {"accuracy": 0.90}
    assert decide("accuracy", {"accuracy": 0.92}, champion, GateSpec(min_delta=0.02)).passed
    small = decide("accuracy", {"accuracy": 0.91}, champion, GateSpec(min_delta=0.02))
    assert not small.passed and "below the required 0.02" in small.reasons[0]


def test_an_equal_metric_is_no_improvement() -> None:
    assert not decide("accuracy", {"accuracy": 0.9}, {"accuracy": 0.9}, GateSpec()).passed


def test_secondary_metric_may_not_regress_past_tolerance() -> None:
    gate = GateSpec(min_delta=0.01, tolerances={"log_loss": 0.05, "f1_macro": 0.01})
    champion = {"accuracy": 0.90, "log_loss": 0.30, "f1_macro": 0.90}
    within = decide("accuracy", {"accuracy": 0.95, "log_loss": 0.34, "f1_macro": 0.895}, champion, gate)
    past = decide("accuracy", {"accuracy": 0.95, "log_loss": 0.40, "f1_macro": 0.95}, champion, gate)
    assert within.passed
    assert not past.passed and any("log_loss regressed by 0.1000" in r for r in past.reasons)


def test_missing_metrics_fail_clearly() -> None:
    assert "has no 'roc_auc'" in decide("roc_auc", {"accuracy": 1.0}, None, GateSpec()).reasons[0]
    gate = GateSpec(tolerances={"ece": 0.1})
    result = decide("accuracy", {"accuracy": 0.99}, {"accuracy": 0.5}, gate)
    assert not result.passed and "'ece' is missing" in result.reasons[-1]
