"""The promotion gate: does a challenger beat the champion on the same held-out data?"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from modelyard.trainers.spec import LOWER_IS_BETTER, GateSpec


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str]
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def improvement(metric: str, new: float, old: float) -> float:
    """Positive when `new` is better than `old`, whichever way the metric points."""
    return old - new if metric in LOWER_IS_BETTER else new - old


def decide(
    primary: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    gate: GateSpec,
) -> GateDecision:
    evidence: dict[str, Any] = {"primary_metric": primary, "challenger": challenger, "champion": champion}
    if primary not in challenger:
        return GateDecision(False, [f"the challenger has no '{primary}' metric"], evidence)
    value = challenger[primary]
    if champion is None:
        if gate.threshold is None:
            return GateDecision(True, [f"no champion yet; {primary} {value:.4f} and no threshold set"], evidence)
        ok = improvement(primary, value, gate.threshold) >= 0
        verb = "meets" if ok else "misses"
        return GateDecision(
            ok, [f"no champion yet; {primary} {value:.4f} {verb} the threshold {gate.threshold}"], evidence
        )
    reasons: list[str] = []
    passed = True
    if primary not in champion:
        return GateDecision(False, [f"the champion has no '{primary}' metric to compare"], evidence)
    gain = improvement(primary, value, champion[primary])
    evidence["improvement"] = gain
    if gain > 0 and gain >= gate.min_delta:
        reasons.append(f"{primary} {value:.4f} vs champion {champion[primary]:.4f} (+{gain:.4f} >= {gate.min_delta})")
    else:
        passed = False
        reasons.append(
            f"{primary} {value:.4f} vs champion {champion[primary]:.4f}: improvement {gain:+.4f} "
            f"is below the required {gate.min_delta}" + (" (and must be positive)" if gate.min_delta == 0 else "")
        )
    for metric, tolerance in sorted(gate.tolerances.items()):
        if metric not in challenger or metric not in champion:
            passed = False
            reasons.append(f"secondary metric '{metric}' is missing on one side")
            continue
        regression = -improvement(metric, challenger[metric], champion[metric])
        if regression > tolerance:
            passed = False
            reasons.append(
                f"{metric} regressed by {regression:.4f} ({champion[metric]:.4f} -> {challenger[metric]:.4f}), "
                f"past its tolerance {tolerance}"
            )
    return GateDecision(passed, reasons, evidence)
