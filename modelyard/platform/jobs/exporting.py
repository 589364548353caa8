"""The export stage: export a registered version to ONNX, then (for a training request) gate it.

A version whose export fails stays registered but is tagged not deployable, and the
gate will not promote it. Runs in the `modelyard.export` task (or in-process when no
queue is given).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelyard.errors import ModelyardError, SpecError, TransientError
from modelyard.platform.context import Platform
from modelyard.platform.registry.base import TAG_PREFIX, VersionInfo
from modelyard.platform.registry.gate import GateDecision
from modelyard.platform.registry.mlflow_store import MlflowRegistry, mlflow_errors
from modelyard.platform.registry.promotion import gate
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.requests import worker_name

EXPORT_TAG = f"{TAG_PREFIX}export"


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
) -> dict[str, Any]:
    """Export, log under the version's run (artifact folder `export/`), tag the version, record the event."""
    registry, audit = platform.registry, platform.audit
    info = registry.get_version(name, version)
    try:
        summary = _export(registry, info, targets)
    except ModelyardError as err:
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


def _export(registry: MlflowRegistry, info: VersionInfo, targets: list[str] | None) -> dict[str, Any]:
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


class ExportBusy(Exception):
    """Another worker is exporting this request right now."""


def finish_request(platform: Platform, name: str, version: str, request_id: str) -> dict[str, Any]:
    store, settings = platform.requests, platform.settings
    owner = worker_name()
    claim = store.take_export(request_id, owner)
    if claim.state == "done":
        return {**(claim.row.result or {}), "duplicate": True}
    if claim.state != "claimed":
        raise ExportBusy(request_id)
    result = dict(claim.row.result or {})
    try:
        with store.heartbeat(request_id, owner, settings.heartbeat_seconds):
            try:
                result["export"] = export_version(platform, name, version, owner, request_id=request_id)
                export_problem = None if result["export"]["deployable"] else "no variant meets any target's budget"
            except TransientError:
                raise
            except ModelyardError as err:
                result["export"] = {"error": str(err)}
                export_problem = str(err)
            decision = gate(platform.lifecycle, name, version, request_id, export_problem)
    except TransientError:
        store.hand_over(request_id, owner)
        raise
    result["gate"] = decision.as_dict() if decision else None
    result["status"] = _status(decision, bool(claim.row.spec.get("gate", {}).get("require_approval")))
    store.update(request_id, owner, status="succeeded", result=result)
    return result


def _status(decision: GateDecision | None, require_approval: bool) -> str:
    if decision is None:
        return "gated_before"
    if not decision.passed:
        return "rejected"
    return "awaiting_approval" if require_approval else "promoted"
