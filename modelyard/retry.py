"""How long to wait before trying again: exponential backoff, shared by the worker and the device agent.

A leaf module: it imports nothing of modelyard, so the agent installs with it.
"""

from __future__ import annotations

import random

# 2**16 times any sensible base is past any sensible cap; stopping there keeps a task retried for
# days (the worker retries transient failures without limit) from overflowing a float.
_MAX_DOUBLINGS = 16


def backoff(attempt: int, base: float = 5.0, cap: float = 300.0, *, jitter: bool = False) -> float:
    """Seconds to wait after `attempt` failures: base doubling per failure, at most cap.

    `jitter` draws uniformly below that instead ("full jitter"): a fleet of devices that lost the
    control plane together then comes back spread out, not in lockstep. The worker does without:
    its retries are per task, already spread by when each task failed.
    """
    delay = min(cap, base * 2 ** min(max(attempt, 0), _MAX_DOUBLINGS))
    return random.uniform(0, delay) if jitter else delay
