"""How long a monitoring window takes to read from the inference log at 1M logged rows.

Fills a temporary home's platform database (SQLite, embedded mode; or the database named
by MODELYARD_DATABASE_URL) with --rows predictions of breast-cancer-sized rows (30 inputs,
2 outputs) spread over 4 models and 2 versions each, a tenth of them labeled, then times
what the monitoring loop reads (median of --runs): the newest 1000 rows of one served
version with labels joined, the last 10 minutes of it, the newest 1000 labeled rows a
retraining learns from, and the beat's retention pass. Target: a window well under 1 s.

    .venv/bin/python bench/inference_window.py [--rows 1000000] [--runs 5]
    .venv/bin/python bench/inference_window.py --smoke   # 20,000 rows, one run each: CI
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path


def fill(rows: int) -> None:
    import numpy as np

    from modelyard.platform.settings import Settings
    from modelyard.platform.store.inference import InferenceLog, Prediction

    log = InferenceLog(Settings())
    rng = np.random.default_rng(0)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=24)
    step = dt.timedelta(hours=24) / rows
    batch = 20_000
    for first in range(0, rows, batch):
        n = min(batch, rows - first)
        x = rng.normal(size=(n, 30)).round(4)
        out = rng.dirichlet([1, 1], size=n).round(4)
        preds = [
            Prediction(
                f"model-{(first + i) % 4}",
                str(1 + ((first + i) // (rows // 2))),
                f"r{first + i}",
                {"features": x[i].tolist()},
                {"output": out[i].tolist()},
                "bench",
                {},
                start + step * (first + i),
            )
            for i in range(n)
        ]
        log.append(preds)
        for model in {p.model for p in preds}:
            labeled = [(p.request_id, int(rng.integers(0, 2))) for p in preds if p.model == model][::10]
            log.add_feedback(model, labeled, "bench")


def timed(runs: int, fn) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        n = len(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="CI: 20,000 rows, one run of each read.")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.runs = 20_000, 1
    with tempfile.TemporaryDirectory() as tmp:
        # Always a temporary home: never fill (and trim) the user's own inference log.
        os.environ["MODELYARD_HOME"] = str(Path(tmp) / "home")
        from modelyard.platform.settings import Settings
        from modelyard.platform.store.inference import InferenceLog

        t = time.perf_counter()
        fill(args.rows)
        print(f"filled {args.rows:,} rows in {time.perf_counter() - t:.0f} s ({Settings().platform_database_url})")
        log = InferenceLog(Settings())
        last = log.last_id("model-1")
        ten_minutes = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
        cases = [
            ("newest 1000 rows of model-1 v2, labels joined", lambda: log.window("model-1", "2", 1000)),
            ("last 10 minutes of model-1 v2", lambda: log.window("model-1", "2", 100_000, since=ten_minutes)),
            ("newest 1000 labeled rows of model-1 (retraining)", lambda: log.labeled("model-1", last, 1000)),
        ]
        print(f"{'read':52} {'median ms':>10} {'rows':>6}")
        for what, fn in cases:
            ms, n = timed(args.runs, fn)
            print(f"{what:52} {ms:10.1f} {n:6d}  {'met' if ms < 1000 else 'NOT met'} (target < 1000 ms)")
        keep = max(args.rows // 4 - 10_000, args.rows // 8)  # model-1 holds a quarter of the rows
        t = time.perf_counter()
        gone = log.trim("model-1", keep)
        print(f"retention: trimmed {gone:,} rows of model-1 to {keep:,} in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
