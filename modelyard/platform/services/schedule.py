"""What beat asks for on every tick: the drift checks that are due, and the inference log's retention."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from modelyard.platform.services.signatures import signature
from modelyard.platform.store.db import aware, utcnow

if TYPE_CHECKING:
    from modelyard.platform.context import Platform


def due_checks(platform: Platform) -> list[str]:
    """Models whose champion logged rows since its last check and whose schedule is due."""
    from modelyard.platform.store.drift import DriftChecks

    checks = DriftChecks(platform.settings)
    due = []
    now = utcnow()
    for model, aliases in sorted(platform.audit.aliases().items()):
        champion = aliases.get("champion")
        if champion is None:
            continue
        try:
            spec = signature(platform, model, champion).monitoring
        except Exception as err:  # a version whose spec cannot be read is not monitored; `drift --now` says why
            logging.getLogger("modelyard.monitor").warning("drift checks of %s: %s", model, err)
            continue
        if not spec.enabled:
            continue
        last = checks.recent(model, 1, version=champion)
        newest = platform.inference.last_id(model, champion)
        if not newest:
            continue
        if last:
            since = aware(last[-1].created_at)
            if now - since < dt.timedelta(seconds=spec.schedule_seconds):
                continue
            if newest <= last[-1].last_id and not platform.inference.labeled_since(model, since):
                continue  # no new rows, no new labels: the last verdict stands
        due.append(model)
    return due


def retention(platform: Platform) -> dict[str, int]:
    """Keep at most MODELYARD_INFERENCE_LOG_MAX_ROWS rows per model."""
    keep = platform.settings.inference_log_max_rows
    return {m: n for m in platform.inference.models() if (n := platform.inference.trim(m, keep))}
