"""Probation: a switched bundle is committed by real inferences or quiet time, and rolled back by failures.

Issue 18, item 7: the same desired entry re-sent by each heartbeat committed a bundle on probation, and
inferences answered while an install held the lock were not counted, so a bundle that passed its smoke
test but failed every real inference stayed.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from modelyard.edge import probation as pb
from modelyard.edge import state as st
from modelyard.edge.agent import Agent
from modelyard.edge.config import Options
from modelyard.edge.errors import InferenceError
from modelyard.edge.install import copy_fetch
from modelyard.exporters.bundle import BuiltBundle
from tests.edge.conftest import BuildFn, desired_for, smoke_rows


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _agent_on_probation(
    home: Path, v1: BuiltBundle, v9: BuiltBundle, options: Options, clock: Clock | None = None, **entry: object
) -> Agent:
    """v1 committed, then v9 (which fails every batch but its smoke test's 8 rows) switched in, on probation."""
    agent = Agent(home, options)
    if clock is not None:
        agent.installer.probation.clock = clock
    agent.installer.fetch = copy_fetch(v1.path)
    agent.installer.install(desired_for(v1))
    agent.installer.settle(ending=True)
    assert agent.installer.store.load().state == st.COMMITTED
    agent.installer.fetch = copy_fetch(v9.path)
    outcome = agent.installer.install(desired_for(v9, **entry))
    assert outcome is not None and outcome.outcome == "installed" and agent.current_manifest().version == "9"
    state = agent.installer.store.load()
    state.pending_report, state.unsent_reports = None, []  # what the control plane has had
    agent.installer.store.save(state)
    return agent


def test_the_same_entry_resent_by_every_heartbeat_leaves_the_probation_alone(
    home: Path, v1: BuiltBundle, v9: BuiltBundle
) -> None:
    agent = _agent_on_probation(home, v1, v9, Options(), rollout_id=5, failed_inference_limit=5)
    for _ in range(10):  # what ten heartbeats hand the install worker
        assert agent.installer.install(desired_for(v9, rollout_id=5, failed_inference_limit=5)) is None
    assert agent.installer.install(desired_for(v9, rollout_id=None)) is None  # the rollout completed meanwhile
    assert agent.installer.store.load().state == st.PROBATION

    for _ in range(3):  # Options().probation_max_failures, lower than the control plane's 5
        with pytest.raises(InferenceError):
            agent.predict(smoke_rows(2))

    state = agent.installer.store.load()
    assert state.state == st.ROLLED_BACK and agent.current_manifest().version == "1"
    report = state.pending_report
    assert report is not None
    assert (report["outcome"], report["stage"], report["rollout_id"], report["version"]) == (
        "rolled_back",
        "serve",
        5,
        "9",
    )
    assert report["reason"].startswith("bundle tiny/9 (edge-cpu) failed its first 3 inferences after the switch")
    assert agent.predict(smoke_rows(2))["probabilities"].shape == (2, 3)


def test_inferences_are_counted_while_an_install_holds_the_lock(home: Path, v1: BuiltBundle, v9: BuiltBundle) -> None:
    agent = _agent_on_probation(home, v1, v9, Options(probation_max_failures=2))
    held, release = threading.Event(), threading.Event()

    def install_in_progress() -> None:  # what a long download does to the lock
        with agent.installer.lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=install_in_progress)
    holder.start()
    held.wait(30)
    try:
        for _ in range(2):
            with pytest.raises(InferenceError):
                agent.predict(smoke_rows(2))
        assert agent.installer.probation.due() == pb.ROLLBACK, "both failures counted despite the lock"
    finally:
        release.set()
        holder.join(30)

    # The worker's next pass (the heartbeat re-sends the entry) carries the verdict out.
    outcome = agent.installer.install(desired_for(v9))
    assert outcome is not None and outcome.outcome == "rolled_back"
    assert agent.installer.store.load().state == st.ROLLED_BACK and agent.current_manifest().version == "1"


