"""The fleet's periodic pass as a use case: what beat's `modelyard.monitor.fleet_tick` task runs."""

from __future__ import annotations

from modelyard.platform.context import Platform
from modelyard.platform.fleet.driver import FleetDriver


def fleet_tick(platform: Platform) -> dict[str, list[int]]:
    """Followers follow their champion, running rollouts take the steps that are due (fleet/driver.py)."""
    return FleetDriver(platform).tick()
