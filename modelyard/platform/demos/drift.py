"""`modelyard demo drift`: the monitoring loop end to end, on real workers, beat and Evidently.

v1 on scikit-learn's breast cancer data becomes champion; clean traffic is logged (no drift,
no retraining); then a scanner change makes 12 size and texture columns read 30% larger,
with labels: the check finds harmful drift, the policy retrains on the data plus the labeled
window, the gate promotes v2 and the guard lets it bake. Last, a labeling job that swapped
the classes poisons the newest window; a retraining on it fools the gate (its held-out rows
carry the same wrong labels) and the guard, seeing honest labels live, rolls it back.
Traffic goes in through the same functions as `modelyard inferences upload` and `modelyard labels upload`.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from modelyard.errors import ModelyardError
from modelyard.platform.context import Platform
from modelyard.platform.settings import Settings

SPEC = "cancer-drift.yaml"
SHIFT = 1.3  # the new scanner's factor on size and texture columns
SHIFTED = ("radius", "perimeter", "area", "texture")


class Traffic:
    """Production rows drawn from the dataset with a little measurement noise; shifted on demand."""

    def __init__(self, seed: int = 11) -> None:
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        self.x, self.y = np.asarray(data.data), np.asarray(data.target)
        self.columns = [str(c) for c in data.feature_names]
        self.shifted = [i for i, c in enumerate(self.columns) if any(k in c for k in SHIFTED)]
        self.rng = np.random.default_rng(seed)
        self.batches = 0

    def batch(self, n: int, shifted: bool) -> tuple[np.ndarray, np.ndarray]:
        rows = self.rng.integers(0, len(self.x), n)
        x = self.x[rows] * self.rng.normal(1.0, 0.02, (n, self.x.shape[1]))
        if shifted:
            x[:, self.shifted] *= SHIFT
        return x, self.y[rows]

    def send(self, platform: Platform, model: str, n: int, shifted: bool, labels: str = "true") -> dict[str, Any]:
        """Log a batch as `inferences upload` does, then (labels: true, swapped or none) its labels."""
        import pandas as pd

        from modelyard.platform.services.ingest import feedback_file, log_file

        x, y = self.batch(n, shifted)
        self.batches += 1
        ids = [f"demo-{uuid.uuid4().hex[:8]}-{i}" for i in range(n)]
        with tempfile.TemporaryDirectory() as tmp:
            inputs = pd.DataFrame(x, columns=self.columns)
            inputs["request_id"] = ids
            path = Path(tmp) / f"traffic-{self.batches}.csv"
            inputs.to_csv(path, index=False)
            logged = log_file(platform, model, path, source="demo")
            if labels != "none":
                given = 1 - y if labels == "swapped" else y
                label_path = Path(tmp) / f"labels-{self.batches}.csv"
                pd.DataFrame({"request_id": ids, "label": given}).to_csv(label_path, index=False)
                feedback_file(platform, model, label_path, source="demo")
        return logged


def wait_for(what: str, found: Callable[[], Any], timeout: float) -> Any:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        value = found()
        if value:
            return value
        time.sleep(0.5)
    raise ModelyardError(
        f"demo: {what} did not happen within {timeout:.0f} s (see `modelyard drift list` and the logs)."
    )


def run_drift_demo(settings: Settings, console: Console, wanted: str) -> None:
    from modelyard.platform.demos.lifecycle import (
        examples_folder,
        open_demo,
        start_workers,
        stop_workers,
        where_to_look,
    )
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.retraining import retrain
    from modelyard.platform.services.submit import submit_training
    from modelyard.platform.services.verdicts import check_row
    from modelyard.platform.store.drift import DriftChecks
    from modelyard.platform.views.registry import event_rows, print_checks, print_timeline

    examples = examples_folder()
    platform, name = open_demo(settings, console, wanted, "modelyard demo drift")
    os.environ.setdefault("MODELYARD_MONITOR_TICK_SECONDS", "2")  # the workers' beat looks every 2 s (default 15)
    workers = start_workers(settings, console)
    started = time.monotonic()
    checks = DriftChecks(settings)
    traffic = Traffic()
    timings: dict[str, float] = {}

    def champion() -> str | None:
        return platform.audit.aliases(name).get(name, {}).get("champion")

    def events(kind: str) -> list[Any]:
        return platform.audit.history(name, (kind,))

    def checked_after(last_id: int) -> Any:
        rows = [c for c in checks.recent(name, 5) if c.last_id >= last_id and c.verdict != "too_few_rows"]
        return rows[-1] if rows else None

    def show(check: Any) -> None:
        row = check_row(check)
        console.print(f"check {row['id']} of v{row['version']}: [bold]{row['verdict']}[/bold]: {row['reason']}")
        if row["decision"]:
            console.print(f"policy: {row['decision']}")

    try:
        console.rule("v1: an MLP on breast cancer data becomes champion")
        rid = uuid.uuid4().hex
        submit_training(settings, examples / SPEC, rid, overrides={"name": name})
        v1 = follow(settings, rid, timeout=600)["version"]
        wait_for("v1 promoted", lambda: champion() == v1, 60)
        console.print(f"champion = v{v1}")

        console.rule("clean traffic: 200 rows from the training distribution, no labels")
        traffic.send(platform, name, 200, shifted=False, labels="none")
        last = platform.inference.last_id(name)
        show(wait_for("the check of the clean window", lambda: checked_after(last), 120))

        console.rule(f"a new scanner: {len(traffic.shifted)} size and texture columns read {SHIFT:.0%} of before")
        queued_before = len(events("retraining_queued"))
        t_drift = time.monotonic()
        traffic.send(platform, name, 200, shifted=True, labels="true")
        last = platform.inference.last_id(name)
        queued = wait_for("a retraining", lambda: events("retraining_queued")[queued_before:], 120)[0]
        show(wait_for("the check", lambda: checked_after(last), 30))
        console.print(f"retraining {queued.request_id} queued: {queued.reason}")
        result = follow(settings, queued.request_id, timeout=600)
        v2 = result["version"]
        wait_for(f"v{v2} promoted", lambda: champion() == v2, 60)
        timings["drift_to_champion_s"] = time.monotonic() - t_drift
        console.print(
            f"[green]v{v2} champion[/green] {timings['drift_to_champion_s']:.0f} s after the first drifted batch "
            "was logged (target: 120 s)"
        )

        console.rule(f"baking v{v2}: 100 labeled rows of the new scanner")
        traffic.send(platform, name, 100, shifted=True, labels="true")
        baked = wait_for(f"the guard's verdict on v{v2}", lambda: _guard_verdict(platform, name, v2), 120)
        console.print(f"guard: {baked.reason}")

        console.rule("a labeling job swaps the classes; someone retrains on the newest window")
        traffic.send(platform, name, 200, shifted=True, labels="swapped")
        poisoned = retrain(platform, name, "retrain on the newest labeled window (its labels are swapped)", "demo")
        result = follow(settings, poisoned["request_id"], timeout=600)
        v3 = result["version"]
        gate = result.get("gate") or {}
        console.print(
            f"gate on v{v3}: {'passed' if gate.get('passed') else 'rejected'}: {'; '.join(gate.get('reasons', []))}"
        )
        if gate.get("passed") and champion() == v3:
            console.rule(f"baking v{v3}: honest labels again")
            traffic.send(platform, name, 100, shifted=True, labels="true")
            verdict = wait_for(f"the guard's verdict on v{v3}", lambda: _guard_verdict(platform, name, v3), 120)
            console.print(f"guard: {verdict.reason}")
            wait_for(f"v{v2} champion again", lambda: champion() == v2, 30)
    finally:
        stop_workers(workers)
    print_checks(console, [check_row(c) for c in checks.recent(name, 20)], f"drift checks of {name}")
    print_timeline(console, event_rows(platform.audit.history(name)), title=f"timeline of {name}")
    console.print(f"champion now: v{champion()}; demo took {time.monotonic() - started:.0f} s")
    if "drift_to_champion_s" in timings:
        console.print(f"first drifted batch logged -> new champion promoted: {timings['drift_to_champion_s']:.0f} s")
    note = f"   (experiment '{name}', run '{name}-monitoring': Evidently reports and drift_over_time.png)"
    where_to_look(console, settings, [f"modelyard models history {name}", f"modelyard drift list {name}"], note)


def _guard_verdict(platform: Platform, name: str, version: str) -> Any:
    found = [
        e
        for e in platform.audit.history(name, ("guard_baked", "guard_rolled_back", "guard_alarm"))
        if (e.kind == "guard_rolled_back" and e.from_version == version)
        or (e.kind != "guard_rolled_back" and e.to_version == version)
    ]
    return found[-1] if found else None
