"""Feature drift on tiny frames: verdicts, overrides, sampling, the HTML report, input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import InputError
from modelyard.monitoring.drift import CONSTANT, DEFAULT_THRESHOLDS, feature_drift
from modelyard.monitoring.spec import DriftOptions

COLUMNS = ["a", "b", "c", "d", "e", "f"]


def frame(rows: int, seed: int, shift: dict[str, float] | None = None) -> pd.DataFrame:
    """Six standard-normal columns; `shift` adds a mean shift (in standard deviations) to some."""
    data = pd.DataFrame(np.random.default_rng(seed).normal(size=(rows, len(COLUMNS))), columns=COLUMNS)
    for column, amount in (shift or {}).items():
        data[column] += amount
    return data


def test_samples_of_one_distribution_show_no_drift() -> None:
    result = feature_drift(frame(1000, 1), frame(800, 2), DriftOptions())

    assert [c.column for c in result.columns] == COLUMNS
    assert result.drifted_columns() == []
    assert result.share == 0.0 and result.drifted is False
    assert all(c.stattest == "wasserstein" and c.threshold == DEFAULT_THRESHOLDS["wasserstein"] for c in result.columns)


def test_a_shift_planted_in_two_of_six_columns_is_found_on_exactly_those() -> None:
    reference, current = frame(1000, 1), frame(800, 2, shift={"b": 0.8, "e": -0.8})

    result = feature_drift(reference, current, DriftOptions())
    lower_share = feature_drift(reference, current, DriftOptions(drift_share=0.3))

    assert result.drifted_columns() == ["b", "e"]
    assert result.share == pytest.approx(2 / 6)
    assert result.drifted is False  # 2 of 6 is under the default share of 0.5
    assert lower_share.drifted is True
    scores = {c.column: c.score for c in result.columns}
    assert scores["b"] == pytest.approx(0.8, abs=0.15) and scores["a"] < 0.15  # normed Wasserstein: the shift in stds


def test_per_column_tests_and_thresholds_override_the_global_ones() -> None:
    reference, current = frame(1000, 1), frame(800, 2, shift={"b": 0.8, "c": 0.8, "e": 0.8})
    options = DriftOptions(
        threshold=0.5,
        per_column_stattest={"a": "ks", "e": "energy"},
        per_column_threshold={"b": 2.0, "d": 0.01},
    )

    columns = {c.column: c for c in feature_drift(reference, current, options).columns}

    assert (columns["a"].stattest, columns["a"].threshold) == ("ks", 0.05)  # ks keeps its own, not the global 0.5
    assert 0 < columns["a"].score <= 1  # a p-value
    assert (columns["b"].threshold, columns["b"].drifted) == (2.0, False)  # shifted, but under its own threshold
    assert (columns["c"].threshold, columns["c"].drifted) == (0.5, True)
    assert (columns["d"].threshold, columns["d"].drifted) == (0.01, True)  # sampling noise passes 0.01
    assert (columns["e"].stattest, columns["e"].drifted) == ("energy", True)  # Evidently calls it "ed"
    assert (columns["f"].stattest, columns["f"].threshold) == ("wasserstein", 0.5)


def test_sampling_caps_both_sides_and_is_reproducible() -> None:
    reference, current = frame(3000, 1), frame(1200, 2)

    capped = feature_drift(reference, current, DriftOptions(sample_rows=500))
    again = feature_drift(reference, current, DriftOptions(sample_rows=500))
    other_seed = feature_drift(reference, current, DriftOptions(sample_rows=500, seed=1))
    small_window = feature_drift(reference, current.head(300), DriftOptions(sample_rows=500))

    assert (capped.reference_rows, capped.current_rows) == (500, 500)
    assert (small_window.reference_rows, small_window.current_rows) == (500, 300)
    assert [c.score for c in again.columns] == [c.score for c in capped.columns]
    assert [c.score for c in other_seed.columns] != [c.score for c in capped.columns]


def test_the_html_report_is_written_only_when_asked(tmp_path: Path) -> None:
    reference, current = frame(600, 1), frame(400, 2, shift={"a": 1.0})

    feature_drift(reference, current, DriftOptions())
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / "reports" / "drift.html"
    result = feature_drift(reference, current, DriftOptions(), html=path)

    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size > 10_000 and "<html" in text[:1000]
    assert "Wasserstein distance (normed)" in text
    assert result.drifted_columns() == ["a"]


def test_scores_match_evidentlys_data_drift_preset_on_the_same_rows() -> None:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference, current = frame(600, 1), frame(400, 2, shift={"a": 1.0, "c": 0.3})
    options = DriftOptions(per_column_stattest={"b": "ks", "d": "psi"}, per_column_threshold={"c": 0.2})

    ours = {c.column: c for c in feature_drift(reference, current, options).columns}
    definition = DataDefinition(numerical_columns=COLUMNS)
    preset = DataDriftPreset(
        method="wasserstein",
        threshold=DEFAULT_THRESHOLDS["wasserstein"],
        per_column_method={"b": "ks", "d": "psi"},
        per_column_threshold={"b": 0.05, "c": 0.2, "d": 0.1},
    )
    snapshot = Report([preset]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    theirs = {
        m["config"]["column"]: m for m in snapshot.dict()["metrics"] if m["config"]["type"].endswith(":ValueDrift")
    }

    assert set(theirs) == set(COLUMNS)
    for column, drift in ours.items():
        assert theirs[column]["config"]["method"] == drift.stattest
        assert theirs[column]["config"]["threshold"] == drift.threshold
        assert theirs[column]["value"] == pytest.approx(drift.score, rel=1e-9)


def test_a_constant_reference_column_is_judged_by_the_rows_that_leave_its_value() -> None:
    reference, current = frame(500, 1), frame(500, 2)
    reference["f"] = current["f"] = 3.0
    moved = current.copy()
    moved.loc[:99, "f"] = 4.0  # 20% of the rows

    for test in ("wasserstein", "t_test", "anderson"):  # t_test gives NaN, anderson raises, on constants
        same = {c.column: c for c in feature_drift(reference, current, DriftOptions(stattest=test)).columns}
        assert (same["f"].stattest, same["f"].score, same["f"].drifted) == (CONSTANT, 0.0, False)
    changed = {c.column: c for c in feature_drift(reference, moved, DriftOptions()).columns}
    assert (changed["f"].score, changed["f"].drifted) == (pytest.approx(0.2), True)
    assert all(np.isfinite(c.score) for c in changed.values())


def test_as_dict_is_plain_json() -> None:
    result = feature_drift(frame(300, 1), frame(300, 2, shift={"a": 1.0}), DriftOptions())

    data = json.loads(json.dumps(result.as_dict()))

    assert data["drifted_columns"] == ["a"] and data["current_rows"] == 300
    assert [c["column"] for c in data["columns"]] == COLUMNS
    first = result.as_dict()["columns"][0]
    assert type(first["score"]) is float and type(first["drifted"]) is bool  # not numpy scalars


def test_column_mismatch_names_the_missing_and_the_extra_columns() -> None:
    reference, current = frame(100, 1), frame(100, 2).rename(columns={"b": "b2"}).drop(columns=["d"])

    with pytest.raises(InputError) as err:
        feature_drift(reference, current, DriftOptions())

    assert str(err.value) == "the window's columns differ from the reference's: missing 'b', 'd', extra 'b2'."
    assert err.value.code == "columns_mismatch"


@pytest.mark.parametrize(
    ("reference", "current", "says"),
    [
        (frame(100, 1).head(0), frame(100, 2), "the reference has no rows"),
        (frame(100, 1), frame(100, 2).head(0), "the window has no rows"),
        (pd.DataFrame(), pd.DataFrame(), "no columns to compare"),
        (frame(100, 1), frame(100, 2).assign(c="x"), "'c' are not numeric"),
        (frame(100, 1), frame(100, 2).assign(e=np.nan), "column 'e' has no finite values in the window"),
    ],
)
def test_unusable_frames_are_one_sentence_input_errors(
    reference: pd.DataFrame, current: pd.DataFrame, says: str
) -> None:
    with pytest.raises(InputError, match=says):
        feature_drift(reference, current, DriftOptions())
