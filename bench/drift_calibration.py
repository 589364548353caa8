"""Are the default drift options calibrated? False alarms and detections of whole windows, at three sizes.

The population is scikit-learn's bundled breast cancer data (569 rows, 30 numeric columns),
made drawable at any size: per class (malignant, benign) a Gaussian copula with the data's
own marginals (interpolated empirical quantiles) and the correlations of its normal scores,
mixed at the data's malignant share of 37%. The planted shift is a realistic covariate shift:
the malignant share rises to 70% (a referral clinic's patients instead of a screening
program's), which moves the 30 columns' means by 0 to about 0.5 of their standard deviation
(printed below; 16 of the 30 by more than 0.3 std).

For each window size (100, 1,000: the default window, 20,000), 200 windows drawn from the
population unchanged and 200 from the shifted one; each is checked by `feature_drift` with
`DriftOptions()` (the defaults: normed Wasserstein at 0.25 per column, drifted when at least
half the columns are, both sides sampled to 5,000 rows) against its own fresh reference of
1,000 rows (the platform keeps up to 1,000 training rows as a version's reference), so the
rates are not those of one lucky reference. False-alarm rate: clean windows judged drifted
(target <= 1%); detection rate: shifted windows judged drifted (target >= 95%). Beside them,
from the same per-column scores, the verdicts Evidently's own Wasserstein threshold (0.1) and
0.2 would give. Per-window time is the median of `FeatureDrift.seconds`.

    .venv/bin/python bench/drift_calibration.py [--windows 200] [--sizes 100,1000,20000] [--malignant 0.7]
    .venv/bin/python bench/drift_calibration.py --smoke   # 5 + 5 windows of 100 and 1,000 rows: CI
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np

REFERENCE_ROWS = 1000  # modelyard.platform.registry.tracking.REFERENCE_ROWS
DEFAULT_WINDOW = 1000  # MonitoringSpec().window_rows
ALTERNATIVES = (0.1, 0.2)  # Wasserstein thresholds shown beside the default, from the same scores


class Copula:
    """A Gaussian copula with empirical marginals: draws rows like `x`'s, as many as asked."""

    def __init__(self, x: np.ndarray) -> None:
        from scipy import stats

        n = len(x)
        self.sorted = np.sort(x, axis=0)
        self.levels = (np.arange(n) + 0.5) / n
        scores = stats.norm.ppf((stats.rankdata(x, axis=0) - 0.5) / n)
        corr = np.corrcoef(scores, rowvar=False)
        self.factor = np.linalg.cholesky(corr + 1e-9 * np.eye(len(corr)))

    def draw(self, rows: int, rng: np.random.Generator) -> np.ndarray:
        from scipy import stats

        u = stats.norm.cdf(rng.standard_normal((rows, self.factor.shape[0])) @ self.factor.T)
        return np.column_stack([np.interp(u[:, j], self.levels, self.sorted[:, j]) for j in range(u.shape[1])])


class Population:
    """Breast cancer rows as a mixture of the two classes' copulas, at a chosen malignant share."""

    def __init__(self) -> None:
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        x, y = np.asarray(data.data), np.asarray(data.target)
        self.columns = [str(c) for c in data.feature_names]
        self.malignant, self.benign = Copula(x[y == 0]), Copula(x[y == 1])
        self.share = float((y == 0).mean())

    def draw(self, rows: int, rng: np.random.Generator, malignant: float):
        import pandas as pd

        k = int(rng.binomial(rows, malignant))
        x = np.vstack([self.malignant.draw(k, rng), self.benign.draw(rows - k, rng)])
        return pd.DataFrame(x[rng.permutation(rows)], columns=self.columns)


def run_size(population: Population, size: int, windows: int, malignant: float, rng: np.random.Generator) -> dict:
    from modelyard.monitoring.drift import feature_drift
    from modelyard.monitoring.spec import DriftOptions

    options = DriftOptions()
    out: dict = {"clean": [], "shifted": [], "seconds": [], "rows": 0}
    for kind, share in (("clean", population.share), ("shifted", malignant)):
        for _ in range(windows):
            reference = population.draw(REFERENCE_ROWS, rng, population.share)
            window = population.draw(size, rng, share)
            result = feature_drift(reference, window, options)
            out[kind].append(([c.score for c in result.columns], result.share, result.drifted))
            out["seconds"].append(result.seconds)
            out["rows"] = result.current_rows
    return out


