"""The baking guard: after a promotion, judge the new champion on live results and roll back when it does worse.

The evidence is what the platform vouches for (the inference log's attested rows): what the server itself
served, what devices that were assigned the version sent, predictions the platform computed itself. An
upload's claims never count, and time is the server's: a row counts after a promotion when it was received
after it, whatever time its sender wrote on it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from modelyard.platform.registry.base import TAG_PREFIX
from modelyard.platform.services.signatures import Signature, open_version, predict, rows_to_arrays, signature
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import aware, utcnow

if TYPE_CHECKING:
    from modelyard.platform.context import Platform
    from modelyard.platform.store.inference import LoggedRow

GUARD = "guard"
GUARD_KINDS = ("guard_baked", "guard_rolled_back", "guard_alarm")  # alarm: worse, but nothing to roll back to


def guard(platform: Platform, model: str, now: dt.datetime | None = None) -> dict[str, Any] | None:
    """Judge the newest promotion of a model once its baking window is over; roll back when it does worse.
    `now`: the time to judge at (tests; default the clock)."""
    from modelyard.monitoring.guard import BakingEvidence, judge
    from modelyard.platform.registry.lifecycle import ChampionMoved

    promotion = _last_promotion(platform, model)
    if promotion is None:
        return None
    new, old = str(promotion.to_version), promotion.from_version
    earlier = _verdict_of(platform.audit.history(model, GUARD_KINDS), promotion.id)
    if earlier is not None:
        return {"model": model, "version": new, "verdict": earlier.kind, "reason": earlier.reason}
    sig = signature(platform, model, new)
    options = sig.monitoring.guard
    since = aware(promotion.created_at)
    minutes = ((now or utcnow()) - since).total_seconds() / 60
    served, labeled, errors = platform.inference.counts(model, new, since)  # attested, counted: cheap on every beat
    evidence = BakingEvidence(sig.metric, minutes, served, errors, labeled, None, None, "none")
    verdict = judge(evidence, options)
    if verdict.action == "wait":
        return {"model": model, "version": new, "verdict": "baking", "reason": verdict.reason}
    if labeled and verdict.action != "rollback":  # the window is over: now read the labeled rows and compare
        window = platform.inference.window(model, new, 20_000, since=since, attested=True)
        rows = [r for r in window if r.label is not None]
        evidence.live = _live(sig, rows)
        if old is not None:
            before, source = _before(platform, model, str(old), sig, rows)
            evidence.before, evidence.before_source = before, source  # type: ignore[assignment]
        verdict = judge(evidence, options)
    proof = {**evidence.as_dict(), "promotion": promotion.id, "previous": old, "tolerance": options.tolerance}
    reason = f"v{new}: {verdict.reason}"
    kind = {"baked": "guard_baked", "rollback": "guard_rolled_back"}[verdict.action]
    if kind == "guard_rolled_back" and old is None:
        kind, reason = "guard_alarm", reason + "; there is no previous version to roll back to"

    def not_judged_yet(tx: Any) -> None:  # two beats may judge at once: the first verdict stands
        if _verdict_of(tx.history(GUARD_KINDS), promotion.id) is not None:
            raise ChampionMoved(f"the promotion of v{new} was judged meanwhile.")

    try:
        if kind != "guard_rolled_back":
            with platform.audit.moving(model) as tx:
                not_judged_yet(tx)
                tx.record(EventRecord(model, kind, reason, GUARD, None, old, new, proof))
        else:
            event = EventRecord(model, kind, reason, GUARD, None, new, old, proof)
            platform.lifecycle.rollback(
                model, GUARD, f"automatic rollback: {reason}", to_version=old, expect_champion=new, evidence=proof,
                extra=(event,), precondition=not_judged_yet,
            )  # fmt: skip
            platform.registry.set_version_tag(model, new, f"{TAG_PREFIX}guard", "rolled_back")
            platform.registry.set_version_tag(model, new, f"{TAG_PREFIX}guard.reason", reason[:4000])
    except ChampionMoved as err:  # judged by another beat, or the champion moved: that stands
        return {"model": model, "version": new, "verdict": "superseded", "reason": str(err)}
    return {"model": model, "version": new, "verdict": kind, "reason": reason}


def _verdict_of(events: list[Any], promotion_id: int) -> Any:
    return next((e for e in events if (e.evidence or {}).get("promotion") == promotion_id), None)


def _last_promotion(platform: Platform, model: str) -> Any:
    """The newest move of `champion` that was a promotion (rollbacks are not baked)."""
    moves = [e for e in platform.audit.history(model, ("alias_set",)) if e.alias == "champion"]
    if not moves or "rolled_back_from" in (moves[-1].evidence or {}):
        return None
    return moves[-1]


def _live(sig: Signature, rows: list[LoggedRow]) -> float:
    from modelyard.monitoring.performance import live_metric

    _, out, labels, labeled = rows_to_arrays(sig, rows)
    return live_metric(sig.metric, labels, out[labeled], len(sig.classes) or None)


def _before(
    platform: Platform, model: str, old: str, sig: Signature, labeled: list[LoggedRow]
) -> tuple[float | None, str]:
    """What the previous champion scores, best evidence first.

    replay: the previous champion run on the same labeled rows as the new one (its server
    variant, these inputs, these labels): the fairest comparison, unmoved by drift between
    windows or by labels that changed since. Else its live metric on its own labeled rows
    before the switch; else its held-out value.
    """
    from modelyard.monitoring.performance import live_metric

    options = sig.monitoring.guard
    if len(labeled) >= options.min_rows:
        try:
            previous = signature(platform, model, old)
            if previous.columns == sig.columns:
                flat, _, labels, _ = rows_to_arrays(sig, labeled)
                out = predict(open_version(platform, model, old), previous, flat)
                return live_metric(sig.metric, labels, out, len(sig.classes) or None), "replay"
        except Exception as err:  # an old version that cannot be opened any more: the weaker evidence below
            logging.getLogger("modelyard.monitor").warning("guard of %s: no replay of v%s: %s", model, old, err)
    rows = [r for r in platform.inference.window(model, old, 20_000, attested=True) if r.label is not None]
    rows = rows[-max(options.baking_rows, options.min_rows) :]
    if len(rows) >= options.min_rows:
        return _live(sig, rows), "live"
    info = platform.registry.get_version(model, old)
    heldout = platform.registry.run_metrics(info.run_id or "").get(f"test_{sig.metric}")
    return heldout, "held-out" if heldout is not None else "none"


def guarded_models(platform: Platform) -> list[str]:
    return sorted(m for m, aliases in platform.audit.aliases().items() if "champion" in aliases)
