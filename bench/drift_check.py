"""One platform drift check against plain Evidently on the full data: time and the columns each finds.

Synthetic data, 100 numeric columns of assorted shapes (normal, log-normal, uniform, gamma,
bimodal, Poisson counts), a 10,000-row reference and a 100,000-row current window drawn from
the same generators, except three planted shifts a user would care about:

    f007  normal       mean moved by +0.5 std
    f042  log-normal   spread 1.5x around its median
    f081  normal       a segment: 20% of the rows moved by +2 std

Measured in this one process on the same frames: `feature_drift` with `DriftOptions()` (both
sides sampled to 5,000 rows, normed Wasserstein at the platform's threshold), the same with its
HTML report, and `Report([DataDriftPreset()], include_tests=True)` of Evidently 0.7 on the full
frames (its own choice of tests: normed Wasserstein at 0.1 for references over 1,000 rows), whose
per-column verdicts are read from its tests. Medians over --repeats (3) for the platform and
--full-repeats (1: one full run takes about 40 s) for Evidently; the first platform call, which
imports Evidently, is timed apart. Targets: a platform check <= 5 s, and the same set of drifted
columns as full Evidently.

    .venv/bin/python bench/drift_check.py [--repeats 3] [--full-repeats 1]
    .venv/bin/python bench/drift_check.py --smoke   # 12 columns (the planted 3 among them), 2,000 + 10,000 rows,
                                                    # one run of each: CI
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COLUMNS = [f"f{i:03d}" for i in range(100)]
PLANTED = {
    "f007": "mean +0.5 std",
    "f042": "spread 1.5x around the median",
    "f081": "20% of rows moved by +2 std",
}
SHAPES = ("normal", "lognormal", "uniform", "gamma", "bimodal", "poisson")
SMOKE_COLUMNS = [*COLUMNS[:9], *PLANTED]  # every shape, and the planted shifts


def draw(rows: int, seed: int, shifted: bool, columns: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {}
    for name in columns:
        i = int(name[1:])
        shape = "normal" if name in ("f007", "f081") else "lognormal" if name == "f042" else SHAPES[i % len(SHAPES)]
        if shape == "normal":
            x = rng.normal(10.0, 2.0, rows)
        elif shape == "lognormal":
            x = rng.lognormal(1.0, 0.5, rows)
        elif shape == "uniform":
            x = rng.uniform(0.0, 1.0, rows)
        elif shape == "gamma":
            x = rng.gamma(2.0, 3.0, rows)
        elif shape == "bimodal":
            x = np.where(rng.random(rows) < 0.3, rng.normal(-2.0, 0.5, rows), rng.normal(1.0, 1.0, rows))
        else:
            x = rng.poisson(30.0, rows).astype(float)
        if shifted and name == "f007":
            x = x + 0.5 * 2.0
        elif shifted and name == "f042":
            median = np.exp(1.0)
            x = median * (x / median) ** 1.5  # log-spread 1.5x: the same median, wider on both sides
        elif shifted and name == "f081":
            x = x + np.where(rng.random(rows) < 0.2, 2 * 2.0, 0.0)
        data[name] = x
    return pd.DataFrame(data)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    seconds, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), out


def full_evidently(reference: pd.DataFrame, current: pd.DataFrame) -> set[str]:
    """Columns Evidently 0.7's DataDriftPreset flags on the full frames with its default tests."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(reference.columns))
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    # Per-column verdicts exist only as tests (include_tests=True): id "drift", status FAIL when drifted.
    return {
        t["metric_config"]["params"]["column"]
        for t in snapshot.dict()["tests"]
        if t["id"] == "drift" and t["status"] == "FAIL"
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="platform checks per variant (median)")
    parser.add_argument("--full-repeats", type=int, default=1, help="full Evidently runs (median)")
    parser.add_argument("--reference-rows", type=int, default=10_000)
    parser.add_argument("--current-rows", type=int, default=100_000)
    parser.add_argument("--smoke", action="store_true", help="CI: 12 columns, 2,000 + 10,000 rows, one run of each.")
    args = parser.parse_args()
    columns = COLUMNS
    if args.smoke:  # a reference over 1,000 rows: Evidently still picks normed Wasserstein
        args.repeats, args.full_repeats, args.reference_rows, args.current_rows = 1, 1, 2_000, 10_000
        columns = SMOKE_COLUMNS
    warnings.filterwarnings("ignore")  # Evidently's and numpy's RuntimeWarnings on the way

    from modelyard.monitoring.drift import feature_drift
    from modelyard.monitoring.spec import DriftOptions

    reference, current = draw(args.reference_rows, 1, False, columns), draw(args.current_rows, 2, True, columns)
    options = DriftOptions()
    started = time.perf_counter()
    feature_drift(reference, current, options)
    first = time.perf_counter() - started

    platform_s, platform = timed(lambda: feature_drift(reference, current, options), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "drift.html"
        html_s, _ = timed(lambda: feature_drift(reference, current, options, html=html), args.repeats)
        html_mb = html.stat().st_size / 1e6
    full_s, full = timed(lambda: full_evidently(reference, current), args.full_repeats)

    ours = set(platform.drifted_columns())
    wd = {c.column: c.score for c in platform.columns}
    print(f"\n{len(columns)} numeric columns, reference {len(reference):,} rows, current {len(current):,} rows")
    print(f"platform: {options.stattest} at {platform.columns[0].threshold} on {options.sample_rows:,}-row samples")
    print("planted: " + "; ".join(f"{c} {what} (normed W1 {wd[c]:.2f})" for c, what in PLANTED.items()))
    print(f"\n{'check':44} {'runs':>4} {'median s':>9} {'vs full':>8}")
    rows = [
        ("platform feature_drift (no html)", args.repeats, platform_s),
        (f"platform feature_drift + html ({html_mb:.1f} MB)", args.repeats, html_s),
        ("Evidently DataDriftPreset, full data", args.full_repeats, full_s),
    ]
    for label, runs, seconds in rows:
        print(f"{label:44} {runs:>4} {seconds:>9.2f} {full_s / seconds:>7.1f}x")
    print(f"(first platform call, importing Evidently: {first:.2f} s)")
    print(f"\ndrifted columns, platform:      {sorted(ours)}")
    print(f"drifted columns, full Evidently: {sorted(full)}")
    print(f"planted:                         {sorted(PLANTED)}")
    print("\ntarget | measured (median) | met")
    print(f"platform check <= 5 s | {platform_s:.2f} s (full Evidently {full_s:.1f} s) | {platform_s <= 5}")
    print(f"platform check with html report | {html_s:.2f} s | (no target)")
    same = ours == full
    verdict = "identical" if same else "differ"
    print(f"same drifted columns as full Evidently | {len(ours)} vs {len(full)} columns, {verdict} | {same}")


if __name__ == "__main__":
    main()
