"""The fleet's tick: groups that follow a model start a rollout when its champion moves, and every
running rollout takes the steps that are due.

Beat runs it every `fleet_tick_seconds` as a task on the monitor queue (services/fleet.py), like
every other periodic pass of the platform; its messages expire after one interval, so a backlog
is one pass. Two ticks may overlap (two workers): every step is taken under the fleet lock and
started only from the state it was decided on, so each happens once.
"""

from __future__ import annotations

import logging

from modelyard.errors import ModelyardError
from modelyard.platform.context import Platform
from modelyard.platform.fleet.champion import champion_bundle
from modelyard.platform.fleet.rollouts import Rollouts

log = logging.getLogger("modelyard.fleet")


class FleetDriver:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.rollouts = Rollouts(platform.settings)

    def tick(self) -> dict[str, list[int]]:
        """One pass: the rollouts it started (followers) and the ones that moved."""
        started: list[int] = []
        try:
            started = self.follow()
        finally:  # rollouts advance even when reading the champions failed
            moved = self.rollouts.advance()
        return {"started": started, "moved": moved}

    def follow(self) -> list[int]:
        """A rollout for every following group whose champion moved since the group was last sent one.

        Following reacts to the champion's moves: an operator's deploy of another version to the
        group is left alone until the champion moves again (a promotion or a rollback). The
        champion's bundle is built first if it has none (fleet/champion.py: a failed build is
        tried again after RETRY_FAILED_BUILD_SECONDS).
        """
        started = []
        for group in self.rollouts.groups():
            if group.follows is None:
                continue
            champion = self.platform.audit.aliases(group.follows).get(group.follows, {}).get("champion")
            if champion is None or champion == group.followed_version:
                continue  # no move since the group's last rollout of the champion (a manual deploy is left alone)
            if champion_bundle(self.platform, group.follows, champion, group.target, "fleet") is None:
                continue
            try:
                # The champion went back (the guard, `modelyard rollback`) from the one this group was sent.
                older = group.followed_version is not None and int(champion) < int(group.followed_version)
                kind = "rollback" if older else "follow"
                found = self.rollouts.follow(group.follows, champion, group.name, kind, group.followed_version)
                if found is not None:
                    started.append(found)
            except Exception as err:  # one group's trouble never holds up the others
                if isinstance(err, ModelyardError):
                    log.warning("group %s cannot follow %s v%s: %s", group.name, group.follows, champion, err)
                else:
                    log.exception("group %s cannot follow %s v%s", group.name, group.follows, champion)
        return started
