"""The inference-log writer: predictions go into a bounded in-memory queue on the request path
(one append) and a thread writes them to the inference log in batches, off the request path.

Sampling keeps a share of requests (`inference_log_sample_rate`); when the database is
slower than the traffic for long, the oldest queued rows are dropped and counted rather than
let memory grow or requests wait.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelyard.platform.faults import describe, is_transient
from modelyard.platform.store.db import utcnow
from modelyard.platform.store.inference import InferenceLog, Prediction

log = logging.getLogger("modelyard.serving")


@dataclass
class _Served:
    model: str
    version: str
    request_id: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    meta: dict[str, Any]
    at: Any


class LogWriter:
    def __init__(
        self, store: InferenceLog, sample_rate: float, max_backlog: int, flush_seconds: float = 0.25, batch: int = 1000
    ) -> None:
        self._store = store
        self._rate = sample_rate
        self._queue: deque[_Served] = deque()
        self._max = max_backlog
        self._flush_seconds = flush_seconds
        self._batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._added = 0  # requests queued so far (the event loop's thread adds)
        self._done = 0  # requests written or given up (the writer's thread)
        self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
        self.dropped = 0  # rows
        self.written = 0  # rows
        self.failures = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def add(self, model: str, version: str, request_id: str, inputs: dict, outputs: dict, meta: dict) -> None:
        """On the request path: one sampling draw and one append."""
        if self._rate < 1.0 and random.random() >= self._rate:
            return
        if len(self._queue) >= self._max:
            lost = self._queue.popleft()
            self.dropped += _rows(lost)
            with self._progress:
                self._done += 1
        self._queue.append(_Served(model, version, request_id, inputs, outputs, meta, utcnow()))
        self._added += 1

    def flush(self, timeout: float) -> None:
        """Wait until what was queued before this call is written (feedback may name a prediction served a
        moment ago)."""
        target = self._added
        self._wake.set()
        with self._progress:
            self._progress.wait_for(lambda: self._done >= target or not self._thread.is_alive(), timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            stopping = self._stop.is_set()
            while self._queue:
                taken = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                try:
                    self._write(taken)
                except Exception:  # a bug must not stop the logging of what comes next
                    self.dropped += sum(_rows(t) for t in taken)
                    log.exception("inference log: %d predictions not written", len(taken))
                with self._progress:
                    self._done += len(taken)
                    self._progress.notify_all()
            if stopping:
                return

    def _write(self, served: list[_Served]) -> None:
        rows = [row for s in served for row in _split(s)]
        for attempt in range(3):
            try:
                self.written += self._store.append(rows)
                return
            except Exception as err:  # the database is down: retry; then row by row, so one bad row costs one
                self.failures += 1
                if attempt < 2:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                if is_transient(err):  # the database is down: these rows are lost, counted
                    self.dropped += len(rows)
                    log.error("inference log: %d predictions not written: %s", len(rows), describe(err))
                    return
                for row in rows:  # a row the database refuses: only that one is lost
                    try:
                        self.written += self._store.append([row])
                    except Exception:
                        self.dropped += 1
                log.error("inference log: a batch was refused (%s); written row by row", describe(err))


def _rows(s: _Served) -> int:
    return int(next(iter(s.inputs.values())).shape[0])


def _row(value: np.ndarray, i: int) -> Any:
    one = value[i]
    return np.ascontiguousarray(one) if one.ndim else one.item()  # stored as nested lists, a scalar as itself


def _split(s: _Served) -> list[Prediction]:
    """One logged row per input row of a batched request (request ids of rows after the first get #i)."""
    n = _rows(s)
    rows = []
    for i in range(n):
        rows.append(
            Prediction(
                model=s.model,
                version=s.version,
                request_id=s.request_id if n == 1 else f"{s.request_id}#{i}",
                inputs={k: _row(v, i) for k, v in s.inputs.items()},
                outputs={k: _row(v, i) for k, v in s.outputs.items()},
                source="server",
                meta=s.meta,
                created_at=s.at,
                sender_kind="server",
                sender="server",
            )
        )
    return rows
