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
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
        self.dropped = 0
        self.written = 0
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
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(_Served(model, version, request_id, inputs, outputs, meta, utcnow()))

    def flush(self, timeout: float) -> None:
        """Wait until what is queued now is written (feedback may name a prediction served a moment ago)."""
        if not self._queue and self._idle.is_set():
            return
        self._idle.clear()
        self._wake.set()
        self._idle.wait(timeout)

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
                self._idle.clear()
                taken = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                self._write(taken)
            self._idle.set()
            if stopping:
                return

    def _write(self, served: list[_Served]) -> None:
        rows = [row for s in served for row in _split(s)]
        for attempt in range(3):
            try:
                self.written += self._store.append(rows)
                return
            except Exception as err:  # the database is down: retry, then count the loss (logged)
                self.failures += 1
                if attempt == 2:
                    self.dropped += len(served)
                    log.error("inference log: %d predictions not written: %s", len(served), err)
                    return
                time.sleep(0.5 * (attempt + 1))


def _split(s: _Served) -> list[Prediction]:
    """One logged row per input row of a batched request (request ids of rows after the first get #i)."""
    n = next(iter(s.inputs.values())).shape[0]
    rows = []
    for i in range(n):
        rows.append(
            Prediction(
                model=s.model,
                version=s.version,
                request_id=s.request_id if n == 1 else f"{s.request_id}#{i}",
                inputs={k: np.ascontiguousarray(v[i]) for k, v in s.inputs.items()},  # stored as nested lists
                outputs={k: np.ascontiguousarray(v[i]) for k, v in s.outputs.items()},
                source="server",
                meta=s.meta,
                created_at=s.at,
            )
        )
    return rows
