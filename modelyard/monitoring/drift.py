"""Feature drift: a window of production rows against the version's reference, one test per column.

Both sides are sampled to at most `sample_rows` rows first, so a check costs the same and means
the same at any window size (Evidently is slow on big windows, evidently#763/#1526, and p-value
tests flag ever tinier shifts as n grows, evidently#50). Each column is scored by Evidently's
own registered test (the function and default threshold its `DataDriftPreset` uses); the window
drifted when at least `drift_share` of the columns did.

Why not read the scores from a `Report([DataDriftPreset()])` run: Evidently 0.7 builds plotly
widgets for every column while it computes (about 0.1 s a column, whatever the row count), so
100 columns cost 10 s before any HTML is asked for. The preset runs only when an HTML report is
wanted, on the same sampled rows with the same tests and thresholds, so it shows these numbers;
tests/monitoring/test_drift.py holds the two to each other.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.errors import InputError
from modelyard.monitoring.spec import DriftOptions

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# Thresholds that replace Evidently's own where its own does not stay calibrated. Wasserstein
# (normed by the reference's std) at Evidently's 0.1 flags most columns of a 100-row window that
# did not move at all (sampling noise alone is about 0.1); at 0.25 the window-level false-alarm
# rate stays under 1% from 100 to 20,000 rows (bench/drift_calibration.py).
DEFAULT_THRESHOLDS = {"wasserstein": 0.25}
# The spec's test names that Evidently registers under another name.
EVIDENTLY_NAMES = {"energy": "ed"}
# A column with one value in the reference has no spread to measure a move against: Evidently's
# wasserstein divides by max(std, 0.001), so float noise in the window reads as drift, t_test
# returns NaN and anderson raises. Such a column is judged by the share of window rows that leave
# the reference's value instead; it drifted when at least this share did.
CONSTANT = "constant"
CONSTANT_SHARE = 0.05


@dataclass
class ColumnDrift:
    column: str
    stattest: str
    score: float  # the test's value: a distance, or a p-value
    threshold: float
    drifted: bool


@dataclass
class FeatureDrift:
    columns: list[ColumnDrift]
    share: float  # drifted columns / all columns
    drifted: bool  # share >= options.drift_share
    reference_rows: int  # rows actually compared, after sampling
    current_rows: int
    seconds: float

    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted_columns": self.drifted_columns()}


def feature_drift(
    reference: pd.DataFrame, current: pd.DataFrame, options: DriftOptions, html: Path | None = None
) -> FeatureDrift:
    """Per-column drift of `current` against `reference` (the same numeric columns), and the window's verdict."""
    import numpy as np

    started = time.perf_counter()
    labels = _columns(reference, current)
    names = [str(c) for c in labels]  # per-column options and results name columns by string
    ref_rng, cur_rng = np.random.default_rng(options.seed).spawn(2)  # each side's sample ignores the other's size
    ref = _sample(reference[labels], options.sample_rows, ref_rng).set_axis(names, axis=1)
    cur = _sample(current[labels], options.sample_rows, cur_rng).set_axis(names, axis=1)
    columns = [_column_drift(name, ref[name], cur[name], options) for name in names]
    if html is not None:
        _save_report(ref, cur, columns, options, html)
    share = sum(c.drifted for c in columns) / len(columns)
    return FeatureDrift(
        columns=columns,
        share=share,
        drifted=share >= options.drift_share,
        reference_rows=len(ref),
        current_rows=len(cur),
        seconds=time.perf_counter() - started,
    )


def threshold_for(column: str, stattest: str, options: DriftOptions) -> float | None:
    """The column's threshold: its own, else the global one when it runs the global test, else the test's default.

    A global threshold belongs to the global test: a column moved to a p-value test by
    `per_column_stattest` does not inherit a distance threshold (Evidently's options would).
    """
    if column in options.per_column_threshold:
        return options.per_column_threshold[column]
    if stattest == options.stattest and options.threshold is not None:
        return options.threshold
    return DEFAULT_THRESHOLDS.get(stattest)  # None: Evidently's default for the test


