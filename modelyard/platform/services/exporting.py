"""The export stage: export a registered version to ONNX, then (for a training request) gate it.

A version whose export fails stays registered but is tagged not deployable, and the
gate will not promote it. Runs in the `modelyard.export` task (or in-process when no
queue is given).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelyard.errors import ModelyardError, SpecError, TransientError
from modelyard.platform.context import Platform
from modelyard.platform.registry.base import EXPORT_TAG, TAG_PREFIX, VersionInfo
from modelyard.platform.registry.gate import GateDecision
from modelyard.platform.registry.mlflow_store import MlflowRegistry, mlflow_errors
from modelyard.platform.registry.promotion import gate
from modelyard.platform.services.attempts import end_attempt, stale_answer, unclaimed_answer
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.requests import Claim, ClaimLost, Lease, worker_name
from modelyard.platform.store.states import State

log = logging.getLogger("modelyard.export")


def export_spec_of(raw: dict[str, Any], where: str) -> Any:
    from modelyard.exporters.spec import ExportSpec
    from modelyard.trainers.spec import describe_validation_error

    try:
        return ExportSpec.model_validate(raw)
    except ValidationError as err:
        message = describe_validation_error(err, where).replace("field '", "field 'export.", 1)
        raise SpecError(message) from None


def export_version(
    platform: Platform,
    name: str,
    version: str,
    actor: str,
    targets: list[str] | None = None,
    request_id: str | None = None,
    fence: Lease | None = None,
) -> dict[str, Any]:
    """Export, log under the version's run (artifact folder `export/`), tag the version, record the event.

    With a fence (a request's export stage), the lease is checked before the tags are
    written: a frozen worker that lost it never overwrites what its successor decided.
    """
    registry, audit = platform.registry, platform.audit

    def still_held() -> None:
        if fence is not None:
            platform.requests.ensure(fence)

    info = registry.get_version(name, version)
    try:
        summary = _export(registry, info, targets, still_held)
    except ModelyardError as err:
        if isinstance(err, TransientError | ClaimLost):  # not the export's fault: retry, or stop
            raise
        still_held()
        for key, value in (
            (f"{EXPORT_TAG}.status", "failed"),
            (f"{EXPORT_TAG}.error", str(err)[:4000]),
            (f"{TAG_PREFIX}deployable", "false"),
        ):
            registry.set_version_tag(name, version, key, value)
        audit.record(EventRecord(name, "export_failed", str(err), actor, None, None, version, {}, request_id))
        raise
    chosen = ", ".join(f"{t}: {v or 'none'}" for t, v in summary["targets"].items())
    audit.record(EventRecord(name, "exported", chosen, actor, None, None, version, summary, request_id))
    return summary


def _export(
    registry: MlflowRegistry, info: VersionInfo, targets: list[str] | None, still_held: Callable[[], None]
) -> dict[str, Any]:
    from modelyard.exporters.convert import ExportError
    from modelyard.exporters.pipeline import ExportData, export_model
    from modelyard.platform.registry import tracking
    from modelyard.trainers.evaluate import classification_metrics, regression_metrics

    run_id = info.run_id or ""
    spec = tracking.load_spec_of(run_id)
    export_spec = export_spec_of(spec.export, f"of {info.name}/{info.version}")
    model = _load_model(info)
    x_test, y_test = tracking.load_holdout(run_id)
    (x_val,) = tracking.load_arrays(run_id, "holdout/validation.npz", ("x",))
    (x_cal,) = tracking.load_arrays(run_id, "holdout/calibration.npz", ("x",))
    classifier = spec.dataset.task == "classification"
    n_classes = int(model.outputs[0].shape[-1])

    def evaluate(outputs: Any) -> dict[str, float]:
        if classifier:
            return classification_metrics(y_test, outputs, n_classes).metrics
        return regression_metrics(y_test, outputs).metrics

    data = ExportData(x_val, x_cal, x_test, evaluate, spec.primary_metric, classifier)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = export_model(model, data, export_spec, Path(tmp) / "export", info.name)
        except ExportError as err:
            raise ExportError(f"export of {info.name}/{info.version} failed: {err}") from None
        chosen = {t: v for t, v in result.targets.items() if targets is None or t in targets}
        with mlflow_errors(f"log the export of {info.name}/{info.version}"):
            registry.client.log_artifacts(run_id, str(result.folder), "export")
    deployable = any(result.targets.values())  # a filter on what is shown, not on what the version can do
    tags = {
        f"{EXPORT_TAG}.status": "passed",
        f"{TAG_PREFIX}deployable": str(deployable).lower(),
        **{f"{EXPORT_TAG}.{t}": v or "none" for t, v in chosen.items()},
    }
    still_held()
    for key, value in tags.items():
        registry.set_version_tag(info.name, info.version, key, value)
    report = result.report
    return {
        "targets": chosen,
        "deployable": deployable,
        "parity": report["parity"]["fp32"],
        "variants": {
            v["variant"]: {"size_bytes": v["size_bytes"], spec.primary_metric: v["metrics"].get(spec.primary_metric)}
            for v in report["variants"]
        },
        "reasons": {t: s["reasons"] for t, s in report["targets"].items() if targets is None or t in targets},
        "seconds": report["seconds"],
    }


def _load_model(info: VersionInfo) -> Any:
    """The Keras model of a version, with its signature checked; a clear error if either is missing."""
    import mlflow

    from modelyard.exporters.convert import ExportError
    from modelyard.platform.registry import tracking

    uri = f"models:/{info.name}/{info.version}"
    try:
        with mlflow_errors(f"model {info.name}/{info.version}"):
            signature = mlflow.models.get_model_info(uri).signature
    except ModelyardError:
        raise
    except Exception as err:
        raise ExportError(
            f"the model artifact of {info.name}/{info.version} is missing or unreadable ({err})."
        ) from None
    if signature is None:
        raise ExportError(f"{info.name}/{info.version} has no signature; log the model with one to export it.")
    try:
        return tracking.load_model(info.name, info.version)
    except ModelyardError:
        raise
    except Exception as err:
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ExportError(f"the model artifact of {info.name}/{info.version} is corrupt ({first}).") from None


def claim_export(platform: Platform, request_id: str) -> Claim:
    """Try to take a trained request's export stage. Cheap: no TensorFlow, no MLflow."""
    return platform.requests.claim_export(request_id, worker_name())


def finish_request(
    platform: Platform, request_id: str, claim: Claim | None = None, retry_in: float | None = 0.0
) -> dict[str, Any]:
    """Export a trained request's version, gate it (promoting it if it passes), record the final result.

    A failed export is a gate rejection (the version cannot be served); anything else
    that goes wrong fails the request with its reason, or, if transient, gives the claim
    back with its retry due in `retry_in` seconds (None: the last retry, so fail).
    """
    store, settings = platform.requests, platform.settings
    claim = claim or claim_export(platform, request_id)
    if claim.lease is None:
        return unclaimed_answer(claim)
    lease, row = claim.lease, claim.row
    name, version = row.model, str(row.version)
    result = dict(row.result or {})
    try:
        with store.heartbeat(lease, settings.heartbeat_seconds) as lost:
            try:
                result["export"] = export_version(
                    platform, name, version, lease.owner, request_id=request_id, fence=lease
                )
                export_problem = None if result["export"]["deployable"] else "no variant meets any target's budget"
            except ModelyardError as err:
                if isinstance(err, TransientError | ClaimLost):
                    raise
                result["export"] = {"error": str(err)}
                export_problem = str(err)
            if lost.is_set():
                raise ClaimLost(lease, store.get(request_id))
            decision = gate(platform.lifecycle, name, version, request_id, export_problem, lease, settings.run_folder)
        result["gate"] = decision.as_dict()
        result["status"] = _status(decision, bool(row.spec.get("gate", {}).get("require_approval")))
        store.advance(lease, State.SUCCEEDED, result=result, error=None)
    except ClaimLost as err:  # taken over while frozen: the new owner carries the request
        return stale_answer(platform, name, lease, err)
    except BaseException as err:
        failure = end_attempt(platform, name, lease, err, retry_in, "export")
        if failure is err:
            raise
        raise failure from err
    if result["status"] == "promoted":  # its bundle at once, so following device groups need not wait (best effort)
        from modelyard.platform.fleet.champion import champion_bundle

        champion_bundle(platform, name, version, settings.edge_bundle_target, "gate", request_id)
    return result


def _status(decision: GateDecision, require_approval: bool) -> str:
    if not decision.passed:
        return "rejected"
    return "awaiting_approval" if require_approval else "promoted"
