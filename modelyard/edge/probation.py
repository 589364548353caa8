"""Probation: a freshly switched bundle earns its commit from real inferences, or goes back.

The smoke test proves a bundle on its own sample; probation proves it on what the device is
actually asked. A bundle is committed after `successes` good inferences, or after
`quiet_seconds` without a failure; it is rolled back once `max_failures` of its inferences
failed. Until then the previous slot is kept as it is, so going back is a pointer move.

The record lives in `<home>/probation.json`, apart from install.json, under a lock of its own:
it changes on every inference, and an install holds the installer's lock for a whole download,
so no inference may wait on that lock, nor go uncounted because of it. Deciding is a pure
function of the record and the time (`verdict`); carrying a verdict out (the pointer move, the
report) is the installer's, under its own lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelyard.edge.slots import read_json, write_json_atomic

COMMIT = "commit"
ROLLBACK = "rollback"


@dataclass(frozen=True)
class Rules:
    """The agent's probation settings (config.Options); a rule <= 0 commits at once."""

    successes: int = 20
    quiet_seconds: float = 300.0
    max_failures: int = 3

    @property
    def enabled(self) -> bool:
        return self.successes > 0 and self.quiet_seconds > 0


@dataclass
class Record:
    desired: dict[str, Any]  # the entry that brought the bundle: a rollback's report is filed under it
    started: float  # wall clock (it outlives a restart of the agent)
    quiet_since: float  # the start, or the last failure
    max_failures: int
    successes: int = 0
    failures: int = 0
    last_error: str | None = None

    @property
    def total(self) -> int:
        return self.successes + self.failures


def verdict(record: Record, rules: Rules, now: float) -> str | None:
    """COMMIT, ROLLBACK or None (not judged yet)."""
    if record.failures >= record.max_failures:
        return ROLLBACK
    if record.successes >= rules.successes or now - record.quiet_since >= rules.quiet_seconds:
        return COMMIT
    return None


def failure_limit(rules: Rules, control_plane_limit: object) -> int:
    """Failures that roll back: the agent's, or the control plane's `failed_inference_limit` when stricter."""
    limit = max(1, rules.max_failures)
    if isinstance(control_plane_limit, int) and not isinstance(control_plane_limit, bool) and control_plane_limit > 0:
        limit = min(limit, control_plane_limit)
    return limit


class Probation:
    def __init__(self, path: Path, rules: Rules, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.rules = rules
        self.clock = clock
        self.lock = threading.Lock()
        data = read_json(path)
        try:
            self.record: Record | None = Record(**data) if isinstance(data, dict) else None
        except TypeError:  # written by another agent version: judged again from now
            self.record = None

    @property
    def active(self) -> bool:
        return self.record is not None

    def summary(self) -> dict[str, Any] | None:
        """What the agent's status shows: the counts so far, or None when no bundle is on probation."""
        with self.lock:
            r = self.record
            if r is None:
                return None
            return {
                "successes": r.successes,
                "failures": r.failures,
                "max_failures": r.max_failures,
                "since": r.started,
            }

    def begin(self, desired: dict[str, Any], max_failures: int) -> None:
        with self.lock:
            now = self.clock()
            self.record = Record(desired=dict(desired), started=now, quiet_since=now, max_failures=max_failures)
            self._save()

    def count(self, error: str | None) -> str | None:
        """Count one inference of the bundle on probation; the verdict it leads to (None: none yet)."""
        with self.lock:
            record = self.record
            if record is None:
                return None
            if error is None:
                record.successes += 1
            else:
                record.failures += 1
                record.last_error = error
                record.quiet_since = self.clock()
            self._save()
            return verdict(record, self.rules, self.clock())

    def due(self) -> str | None:
        """The verdict as of now (time passing commits a quiet bundle), without counting anything."""
        with self.lock:
            return None if self.record is None else verdict(self.record, self.rules, self.clock())

    def decide(self, *, ending: bool = False) -> tuple[str, Record] | None:
        """The verdict to carry out now, with what was counted; None while there is none.

        COMMIT ends the probation here, in the same step as the decision (no failure counted after
        it can turn it); ROLLBACK keeps the record until the rollback is done (`end`). `ending`: a new
        bundle is wanted, so a bundle without a verdict yet counts as committed.
        """
        with self.lock:
            record = self.record
            if record is None:
                return None
            decided = verdict(record, self.rules, self.clock()) or (COMMIT if ending else None)
            if decided == COMMIT:
                self.record = None
                self.path.unlink(missing_ok=True)
            return None if decided is None else (decided, record)

    def end(self) -> Record | None:
        """Forget the record (the bundle was committed or rolled back); what it had counted."""
        with self.lock:
            record, self.record = self.record, None
            self.path.unlink(missing_ok=True)
            return record

    def _save(self) -> None:
        assert self.record is not None
        write_json_atomic(self.path, asdict(self.record))
