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


def test_a_network_that_loses_to_the_classical_baseline_is_rejected() -> None:
    """The demo's old v1: a CNN at 0.8833 while logistic regression on the same split reaches 0.975."""
    rejected = decide("accuracy", {"accuracy": 0.8833}, None, GateSpec(threshold=0.7), {"accuracy": 0.975})
    assert not rejected.passed
    assert rejected.reasons == [
        "no champion yet; accuracy 0.8833 meets the threshold 0.7",
        "accuracy 0.8833 does not beat the classical baseline's 0.9750 (-0.0917); "
        "a network must beat it to be worth serving (gate.must_beat_baseline)",
    ]
    assert rejected.evidence["baseline"] == {"accuracy": 0.975}


def test_the_baseline_check_applies_against_a_champion_and_has_a_margin() -> None:
    champion, baseline = {"accuracy": 0.90}, {"accuracy": 0.95}
    assert not decide("accuracy", {"accuracy": 0.94}, champion, GateSpec(), baseline).passed
    assert decide("accuracy", {"accuracy": 0.96}, champion, GateSpec(), baseline).passed
    strict = GateSpec(baseline_margin=0.02)
    short = decide("accuracy", {"accuracy": 0.96}, champion, strict, baseline)
    assert not short.passed and "must beat it by at least 0.02" in short.reasons[-1]


def test_the_baseline_check_can_be_turned_off_and_points_the_right_way() -> None:
    off = GateSpec(must_beat_baseline=False)
    assert decide("accuracy", {"accuracy": 0.5}, None, off, {"accuracy": 0.9}).passed
    assert decide("mae", {"mae": 1.0}, None, GateSpec(), {"mae": 2.0}).passed  # lower is better
    assert not decide("mae", {"mae": 3.0}, None, GateSpec(), {"mae": 2.0}).passed
