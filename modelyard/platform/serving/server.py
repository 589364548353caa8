"""The model server: which version answers for each model, loaded once, swapped without a gap.

`champion(name)` is what `/v2/models/{name}/infer` serves. A watcher reads the aliases
from the platform database every `serve_poll_seconds`; when `champion` moved (the gate,
a rollback, the guard), it loads the new version in the background and then replaces the
entry in one assignment. Requests already holding the old entry finish on the old
session (its batcher drains, then runs any late request alone); the next ones get the new
one. A version that fails to load leaves the old one serving, and the error is logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from modelyard.errors import NotFoundError, UnavailableError
from modelyard.platform.context import Platform
from modelyard.platform.registry.base import ALIASES
from modelyard.platform.serving.batcher import Batcher
from modelyard.platform.serving.logwriter import LogWriter
from modelyard.platform.serving.metrics import Metrics
from modelyard.platform.serving.models import LoadedModel, load_version

log = logging.getLogger("modelyard.serving")
RETRY_FAILED_SECONDS = 30.0


@dataclass
class Served:
    model: LoadedModel
    batcher: Batcher


class ModelServer:
    def __init__(self, platform: Platform, metrics: Metrics, explicit_cache: int = 4) -> None:
        from modelyard.platform.store.inference import InferenceLog

        s = platform.settings
        self.platform = platform
        self.settings = s
        self.metrics = metrics
        self._champions: dict[str, Served] = {}
        self._explicit: OrderedDict[tuple[str, str], Served] = OrderedDict()
        self._explicit_cache = explicit_cache
        self._loading: dict[tuple[str, str], asyncio.Task] = {}
        self._infer_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="infer")
        self._io_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="load")
        self._watcher: asyncio.Task | None = None
        self.cache = s.root / "serving"
        self.writer = LogWriter(InferenceLog(s), s.inference_log_sample_rate, s.inference_log_max_backlog)
        self._failed: dict[tuple[str, str], float] = {}
        self._broken: dict[tuple[str, str], str] = {}  # the sentence of each failed load

    async def start(self) -> None:
        self.writer.start()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="champion watcher")

    async def stop(self) -> None:
        """Stop serving: queued requests are answered first (up to 10 s), then the log is written out."""
        if self._watcher:
            self._watcher.cancel()
        live = {id(s): s for s in [*self._champions.values(), *self._explicit.values()]}.values()
        for served in live:
            served.batcher.close()
        deadline = time.monotonic() + 10
        while any(s.batcher.in_flight for s in live) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.get_running_loop().run_in_executor(None, self.writer.stop)
        self._infer_pool.shutdown(wait=False)
        self._io_pool.shutdown(wait=False)

    def _retire(self, served: Served) -> None:
        """Close a version's batcher unless another entry still serves it (the same load can fill both maps)."""
        if all(s is not served for s in [*self._champions.values(), *self._explicit.values()]):
            served.batcher.close()

    def is_ready(self, name: str) -> bool:
        return name in self._champions

    async def _io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io_pool, fn, *args)

    async def _aliases(self, name: str | None = None) -> dict[str, dict[str, str]]:
        return await self._io(self.platform.audit.aliases, name)

    async def champion(self, name: str) -> Served:
        served = self._champions.get(name)
        if served is not None:
            return served
        version = (await self._aliases(name)).get(name, {}).get("champion")
        if version is None:
            await self._no_such(name, "champion")
        served = await self._load(name, str(version))
        if name not in self._champions:  # else the watcher put one meanwhile: it decides what serves
            self._champions[name] = served
            self._gauge(name)
        return self._champions[name]

    async def version(self, name: str, ref: str) -> Served:
        """A version by number, or by alias (champion, challenger, previous)."""
        if ref in ALIASES:
            if ref == "champion":
                return await self.champion(name)
            version = (await self._aliases(name)).get(name, {}).get(ref)
            if version is None:
                await self._no_such(name, ref)
            ref = str(version)
        elif re.fullmatch(r"[0-9]{1,9}", ref):
            ref = str(int(ref))  # 007 is version 7: one session, one label
        else:
            raise NotFoundError(
                f"'{ref}' is not a version of '{name}': give a number or one of {', '.join(ALIASES)}.",
                code="version_not_found",
            )
        champion = self._champions.get(name)
        if champion is not None and champion.model.version == ref:
            return champion
        key = (name, ref)
        served = self._explicit.get(key)
        if served is None:
            served = await self._load(name, ref)
            self._explicit[key] = served
            while len(self._explicit) > self._explicit_cache:
                _, old = self._explicit.popitem(last=False)
                self._retire(old)
        self._explicit.move_to_end(key)
        return served

    async def _no_such(self, name: str, alias: str) -> None:
        known = await self._io(self.platform.audit.knows, name)
        if not known:
            raise NotFoundError(f"model '{name}' is not registered.", code="model_not_found")
        raise NotFoundError(f"model '{name}' has no {alias}.", code="alias_not_set")

    async def _load(self, name: str, version: str) -> Served:
        """Load one version once, however many requests ask for it at the same time.

        The load runs as a task of its own: a caller that gives up (a client timeout) does
        not cancel it for the others.
        """
        key = (name, version)
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_now(name, version))
            self._loading[key] = task
            task.add_done_callback(lambda _t: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _load_now(self, name: str, version: str) -> Served:
        s = self.settings
        failed = self._failed.get((name, version))
        if failed is not None and time.monotonic() - failed < RETRY_FAILED_SECONDS:
            raise UnavailableError(self._broken[(name, version)], code="load_failed")
        try:
            model = await self._io(load_version, self.platform.registry, name, version, self.cache, s.serve_threads)
        except UnavailableError as err:
            if err.code == "load_failed":  # a broken file: not tried again on every request
                self._failed[(name, version)] = time.monotonic()
                self._broken[(name, version)] = str(err)
            raise
        # Rows of several requests stack only along a dynamic first axis, in and out.
        stackable = all(t.shape and t.shape[0] == -1 for t in [*model.inputs, *model.outputs])
        max_batch = s.serve_max_batch if stackable else 1
        batcher = Batcher(model, max_batch, s.serve_max_delay_ms / 1000, self._infer_pool, self._observe)
        batcher.start()
        log.info("loaded %s/%s (%s: %s on %s)", name, version, model.target, model.variant, model.providers[0])
        return Served(model, batcher)

    def _observe(self, model: LoadedModel, rows: int, _seconds: float) -> None:
        self.metrics.batch_rows.labels(model.name, model.version).observe(rows)

    def _gauge(self, name: str) -> None:
        served = self._champions.get(name)
        if served is not None:
            self.metrics.loaded.labels(name, served.model.version, "champion").set(1)

    async def _watch(self) -> None:
        """Follow `champion` of every model: preload new ones, swap moved ones."""
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the database is down: keep serving what is loaded
                log.warning("champion watcher: %s", err)
            self.metrics.log_backlog.set(self.writer.backlog)
            self.metrics.log_written.set(self.writer.written)
            self.metrics.log_dropped.set(self.writer.dropped)
            await asyncio.sleep(self.settings.serve_poll_seconds)

    async def sync(self) -> None:
        """One pass of the watcher: load every champion not loaded, swap every one that moved.

        A version that fails to load is tried again after `RETRY_FAILED_SECONDS`, and never
        stops the other models' swaps; the version it would replace keeps serving.
        """
        for name, aliases in (await self._aliases()).items():
            version = aliases.get("champion")
            current = self._champions.get(name)
            if version is None or (current is not None and current.model.version == version):
                continue
            failed = self._failed.get((name, version))
            if failed is not None and time.monotonic() - failed < RETRY_FAILED_SECONDS:
                continue
            try:
                served = await self._load(name, version)
            except Exception as err:
                self._failed[(name, version)] = time.monotonic()
                self._broken[(name, version)] = str(err)
                log.warning(
                    "cannot serve %s/%s (still serving %s): %s",
                    name,
                    version,
                    current.model.version if current else "nothing",
                    err,
                )
                continue
            self._failed.pop((name, version), None)
            await self._swap(name, version, current, served)

    async def _swap(self, name: str, version: str, seen: Served | None, served: Served) -> None:
        """Make `served` the champion, unless the world moved during the load (the alias again, or another
        caller installed a champion): then the next pass decides."""
        if self._champions.get(name) is not seen:
            self._retire(served)
            return
        now = (await self._aliases(name)).get(name, {}).get("champion")
        if now != version or self._champions.get(name) is not seen:
            self._retire(served)
            return
        self._champions[name] = served  # the switch: one assignment
        if seen is not None and seen is not served:
            self._retire(seen)  # its queued requests finish on it
            self.metrics.loaded.labels(name, seen.model.version, "champion").set(0)
            self.metrics.swaps.labels(name).inc()
            log.info("champion of %s: %s -> %s", name, seen.model.version, version)
        self._gauge(name)
