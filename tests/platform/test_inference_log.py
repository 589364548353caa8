"""The inference log's reads for monitoring and its retention, on the platform database (SQLite here)."""

from __future__ import annotations

import datetime as dt

from modelyard.platform.store.inference import InferenceLog, Prediction


def _rows(model: str, version: str, n: int, start: int = 0) -> list[Prediction]:
    return [
        Prediction(model, version, f"{model}-{version}-{i}", {"x": [float(i), 1.0]}, {"y": [0.3, 0.7]})
        for i in range(start, start + n)
    ]


def test_windows_join_labels_and_retention_keeps_the_newest_rows(settings) -> None:
    log = InferenceLog(settings)
    log.append(_rows("a", "1", 30) + _rows("b", "1", 5))
    log.append(_rows("a", "2", 20))
    log.add_feedback("a", [("a-2-3", 1), ("a-2-19", 0), ("a-1-29", 1)], "test")

    window = log.window("a", "2", 10)
    assert [r.request_id for r in window] == [f"a-2-{i}" for i in range(10, 20)]  # newest 10, oldest first
    assert [r.label for r in window][-1] == 0 and sum(r.label is not None for r in window) == 1
    assert window[0].inputs == {"x": [10.0, 1.0]}
    assert len(log.window("a", None, 1000)) == 50
    assert log.window("a", "2", 100, since=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)) == []
    until = log.last_id("a", "1")
    labeled = log.labeled("a", until, 10)
    assert [r.request_id for r in labeled] == ["a-1-29"]  # rows of v2 logged later are past until_id
    assert log.labeled_since("a", dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    assert not log.labeled_since("b", dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))

    assert log.trim("a", 10) == 40  # the 40 oldest of a's 50 rows go, with their labels; b is untouched
    assert log.count("a") == 10 and log.count("b") == 5
    assert [r.request_id for r in log.window("a", None, 100)] == [f"a-2-{i}" for i in range(10, 20)]
    assert set(log.labels("a")) == {"a-2-19"}
    assert log.trim("a", 10) == 0
