"""Sampled predictions buffered on disk and uploaded in batches (PROTOCOL.md, 5).

The buffer is JSON-lines segment files under `<home>/telemetry/`, bounded in bytes: when full,
the oldest segment goes first and its records are counted in `dropped`, which the next upload
reports. A segment is deleted only after the control plane answered 200 (or refused its batches
as bad, which counts them dropped); resending one is safe because the control plane skips request
ids it has seen. Lines that do not parse (a power cut mid-append) are skipped and counted dropped.
Offline, the agent keeps buffering within the bound and catches up when the control plane is back.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.edge.errors import ControlPlaneError

BATCH = 1000
SEGMENT_BYTES = 256 * 1024

# Answers that say "not now" rather than "this batch is bad": the batch is kept and sent again later.
RETRY_STATUSES = (401, 408, 429)

log = logging.getLogger("modelyard.edge")

Upload = Callable[[list[dict[str, Any]], int], Any]


def record(
    model: str, version: str, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray] | None,
    *, latency_ms: float, error: str | None, row: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """One prediction as a telemetry record: row `row` of each input and output."""
    return {
        "request_id": uuid.uuid4().hex,
        "model": model,
        "version": version,
        "inputs": {k: np.asarray(v)[row].tolist() for k, v in inputs.items()},
        "outputs": {k: np.asarray(v)[row].tolist() for k, v in (outputs or {}).items()},
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "latency_ms": round(latency_ms, 3),
        "error": error,
    }


class TelemetryBuffer:
    def __init__(self, folder: Path, *, max_bytes: int = 64 * 1024 * 1024, sample_rate: float = 1.0) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment_bytes = max(1024, min(SEGMENT_BYTES, max_bytes // 4))
        self.sample_rate = sample_rate
        self.lock = threading.Lock()
        self.folder.mkdir(parents=True, exist_ok=True)
        # Dropped records not yet reported in a telemetry body, and all ever dropped (the heartbeat's count).
        self.dropped = _read_int(self.folder / "dropped")
        self.dropped_total = _read_int(self.folder / "dropped_total")
        self._rotate = False

    def sampled(self) -> bool:
        return random.random() < self.sample_rate

    def segments(self) -> list[Path]:
        # Names are zero-padded nanosecond stamps, so name order is age order.
        return sorted(self.folder.glob("*.jsonl"))

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.segments())

    def count(self) -> int:
        with self.lock:
            return sum(_lines(p) for p in self.segments())

    def append(self, rec: dict[str, Any]) -> None:
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        with self.lock:
            segments = self.segments()
            current = segments[-1] if segments else None
            if (
                self._rotate
                or current is None
                or current.stat().st_size + len(line) > self.segment_bytes
                # A power cut mid-append leaves a partial last line: a record appended to it would be garbled too.
                or not _ends_with_newline(current)
            ):
                current = self.folder / f"{time.time_ns():020d}.jsonl"
                self._rotate = False
            with current.open("ab") as f:
                f.write(line)
            self._enforce_bound(keep=current)

    def _enforce_bound(self, keep: Path) -> None:
        segments = self.segments()
        total = sum(p.stat().st_size for p in segments)
        for oldest in segments:
            if total <= self.max_bytes or oldest == keep:
                break
            total -= oldest.stat().st_size
            self._drop(_lines(oldest))
            oldest.unlink()

    def _drop(self, n: int) -> None:
        """Count `n` records lost (caller holds the lock); both counts survive a restart."""
        if n <= 0:
            return
        self.dropped += n
        self.dropped_total += n
        _write_int(self.folder / "dropped", self.dropped)
        _write_int(self.folder / "dropped_total", self.dropped_total)

    def upload(self, send: Upload) -> int:
        """Send the buffered records oldest first, in batches; returns how many were sent. Raises on the first error.

        A batch the control plane rejects as bad (a 4xx other than 401, 408 and 429) is dropped and counted:
        resending it would fail the same way and hold back everything behind it.
        """
        with self.lock:
            # Seal what is there: appends from now on start a new segment, so the ones sent stay unchanged.
            self._rotate = True
            segments = self.segments()
        sent = 0
        for segment in segments:
            with self.lock:
                if not segment.exists():  # dropped by the bound meanwhile
                    continue
                records, garbled = _parse(segment.read_bytes())
            for start in range(0, len(records), BATCH):
                batch = records[start : start + BATCH]
                with self.lock:
                    reported = self.dropped
                try:
                    send(batch, reported)
                except ControlPlaneError as exc:
                    if exc.status is None or not 400 <= exc.status < 500 or exc.status in RETRY_STATUSES:
                        raise
                    log.warning("%s (%d telemetry records dropped: the control plane refused them)", exc, len(batch))
                    with self.lock:
                        self._drop(len(batch))
                    continue
                with self.lock:
                    # Only what this body carried: drops counted meanwhile go with the next one.
                    self.dropped -= reported
                    _write_int(self.folder / "dropped", self.dropped)
                sent += len(batch)
            with self.lock:
                segment.unlink(missing_ok=True)
                # Counted once the segment is gone, so a failed upload that reads it again does not count them twice.
                self._drop(garbled)
        return sent


def _parse(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The records of a segment, and how many of its lines are not one (cut short by a power loss, garbled)."""
    records, garbled = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:  # UnicodeDecodeError included
            rec = None
        if isinstance(rec, dict):
            records.append(rec)
        else:
            garbled += 1
    return records, garbled


def _ends_with_newline(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except FileNotFoundError:
        return True


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write_int(path: Path, value: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(str(value))
    os.replace(tmp, path)