def test_quiet_time_commits_and_a_failure_starts_the_quiet_time_again(
    home: Path, v1: BuiltBundle, v9: BuiltBundle
) -> None:
    clock = Clock()
    agent = _agent_on_probation(home, v1, v9, Options(probation_seconds=300, probation_max_failures=3), clock)

    clock.now += 200
    with pytest.raises(InferenceError):
        agent.predict(smoke_rows(2))
    agent.predict(smoke_rows(8))  # v9 runs batches of 8
    clock.now += 200  # 400 s since the switch, 200 since the failure
    assert agent.installer.tick() is None  # the poll loop's, every heartbeat
    assert agent.installer.store.load().state == st.PROBATION
    clock.now += 101
    assert agent.installer.tick() is None

    assert agent.installer.store.load().state == st.COMMITTED and agent.current_manifest().version == "9"
    assert not (home / "probation.json").exists()


def test_a_new_bundle_wanted_during_probation_first_rolls_back_one_that_failed_enough(
    home: Path, v1: BuiltBundle, v9: BuiltBundle, build: BuildFn
) -> None:
    agent = _agent_on_probation(home, v1, v9, Options(probation_max_failures=1), rollout_id=5)
    held, release = threading.Event(), threading.Event()

    def install_in_progress() -> None:
        with agent.installer.lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=install_in_progress)
    holder.start()
    held.wait(30)
    with pytest.raises(InferenceError):
        agent.predict(smoke_rows(2))  # the verdict waits for the lock
    release.set()
    holder.join(30)
    v10 = build("10", seed=10)
    agent.installer.fetch = copy_fetch(v10.path)

    first = agent.installer.install(desired_for(v10, rollout_id=6))

    assert first is not None and first.outcome == "rolled_back" and agent.current_manifest().version == "1"
    assert agent.installer.store.load().pending_report["rollout_id"] == 5  # filed under v9's rollout
    second = agent.installer.install(desired_for(v10, rollout_id=6))  # the next heartbeat's
    assert second is not None and second.outcome == "installed"
    state = agent.installer.store.load()
    assert [r["outcome"] for r in [*state.unsent_reports, state.pending_report]] == ["rolled_back", "installed"]
    assert agent.installer.slots.active_info()["previous"]["version"] == "1"


def test_an_entry_refused_during_probation_leaves_it_running_and_its_report_in_line(
    home: Path, v1: BuiltBundle, v9: BuiltBundle
) -> None:
    agent = _agent_on_probation(home, v1, v9, Options(probation_max_failures=1), rollout_id=5)

    refused = agent.installer.install(desired_for(v1, rollout_id=6))  # older, not marked a rollback
    assert refused is not None and refused.outcome == "refused"
    assert agent.installer.store.load().state == st.PROBATION
    with pytest.raises(InferenceError):
        agent.predict(smoke_rows(2))

    state = agent.installer.store.load()
    assert state.state == st.ROLLED_BACK
    sent = [(r["outcome"], r["rollout_id"]) for r in [*state.unsent_reports, state.pending_report]]
    assert sent == [("refused", 6), ("rolled_back", 5)]


@pytest.mark.parametrize(
    ("successes", "failures", "quiet", "expected"),
    [
        (19, 0, 299.0, None),
        (20, 0, 0.0, pb.COMMIT),
        (0, 0, 300.0, pb.COMMIT),
        (19, 2, 299.0, None),
        (25, 3, 0.0, pb.ROLLBACK),  # failures are judged first: enough of them roll back whatever succeeded
        (0, 3, 1000.0, pb.ROLLBACK),
    ],
)
def test_the_verdict(successes: int, failures: int, quiet: float, expected: str | None) -> None:
    record = pb.Record(desired={}, started=0.0, quiet_since=0.0, max_failures=3, successes=successes, failures=failures)
    assert pb.verdict(record, pb.Rules(successes=20, quiet_seconds=300.0, max_failures=3), quiet) == expected


def test_the_control_plane_can_only_make_the_failure_limit_stricter() -> None:
    rules = pb.Rules(max_failures=3)
    assert pb.failure_limit(rules, 5) == 3
    assert pb.failure_limit(rules, 1) == 1
    assert pb.failure_limit(rules, 0) == 3 and pb.failure_limit(rules, None) == 3 and pb.failure_limit(rules, True) == 3
