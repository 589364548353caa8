"""The monitoring loop on real parts: Celery monitor workers, MLflow, Evidently, ONNX Runtime, the platform database.

One embedded home per module: v1 of a small MLP on breast cancer data, trained and exported
in-process; traffic goes in through `modelyard inferences upload`/`feedback`'s functions; checks run on
real worker processes where the test is about delivery (20 alerts at once, a SIGKILL), and
in-process where it is about the decisions (the guard, a poisoned retraining).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import tiny_spec

pytestmark = pytest.mark.integration

SHIFTED = ("radius", "perimeter", "area", "texture")


def cancer_spec(name: str) -> dict[str, Any]:
    return tiny_spec(
        name,
        dataset={"source": "sklearn:breast_cancer"},
        architecture={"name": "mlp", "params": {"hidden_units": [16], "dropout": 0.0}},
        epochs=40,
        batch_size=32,
        learning_rate=0.01,
        early_stopping_patience=6,
        seed=7,
        gate={"must_beat_baseline": False, "threshold": 0.85},
        export={"variants": ["fp32"], "latency_runs": 3, "parity_samples": 16},
        monitoring={
            "window_rows": 100,
            "min_rows": 50,
            "min_labels": 30,
            "consecutive": 1,
            "drift": {"drift_share": 0.3},
            "guard": {"baking_rows": 60, "min_rows": 30, "tolerance": 0.05},
        },
    )


@dataclass
class Loop:
    platform: Any
    home: Path
    env: dict[str, str]
    name: str
    folder: Path

    def batch(self, n: int, shifted: bool, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        rng = np.random.default_rng(seed)
        rows = rng.integers(0, len(data.target), n)
        x = data.data[rows] * rng.normal(1.0, 0.02, (n, data.data.shape[1]))
        columns = [str(c) for c in data.feature_names]
        if shifted:
            x[:, [i for i, c in enumerate(columns) if any(k in c for k in SHIFTED)]] *= 1.3
        return pd.DataFrame(x, columns=columns), data.target[rows]

    def send(self, n: int, shifted: bool, seed: int, labels: str = "true") -> list[str]:
        """Log a batch (predictions computed by the champion) and, unless labels='none', its labels."""
        from modelyard.platform.services.ingest import feedback_file, log_file

        frame, y = self.batch(n, shifted, seed)
        ids = [f"s{seed}-{uuid.uuid4().hex[:6]}-{i}" for i in range(n)]
        frame["request_id"] = ids
        path = self.folder / f"traffic-{seed}-{uuid.uuid4().hex[:6]}.csv"
        frame.to_csv(path, index=False)
        log_file(self.platform, self.name, path)
        if labels != "none":
            given = 1 - y if labels == "swapped" else y
            pd.DataFrame({"request_id": ids, "label": given}).to_csv(path.with_suffix(".labels.csv"), index=False)
            feedback_file(self.platform, self.name, path.with_suffix(".labels.csv"))
        return ids

    def champion(self) -> str | None:
        return self.platform.audit.aliases(self.name).get(self.name, {}).get("champion")

    def events(self, kind: str) -> list[Any]:
        return self.platform.audit.history(self.name, (kind,))

    def train_queued(self, request_id: str) -> dict[str, Any]:
        """Run a queued (re)training in this process: train, export, gate."""
        from modelyard.platform.services.training import TrainRequest, run_training

        row = self.platform.requests.get(request_id)
        request = TrainRequest(
            request_id=request_id, spec=row.spec, trigger=row.trigger, parent_version=row.parent_version
        )
        return run_training(self.platform, request)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    from modelyard.platform.context import Platform
    from modelyard.platform.services.training import TrainRequest, run_training
    from modelyard.platform.settings import Settings

    folder = tmp_path_factory.mktemp("monitoring")
    env = {"MODELYARD_HOME": str(folder / "home")}
    saved = {k: v for k, v in os.environ.items() if k.startswith("MODELYARD_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        platform = Platform(Settings())
        run_training(platform, TrainRequest(request_id="cancer-v1", spec=cancer_spec("cancer")))
        loop = Loop(platform, folder / "home", env, "cancer", folder)
        assert loop.champion() == "1"
        yield loop
    finally:
        for key in env:
            del os.environ[key]
        os.environ.update(saved)


def _modelyard(loop: Loop, *args: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}, **loop.env, "COLUMNS": "250"}
    cmd = [sys.executable, "-m", "modelyard.platform.cli.main", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_bad_log_and_feedback_batches_are_refused_whole_with_one_sentence(loop: Loop) -> None:
    from modelyard.errors import ModelyardError
    from modelyard.platform.services.ingest import feedback_file, log_file

    good, _ = loop.batch(5, shifted=False, seed=1)
    before = loop.platform.inference.count(loop.name)

    def refused(frame: pd.DataFrame, expected: str, what: str = "log", model: str | None = None) -> None:
        path = loop.folder / f"bad-{uuid.uuid4().hex[:6]}.csv"
        frame.to_csv(path, index=False)
        call = log_file if what == "log" else feedback_file
        with pytest.raises(ModelyardError) as caught:
            call(loop.platform, model or loop.name, path)
        message = str(caught.value)
        assert expected in message, message
        assert message.count(". ") == 0 and message.endswith("."), f"not one sentence: {message}"

    refused(good, "model 'nope' is not registered", model="nope")
    refused(
        good.drop(columns=["mean radius", "mean area"]).assign(colour=1),
        "does not match the signature of cancer/1: missing columns mean radius, mean area; extra column colour",
    )
    refused(good.assign(**{"mean texture": ["x", 1, 2, 3, 4]}), "column 'mean texture' of ")
    refused(good.assign(**{"mean texture": ["x", 1, 2, 3, 4]}), "is not numeric: value 'x' in row 1 (line 2)")
    nan = good.copy()
    nan.loc[3, "worst area"] = np.nan
    refused(nan, "column 'worst area' of ")
    refused(nan, "has a missing value (NaN) in row 4 (line 5)")
    assert loop.platform.inference.count(loop.name) == before, "a refused batch stored rows"

    ids = loop.send(5, shifted=False, seed=2, labels="none")
    labels_before = len(loop.platform.inference.labels(loop.name))
    refused(pd.DataFrame({"request_id": ids, "label": [0, 1, 7, 0, 1]}), "label 7 of ", "feedback")
    refused(
        pd.DataFrame({"request_id": ids, "label": [0, 1, 7, 0, 1]}),
        "is not one of the classes of cancer/1 (0, 1)",
        "feedback",
    )
    refused(
        pd.DataFrame({"request_id": [*ids[:4], "never-logged"], "label": [0, 1, 1, 0, 1]}),
        "feedback for request id 'never-logged': no prediction of model 'cancer' was logged under it",
        "feedback",
    )
    refused(pd.DataFrame({"request_id": ids, "label": [0, 1, None, 0, 1]}), "label of ", "feedback")
    refused(pd.DataFrame({"request_id": ids, "label": [0] * 5, "note": ["x"] * 5}), "extra column note", "feedback")
    assert len(loop.platform.inference.labels(loop.name)) == labels_before, "a refused feedback batch stored labels"

    # labels are stored as the class they name (1.0 from a spreadsheet is class 1), request ids as written
    odd = loop.folder / "odd-ids.csv"
    frame, _ = loop.batch(2, shifted=False, seed=10)
    frame.assign(request_id=["007", "1e3"]).to_csv(odd, index=False)
    log_file(loop.platform, loop.name, odd)
    pd.DataFrame({"request_id": ["007", "1e3"], "label": [1.0, 0.0]}).to_csv(
        loop.folder / "odd-labels.csv", index=False
    )
    feedback_file(loop.platform, loop.name, loop.folder / "odd-labels.csv")
    stored = loop.platform.inference.labels(loop.name)
    assert (stored["007"], stored["1e3"]) == (1, 0) and isinstance(stored["007"], int)

    # the same through the command line: exit code 1, one red sentence, no traceback
    bad = loop.folder / "bad-cli.csv"
    good.drop(columns=["mean radius"]).to_csv(bad, index=False)
    done = _modelyard(loop, "inferences", "upload", loop.name, str(bad))
    assert done.returncode == 1 and "missing column mean radius" in done.stderr and "Traceback" not in done.stderr
    again = _modelyard(loop, "inferences", "upload", loop.name, str(loop.folder / "nothing.csv"))
    assert again.returncode == 1 and "does not exist" in again.stderr


def _send_checks(loop: Loop, n: int) -> list[Any]:
    from celery.result import AsyncResult

    from modelyard.platform.queue.app import CHECK_TASK, create_app

    app = create_app(loop.platform.settings)
    ids = [f"alert-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    for task_id in ids:
        app.send_task(CHECK_TASK, args=[{"model": loop.name}], task_id=task_id)
    return [AsyncResult(t, app=app) for t in ids]


def test_twenty_drift_alerts_at_once_make_one_retraining(loop: Loop, start_worker) -> None:
    from modelyard.platform.store.drift import DriftChecks

    for _ in range(2):
        start_worker(loop.env, "monitor")
    loop.send(100, shifted=True, seed=3)  # a scanner change, labeled: v1 does worse
    queued_before = len(loop.events("retraining_queued"))
    results = [r.get(timeout=180) for r in _send_checks(loop, 20)]
    ids = {r["id"] for r in results}
    assert len(ids) == 1, f"one window, one check row: {ids}"
    (check,) = [c for c in DriftChecks(loop.platform.settings).recent(loop.name, 50) if c.id in ids]
    assert check.verdict == "harmful_drift", check.scores
    queued = loop.events("retraining_queued")[queued_before:]
    assert len(queued) == 1, [e.reason for e in queued]
    assert queued[0].evidence["check_id"] == check.id and queued[0].request_id.startswith("drift-")
    about = [
        e
        for e in loop.events("drift_checked") + loop.events("retraining_skipped")
        if e.evidence["check_id"] == check.id
    ]
    assert [e.kind for e in about] == ["drift_checked"], "one decision per window, not one per alert"
    drift_requests = [r for r in loop.platform.requests.find(model=loop.name) if r.trigger == "drift"]
    assert [r.request_id for r in drift_requests] == [queued[0].request_id]

    # a later window drifts too while that retraining waits: the policy says why it does nothing
    loop.send(60, shifted=True, seed=4)
    later = [r.get(timeout=180) for r in _send_checks(loop, 5)]
    assert len({r["id"] for r in later}) == 1 and later[0]["id"] not in ids
    skipped = loop.events("retraining_skipped")
    assert skipped and f"retraining {queued[0].request_id} is already queued or running" in skipped[-1].reason
    assert len(loop.events("retraining_queued")) == queued_before + 1
    loop.platform.requests.fail(None, queued[0].request_id, "test: not trained here")  # frees the model for the next


def test_a_monitor_worker_killed_mid_check_judges_the_window_again_once(loop: Loop, start_worker) -> None:
    from modelyard.platform.store.drift import DriftChecks

    # killed while judging (nothing recorded), then again between the check's row and the policy's decision
    worker = start_worker({**loop.env, "MODELYARD_FAILPOINTS": "mid-check,after-check-row"}, "monitor")
    loop.send(60, shifted=False, seed=5, labels="none")
    (result,) = [r.get(timeout=240) for r in _send_checks(loop, 1)]
    for name in ("mid-check", "after-check-row"):
        assert (loop.home / "run" / "failpoints" / name).exists(), f"the failpoint {name} never fired"
    checks = DriftChecks(loop.platform.settings).recent(loop.name, 50)
    (judged,) = [c for c in checks if c.id == result["id"]]
    same_window = [c for c in checks if c.last_id == judged.last_id]
    assert len(same_window) == 1, "a redelivered check wrote a second row"
    assert judged.decision and result["decision"] == judged.decision, "the redelivery left the check undecided"
    events = [e for e in loop.events("drift_checked") if e.evidence.get("check_id") == judged.id]
    assert len(events) == 1, "one event per check"
    assert worker.text().count("WorkerLostError") >= 2, worker.text()[-2000:]


def test_a_poisoned_retraining_is_rolled_back_and_a_good_one_bakes(loop: Loop) -> None:
    from modelyard.monitoring.policy import HARMFUL_DRIFT, decide
    from modelyard.platform.services.guard import guard
    from modelyard.platform.services.retraining import policy_state, retrain
    from modelyard.platform.services.signatures import signature

    # good: v1 met the scanner change (labeled); a retraining on the data plus that window
    loop.send(100, shifted=True, seed=6)
    good = retrain(loop.platform, loop.name, "the scanner changed", "test")
    result = loop.train_queued(good["request_id"])
    v2 = result["version"]
    assert result["status"] == "promoted", result.get("gate")
    assert loop.champion() == v2
    loop.send(60, shifted=True, seed=7)
    baked = guard(loop.platform, loop.name)
    assert baked and baked["verdict"] == "guard_baked", baked
    event = loop.events("guard_baked")[-1]
    assert event.evidence["before_source"] == "replay" and event.evidence["live"] > event.evidence["before"]

    # poisoned: the newest window's labels are swapped; the retraining learns them and the gate,
    # judging on held-out rows with the same wrong labels, promotes it
    loop.send(100, shifted=True, seed=8, labels="swapped")
    poisoned = retrain(loop.platform, loop.name, "retrain on the newest window", "test")
    result = loop.train_queued(poisoned["request_id"])
    v3 = result["version"]
    if result["status"] == "promoted":  # the guard, seeing honest labels live, must undo it
        loop.send(60, shifted=True, seed=9)
        verdict = guard(loop.platform, loop.name)
        assert verdict and verdict["verdict"] == "guard_rolled_back", verdict
        rolled = loop.events("guard_rolled_back")[-1]
        assert rolled.from_version == v3 and rolled.to_version == v2
        assert "worse by" in rolled.reason and rolled.evidence["before_source"] == "replay"
        moves = [e for e in loop.events("alias_set") if e.alias == "champion"]
        assert moves[-1].actor == "guard" and moves[-1].to_version == v2
        tags = loop.platform.registry.get_version(loop.name, v3).tags
        assert tags.get("modelyard.guard") == "rolled_back"
        # and the loop does not retrain straight away on the same data: a cooldown follows the rollback
        sig = signature(loop.platform, loop.name, v2)
        now = SimpleNamespace(id=10**9)  # as of a check newer than every one recorded
        skip = decide(sig.monitoring, _with_verdict(policy_state(loop.platform, sig, now), HARMFUL_DRIFT))
        assert skip.action == "skip" and "after the last rollback" in skip.reason
    # never worse than before after the baking window: the champion is v2 again, or never left it
    assert loop.champion() == v2
    assert guard(loop.platform, loop.name) is None or loop.champion() == v2


def _with_verdict(state: Any, verdict: str) -> Any:
    state.verdicts = [*state.verdicts, verdict]
    state.in_flight = None
    return state
