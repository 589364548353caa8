"""'The champion moved: build its bundle' (fleet/champion.py), the one handler of the export stage and
the fleet's tick: best effort, a failure is an event and is tried again after a wait, and one
champion move starts one rollout even when two ticks overlap."""

from __future__ import annotations

import pytest

from modelyard.errors import LifecycleError
from modelyard.platform.context import Platform
from modelyard.platform.fleet import bundles, champion
from modelyard.platform.fleet.champion import champion_bundle
from modelyard.platform.fleet.rollouts import Rollouts
from modelyard.platform.store.audit import EventRecord
from modelyard.platform.store.db import ensure_schema
from tests.platform.test_rollouts import _bundle, _fleet


@pytest.fixture
def platform(settings) -> Platform:
    settings.ensure_folders()
    ensure_schema(settings.platform_database_url, settings.run_folder)
    settings.signing_key.parent.mkdir(parents=True, exist_ok=True)
    settings.signing_key.write_text("not a key: the builds here are stand-ins\n")
    return Platform(settings)


def _failing_builds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    tried: list[tuple[str, str]] = []

    def build(platform, model, version, target, actor, force=False):
        tried.append((version, actor))
        raise LifecycleError(f"{model}/{version} has no {target} variant to bundle: it has not been exported.")

    monkeypatch.setattr(bundles, "build", build)
    return tried


def test_a_failed_build_is_an_event_never_an_error_and_waits_before_the_next_try(platform, monkeypatch) -> None:
    tried = _failing_builds(monkeypatch)
    assert champion_bundle(platform, "m", "2", "edge-cpu", "gate", "req-1") is None
    (event,) = platform.audit.history("m", ("bundle_failed",))
    assert (event.actor, event.to_version, event.request_id, event.evidence) == (
        "gate",
        "2",
        "req-1",
        {"target": "edge-cpu"},
    )
    assert event.reason == (
        "the edge-cpu bundle of v2 could not be built: m/2 has no edge-cpu variant to bundle: it has not been exported."
    )

    assert champion_bundle(platform, "m", "2", "edge-cpu", "fleet") is None
    assert tried == [("2", "gate")], "tried again only after RETRY_FAILED_BUILD_SECONDS, whoever asks"
    assert champion_bundle(platform, "m", "2", "edge-server", "fleet") is None, "another target is another build"
    assert tried == [("2", "gate"), ("2", "fleet")]

    monkeypatch.setattr(champion, "RETRY_FAILED_BUILD_SECONDS", 0.0)
    assert champion_bundle(platform, "m", "2", "edge-cpu", "fleet") is None
    assert tried[-1] == ("2", "fleet") and len(platform.audit.history("m", ("bundle_failed",))) == 3


def test_a_bundle_built_before_is_the_answer_and_no_key_means_no_build(platform, monkeypatch) -> None:
    tried = _failing_builds(monkeypatch)
    _bundle(platform.settings, "m", "1")
    assert champion_bundle(platform, "m", "1", "edge-cpu", "fleet").sha256 == f"{1:064x}"
    platform.settings.signing_key.unlink()
    assert champion_bundle(platform, "m", "2", "edge-cpu", "gate") is None
    assert tried == [] and platform.audit.history("m", ("bundle_failed",)) == []


def test_nothing_fails_the_caller_even_when_the_event_cannot_be_written(platform, monkeypatch) -> None:
    _failing_builds(monkeypatch)

    def broken(*_events: EventRecord) -> None:
        raise OSError("the platform database went away")

    monkeypatch.setattr(platform.audit, "record", broken)
    assert champion_bundle(platform, "m", "2", "edge-cpu", "gate") is None


def test_a_following_group_does_not_follow_a_champion_without_a_bundle(platform, monkeypatch) -> None:
    from modelyard.platform.fleet.driver import FleetDriver
    from modelyard.platform.fleet.operations import set_follow

    tried = _failing_builds(monkeypatch)
    platform.audit.record(EventRecord("m", "alias_set", "test", "test", "champion", None, "1"))
    _fleet(platform.settings, 2)
    set_follow(platform, "field", "m", "test")
    driver = FleetDriver(platform)
    assert driver.tick() == {"started": [], "moved": []}
    assert driver.follow() == [] and tried == [("1", "fleet")]
    _bundle(platform.settings, "m", "1")  # built meanwhile (`modelyard versions bundle`)
    (started,) = driver.follow()
    assert Rollouts(platform.settings).status(started)["kind"] == "follow"


def test_overlapping_ticks_start_one_rollout_per_champion_move(platform) -> None:
    from modelyard.platform.fleet.operations import set_follow

    _bundle(platform.settings, "m", "1")
    platform.audit.record(EventRecord("m", "alias_set", "test", "test", "champion", None, "1"))
    _fleet(platform.settings, 2)
    set_follow(platform, "field", "m", "test")
    rollouts = Rollouts(platform.settings)
    (group,) = rollouts.groups()  # what both ticks read before either started anything
    first = rollouts.follow("m", "1", "field", "follow", group.followed_version)
    assert first is not None
    assert rollouts.follow("m", "1", "field", "follow", group.followed_version) is None
    assert [r["id"] for r in rollouts.recent(group="field")] == [first]
    assert rollouts.status(first)["state"] == "canary", "not superseded by a second start"
