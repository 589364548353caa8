"""'The champion moved: build its bundle', one handler for the two places that see the move.

The export stage calls it right after the gate promotes a version, so following device groups
need not wait for a build; the fleet's tick calls it before a following group's rollout of a
champion (moved by the gate, `modelyard promote` or a rollback, or built by nobody yet).

Best effort: a promotion succeeded already, and nothing here may fail the request that made it.
A build that fails is a `bundle_failed` event in the model's audit log (why, for which target)
and is tried again after RETRY_FAILED_BUILD_SECONDS by whoever calls next (the event is what
says when it failed, so every worker of the tick waits the same). Nothing is built where no
signing key exists (the edge fleet is not set up).
"""

from __future__ import annotations

import logging
from contextlib import suppress

from modelyard.errors import ModelyardError
from modelyard.platform.context import Platform
from modelyard.platform.fleet import bundles
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import Bundle, aware, utcnow
from modelyard.platform.store.fleet import FleetStore

log = logging.getLogger("modelyard.fleet")
RETRY_FAILED_BUILD_SECONDS = 60.0


def champion_bundle(
    platform: Platform, model: str, version: str, target: str, actor: str, request_id: str | None = None
) -> Bundle | None:
    """The version's bundle for the target, built now if it has none; None when there is none to send.

    None: no signing key; or the build failed (recorded as `bundle_failed`), now or less than
    RETRY_FAILED_BUILD_SECONDS ago. Never raises.
    """
    try:
        known = bundles.find(platform, model, version, target)
        if known is not None:
            return known
        if not platform.settings.signing_key.is_file():
            return None
        failed = FleetStore(platform.settings).failed_build_at(model, version, target)
        if failed is not None and (utcnow() - aware(failed)).total_seconds() < RETRY_FAILED_BUILD_SECONDS:
            return None  # tried lately: the next try is due when the wait is over
        return bundles.build(platform, model, version, target, actor)
    except Exception as err:  # the promotion succeeded: nothing here may fail its request or the tick
        log.warning("no bundle for %s/%s: %s", model, version, err, exc_info=not isinstance(err, ModelyardError))
        why = f"the {target} bundle of v{version} could not be built: {err}"
        with suppress(Exception):
            platform.audit.record(
                EventRecord(model, "bundle_failed", why, actor, None, None, version, {"target": target}, request_id)
            )
        return None