def rate(runs: list, threshold: float | None, drift_share: float) -> float:
    """Share of windows judged drifted: by the check itself (None), or re-judged at another Wasserstein threshold."""
    if threshold is None:
        return float(np.mean([drifted for _, _, drifted in runs]))
    return float(np.mean([np.mean(np.asarray(scores) >= threshold) >= drift_share for scores, _, _ in runs]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=200, help="clean windows and shifted windows per size")
    parser.add_argument("--sizes", default="100,1000,20000", help="window sizes (rows)")
    parser.add_argument("--malignant", type=float, default=0.7, help="malignant share of the shifted population")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="CI: 5 + 5 windows of 100 and 1,000 rows.")
    args = parser.parse_args()
    if args.smoke:
        args.windows, args.sizes = 5, "100,1000"
    shift_rows = 20_000 if args.smoke else 200_000  # rows drawn to measure the planted shift's size
    warnings.filterwarnings("ignore")

    from modelyard.monitoring.drift import DEFAULT_THRESHOLDS
    from modelyard.monitoring.spec import DriftOptions

    options = DriftOptions()
    default_threshold = options.threshold or DEFAULT_THRESHOLDS[options.stattest]
    population = Population()
    rng = np.random.default_rng(args.seed)
    before = population.draw(shift_rows, rng, population.share)
    after = population.draw(shift_rows, rng, args.malignant)
    moved = np.sort(np.abs((after.mean() - before.mean()) / before.std()).to_numpy())

    sizes = [int(s) for s in args.sizes.split(",")]
    results, started = {}, time.perf_counter()
    for size in sizes:
        results[size] = run_size(population, size, args.windows, args.malignant, rng)
    total = time.perf_counter() - started

    print(
        f"\nbreast cancer population, malignant share {population.share:.0%}; shifted: {args.malignant:.0%}, "
        f"moving the 30 columns' means by {moved[0]:.2f} to {moved[-1]:.2f} std (median {np.median(moved):.2f}; "
        f"{int((moved > 0.3).sum())} by more than 0.3)"
    )
    print(
        f"DriftOptions(): {options.stattest} at {default_threshold}, drift_share {options.drift_share}, "
        f"sample_rows {options.sample_rows}; reference {REFERENCE_ROWS} fresh rows per window; "
        f"{args.windows} clean + {args.windows} shifted windows per size\n"
    )
    alt = "".join(f" {'FA@' + str(t):>8} {'det@' + str(t):>8}" for t in ALTERNATIVES)
    print(
        f"{'window':>7} {'compared':>8} {'false alarms':>13} {'detections':>11} {'share clean':>11} "
        f"{'shifted':>8} {'ms/window':>9}{alt}"
    )
    summary = {}
    for size, r in results.items():
        n = args.windows
        fa, det = rate(r["clean"], None, options.drift_share), rate(r["shifted"], None, options.drift_share)
        summary[size] = (fa, det)
        shares = [statistics.median(s for _, s, _ in r[k]) for k in ("clean", "shifted")]
        ms = 1000 * statistics.median(r["seconds"])
        alts = "".join(
            f" {rate(r['clean'], t, options.drift_share):>8.1%} {rate(r['shifted'], t, options.drift_share):>8.1%}"
            for t in ALTERNATIVES
        )
        print(
            f"{size:>7} {r['rows']:>8} {f'{round(fa * n)}/{n} {fa:.1%}':>13} {f'{round(det * n)}/{n} {det:.1%}':>11} "
            f"{shares[0]:>11.2f} {shares[1]:>8.2f} {ms:>9.0f}{alts}"
        )
    print(
        f"\n({2 * args.windows * len(sizes)} checks in {total:.0f} s; 0 false alarms of {args.windows} bounds the true "
        f"rate under {3 / args.windows:.1%} at 95% confidence)"
    )

    print("\ntarget | measured (median) | met")
    for size, (fa, det) in summary.items():
        tag = " (default window)" if size == DEFAULT_WINDOW else ""
        print(f"false-alarm rate <= 1%, {size}-row windows{tag} | {fa:.1%} of {args.windows} | {fa <= 0.01}")
        print(f"detection rate >= 95%, {size}-row windows{tag} | {det:.1%} of {args.windows} | {det >= 0.95}")


if __name__ == "__main__":
    main()
