"""The gate as a step: judge a version against the champion on the same held-out data, then promote it.

A version whose export failed cannot become champion; the gate says so.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from modelyard.errors import LifecycleError
from modelyard.platform.registry.base import VersionInfo
from modelyard.platform.registry.gate import GateDecision, decide
from modelyard.platform.registry.lifecycle import Lifecycle
from modelyard.platform.store.audit import EventRecord
from modelyard.trainers.spec import TrainSpec


def gate(
    lifecycle: Lifecycle, name: str, version: str, request_id: str | None, export_problem: str | None
) -> GateDecision | None:
    """Judge a version once: against the champion on the challenger's held-out data."""
    from modelyard.platform.registry import tracking

    registry, audit = lifecycle.registry, lifecycle.audit
    gated = [e for e in audit.history(name, ("gate_passed", "gate_rejected")) if e.to_version == version]
    if gated:  # judged by an earlier attempt
        return None
    info = registry.get_version(name, version)
    spec = tracking.load_spec_of(info.run_id or "")
    logged = registry.run_metrics(info.run_id or "")
    metrics = {k.removeprefix("test_"): v for k, v in logged.items() if k.startswith("test_")}
    baseline = {k.removeprefix("baseline_"): v for k, v in logged.items() if k.startswith("baseline_")} or None
    champion = registry.get_alias(name, "champion")
    if export_problem:
        decision = GateDecision(False, [f"export failed, so it cannot be deployed: {export_problem}"])
    else:
        champion_metrics: dict[str, float] | None = None
        problems: list[str] = []
        if champion is not None:
            champion_metrics, problems = _champion_on_holdout(spec, champion, tracking.load_holdout(info.run_id or ""))
        decision = (
            GateDecision(False, problems)
            if problems
            else decide(spec.primary_metric, metrics, champion_metrics, spec.gate, baseline)
        )
    decision.evidence["champion_version"] = champion.version if champion else None
    kind = "gate_passed" if decision.passed else "gate_rejected"
    audit.record(
        EventRecord(
            name,
            kind,
            "; ".join(decision.reasons),
            "gate",
            None,
            champion.version if champion else None,
            version,
            decision.evidence,
            request_id,
        )
    )
    if decision.passed and not spec.gate.require_approval:
        with suppress(LifecycleError):  # a concurrent delivery promoted it already
            lifecycle.promote(name, version, "gate", f"gate passed for v{version}", decision.evidence, request_id)
    return decision


def _champion_on_holdout(
    spec: TrainSpec, champion: VersionInfo, holdout: Any
) -> tuple[dict[str, float] | None, list[str]]:
    """The champion's metrics on the challenger's held-out split (the same data for both)."""
    from modelyard.platform.registry import tracking
    from modelyard.trainers.evaluate import evaluate_model

    x, y = holdout
    info = tracking.load_dataset_info(champion.run_id or "")
    n_classes = len(info.get("classes") or []) or 1
    if list(info.get("input_shape", [])) != list(x.shape[1:]):
        return None, [
            f"champion v{champion.version} reads inputs of shape {info.get('input_shape')}, "
            f"the challenger's held-out data has {list(x.shape[1:])}; promote by hand if intended"
        ]
    model = tracking.load_model(spec.name, champion.version)
    return evaluate_model(model, x, y, spec.dataset.task, n_classes).metrics, []
