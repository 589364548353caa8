"""The monitoring loop's platform side: windows from the inference log, checks, policy, guard, retention.

The judging is plain functions in modelyard.monitoring; this module reads their inputs
(the inference log, the version's reference sample and held-out metric from MLflow, the
`monitoring:` section of its spec), records what they decided (drift_checks rows, audit
events, MLflow reports) and acts (a retraining request, a rollback). The Celery tasks
in tasks.py call these functions; tests and `modelyard drift --now` call them directly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelyard.errors import ConflictError, InputError, NotFoundError
from modelyard.platform.faults import failpoint
from modelyard.platform.registry.base import TAG_PREFIX
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import utcnow

if TYPE_CHECKING:
    from modelyard.monitoring.checks import Reference
    from modelyard.monitoring.spec import MonitoringSpec
    from modelyard.platform.context import Platform
    from modelyard.platform.store.inference import LoggedRow
    from modelyard.trainers.spec import TrainSpec

AUTOMATIC = "policy"  # the actor of retrainings the policy queues
GUARD = "guard"
GUARD_KINDS = ("guard_baked", "guard_rolled_back", "guard_alarm")  # alarm: worse, but nothing to roll back to


@dataclass
class Signature:
    """What a version reads and answers, as the monitoring loop needs it (from its run's dataset.json)."""

    model: str
    version: str
    run_id: str
    spec: TrainSpec
    monitoring: MonitoringSpec
    columns: list[str]  # one per flattened input value
    input_shape: list[int]
    classes: list[Any]
    task: str

    @property
    def metric(self) -> str:
        return self.spec.primary_metric

    def class_index(self, label: Any) -> int | None:
        from modelyard.trainers.datasets import class_index, label_key

        return class_index(self.classes).get(label_key(label))


_cache_lock = threading.Lock()
_signatures: dict[tuple[str, str], Signature] = {}
_references: dict[tuple[str, str], Reference] = {}


def signature(platform: Platform, model: str, version: str) -> Signature:
    """A version's signature and monitoring section; read from MLflow once per process."""
    from modelyard.monitoring.spec import parse_monitoring
    from modelyard.platform.registry import tracking

    key = (model, version)
    with _cache_lock:
        if key in _signatures:
            return _signatures[key]
    info = platform.registry.get_version(model, version)
    run_id = info.run_id or ""
    tracking.use_tracking(platform.settings)
    spec = tracking.load_spec_of(run_id)
    data = tracking.load_dataset_info(run_id)
    shape = [int(d) for d in data.get("input_shape", [])]
    width = int(np.prod(shape)) if shape else 1
    names = [str(n) for n in data.get("features", [])]
    columns = names if len(names) == width else [f"f{i}" for i in range(width)]
    found = Signature(
        model,
        version,
        run_id,
        spec,
        parse_monitoring(spec.monitoring, f"of {model}/{version}"),
        columns,
        shape,
        list(data.get("classes") or []),
        str(data.get("task", spec.dataset.task)),
    )
    with _cache_lock:
        _signatures[key] = found
    return found


def known(platform: Platform, model: str) -> None:
    if not platform.audit.knows(model):
        raise NotFoundError(f"model '{model}' is not registered.", code="model_not_found")


def champion_of(platform: Platform, model: str) -> str:
    known(platform, model)
    aliases = platform.audit.aliases(model).get(model, {})
    champion = aliases.get("champion")
    if champion is None:
        raise NotFoundError(f"model '{model}' has no champion to monitor.", code="alias_not_set")
    return champion


def open_version(platform: Platform, model: str, version: str) -> Any:
    """The version's server ONNX variant (the one the server serves), opened in this process."""
    from modelyard.platform.serving.models import load_version

    return load_version(platform.registry, model, version, platform.settings.root / "cache" / "models", threads=1)


def predict(loaded: Any, sig: Signature, flat: np.ndarray) -> np.ndarray:
    x = flat.reshape((len(flat), *sig.input_shape)).astype(np.float32)
    out = loaded.run({loaded.inputs[0].name: x})
    return np.asarray(out[loaded.outputs[0].name], dtype=np.float64)


def reference(platform: Platform, sig: Signature) -> Reference:
    """The version's reference sample (training rows logged with it), its outputs on them, its held-out metric."""
    import mlflow
    import pandas as pd

    from modelyard.monitoring.checks import Reference
    from modelyard.platform.registry.mlflow_store import mlflow_errors

    key = (sig.model, sig.version)
    with _cache_lock:
        if key in _references:
            return _references[key]
    with mlflow_errors(f"the reference sample of {sig.model}/{sig.version}"):
        path = mlflow.artifacts.download_artifacts(
            run_id=sig.run_id, artifact_path="reference/reference_sample.parquet"
        )
    frame = pd.read_parquet(path).drop(columns=["label"], errors="ignore")
    frame.columns = sig.columns
    outputs = predict(open_version(platform, sig.model, sig.version), sig, frame.to_numpy(np.float32))
    heldout = platform.registry.run_metrics(sig.run_id).get(f"test_{sig.metric}")
    found = Reference(frame, outputs, heldout)
    with _cache_lock:
        _references[key] = found
    return found


def rows_to_arrays(sig: Signature, rows: list[LoggedRow]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Logged rows -> (flat inputs, outputs, labels of the labeled rows, labeled mask)."""
    inputs = [next(iter(r.inputs.values())) if r.inputs else [] for r in rows]
    outputs = [next(iter(r.outputs.values())) if r.outputs else [] for r in rows]
    flat = np.asarray(inputs, dtype=np.float64).reshape(len(rows), -1)
    out = np.asarray(outputs, dtype=np.float64).reshape(len(rows), -1)
    labeled = np.array([r.label is not None for r in rows], dtype=bool)
    if sig.task == "classification":
        labels = np.array([sig.class_index(r.label) for r in rows if r.label is not None], dtype=np.int64)
    else:
        labels = np.array([float(r.label) for r in rows if r.label is not None], dtype=np.float64)
    return flat, out, labels, labeled


def window_key(model: str, version: str, first: int, last: int, labeled: int) -> str:
    """Names a window: its rows, and how many had labels (labels arriving later make it a new window)."""
    return hashlib.sha256(f"{model}\0{version}\0{first}\0{last}\0{labeled}".encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- checks


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
    rows = platform.inference.window(model, version, spec.window_rows, since=since)
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
        "window_from": rows[0].created_at,
        "window_to": rows[-1].created_at,
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
    """Recent checks, oldest first, as `modelyard drift --json` and `GET /v1/models/{name}/drift` show them."""
    from modelyard.platform.store.drift import DriftChecks

    known(platform, model)
    return [check_row(c) for c in DriftChecks(platform.settings).recent(model, limit)]


def _drifted(row: Any) -> list[str]:
    columns = ((row.scores or {}).get("features") or {}).get("columns", [])
    return [c["column"] for c in columns if c.get("drifted")]


def _evidence(row: Any) -> dict[str, Any]:
    scores = row.scores or {}
    return {
        "check_id": row.id,
        "verdict": row.verdict,
        "rows": row.rows,
        "labeled_rows": row.labeled_rows,
        "drift_share": row.drift_share,
        "drifted_columns": _drifted(row),
        "prediction": {k: v for k, v in (scores.get("prediction") or {}).items() if k in ("distance", "drifted")},
        "performance": scores.get("performance"),
        "window": [row.first_id, row.last_id],
    }


def check_row(row: Any) -> dict[str, Any]:
    """A drift_checks row as `modelyard drift --json` and the API show it."""
    scores = row.scores or {}
    features = scores.get("features") or {}
    return {
        "id": row.id,
        "model": row.model,
        "version": row.version,
        "created": row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "window": {"first_id": row.first_id, "last_id": row.last_id, "rows": row.rows, "labeled": row.labeled_rows},
        "verdict": row.verdict,
        "reason": scores.get("reason"),
        "drift_share": row.drift_share,
        "drifted_columns": _drifted(row),
        "column_scores": {c["column"]: c["score"] for c in features.get("columns", [])},
        "prediction_drift": (scores.get("prediction") or {}).get("distance"),
        "performance": scores.get("performance"),
        "decision": row.decision,
        "report": row.report_uri,
        "duration_s": round(float(row.duration_s), 3),
    }


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


# ---------------------------------------------------------------------------------------------- policy


def policy_state(platform: Platform, sig: Signature, check: Any, own: str | None = None) -> Any:
    """What the policy decides on, as of `check`: the judged windows of the served version up to it (a window
    fewer than min_rows newer than the one before is the same data judged again: the newer verdict
    replaces it), the retraining in flight (but `own`, this window's own request), cooldowns, the budget."""
    from modelyard.monitoring.policy import TOO_FEW_ROWS, PolicyState
    from modelyard.platform.store.drift import DriftChecks

    now = utcnow()
    judged = [
        c
        for c in DriftChecks(platform.settings).recent(sig.model, 50, version=sig.version)
        if c.id <= check.id and c.verdict != TOO_FEW_ROWS
    ]
    windows: list[Any] = []
    for c in judged:
        if windows and c.last_id - windows[-1].last_id < sig.monitoring.min_rows:
            windows[-1] = c
        else:
            windows.append(c)
    events = platform.audit.history(sig.model, ("retraining_queued", "guard_rolled_back"))
    automatic = [e for e in events if e.kind == "retraining_queued" and e.actor == AUTOMATIC]
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rollbacks = [e for e in events if e.kind == "guard_rolled_back"]
    return PolicyState(
        verdicts=[c.verdict for c in windows],
        now=now,
        in_flight=platform.requests.in_flight(sig.model, ignore=own),
        last_retraining=_aware(automatic[-1].created_at) if automatic else None,
        last_rollback=_aware(rollbacks[-1].created_at) if rollbacks else None,
        retrainings_today=sum(_aware(e.created_at) >= midnight for e in automatic),
    )


def _aware(when: dt.datetime) -> dt.datetime:
    """A time from either database as UTC (SQLite hands back naive UTC; PostgreSQL the session's zone)."""
    return when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)


def apply_policy(platform: Platform, model: str, sig: Signature, check: Any) -> str:
    """Turn the newest verdicts into a retraining, or a recorded reason why not; one decision per check."""
    from modelyard.monitoring.policy import decide
    from modelyard.platform.faults import describe, is_transient
    from modelyard.platform.store.drift import DriftChecks

    rid = "drift-" + hashlib.sha256(f"{model}\0{check.window_key}".encode()).hexdigest()[:24]
    # One check of a model at a time, under the model's lock; the check's events and its decision commit
    # together at the end (on SQLite after the retraining request's own writes, which use other sessions).
    with platform.audit.moving(model) as tx:
        done = DriftChecks.decision(tx.session, check.id)
        if done is not None:  # another delivery of this window decided first
            return done
        reason = (check.scores or {}).get("reason")
        events = [
            EventRecord(model, "drift_checked", f"check {check.id} of v{sig.version}: {check.verdict}: {reason}",
                        "monitor", None, None, sig.version, _evidence(check))
        ]  # fmt: skip
        # `own`: a delivery that died after queueing this window's retraining finds it, and finishes it
        decision = decide(sig.monitoring, policy_state(platform, sig, check, own=rid))
        said, skipped = decision.reason, decision.action == "skip"
        if decision.action == "retrain":
            why = f"{decision.reason} (check {check.id}: {check.verdict})"
            try:
                queued = queue_retraining(platform, sig, rid, "drift", AUTOMATIC, why, check.last_id, check.id)
                events += [queued] if queued else []  # after the check that fired it, in the same commit
                said = f"retraining {rid} queued: {decision.reason}"
            except Exception as err:
                if is_transient(err):  # the broker or a database is down: the task retries, nothing decided yet
                    raise
                said, skipped = f"{decision.reason}, but the retraining could not be queued: {describe(err)}", True
        if skipped:
            evidence = {**decision.evidence, "check_id": check.id}
            events.append(EventRecord(model, "retraining_skipped", said, AUTOMATIC, None, None, sig.version, evidence))
        tx.record(*events)
        DriftChecks.decide(tx.session, check.id, said)
    return said


def queue_retraining(
    platform: Platform,
    sig: Signature,
    request_id: str,
    trigger: str,
    actor: str,
    reason: str,
    until_id: int,
    check_id: int | None = None,
) -> EventRecord | None:
    """The champion's spec with its dataset re-read plus the labeled window (spec.monitoring.retrain_data), queued.

    The request id makes it happen once: a second call with the same id finds the request. Returns the
    `retraining_queued` event for the caller to record (None when it was recorded before).
    """
    from modelyard.platform.jobs.submit import submit_training
    from modelyard.trainers.spec import RecentData

    mode = sig.monitoring.retrain_data
    spec = sig.spec.model_copy(deep=True)
    spec.dataset.recent = (
        None if mode == "original" else RecentData(mode=mode, model=sig.model, until_id=until_id,
                                                    rows=sig.monitoring.window_rows)
    )  # fmt: skip
    if mode != "original":
        labeled = len(platform.inference.labeled(sig.model, until_id, sig.monitoring.window_rows))
        if mode == "recent" and labeled == 0:
            raise InputError(f"retraining '{sig.model}' on recent data only, but no logged row has a label yet.")
    else:
        labeled = 0
    submit_training(platform.settings, spec, request_id, trigger=trigger, actor=actor, parent=sig.version)
    queued = platform.audit.history(sig.model, ("retraining_queued",))
    if any(e.request_id == request_id for e in queued):  # a redelivery finishing the job: said already
        return None
    evidence = {"data": mode, "labeled_rows": labeled, "until_id": until_id, "parent_version": sig.version}
    if check_id is not None:
        evidence["check_id"] = check_id
    return EventRecord(sig.model, "retraining_queued", f"trigger {trigger}: {reason}", actor, None, sig.version,
                       None, evidence, request_id)  # fmt: skip


def retrain(platform: Platform, model: str, reason: str, actor: str) -> dict[str, Any]:
    """`modelyard retrain`: the policy's path without its cooldown and budget; never two in flight."""
    version = champion_of(platform, model)
    sig = signature(platform, model, version)
    until = platform.inference.last_id(model)
    rid = f"retrain-{uuid.uuid4().hex[:24]}"  # each command is a new retraining; two at once are refused below
    with platform.audit.moving(model):
        busy = platform.requests.in_flight(model)
        if busy:
            raise ConflictError(f"a retraining of '{model}' is already queued or running ({busy}); wait for it.")
        queued = queue_retraining(platform, sig, rid, "manual", actor, reason, until)
        if queued:
            platform.audit.record(queued)
    return {"request_id": rid, "model": model, "parent_version": version, "data": sig.monitoring.retrain_data}


# ---------------------------------------------------------------------------------------------- guard


def guard(platform: Platform, model: str) -> dict[str, Any] | None:
    """Judge the newest promotion of a model once its baking window is over; roll back when it does worse."""
    from modelyard.monitoring.guard import BakingEvidence, judge
    from modelyard.platform.registry.lifecycle import ChampionMoved

    promotion = _last_promotion(platform, model)
    if promotion is None:
        return None
    new, old = str(promotion.to_version), promotion.from_version
    earlier = _verdict_of(platform.audit.history(model, GUARD_KINDS), promotion.id)
    if earlier is not None:
        return {"model": model, "version": new, "verdict": earlier.kind, "reason": earlier.reason}
    sig = signature(platform, model, new)
    options = sig.monitoring.guard
    since = _aware(promotion.created_at)
    minutes = (utcnow() - since).total_seconds() / 60
    served, labeled, errors = platform.inference.counts(model, new, since)  # counted: cheap on every beat
    evidence = BakingEvidence(sig.metric, minutes, served, errors, labeled, None, None, "none")
    verdict = judge(evidence, options)
    if verdict.action == "wait":
        return {"model": model, "version": new, "verdict": "baking", "reason": verdict.reason}
    if labeled and verdict.action != "rollback":  # the window is over: now read the labeled rows and compare
        rows = [r for r in platform.inference.window(model, new, 20_000, since=since) if r.label is not None]
        evidence.live = _live(sig, rows)
        if old is not None:
            before, source = _before(platform, model, str(old), sig, rows)
            evidence.before, evidence.before_source = before, source  # type: ignore[assignment]
        verdict = judge(evidence, options)
    proof = {**evidence.as_dict(), "promotion": promotion.id, "previous": old, "tolerance": options.tolerance}
    reason = f"v{new}: {verdict.reason}"
    kind = {"baked": "guard_baked", "rollback": "guard_rolled_back"}[verdict.action]
    if kind == "guard_rolled_back" and old is None:
        kind, reason = "guard_alarm", reason + "; there is no previous version to roll back to"

    def not_judged_yet(tx: Any) -> None:  # two beats may judge at once: the first verdict stands
        if _verdict_of(tx.history(GUARD_KINDS), promotion.id) is not None:
            raise ChampionMoved(f"the promotion of v{new} was judged meanwhile.")

    try:
        if kind != "guard_rolled_back":
            with platform.audit.moving(model) as tx:
                not_judged_yet(tx)
                tx.record(EventRecord(model, kind, reason, GUARD, None, old, new, proof))
        else:
            event = EventRecord(model, kind, reason, GUARD, None, new, old, proof)
            platform.lifecycle.rollback(
                model, GUARD, f"automatic rollback: {reason}", to_version=old, expect_champion=new, evidence=proof,
                extra=(event,), precondition=not_judged_yet,
            )  # fmt: skip
            platform.registry.set_version_tag(model, new, f"{TAG_PREFIX}guard", "rolled_back")
            platform.registry.set_version_tag(model, new, f"{TAG_PREFIX}guard.reason", reason[:4000])
    except ChampionMoved as err:  # judged by another beat, or the champion moved: that stands
        return {"model": model, "version": new, "verdict": "superseded", "reason": str(err)}
    return {"model": model, "version": new, "verdict": kind, "reason": reason}


def _verdict_of(events: list[Any], promotion_id: int) -> Any:
    return next((e for e in events if (e.evidence or {}).get("promotion") == promotion_id), None)


def _last_promotion(platform: Platform, model: str) -> Any:
    """The newest move of `champion` that was a promotion (rollbacks are not baked)."""
    moves = [e for e in platform.audit.history(model, ("alias_set",)) if e.alias == "champion"]
    if not moves or "rolled_back_from" in (moves[-1].evidence or {}):
        return None
    return moves[-1]


def _live(sig: Signature, rows: list[LoggedRow]) -> float:
    from modelyard.monitoring.performance import live_metric

    _, out, labels, labeled = rows_to_arrays(sig, rows)
    return live_metric(sig.metric, labels, out[labeled], len(sig.classes) or None)


def _before(
    platform: Platform, model: str, old: str, sig: Signature, labeled: list[LoggedRow]
) -> tuple[float | None, str]:
    """What the previous champion scores, best evidence first.

    replay: the previous champion run on the same labeled rows as the new one (its server
    variant, these inputs, these labels): the fairest comparison, unmoved by drift between
    windows or by labels that changed since. Else its live metric on its own labeled rows
    before the switch; else its held-out value.
    """
    from modelyard.monitoring.performance import live_metric

    options = sig.monitoring.guard
    if len(labeled) >= options.min_rows:
        try:
            previous = signature(platform, model, old)
            if previous.columns == sig.columns:
                flat, _, labels, _ = rows_to_arrays(sig, labeled)
                out = predict(open_version(platform, model, old), previous, flat)
                return live_metric(sig.metric, labels, out, len(sig.classes) or None), "replay"
        except Exception as err:  # an old version that cannot be opened any more: the weaker evidence below
            logging.getLogger("modelyard.monitor").warning("guard of %s: no replay of v%s: %s", model, old, err)
    rows = [r for r in platform.inference.window(model, old, 20_000) if r.label is not None]
    rows = rows[-max(options.baking_rows, options.min_rows) :]
    if len(rows) >= options.min_rows:
        return _live(sig, rows), "live"
    info = platform.registry.get_version(model, old)
    heldout = platform.registry.run_metrics(info.run_id or "").get(f"test_{sig.metric}")
    return heldout, "held-out" if heldout is not None else "none"


# ---------------------------------------------------------------------------------------------- beat


def due_checks(platform: Platform) -> list[str]:
    """Models whose champion logged rows since its last check and whose schedule is due."""
    from modelyard.platform.store.drift import DriftChecks

    checks = DriftChecks(platform.settings)
    due = []
    now = utcnow()
    for model, aliases in sorted(platform.audit.aliases().items()):
        champion = aliases.get("champion")
        if champion is None:
            continue
        try:
            spec = signature(platform, model, champion).monitoring
        except Exception as err:  # a version whose spec cannot be read is not monitored; `drift --now` says why
            logging.getLogger("modelyard.monitor").warning("drift checks of %s: %s", model, err)
            continue
        if not spec.enabled:
            continue
        last = checks.recent(model, 1, version=champion)
        newest = platform.inference.last_id(model, champion)
        if not newest:
            continue
        if last:
            since = _aware(last[-1].created_at)
            if now - since < dt.timedelta(seconds=spec.schedule_seconds):
                continue
            if newest <= last[-1].last_id and not platform.inference.labeled_since(model, since):
                continue  # no new rows, no new labels: the last verdict stands
        due.append(model)
    return due


def guarded_models(platform: Platform) -> list[str]:
    return sorted(m for m, aliases in platform.audit.aliases().items() if "champion" in aliases)


def retention(platform: Platform) -> dict[str, int]:
    """Keep at most MODELYARD_INFERENCE_LOG_MAX_ROWS rows per model."""
    keep = platform.settings.inference_log_max_rows
    return {m: n for m in platform.inference.models() if (n := platform.inference.trim(m, keep))}
