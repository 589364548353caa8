"""Beat's scheduler: celery's shelve-backed one, started afresh when its file is damaged.

The schedule file (`run/beat-schedule` and the `.dat`, `.dir`, `.bak` or `.db` files the
dbm module adds) only remembers when each periodic task last ran. A beat killed while
writing it can leave it damaged: an empty `.dat` whose `.dir` still lists entries makes
unpickling an entry raise EOFError, which celery's PersistentScheduler does not catch
(its setup catches errors on opening, not on reading `entries`), so beat exited at
start, on every start. Every periodic task of the platform is idempotent (reconcile,
monitor tick, retention), so losing those times costs nothing but a pass that runs a
little early: on any error reading the file this scheduler removes it, says so in one
warning line and starts with an empty one. `create_app` names it as `beat_scheduler`,
so `celery beat` gets it however it is started (`modelyard up`, docker compose).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from celery.beat import PersistentScheduler
from celery.utils.log import get_logger

log = get_logger("celery.beat")


class Scheduler(PersistentScheduler):
    """PersistentScheduler that treats a schedule file it cannot read as missing."""

    _store: Any = None  # the open shelve (celery's attribute, typed here)

    def setup_schedule(self) -> None:
        try:
            self._check_readable()
            super().setup_schedule()
        except Exception as err:  # damaged in a way celery does not handle: start with an empty schedule
            self._start_afresh(err)
            super().setup_schedule()

    def _check_readable(self) -> None:
        """Read every value of an existing schedule file (reading is where a damaged dbm file fails)."""
        if not any(os.path.exists(self.schedule_filename + suffix) for suffix in self.known_suffixes):
            return  # no schedule yet: celery creates one
        store = self.persistence.open(self.schedule_filename, flag="r")
        try:
            for key in list(store.keys()):
                store[key]
        finally:
            store.close()

    def _destroy_open_corrupted_schedule(self, exc: Exception) -> Any:
        """Celery's own recovery (an error on opening), with our one warning line instead of a traceback."""
        self._start_afresh(exc)
        return self._open_schedule()

    def _start_afresh(self, err: BaseException) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):  # a damaged store may fail to close; it is removed next
                self._store.close()
            self._store = None
        log.warning(
            "beat: schedule file %s is damaged (%s: %s); removed, starting a fresh schedule "
            "(only the periodic tasks' last-run times are lost)",
            self.schedule_filename,
            type(err).__name__,
            err,
        )
        self._remove_db()
