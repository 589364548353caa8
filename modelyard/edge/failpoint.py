"""Failpoints for tests: `MODELYARD_EDGE_FAILPOINT=<name>` kills the agent at that point.

A SIGKILL (not an exception) is the crash a power cut or the OOM killer gives: no finally
blocks run, so what survives on disk is exactly what the resume logic must cope with.
"""

from __future__ import annotations

import os
import signal

ENV = "MODELYARD_EDGE_FAILPOINT"


def hit(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
