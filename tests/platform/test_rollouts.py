"""The rollout state machine and device registry on a real platform database (SQLite under a temp home).

Bundles are rows here (their building and signing have their own tests); what is tested is which
device is told to run what, when a rollout moves on, and when it stops by itself.
"""

from __future__ import annotations

import pytest

from modelyard.errors import AuthError, ConflictError
from modelyard.platform.fleet.devices import Devices
from modelyard.platform.fleet.rollouts import Rollouts
from modelyard.platform.store.audit import AuditLog, EventRecord
from modelyard.platform.store.db import Bundle, ensure_schema, session_factory


@pytest.fixture
def settings(settings):
    settings.ensure_folders()
    ensure_schema(settings.platform_database_url, settings.run_folder)
    return settings


def _bundle(settings, model: str, version: str) -> None:
    with session_factory(settings.platform_database_url).begin() as session:
        session.merge(
            Bundle(
                model=model,
                version=version,
                target="edge-cpu",
                variant="fp32",
                sha256=f"{int(version):064x}",
                size=1000 + int(version),
                artifact_uri="runs:/x/bundle/edge-cpu/bundle.tar",
                manifest={"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]},
                created_by="test",
            )
        )


def _fleet(settings, n: int, group: str = "field") -> tuple[Devices, list[str]]:
    devices = Devices(settings)
    token = devices.create_token(group, {"site": "lab"}, uses=n, hours=1, actor="test")
    ids = [f"dev-{i:02d}" for i in range(n)]
    for device_id in ids:
        devices.enroll(token, device_id, {}, {"arch": "x86_64"}, "1.0.0")
        devices.heartbeat(device_id, {"health": "ok", "installed": None})
    return devices, ids


def _installed(rollouts: Rollouts, devices: Devices, ids: list[str], rollout_id: int, outcome: str = "installed"):
    for device_id in ids:
        desired = devices.heartbeat(device_id, {"health": "ok"})
        assert desired is not None and desired["rollout_id"] == rollout_id
        rollouts.record_outcome(
            device_id,
            {
                "rollout_id": rollout_id,
                "outcome": outcome,
                "stage": "smoke",
                "reason": "" if outcome == "installed" else "outputs differ",
            },
        )


def _assigned(status: dict, phase: str | None = None) -> list[str]:
    return [d["device"] for d in status["devices"] if phase is None or d["phase"] == phase]


def test_a_rollout_goes_canary_observe_rest_and_the_group_keeps_the_version(settings) -> None:
    _bundle(settings, "m", "1")
    devices, ids = _fleet(settings, 10)
    rollouts = Rollouts(settings)

    rid = rollouts.start("m", "1", "field", "test", canary_percent=10, observe_seconds=0)
    status = rollouts.status(rid)
    canary = _assigned(status, "canary")
    assert status["state"] == "canary" and len(canary) == 1
    untouched = [d for d in ids if d not in canary]
    assert all(devices.heartbeat(d, {}) is None for d in untouched), "only the canary is told to install"

    _installed(rollouts, devices, canary, rid)
    assert rollouts.advance() == [rid] and rollouts.status(rid)["state"] == "observing"
    rollouts.advance()
    status = rollouts.status(rid)
    assert status["state"] == "rolling" and sorted(_assigned(status, "rest")) == untouched
    _installed(rollouts, devices, untouched, rid)
    rollouts.advance()
    assert rollouts.status(rid)["state"] == "completed"

    late = devices.create_token("field", {}, uses=1, hours=1, actor="test")
    devices.enroll(late, "dev-late", {}, {}, "1.0.0")
    assert devices.heartbeat("dev-late", {})["version"] == "1", "a device joining later gets the group's version"
    kinds = [e.kind for e in AuditLog(settings).history("m")]
    assert kinds[0] == "rollout_started" and "rollout_observing" in kinds and kinds[-1] == "rollout_completed"


def test_a_failing_canary_halts_and_no_other_device_is_touched(settings) -> None:
    _bundle(settings, "m", "1")
    _bundle(settings, "m", "2")
    devices, ids = _fleet(settings, 10)
    rollouts = Rollouts(settings)
    first = rollouts.start("m", "1", "field", "test", canary_percent=100, observe_seconds=0)
    _installed(rollouts, devices, ids, first)
    rollouts.advance(), rollouts.advance()
    assert rollouts.status(first)["state"] == "completed"

    rid = rollouts.start("m", "2", "field", "test", canary_percent=20, observe_seconds=0)
    canary = _assigned(rollouts.status(rid), "canary")
    _installed(rollouts, devices, canary[:1], rid, outcome="failed")
    rollouts.advance()
    status = rollouts.status(rid)
    assert status["state"] == "halted", status
    assert "1 of 2 canary devices failed" in status["reason"] and "outputs differ" in status["reason"]
    for device_id in ids:
        desired = devices.heartbeat(device_id, {})
        assert desired["version"] == "1", f"{device_id} must run v1 again (or still)"
    for device_id in canary:  # the canary devices are told to go back, as a rollback (an older version)
        assert devices.heartbeat(device_id, {})["rollback"] is True
    assert _assigned(status, "rest") == []
    assert [e.kind for e in AuditLog(settings).history("m")][-1] == "rollout_halted"


def _counted(devices: Devices, device_id: str, since: str, total: int, failed: int, version: str = "1") -> None:
    """A heartbeat with the device's inference counts of m/`version` (counted since `since`)."""
    inferences = {"model": "m", "version": version, "since": since, "total": total, "failed": failed}
    devices.heartbeat(device_id, {"health": "ok", "inferences": inferences})


def _observing(settings, counts: tuple[str, int, int] | None = None) -> tuple[Rollouts, Devices, int, str]:
    """A rollout of m/1 to 4 devices whose one canary device installed it (and, if given, had these counts
    of it) when the rollout began observing it."""
    _bundle(settings, "m", "1")
    devices, _ids = _fleet(settings, 4)
    rollouts = Rollouts(settings)
    rid = rollouts.start("m", "1", "field", "test", canary_percent=25, observe_seconds=3600)
    [canary] = _assigned(rollouts.status(rid))
    _installed(rollouts, devices, [canary], rid)
    if counts is not None:
        _counted(devices, canary, *counts)
    rollouts.advance()
    assert rollouts.status(rid)["state"] == "observing"
    return rollouts, devices, rid, canary


def _judged(rollouts: Rollouts, rid: int) -> dict:
    rollouts.advance()
    return rollouts.status(rid)


def test_the_failures_a_canary_counts_while_observed_halt_it(settings) -> None:
    rollouts, devices, rid, canary = _observing(settings, ("a", 0, 0))
    _counted(devices, canary, "a", 19, 19)
    assert _judged(rollouts, rid)["state"] == "observing", "fewer than 20 inferences say nothing yet"

    _counted(devices, canary, "a", 100, 30)
    status = _judged(rollouts, rid)
    assert status["state"] == "halted"
    assert status["reason"] == "canary: 30 of 100 inferences failed while observed (30%, more than 5%)"
    assert [e.kind for e in AuditLog(settings).history("m")][-1] == "rollout_halted"


def test_a_long_healthy_past_does_not_hide_failures_while_observed(settings) -> None:
    rollouts, devices, rid, canary = _observing(settings, ("a", 1_000_000, 0))  # it served this bundle before
    _counted(devices, canary, "a", 1_000_100, 30)
    assert _judged(rollouts, rid)["reason"] == "canary: 30 of 100 inferences failed while observed (30%, more than 5%)"


def test_failures_before_observing_began_are_not_judged(settings) -> None:
    rollouts, devices, rid, canary = _observing(settings, ("a", 100, 90))
    _counted(devices, canary, "a", 1100, 100)  # 10 failures in the 1000 inferences since: 1%
    assert _judged(rollouts, rid)["state"] == "observing"


def test_counts_that_started_again_are_judged_whole(settings) -> None:
    rollouts, devices, rid, canary = _observing(settings, ("a", 500, 0))
    _counted(devices, canary, "b", 40, 20)  # the agent restarted: its counts start again, all after observing began
    assert _judged(rollouts, rid)["reason"] == "canary: 20 of 40 inferences failed while observed (50%, more than 5%)"


def test_counts_of_another_bundle_say_nothing_about_this_one(settings) -> None:
    rollouts, devices, rid, canary = _observing(settings)
    _counted(devices, canary, "z", 100, 90, version="0")  # what it still counts of the bundle it ran before
    assert _judged(rollouts, rid)["state"] == "observing"


def test_failures_while_paused_still_count_after_resume(settings) -> None:
    rollouts, devices, rid, canary = _observing(settings, ("a", 0, 0))
    rollouts.pause(rid, "test")
    _counted(devices, canary, "a", 100, 30)
    rollouts.resume(rid, "test")
    assert _judged(rollouts, rid)["state"] == "halted"


def test_a_silent_device_times_out_as_a_failure(settings, monkeypatch) -> None:
    _bundle(settings, "m", "1")
    _fleet(settings, 2)
    quick = settings.model_copy(update={"rollout_install_timeout_seconds": 0.01})
    rollouts = Rollouts(quick)
    rid = rollouts.start("m", "1", "field", "test", canary_percent=50, observe_seconds=0)
    import time

    time.sleep(0.05)
    rollouts.advance()
    status = rollouts.status(rid)
    assert status["state"] == "halted" and status["devices"][0]["state"] == "timed_out"


def test_a_manual_deploy_waits_for_the_running_one_and_a_follower_supersedes_it(settings) -> None:
    for v in ("1", "2", "3"):
        _bundle(settings, "m", v)
    devices, ids = _fleet(settings, 5)
    rollouts = Rollouts(settings)
    rid = rollouts.start("m", "1", "field", "test", canary_percent=40, observe_seconds=0)
    with pytest.raises(ConflictError, match=f"rollout {rid} .* is in progress"):
        rollouts.start("m", "2", "field", "test")
    newer = rollouts.start("m", "2", "field", "fleet", kind="follow")
    assert rollouts.status(rid)["state"] == "superseded"
    assert rollouts.status(newer)["state"] == "canary"

    rollouts.pause(newer, "test")
    assert rollouts.advance() == []
    rollouts.resume(newer, "test")
    rollouts.abort(newer, "test", "changed my mind")
    status = rollouts.status(newer)
    assert status["state"] == "aborted" and status["reason"] == "changed my mind"
    assert all(devices.heartbeat(d, {}) is None for d in ids), "nothing ran before: nothing is desired again"


def test_enrollment_tokens_are_spent_and_decommissioned_devices_are_refused(settings) -> None:
    devices = Devices(settings)
    token = devices.create_token("field", {}, uses=1, hours=1, actor="test")
    enrolled = devices.enroll(token, "d1", {}, {}, "1.0.0")
    with pytest.raises(AuthError, match="used up"):
        devices.enroll(token, "d2", {}, {}, "1.0.0")
    assert devices.authenticate(enrolled.credential) == "d1"
    again = devices.create_token("field", {}, uses=1, hours=1, actor="test")
    with pytest.raises(ConflictError, match="enrolled already"):
        devices.enroll(again, "d1", {}, {}, "1.0.0")
    devices.decommission("d1", "test")
    assert devices.authenticate(enrolled.credential) is None
    expired = devices.create_token("field", {}, uses=1, hours=1e-9, actor="test")
    with pytest.raises(AuthError, match="expired"):
        devices.enroll(expired, "d3", {}, {}, "1.0.0")


def test_a_following_group_rolls_out_promotions_and_rollbacks(settings) -> None:
    from modelyard.platform.context import Platform
    from modelyard.platform.fleet.driver import FleetDriver
    from modelyard.platform.fleet.operations import set_follow

    for v in ("1", "2"):
        _bundle(settings, "m", v)
    audit = AuditLog(settings)
    audit.record(EventRecord("m", "alias_set", "test", "test", "champion", None, "1"))
    platform = Platform(settings)
    devices, _ids = _fleet(settings, 3)
    set_follow(platform, "field", "m", "test")
    driver = FleetDriver(platform)

    (first,) = driver.follow()
    assert driver.follow() == [], "one rollout per champion"
    Rollouts(settings).abort(first, "test", "x")  # leave it: the next champion starts afresh
    audit.record(EventRecord("m", "alias_set", "test", "test", "champion", "1", "2"))
    (second,) = driver.follow()
    assert Rollouts(settings).status(second)["kind"] == "follow"
    rollouts = Rollouts(settings.model_copy(update={"rollout_observe_seconds": 0}))
    _installed(rollouts, devices, _assigned(rollouts.status(second)), second)
    for _ in range(3):
        rollouts.advance()
    assert rollouts.status(second)["state"] in ("rolling", "observing", "completed")


def test_offline_devices_neither_hold_up_nor_fail_a_rollout_and_install_when_back(settings) -> None:
    _bundle(settings, "m", "1")
    devices, _ = _fleet(settings, 4)
    quiet = settings.model_copy(update={"device_offline_seconds": 0.05})
    rollouts = Rollouts(quiet)
    rid = rollouts.start("m", "1", "field", "test", canary_percent=25, observe_seconds=0)
    (canary,) = _assigned(rollouts.status(rid), "canary")
    import time

    time.sleep(0.1)  # every device is silent now; the canary speaks again
    _installed(rollouts, devices, [canary], rid)
    for _ in range(3):  # observing, rolling (the rest assigned, offline), completed
        rollouts.advance()
    status = rollouts.status(rid)
    assert status["state"] == "completed", status
    rest = [d for d in status["devices"] if d["phase"] == "rest"]
    assert {d["state"] for d in rest} == {"offline"} and len(rest) == 3
    late = rest[0]["device"]
    assert devices.heartbeat(late, {})["version"] == "1", "it still gets the bundle when it is back"
    rollouts.record_outcome(late, {"rollout_id": rid, "outcome": "installed"})
    assert {d["device"]: d["state"] for d in rollouts.status(rid)["devices"]}[late] == "installed"


def test_a_device_that_failed_is_told_to_stay_on_its_old_bundle_and_downgrades_are_marked(settings) -> None:
    for v in ("1", "2", "3"):
        _bundle(settings, "m", v)
    devices, ids = _fleet(settings, 3)
    rollouts = Rollouts(settings)
    first = rollouts.start("m", "2", "field", "test", canary_percent=100, observe_seconds=0)
    _installed(rollouts, devices, ids, first)
    for device_id in ids:
        devices.heartbeat(device_id, {"installed": {"model": "m", "version": "2", "sha256": f"{2:064x}"}})
    rollouts.advance(), rollouts.advance()

    later = rollouts.start("m", "3", "field", "test", canary_percent=100, observe_seconds=0, max_failure_share=0.5)
    _installed(rollouts, devices, ids[:1], later, outcome="failed")
    desired = devices.heartbeat(ids[0], {})
    assert (desired["version"], desired["rollback"]) == ("2", True), "no retry of the bundle that failed it"
    rollouts.abort(later, "test", "enough")
    for device_id in ids:
        devices.heartbeat(device_id, {"installed": {"model": "m", "version": "2", "sha256": f"{2:064x}"}})

    older = rollouts.start("m", "1", "field", "test", canary_percent=100, observe_seconds=0)
    for device_id in ids:  # every device runs v2: v1 is a downgrade each must accept
        assert devices.heartbeat(device_id, {})["rollback"] is True
    assert rollouts.status(older)["kind"] == "deploy"


def test_a_halt_with_nothing_to_go_back_to_says_which_devices_keep_the_bundle(settings) -> None:
    _bundle(settings, "m", "1")
    devices, ids = _fleet(settings, 2)
    rollouts = Rollouts(settings)
    rid = rollouts.start("m", "1", "field", "test", canary_percent=100, observe_seconds=0, max_failure_share=0.4)
    _installed(rollouts, devices, ids[:1], rid)
    _installed(rollouts, devices, ids[1:], rid, outcome="rolled_back")
    rollouts.advance()
    assert rollouts.status(rid)["state"] == "halted"
    halted = [e for e in AuditLog(settings).history("m") if e.kind == "rollout_halted"][-1]
    assert halted.evidence["kept_no_previous_bundle"] == [ids[0]]


def test_devices_enrolled_while_the_rest_was_assigned_get_the_bundle_at_completion(settings) -> None:
    _bundle(settings, "m", "1")
    devices, _ = _fleet(settings, 2)
    rollouts = Rollouts(settings)
    rid = rollouts.start("m", "1", "field", "test", canary_percent=50, observe_seconds=0)
    _installed(rollouts, devices, _assigned(rollouts.status(rid), "canary"), rid)
    rollouts.advance(), rollouts.advance()  # observing, then rolling: the other device is assigned
    token = devices.create_token("field", {}, uses=1, hours=1, actor="test")
    devices.enroll(token, "newcomer", {}, {}, "1.0.0")
    assert devices.heartbeat("newcomer", {}) is None, "the group runs nothing yet"
    _installed(rollouts, devices, _assigned(rollouts.status(rid), "rest"), rid)
    rollouts.advance()
    assert rollouts.status(rid)["state"] == "completed"
    assert devices.heartbeat("newcomer", {})["version"] == "1"