def _columns(reference: pd.DataFrame, current: pd.DataFrame) -> list[Any]:
    """The reference's column labels, once both frames are known to hold the same numeric columns and rows."""
    import pandas as pd

    ref_names, cur_names = list(reference.columns), list(current.columns)
    missing = [c for c in ref_names if c not in cur_names]
    extra = [c for c in cur_names if c not in ref_names]
    if missing or extra:
        raise InputError(
            f"the window's columns differ from the reference's: missing {_listed(missing)}, extra {_listed(extra)}.",
            code="columns_mismatch",
        )
    if not ref_names:
        raise InputError("the reference and the window have no columns to compare.")
    for side, frame in (("reference", reference), ("window", current)):
        if len(frame) == 0:
            raise InputError(f"the {side} has no rows to compare.")
    odd = [
        c
        for c in ref_names
        if not (pd.api.types.is_numeric_dtype(reference[c]) and pd.api.types.is_numeric_dtype(current[c]))
    ]
    if odd:
        raise InputError(f"feature drift compares numeric columns only, and {_listed(odd)} are not numeric.")
    return ref_names


def _listed(names: list[Any]) -> str:
    return ", ".join(f"'{n}'" for n in names) if names else "none"


def _sample(frame: pd.DataFrame, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    if len(frame) <= rows:
        return frame.reset_index(drop=True)
    picked = rng.choice(len(frame), size=rows, replace=False)
    picked.sort()
    return frame.iloc[picked].reset_index(drop=True)


def _column_drift(name: str, reference: pd.Series, current: pd.Series, options: DriftOptions) -> ColumnDrift:
    import numpy as np
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    # Evidently's DataDriftPreset drops infinities and NaNs per column before it tests (get_one_column_drift).
    ref = reference.astype(float).replace([np.inf, -np.inf], np.nan).dropna()
    cur = current.astype(float).replace([np.inf, -np.inf], np.nan).dropna()
    for side, values in (("reference", ref), ("window", cur)):
        if values.empty:
            raise InputError(f"column '{name}' has no finite values in the {side}.")
    if ref.min() == ref.max():
        moved = float(np.mean(~np.isclose(cur.to_numpy(), ref.iloc[0], rtol=1e-9, atol=1e-12)))
        return ColumnDrift(name, CONSTANT, moved, CONSTANT_SHARE, moved >= CONSTANT_SHARE)
    test = options.per_column_stattest.get(name, options.stattest)
    run = get_stattest(ref, cur, ColumnType.Numerical, EVIDENTLY_NAMES.get(test, test))
    result = run(ref, cur, ColumnType.Numerical, threshold_for(name, test, options))
    score = float(result.drift_score)
    if not math.isfinite(score):
        raise InputError(f"column '{name}': the {test} test gave no finite score ({score}).")
    return ColumnDrift(name, test, score, float(result.actual_threshold), bool(result.drifted))


def _save_report(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[ColumnDrift], options: DriftOptions, html: Path
) -> None:
    """Evidently's DataDriftPreset HTML on the compared rows, with each column's test and threshold."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    # Constant columns are judged here, not by Evidently (see CONSTANT): the report leaves them out.
    tested = [c for c in columns if c.stattest != CONSTANT]
    names = [c.column for c in tested] or [c.column for c in columns]
    definition = DataDefinition(numerical_columns=names)
    preset = DataDriftPreset(
        columns=names,
        drift_share=options.drift_share,
        per_column_method={c.column: EVIDENTLY_NAMES.get(c.stattest, c.stattest) for c in tested},
        per_column_threshold={c.column: c.threshold for c in tested},
    )
    snapshot = Report([preset]).run(
        Dataset.from_pandas(current[names], data_definition=definition),
        Dataset.from_pandas(reference[names], data_definition=definition),
    )
    html.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html))  # save_html writes only when given a str: a Path is silently ignored
