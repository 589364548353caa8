"""Dynamic batching, as Triton does it: requests that arrive together run as one batch.

One loop per loaded version takes every request waiting, waits up to `max_delay` for more
while the batch is smaller than `max_batch` rows, runs the session once in a thread
(ONNX Runtime releases the GIL) and hands each request its rows. While a batch runs, the
next one gathers, so batches grow with the load and a lone request waits only max_delay.
Requests whose shapes cannot be stacked (another size in a dynamic inner axis) run in a
batch of their own kind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from modelyard.platform.serving.models import LoadedModel

Observer = Callable[[LoadedModel, int, float], None]  # model, batch rows, seconds


@dataclass
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future
    key: tuple = field(default=())


class Batcher:
    def __init__(
        self, model: LoadedModel, max_batch: int, max_delay: float, executor: Executor, observe: Observer
    ) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._executor = executor
        self._observe = observe
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._closed = False
        self._task: asyncio.Task | None = None
        self.in_flight = 0

    def start(self) -> None:
        if self.max_batch > 1 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher {self.model.name}")

    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = next(iter(feeds.values())).shape[0]
        self.in_flight += 1
        try:
            if self._task is None or self._task.done() or self._closed or rows >= self.max_batch:
                return await self._run_one(feeds, rows)  # no batching, retired, or a full batch already
            future = asyncio.get_running_loop().create_future()
            key = tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(feeds.items()))
            self._queue.put_nowait(_Pending(feeds, rows, future, key))
            return await future
        finally:
            self.in_flight -= 1

    def close(self) -> None:
        """Stop taking requests into batches: those queued still run, later ones run alone."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    async def _run_one(self, feeds: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await loop.run_in_executor(self._executor, self.model.run, feeds)
        self._observe(self.model, rows, loop.time() - started)
        return result

    async def _loop(self) -> None:
        try:
            await self._gather()
        finally:  # the loop ended (closed, or a bug): what is still queued runs alone, nobody waits forever
            self._closed = True
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None and not item.future.done():
                    asyncio.get_running_loop().create_task(self._alone(item))

    async def _alone(self, item: _Pending) -> None:
        try:
            result = await self._run_one(item.feeds, item.rows)
            if not item.future.done():
                item.future.set_result(result)
        except Exception as err:
            if not item.future.done():
                item.future.set_exception(err)

    async def _gather(self) -> None:
        loop = asyncio.get_running_loop()
        carry: list[_Pending] = []
        stopping = False
        while not (stopping and not carry and self._queue.empty()):
            batch = carry or []
            carry = []
            if not batch:
                item = await self._queue.get()
                if item is None:
                    stopping = True
                    continue
                batch = [item]
            rows = sum(p.rows for p in batch)
            deadline = loop.time() + self.max_delay
            while rows < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if stopping or left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), left)
                    except TimeoutError:
                        break
                if item is None:
                    stopping = True
                    continue
                if item.key != batch[0].key or rows + item.rows > self.max_batch:
                    carry.append(item)  # the next batch starts with it
                    break
                batch.append(item)
                rows += item.rows
            await self._run(batch, rows)

    async def _run(self, batch: list[_Pending], rows: int) -> None:
        live = [p for p in batch if not p.future.cancelled()]  # a client that timed out is not waited for
        if len(live) == 1:
            await self._alone(live[0])
        elif live:
            total = sum(p.rows for p in live)
            try:
                feeds = {k: np.concatenate([p.feeds[k] for p in live]) for k in live[0].feeds}
                results = await self._run_one(feeds, total)
                if any(v.ndim == 0 or v.shape[0] != total for v in results.values()):
                    raise ValueError("an output is not batch-major")
            except Exception:  # one bad request must not fail its neighbours: each runs alone
                await asyncio.gather(*(self._alone(p) for p in live))
                return
            start = 0
            for p in live:
                if not p.future.done():
                    p.future.set_result({k: v[start : start + p.rows] for k, v in results.items()})
                start += p.rows
