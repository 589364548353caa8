"""The telemetry buffer: bounded on disk, oldest dropped first and counted, deleted only once stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.edge import telemetry
from modelyard.edge.errors import ControlPlaneError


def _record(i: int) -> dict[str, Any]:
    rows = {"input": np.full((1, 4), i, dtype=np.float32)}
    return telemetry.record("tiny", "1", rows, {"p": np.ones((1, 3))}, latency_ms=1.0, error=None)


def test_the_bound_drops_the_oldest_records_and_counts_them(tmp_path: Path) -> None:
    buffer = telemetry.TelemetryBuffer(tmp_path / "t", max_bytes=8192)
    for i in range(200):
        buffer.append(_record(i))

    assert buffer.size() <= 8192
    kept = buffer.count()
    assert buffer.dropped == 200 - kept and buffer.dropped > 0
    sent: list[dict[str, Any]] = []
    buffer.upload(lambda records, dropped: sent.extend(records))
    assert sent[-1]["inputs"]["input"] == [199.0] * 4  # the newest survive
    assert sent[0]["inputs"]["input"] != [0.0] * 4
    # The count survives a restart until it is reported.
    assert telemetry.TelemetryBuffer(tmp_path / "t").dropped == 0


def test_upload_reports_dropped_once_and_deletes_only_after_success(tmp_path: Path) -> None:
    buffer = telemetry.TelemetryBuffer(tmp_path / "t", max_bytes=4096)
    for i in range(100):
        buffer.append(_record(i))
    dropped = buffer.dropped

    def offline(records: list[dict[str, Any]], dropped: int) -> None:
        raise ControlPlaneError("telemetry: the control plane could not be reached.")

    with pytest.raises(ControlPlaneError):
        buffer.upload(offline)
    assert buffer.count() > 0 and telemetry.TelemetryBuffer(tmp_path / "t").dropped == dropped

    calls: list[tuple[int, int]] = []
    buffer.upload(lambda records, d: calls.append((len(records), d)))

    assert sum(d for _, d in calls) == dropped and buffer.count() == 0 and buffer.dropped == 0
    assert all(n <= telemetry.BATCH for n, _ in calls)


def test_records_carry_unique_request_ids_and_one_row(tmp_path: Path) -> None:
    rows = {"input": np.arange(8, dtype=np.float32).reshape(2, 4)}
    first = telemetry.record("tiny", "1", rows, None, latency_ms=2.5, error="boom", row=1)
    second = telemetry.record("tiny", "1", rows, None, latency_ms=2.5, error=None)
    assert first["request_id"] != second["request_id"] and len(first["request_id"]) == 32
    assert first["inputs"] == {"input": [4.0, 5.0, 6.0, 7.0]} and first["error"] == "boom"
    assert first["time"].endswith("Z")


def test_a_line_cut_short_by_a_power_loss_is_skipped_and_not_glued_to(tmp_path: Path) -> None:
    buffer = telemetry.TelemetryBuffer(tmp_path / "t")
    buffer.append(_record(1))
    segment = buffer.segments()[-1]
    with segment.open("ab") as f:
        f.write(b'{"request_id":"abc","mod')  # the power went out mid-append
    buffer.append(_record(2))
    buffer.append(_record(3))

    sent: list[dict[str, Any]] = []
    reported: list[int] = []
    buffer.upload(lambda records, dropped: (sent.extend(records), reported.append(dropped)))

    assert [r["inputs"]["input"][0] for r in sent] == [1.0, 2.0, 3.0]
    assert buffer.count() == 0 and sum(reported) == 1 and buffer.dropped == 0 and buffer.dropped_total == 1


def test_a_batch_the_control_plane_calls_bad_is_dropped_not_resent_forever(tmp_path: Path) -> None:
    buffer = telemetry.TelemetryBuffer(tmp_path / "t")
    for i in range(3):
        buffer.append(_record(i))

    def reject(records: list[dict[str, Any]], dropped: int) -> None:
        raise ControlPlaneError("telemetry: HTTP 422: records[0].version is not a string of digits.", status=422)

    assert buffer.upload(reject) == 0
    assert buffer.count() == 0 and buffer.dropped == 3 and buffer.dropped_total == 3

    buffer.append(_record(9))
    calls: list[tuple[int, int]] = []
    buffer.upload(lambda records, d: calls.append((len(records), d)))
    assert calls == [(1, 3)] and buffer.dropped == 0


@pytest.mark.parametrize("status", [None, 401, 408, 429, 503])
def test_a_batch_refused_for_now_stays_buffered(tmp_path: Path, status: int | None) -> None:
    buffer = telemetry.TelemetryBuffer(tmp_path / "t")
    buffer.append(_record(1))

    def later(records: list[dict[str, Any]], dropped: int) -> None:
        raise ControlPlaneError("telemetry: try again later.", status=status)

    with pytest.raises(ControlPlaneError):
        buffer.upload(later)
    assert buffer.count() == 1 and buffer.dropped == 0


def test_the_heartbeat_dropped_count_is_cumulative(tmp_path: Path) -> None:
    buffer = telemetry.TelemetryBuffer(tmp_path / "t", max_bytes=4096)
    for i in range(100):
        buffer.append(_record(i))
    dropped = buffer.dropped
    buffer.upload(lambda records, d: None)

    assert buffer.dropped == 0 and buffer.dropped_total == dropped > 0
    assert telemetry.TelemetryBuffer(tmp_path / "t").dropped_total == dropped  # and survives a restart
