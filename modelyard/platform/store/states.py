"""The life of a training request: its states and the only transitions allowed between them.

```
              claim                 fence ok            hand over
  queued ──────────────▶ training ───────────▶ registering ──────────▶ trained
    ▲  ▲                  │  ▲ takeover            │ takeover            │  ▲
    │  └── release ───────┘  └──────(lease stale)──┘                     │  │ release
    │      (transient)                                            claim  ▼  │ (transient)
    │                                                                 exporting ──▶ succeeded
    └──────────── any non-final state ──▶ failed (with a reason) ◀──────┘
```

A state marked *owned* is held by one worker under a lease: a fencing token that grows
on every claim. Every transition is a compare-and-set on (state, lease); a worker whose
lease was taken over learns it from the failed write (`ClaimLost`), never silently.
A state marked *waiting* has no owner: a broker message (or the reconciler) wakes the
worker of its stage.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    QUEUED = "queued"  # recorded, waiting for a train worker
    TRAINING = "training"  # a train worker holds the lease
    REGISTERING = "registering"  # that worker is registering: a version may exist in MLflow
    TRAINED = "trained"  # registered as challenger, waiting for an export worker
    EXPORTING = "exporting"  # an export worker holds the lease: export, gate, promote
    SUCCEEDED = "succeeded"  # final: exported and gated (promoted, rejected or awaiting approval)
    FAILED = "failed"  # final, with a reason

    @property
    def final(self) -> bool:
        return self in FINAL

    @property
    def owned(self) -> bool:
        return self in OWNED


FINAL = frozenset({State.SUCCEEDED, State.FAILED})
OWNED = frozenset({State.TRAINING, State.REGISTERING, State.EXPORTING})
WAITING = {State.QUEUED: "train", State.TRAINED: "export"}  # the stage whose message wakes it

TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.TRAINING, State.FAILED}),
    # TRAINING -> TRAINING and REGISTERING -> TRAINING: another worker takes over a stale lease.
    State.TRAINING: frozenset({State.TRAINING, State.REGISTERING, State.QUEUED, State.FAILED}),
    State.REGISTERING: frozenset({State.TRAINING, State.REGISTERING, State.TRAINED, State.QUEUED, State.FAILED}),
    State.TRAINED: frozenset({State.EXPORTING, State.FAILED}),
    State.EXPORTING: frozenset({State.EXPORTING, State.TRAINED, State.SUCCEEDED, State.FAILED}),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
}


class IllegalTransition(Exception):
    """A bug: code asked for a transition the state machine does not have."""


def check(source: State, target: State) -> None:
    if target not in TRANSITIONS[source]:
        raise IllegalTransition(f"a request cannot go from {source} to {target}")


def sources_of(target: State) -> frozenset[State]:
    """Every state from which `target` can be reached in one step."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)
