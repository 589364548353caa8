"""The `monitoring:` section of a training spec: how drift is judged and what it may trigger.

Every field is optional; the defaults below are the documented ones (README, "Drift
monitoring"). The section is read as a plain mapping by the trainers and validated here,
so a bad value is found when the spec is submitted, not at 3 a.m. when a check first runs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelyard.errors import SpecError

# Tests that Evidently's DataDriftPreset knows for numeric columns and that this platform
# allows per column. Distances (wasserstein, psi, jensenshannon, hellinger, kl_div) measure
# how far the distributions moved, so a fixed threshold means the same at any window size;
# p-value tests (ks, t_test, anderson, mannw, cramer_von_mises) flag ever smaller shifts as
# n grows (evidently#50), which is why windows are sampled to a fixed size first.
STATTESTS = (
    "wasserstein",
    "psi",
    "jensenshannon",
    "hellinger",
    "kl_div",
    "ks",
    "t_test",
    "anderson",
    "mannw",
    "cramer_von_mises",
    "energy",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DriftOptions(_Strict):
    """Feature drift: one test per column on a sampled window, then the share of drifted columns."""

    stattest: str = Field("wasserstein", description="Test for every numeric column (one of STATTESTS).")
    threshold: float | None = Field(
        None,
        gt=0,
        description="Drift when the score passes this: a distance above it, or a p-value below it; for the "
        "columns tested with `stattest` (a column given another test keeps that test's default). Default: "
        "wasserstein 0.25 of the reference's standard deviation (Evidently's 0.1 false-alarms on windows under "
        "1,000 rows, bench/drift_calibration.py); else Evidently's own (ks, t_test, mannw 0.05; the others 0.1).",
    )
    per_column_stattest: dict[str, str] = Field(
        default_factory=dict, description="Column -> test, overriding stattest."
    )
    per_column_threshold: dict[str, float] = Field(
        default_factory=dict, description="Column -> threshold, in the units of that column's test."
    )
    drift_share: float = Field(
        0.5, gt=0, le=1, description="The window drifted when at least this share of columns drifted."
    )
    sample_rows: int = Field(
        5000,
        ge=100,
        description="Windows and references larger than this are sampled to it with a fixed seed: the check "
        "takes the same time and means the same at any size.",
    )
    seed: int = Field(0, ge=0, description="Seed of the sampling.")

    @model_validator(mode="after")
    def _known_tests(self) -> DriftOptions:
        for where, test in [("stattest", self.stattest)] + [
            (f"per_column_stattest.{c}", t) for c, t in self.per_column_stattest.items()
        ]:
            if test not in STATTESTS:
                raise ValueError(f"{where}: '{test}' is not a known test (one of {', '.join(STATTESTS)})")
        return self


class GuardOptions(_Strict):
    """After a promotion: compare the new champion live with the one it replaced."""

    baking_rows: int = Field(
        100, ge=1, description="Labeled predictions of the new champion that end the baking window."
    )
    baking_minutes: float = Field(
        60.0, gt=0, description="Or minutes since the promotion, whichever comes first (with at least min_rows)."
    )
    min_rows: int = Field(
        30, ge=1, description="Labeled rows needed before the guard judges at all; fewer at the deadline: it bakes."
    )
    tolerance: float = Field(
        0.05, ge=0, description="How much worse the live primary metric may be than the previous champion's."
    )
    max_error_rate: float = Field(
        0.02, ge=0, le=1, description="Share of failed predictions (errors logged by the server) tolerated."
    )


class MonitoringSpec(_Strict):
    enabled: bool = Field(True, description="Run drift checks for this model.")
    schedule_seconds: float = Field(60.0, gt=0, description="How often beat checks this model (at most).")
    window_rows: int = Field(1000, ge=10, description="A window is at most the last N logged rows of the champion.")
    window_minutes: float | None = Field(None, gt=0, description="And, if set, only rows of the last T minutes.")
    min_rows: int = Field(100, ge=10, description="A window with fewer rows is not judged (verdict 'too_few_rows').")
    drift: DriftOptions = Field(default_factory=DriftOptions)
    prediction_threshold: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Prediction drift when the Jensen-Shannon distance between the predicted-class "
        "shares of the reference and the window passes this.",
    )
    performance_drop: float = Field(
        0.05,
        ge=0,
        description="A drift is harmful when the live primary metric (labels) or, without enough labels, "
        "the confidence-based estimate (CBPE) fell by more than this.",
    )
    min_labels: int = Field(30, ge=1, description="Labeled rows needed to use the live metric instead of the estimate.")
    retrain_on: Literal["harmful_drift", "any_drift", "never"] = Field(
        "harmful_drift",
        description="harmful_drift: drift alone, when neither live metric nor estimate fell, retrains nothing.",
    )
    consecutive: int = Field(2, ge=1, description="Consecutive drifted windows that fire a retraining.")
    cooldown_minutes: float = Field(
        30.0, ge=0, description="After a retraining or an automatic rollback, no retraining for this long."
    )
    daily_budget: int = Field(3, ge=0, description="At most this many automatic retrainings per model per UTC day.")
    retrain_data: Literal["original", "recent", "original+recent"] = Field(
        "original+recent",
        description="What a retraining learns from: the spec's dataset re-read, the labeled window, or both.",
    )
    guard: GuardOptions = Field(default_factory=GuardOptions)


def parse_monitoring(data: dict[str, Any] | None, where: str = "(inline)") -> MonitoringSpec:
    """The section, or one sentence naming its first bad field."""
    try:
        return MonitoringSpec.model_validate(data or {})
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg = first["msg"].removeprefix("Value error, ")
        raise SpecError(f"invalid training spec {where}: field 'monitoring.{loc}': {msg}.") from None
