"""The gate as a step: judge a version against the champion on the same held-out data, then promote it.

A version whose export failed cannot become champion; the gate says so. The decision and
the promotion are recorded in one step (see `gate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelyard.errors import LifecycleError
from modelyard.platform.registry.base import VersionInfo
from modelyard.platform.registry.gate import GateDecision, decide
from modelyard.platform.registry.lifecycle import ChampionMoved, Lifecycle
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.requests import Lease
from modelyard.trainers.spec import TrainSpec


def gate(
    lifecycle: Lifecycle,
    name: str,
    version: str,
    request_id: str | None,
    export_problem: str | None,
    fence: Lease | None = None,
    run_folder: Path | None = None,
) -> GateDecision:
    """Judge a version once, against the champion on the challenger's held-out data, and act on it.

    The decision and the promotion it calls for are one step: the gate's event and the
    alias moves are written in one transaction, under the model's lock and the request's
    lease. A retry after a crash finds either both (and returns the recorded decision) or
    neither (and judges again). If the champion moves while the gate judges, it judges again.
    """
    from modelyard.platform.registry import tracking

    registry, audit = lifecycle.registry, lifecycle.audit
    earlier = _recorded(audit.history(name, GATE_KINDS), version)
    if earlier is not None:  # an earlier attempt judged it and acted, in one step
        return earlier
    info = registry.get_version(name, version)
    spec = tracking.load_spec_of(info.run_id or "")
    for _ in range(5):
        champion_version = lifecycle.aliases(name).get("champion")
        decision = _judge(registry, spec, info, champion_version, export_problem)
        decision.evidence["champion_version"] = champion_version
        event = EventRecord(
            name,
            "gate_passed" if decision.passed else "gate_rejected",
            "; ".join(decision.reasons),
            "gate",
            None,
            champion_version,
            version,
            decision.evidence,
            request_id,
        )
        promote = decision.passed and not spec.gate.require_approval and champion_version != version
        try:
            if promote:
                lifecycle.promote(
                    name,
                    version,
                    "gate",
                    f"gate passed for v{version}",
                    decision.evidence,
                    request_id,
                    expect_champion=champion_version,
                    extra=(event,),
                    fence=fence,
                    run_folder=run_folder,
                )
            else:
                with audit.moving(name, fence) as tx:
                    if tx.aliases().get("champion") != champion_version:
                        raise ChampionMoved(f"the champion of '{name}' moved while v{version} was judged.")
                    recorded = _recorded(tx.history(GATE_KINDS), version)
                    if recorded is not None:
                        return recorded
                    tx.record(event)
        except ChampionMoved:
            continue
        return decision
    raise LifecycleError(f"the champion of '{name}' kept moving while v{version} was judged; export it again.")


GATE_KINDS = ("gate_passed", "gate_rejected")


def _recorded(events: list[Any], version: str) -> GateDecision | None:
    for e in events:
        if e.to_version == version:
            reasons = [r for r in (e.reason or "").split("; ") if r]
            return GateDecision(e.kind == "gate_passed", reasons, dict(e.evidence or {}))
    return None


def _judge(
    registry: Any, spec: TrainSpec, info: VersionInfo, champion_version: str | None, export_problem: str | None
) -> GateDecision:
    from modelyard.platform.registry import tracking

    if export_problem:
        return GateDecision(False, [f"export failed, so it cannot be deployed: {export_problem}"])
    if champion_version == info.version:
        return GateDecision(True, [f"v{info.version} is champion already"])
    logged = registry.run_metrics(info.run_id or "")
    metrics = {k.removeprefix("test_"): v for k, v in logged.items() if k.startswith("test_")}
    baseline = {k.removeprefix("baseline_"): v for k, v in logged.items() if k.startswith("baseline_")} or None
    champion_metrics: dict[str, float] | None = None
    if champion_version is not None:
        champion = registry.get_version(info.name, champion_version)
        champion_metrics, problems = _champion_on_holdout(spec, champion, tracking.load_holdout(info.run_id or ""))
        if problems:
            return GateDecision(False, problems)
    return decide(spec.primary_metric, metrics, champion_metrics, spec.gate, baseline)


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
