"""The baking guard: after a promotion, is the new champion doing worse live than the one it replaced?"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from modelyard.monitoring.performance import drop
from modelyard.monitoring.spec import GuardOptions


@dataclass
class BakingEvidence:
    metric: str  # the primary metric
    minutes: float  # since the promotion
    rows: int  # predictions the new champion served since
    errors: int  # of which failed
    labeled_rows: int
    live: float | None  # the new champion's metric on its labeled rows
    before: float | None  # the previous champion's: on the same rows, live before the switch, or held-out
    before_source: Literal["replay", "live", "held-out", "none"]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GuardVerdict:
    action: Literal["wait", "baked", "rollback"]
    reason: str


def judge(e: BakingEvidence, options: GuardOptions) -> GuardVerdict:
    """Judge once the baking window is over (enough labels, or the deadline); errors judge at once."""
    if e.rows >= options.min_rows and e.errors / e.rows > options.max_error_rate:
        return GuardVerdict(
            "rollback",
            f"{e.errors} of {e.rows} predictions failed ({e.errors / e.rows:.1%}), past the tolerated "
            f"{options.max_error_rate:.1%}",
        )
    complete = e.labeled_rows >= options.baking_rows or e.minutes >= options.baking_minutes
    if not complete:
        return GuardVerdict(
            "wait",
            f"baking: {e.labeled_rows} of {options.baking_rows} labeled rows, "
            f"{e.minutes:.0f} of {options.baking_minutes:.0f} minutes",
        )
    if e.labeled_rows < options.min_rows or e.live is None:
        found = f"{e.labeled_rows} labeled rows by the deadline (needs {options.min_rows})"
        return GuardVerdict("baked", f"baked without a verdict: {found}")
    if e.before is None:
        return GuardVerdict("baked", f"baked: live {e.metric} {e.live:.4f}; nothing to compare it with")
    worse = drop(e.metric, e.before, e.live)
    versus = (
        f"live {e.metric} {e.live:.4f} on {e.labeled_rows} labeled rows vs {e.before:.4f} ({e.before_source}) before"
    )
    if worse > options.tolerance:
        return GuardVerdict("rollback", f"{versus}: worse by {worse:.4f}, past the tolerance {options.tolerance}")
    return GuardVerdict("baked", f"baked: {versus} (within the tolerance {options.tolerance})")
