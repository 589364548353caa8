"""The retraining policy, the baking guard, the performance measures and the spec section: plain functions."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from modelyard.errors import SpecError
from modelyard.monitoring import performance
from modelyard.monitoring.guard import BakingEvidence, judge
from modelyard.monitoring.policy import HARMFUL_DRIFT, HARMLESS_DRIFT, NO_DRIFT, PolicyState, decide
from modelyard.monitoring.spec import GuardOptions, MonitoringSpec, parse_monitoring

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def state(*verdicts: str, **kw) -> PolicyState:
    return PolicyState(verdicts=list(verdicts), now=NOW, **kw)


def test_the_policy_fires_on_consecutive_harmful_windows_only() -> None:
    spec = MonitoringSpec(consecutive=2)
    assert decide(spec, state(NO_DRIFT)).action == "none"
    assert decide(spec, state(NO_DRIFT, HARMFUL_DRIFT)).action == "wait"
    assert decide(spec, state(HARMFUL_DRIFT, NO_DRIFT, HARMFUL_DRIFT)).action == "wait"
    fired = decide(spec, state(NO_DRIFT, HARMFUL_DRIFT, HARMFUL_DRIFT))
    assert fired.action == "retrain" and fired.evidence["consecutive"] == 2
    # drift that hurts nothing retrains nothing by default, and does under any_drift
    assert decide(spec, state(HARMLESS_DRIFT, HARMLESS_DRIFT)).action == "none"
    assert (
        decide(MonitoringSpec(consecutive=2, retrain_on="any_drift"), state(HARMLESS_DRIFT, HARMLESS_DRIFT)).action
        == "retrain"
    )


def test_the_policy_skips_with_a_reason_for_in_flight_cooldown_and_budget() -> None:
    spec = MonitoringSpec(consecutive=1, cooldown_minutes=30, daily_budget=2)
    busy = decide(spec, state(HARMFUL_DRIFT, in_flight="drift-abc"))
    assert busy.action == "skip" and "drift-abc is already queued or running" in busy.reason
    cool = decide(spec, state(HARMFUL_DRIFT, last_retraining=NOW - dt.timedelta(minutes=10)))
    assert cool.action == "skip" and "cooldown until 2026-11-23 12:20:00 UTC (after the last retraining)" in cool.reason
    after_rollback = decide(spec, state(HARMFUL_DRIFT, last_rollback=NOW - dt.timedelta(minutes=29)))
    assert after_rollback.action == "skip" and "after the last rollback" in after_rollback.reason
    assert decide(spec, state(HARMFUL_DRIFT, last_retraining=NOW - dt.timedelta(minutes=31))).action == "retrain"
    spent = decide(spec, state(HARMFUL_DRIFT, retrainings_today=2))
    assert spent.action == "skip" and "daily budget of 2 retrainings spent" in spent.reason
    assert spent.reason.startswith("drift seen in 1 consecutive windows, retraining skipped: ")


def evidence(**kw) -> BakingEvidence:
    base = dict(
        metric="accuracy",
        minutes=5,
        rows=200,
        errors=0,
        labeled_rows=100,
        live=0.9,
        before=0.92,
        before_source="replay",
    )
    return BakingEvidence(**{**base, **kw})  # type: ignore[arg-type]


def test_the_guard_waits_bakes_and_rolls_back() -> None:
    options = GuardOptions(baking_rows=100, baking_minutes=60, min_rows=30, tolerance=0.05, max_error_rate=0.02)
    assert judge(evidence(labeled_rows=40), options).action == "wait"
    assert judge(evidence(), options).action == "baked"  # 0.02 worse: within tolerance
    worse = judge(evidence(live=0.80), options)
    assert worse.action == "rollback" and "worse by 0.1200, past the tolerance 0.05" in worse.reason
    # lower-is-better metrics point the other way
    assert judge(evidence(metric="log_loss", live=0.5, before=0.3), options).action == "rollback"
    assert judge(evidence(metric="log_loss", live=0.3, before=0.5), options).action == "baked"
    # failures roll back without waiting for labels
    failing = judge(evidence(labeled_rows=0, live=None, errors=10, rows=100), options)
    assert failing.action == "rollback" and "10 of 100 predictions failed" in failing.reason
    # the deadline passes with too few labels: it bakes, and says it had no verdict
    late = judge(evidence(labeled_rows=5, minutes=61), options)
    assert late.action == "baked" and "without a verdict" in late.reason


def test_performance_measures() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    assert performance.live_metric("accuracy", labels, probs, 2) == pytest.approx(0.75)
    assert performance.confidence_accuracy(probs) == pytest.approx((0.9 + 0.8 + 0.6 + 0.7) / 4)
    assert performance.jensen_shannon(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    assert performance.jensen_shannon(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == pytest.approx(0.0)
    moved = performance.prediction_drift(probs, np.array([[0.1, 0.9]] * 4), threshold=0.1)
    assert moved["drifted"] and moved["current_shares"] == [0.0, 1.0]
    assert performance.drop("accuracy", 0.9, 0.8) == pytest.approx(0.1)
    assert performance.drop("rmse", 0.9, 0.8) == pytest.approx(-0.1)


def test_the_spec_section_names_its_bad_field() -> None:
    assert parse_monitoring(None) == MonitoringSpec()
    with pytest.raises(SpecError, match=r"field 'monitoring.drift': stattest: 'chi' is not a known test"):
        parse_monitoring({"drift": {"stattest": "chi"}}, "in x.yaml")
    with pytest.raises(SpecError, match=r"field 'monitoring.consecutive'"):
        parse_monitoring({"consecutive": 0}, "in x.yaml")
    with pytest.raises(SpecError, match=r"field 'monitoring.windows'"):
        parse_monitoring({"windows": 5}, "in x.yaml")
