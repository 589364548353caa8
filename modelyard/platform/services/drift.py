"""Drift checks on the platform: a window from the inference log judged against the version's reference.

The judging is plain functions in modelyard.monitoring; this module reads their inputs
(the inference log, the version's reference sample and held-out metric from MLflow, the
`monitoring:` section of its spec), records the verdict (a drift_checks row, an MLflow
report) and hands it to the retraining policy (services/retraining.py). The worker's
tasks call these functions; tests and `modelyard drift check` call them directly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.platform.failpoints import failpoint
from modelyard.platform.registry.base import TAG_PREFIX
from modelyard.platform.services.retraining import apply_policy
from modelyard.platform.services.signatures import (
    Signature,
    champion_of,
    known,
    reference,
    rows_to_arrays,
    signature,
)
from modelyard.platform.services.verdicts import check_row
from modelyard.platform.store.db import utcnow

if TYPE_CHECKING:
    from modelyard.platform.context import Platform


def window_key(model: str, version: str, first: int, last: int, labeled: int) -> str:
    """Names a window: its rows, and how many had labels (labels arriving later make it a new window)."""
    return hashlib.sha256(f"{model}\0{version}\0{first}\0{last}\0{labeled}".encode()).hexdigest()


def run_check(platform: Platform, model: str) -> dict[str, Any]:
    """Judge the newest window of the champion once; record it; let the policy act. Idempotent per window."""
    import pandas as pd

    from modelyard.monitoring.checks import Window, judge
    from modelyard.monitoring.policy import TOO_FEW_ROWS
    from modelyard.platform.store.drift import DriftChecks

    started = time.perf_counter()
    version = champion_of(platform, model)
    sig = signature(platform, model, version)
    spec = sig.monitoring
    since = utcnow() - dt.timedelta(minutes=spec.window_minutes) if spec.window_minutes else None
    rows = platform.inference.window(model, version, spec.window_rows, since=since)  # since: received since
    if not rows:
        return {"model": model, "version": version, "verdict": None, "reason": f"nothing logged for v{version} yet"}
    labeled = sum(r.label is not None for r in rows)
    key = window_key(model, version, rows[0].id, rows[-1].id, labeled)
    checks = DriftChecks(platform.settings)
    found = checks.find(key)
    if found is not None:  # a redelivered task, a repeated beat: the window was judged already
        return _settled(platform, sig, found, checks)
    values: dict[str, Any] = {
        "model": model,
        "version": version,
        "window_key": key,
        "first_id": rows[0].id,
        "last_id": rows[-1].id,
        "window_from": rows[0].received_at,  # the server's clock: a sender's time is data
        "window_to": rows[-1].received_at,
        "rows": len(rows),
        "labeled_rows": labeled,
    }
    if len(rows) < spec.min_rows:
        reason = f"{len(rows)} rows logged for v{version}; a window needs {spec.min_rows} (monitoring.min_rows)"
        values.update(verdict=TOO_FEW_ROWS, scores={"reason": reason}, duration_s=time.perf_counter() - started)
        row, _ = checks.record(values)
        return check_row(row)
    ref = reference(platform, sig)
    flat, out, labels, mask = rows_to_arrays(sig, rows)
    window = Window(pd.DataFrame(flat, columns=sig.columns), out, labels, mask)
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "drift_report.html"
        # every version gets a report of its first judged window, drifted or not; then of the drifted ones
        first = not any(c.report_uri for c in checks.recent(model, 50, version=version))
        result = judge(ref, window, spec, sig.metric, sig.task, html, always_report=first)
        values.update(
            verdict=result.verdict,
            drift_share=result.drift_share,
            scores={**result.scores, "reason": result.reason},
            duration_s=time.perf_counter() - started,
        )
        failpoint("mid-check", platform.settings.run_folder)  # judged, nothing recorded: a redelivery judges again
        row, new = checks.record(values)
        failpoint("after-check-row", platform.settings.run_folder)  # recorded, not decided: a redelivery decides
        answer = _settled(platform, sig, row, checks)
        if new:  # the report last: MLflow being down must not keep a verdict from its decision
            try:
                answer["report"] = _log_report(platform, sig, row.id, html, checks)
            except Exception as err:
                logging.getLogger("modelyard.monitor").warning(
                    "drift check %s of %s: no report: %s", row.id, model, err
                )
    return answer


def _settled(platform: Platform, sig: Signature, row: Any, checks: Any) -> dict[str, Any]:
    """The check as recorded, after its event and the policy's decision (made here if nobody made them yet:
    the worker that judged it may have died between its row and its decision)."""
    from modelyard.monitoring.policy import TOO_FEW_ROWS

    if row.decision is None and row.verdict != TOO_FEW_ROWS:
        apply_policy(platform, sig.model, sig, row)
        row = checks.get(row.id) or row
    return check_row(row)


def drift_rows(platform: Platform, model: str, limit: int = 20) -> list[dict[str, Any]]:
    """Recent checks, oldest first, as `modelyard drift list --json` and `GET /v1/models/{name}/drift` show them."""
    from modelyard.platform.store.drift import DriftChecks

    known(platform, model)
    return [check_row(c) for c in DriftChecks(platform.settings).recent(model, limit)]


def _log_report(platform: Platform, sig: Signature, check_id: int, html: Path, checks: Any) -> str | None:
    """The Evidently report and the drift-over-time chart, into the model's monitoring run in MLflow."""
    from modelyard.monitoring.chart import drift_chart
    from modelyard.platform.registry.mlflow_store import mlflow_errors

    model = sig.model
    client = platform.registry.client
    run_id = _monitoring_run(platform, model)
    history = checks.recent(model, 200)
    with mlflow_errors(f"log drift check {check_id} of '{model}'"):
        if html.exists():
            client.log_artifact(run_id, str(html), artifact_path=f"drift/check-{check_id:06d}")
        chart = html.parent / "drift_over_time.png"
        points = [(c.created_at, float(c.drift_share), c.verdict) for c in history if c.drift_share is not None]
        drift_chart(points, sig.monitoring.drift.drift_share, chart, f"{model}: drift over time")
        client.log_artifact(run_id, str(chart), artifact_path="drift")
        share = next((c.drift_share for c in history if c.id == check_id), None)
        if share is not None:
            client.log_metric(run_id, "drift_share", float(share), step=check_id)
    if not html.exists():
        return None
    uri = f"runs:/{run_id}/drift/check-{check_id:06d}/drift_report.html"
    checks.report(check_id, uri)
    return uri


def _monitoring_run(platform: Platform, model: str) -> str:
    """One MLflow run per model holds its drift reports; found by tag, created once under the model's lock."""
    from modelyard.platform.registry import tracking
    from modelyard.platform.registry.mlflow_store import mlflow_errors

    client = platform.registry.client
    experiment = tracking.experiment_for(platform.settings, model)
    query = f"tags.`{TAG_PREFIX}monitoring` = 'true'"
    with mlflow_errors(f"find the monitoring run of '{model}'"), platform.audit.moving(model):
        found = client.search_runs([experiment], query, max_results=1)
        if found:
            return str(found[0].info.run_id)
        tags = {f"{TAG_PREFIX}monitoring": "true"}
        return str(client.create_run(experiment, run_name=f"{model}-monitoring", tags=tags).info.run_id)
