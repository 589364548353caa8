"""The install state machine's persisted state (`<home>/install.json`), Mender style.

    idle -> downloading -> verifying -> installing -> smoke -> switching -> probation -> committed
                 \\____________\\____________\\__________\\_________\\-> failed | refused
                                                                  probation -> rolled_back

The state, with the desired entry it is about, is written atomically BEFORE each step runs, so
an agent killed at any point restarts in the step it was in: a download resumes from its .part
file, a verification or install starts that step again from the downloaded tar, a switch checks
where the pointer is. The outcome to report waits in the same file until the control plane has it.
While in `probation`, what the bundle's inferences counted is in probation.json (probation.py).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelyard.edge.slots import read_json, write_json_atomic

IDLE = "idle"
DOWNLOADING = "downloading"
VERIFYING = "verifying"
INSTALLING = "installing"
SMOKE = "smoke"
SWITCHING = "switching"
PROBATION = "probation"
COMMITTED = "committed"
FAILED = "failed"
REFUSED = "refused"
ROLLED_BACK = "rolled_back"

# Outcomes kept while the control plane is away: enough for every bundle a device meets in between.
MAX_UNSENT = 20

IN_FLIGHT = (DOWNLOADING, VERIFYING, INSTALLING, SMOKE, SWITCHING)
FINAL = (IDLE, COMMITTED, FAILED, REFUSED, ROLLED_BACK)

# Which report stage a failure in each state belongs to (PROTOCOL.md, 4).
STAGE_OF = {
    DOWNLOADING: "download",
    VERIFYING: "verify",
    INSTALLING: "unpack",
    SMOKE: "smoke",
    SWITCHING: "switch",
    PROBATION: "serve",
}


@dataclass
class InstallState:
    state: str = IDLE
    desired: dict[str, Any] | None = None
    slot: str | None = None
    started: float = 0.0
    updated: float = 0.0
    # The outcome not yet acknowledged by the control plane (a report body, PROTOCOL.md 4), and older ones
    # a newer outcome came before they were sent (a local rollback must reach the control plane even when
    # the next install's outcome follows it while the control plane is away); sent oldest first.
    pending_report: dict[str, Any] | None = None
    unsent_reports: list[dict[str, Any]] = field(default_factory=list)
    last_error: str | None = None
    # entry key (sha256, rollout, rollback) -> time before which it is not tried again: a desired entry
    # that failed is not retried in a loop.
    failed: dict[str, float] = field(default_factory=dict)

    def queue_report(self, body: dict[str, Any]) -> None:
        if self.pending_report is not None:
            self.unsent_reports = [*self.unsent_reports, self.pending_report][-MAX_UNSENT:]
        self.pending_report = body


class StateStore:
    def __init__(self, home: Path) -> None:
        self.path = home / "install.json"

    def load(self) -> InstallState:
        data = read_json(self.path)
        if not isinstance(data, dict):
            return InstallState()
        known = {k: v for k, v in data.items() if k in InstallState.__dataclass_fields__}
        return InstallState(**known)

    def save(self, state: InstallState) -> None:
        state.updated = time.time()
        write_json_atomic(self.path, asdict(state))

    def enter(self, state: InstallState, name: str) -> None:
        """Record that `name` is about to run (written before the step, so a crash resumes it)."""
        state.state = name
        self.save(state)
