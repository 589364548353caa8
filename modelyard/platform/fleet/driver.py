"""The fleet's tick (the API process runs it every `fleet_tick_seconds`): groups that follow a model
start a rollout when its champion moves, and every running rollout takes the steps that are due."""

from __future__ import annotations

import logging
import time
from typing import Any

from modelyard.errors import ModelyardError
from modelyard.platform.context import Platform
from modelyard.platform.fleet import bundles
from modelyard.platform.fleet.rollouts import Rollouts

log = logging.getLogger("modelyard.fleet")
RETRY_FAILED_BUILD_SECONDS = 60.0


class FleetDriver:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.rollouts = Rollouts(platform.settings)
        self._failed: dict[tuple[str, str, str], float] = {}  # a bundle that could not be built: when to try again

    def tick(self) -> None:
        try:
            self.follow()
        finally:  # rollouts advance even when reading the champions failed
            self.rollouts.advance()

    def follow(self) -> list[int]:
        """A rollout for every following group whose champion moved since the group was last sent one.

        Following reacts to the champion's moves: an operator's deploy of another version to the
        group is left alone until the champion moves again (a promotion or a rollback).
        """
        started = []
        for group in self.rollouts.groups():
            if group.follows is None:
                continue
            champion = self.platform.audit.aliases(group.follows).get(group.follows, {}).get("champion")
            if champion is None or champion == group.followed_version:
                continue  # no move since the group's last rollout of the champion (a manual deploy is left alone)
            key = (group.follows, champion, group.target)
            if time.monotonic() < self._failed.get(key, 0.0):
                continue
            try:
                bundles.build(self.platform, group.follows, champion, group.target, "fleet")
                # The champion went back (the guard, `modelyard rollback`) from the one this group was sent.
                older = group.followed_version is not None and int(champion) < int(group.followed_version)
                kind = "rollback" if older else "follow"
                started.append(self.rollouts.start(group.follows, champion, group.name, "fleet", kind))
            except Exception as err:  # one group's trouble never holds up the others, nor every tick
                self._failed[key] = time.monotonic() + RETRY_FAILED_BUILD_SECONDS
                if isinstance(err, ModelyardError):
                    log.warning("group %s cannot follow %s v%s: %s", group.name, group.follows, champion, err)
                else:
                    log.exception("group %s cannot follow %s v%s", group.name, group.follows, champion)
        return started


def run_forever(platform: Platform, stop: Any) -> None:
    """The tick in a loop until `stop` (a threading.Event) is set; errors are logged, never fatal."""
    driver = FleetDriver(platform)
    every = platform.settings.fleet_tick_seconds
    while not stop.is_set():
        try:
            driver.tick()
        except Exception:
            log.exception("the fleet tick failed; trying again in %.1f s", every)
        stop.wait(every)
