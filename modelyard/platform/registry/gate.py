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
    baseline: dict[str, float] | None = None,
) -> GateDecision:
    """Judge a challenger against the champion (or the threshold) and the classical baseline."""
    evidence: dict[str, Any] = {
        "primary_metric": primary,
        "challenger": challenger,
        "champion": champion,
        "baseline": baseline,
    }
    if primary not in challenger:
        return GateDecision(False, [f"the challenger has no '{primary}' metric"], evidence)
    if champion is None:
        passed, reasons = _against_threshold(primary, challenger[primary], gate)
    elif primary not in champion:
        return GateDecision(False, [f"the champion has no '{primary}' metric to compare"], evidence)
    else:
        evidence["improvement"] = improvement(primary, challenger[primary], champion[primary])
        passed, reasons = _against_champion(primary, challenger, champion, gate)
    if gate.must_beat_baseline and baseline is not None and primary in baseline:
        beats, reason = _against_baseline(primary, challenger[primary], baseline[primary], gate.baseline_margin)
        passed = passed and beats
        reasons.append(reason)
    return GateDecision(passed, reasons, evidence)


def _against_threshold(primary: str, value: float, gate: GateSpec) -> tuple[bool, list[str]]:
    if gate.threshold is None:
        return True, [f"no champion yet; {primary} {value:.4f} and no threshold set"]
    ok = improvement(primary, value, gate.threshold) >= 0
    verb = "meets" if ok else "misses"
    return ok, [f"no champion yet; {primary} {value:.4f} {verb} the threshold {gate.threshold}"]


def _against_champion(
    primary: str, challenger: dict[str, float], champion: dict[str, float], gate: GateSpec
) -> tuple[bool, list[str]]:
    value, old = challenger[primary], champion[primary]
    gain = improvement(primary, value, old)
    passed = gain > 0 and gain >= gate.min_delta
    if passed:
        reasons = [f"{primary} {value:.4f} vs champion {old:.4f} (+{gain:.4f} >= {gate.min_delta})"]
    else:
        reasons = [
            f"{primary} {value:.4f} vs champion {old:.4f}: improvement {gain:+.4f} "
            f"is below the required {gate.min_delta}" + (" (and must be positive)" if gate.min_delta == 0 else "")
        ]
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
    return passed, reasons


def _against_baseline(primary: str, value: float, base: float, margin: float) -> tuple[bool, str]:
    gain = improvement(primary, value, base)
    if gain > 0 and gain >= margin:
        return True, f"{primary} {value:.4f} beats the classical baseline's {base:.4f} (+{gain:.4f})"
    need = f"by at least {margin}" if margin else "to be worth serving"
    return False, (
        f"{primary} {value:.4f} does not beat the classical baseline's {base:.4f} ({gain:+.4f}); "
        f"a network must beat it {need} (gate.must_beat_baseline)"
    )
