"""Failpoints for the chaos tests: kill a worker at an exact step, as a power cut would.

A SIGKILL, not an exception: no finally block runs, so what survives is exactly what the
lease, the reconciler and the redelivery must cope with. Inert unless MODELYARD_FAILPOINTS
names the step.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

FAILPOINTS_ENV = "MODELYARD_FAILPOINTS"


def failpoint(name: str, run_folder: Path) -> None:
    """Kill this process (SIGKILL, no cleanup) at a named step, once per home, when a test asks.

    `MODELYARD_FAILPOINTS=a,b` names the steps; each fires once (a marker file under
    run/failpoints keeps the redelivered task from dying again). Nothing happens otherwise.
    """
    wanted = os.environ.get(FAILPOINTS_ENV)
    if not wanted or name not in {w.strip() for w in wanted.split(",")}:
        return
    marker = run_folder / "failpoints" / name
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
