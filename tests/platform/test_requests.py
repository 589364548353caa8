"""The request state machine on the real (SQLite) platform database: claims, leases, fencing."""

import datetime as dt
import threading
import time

import pytest

from modelyard.platform.store.requests import ClaimLost, RequestStore
from modelyard.platform.store.states import FINAL, TRANSITIONS, IllegalTransition, State, check


class Clock:
    """The store's time, moved by the test: a lease goes stale without anybody sleeping."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def stale_store(monkeypatch, seconds: str, clock: Clock | None = None) -> RequestStore:
    monkeypatch.setenv("MODELYARD_STALE_AFTER_SECONDS", seconds)
    from modelyard.platform.settings import Settings

    return RequestStore(Settings(), clock=clock or Clock())


def beat_of(store: RequestStore, request_id: str) -> dt.datetime | None:
    row = store.get(request_id)
    beat = row.heartbeat_at if row else None
    return beat.replace(tzinfo=dt.UTC) if beat is not None and beat.tzinfo is None else beat


def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    """Wait for the heartbeat thread (real time only bounds the wait; the store's time is the clock's)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_the_state_machine_has_one_table_and_final_states_end_it() -> None:
    assert set(TRANSITIONS) == set(State)
    for final in FINAL:
        assert TRANSITIONS[final] == frozenset()
    check(State.QUEUED, State.TRAINING)
    with pytest.raises(IllegalTransition):
        check(State.SUCCEEDED, State.QUEUED)
    with pytest.raises(IllegalTransition):
        check(State.TRAINED, State.TRAINING)  # a registered version is never trained again
    for state in State:  # every state is reachable from queued
        seen, frontier = {State.QUEUED}, [State.QUEUED]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert state in seen


def test_claims_and_stage_results(settings) -> None:
    store = RequestStore(settings)
    assert store.create("r1", "m", {"name": "m"}, "manual")
    assert not store.create("r1", "m", {"name": "m"}, "manual")

    claim = store.claim_training("r1", "w1")
    assert claim.state == "claimed" and claim.lease is not None and claim.lease.token == 1
    assert store.claim_training("r1", "w2").state == "busy"  # w1 is alive
    store.advance(claim.lease, State.REGISTERING)
    store.note(claim.lease, version="4")
    store.advance(claim.lease, State.TRAINED, result={"version": "4"})
    row = store.get("r1")
    assert row.status == "trained" and row.owner is None and row.version == "4"

    assert store.claim_training("r1", "w2").state == "done"  # trained: never trained twice
    export = store.claim_export("r1", "e1")
    assert export.state == "claimed" and export.lease.token == 2
    assert store.claim_export("r1", "e2").state == "busy"
    store.advance(export.lease, State.SUCCEEDED, result={"version": "4", "status": "promoted"})
    done = store.claim_training("r1", "w3")
    assert done.state == "done" and done.row.result["status"] == "promoted"
    assert store.claim_export("r1", "e3").state == "done"


def test_a_lost_claim_is_reported_never_silently_ignored(settings, monkeypatch) -> None:
    clock = Clock()
    store = stale_store(monkeypatch, "30", clock)
    store.create("r2", "m", {}, "manual")
    first = store.claim_training("r2", "w1").lease
    clock.advance(31)  # w1 froze past stale_after
    taken = store.claim_training("r2", "w2")
    assert taken.state == "claimed" and taken.row.owner == "w2" and taken.row.attempts == 2
    assert taken.took_over and taken.row.takeovers == 1  # w1 counts as dead
    assert taken.lease.token == first.token + 1

    for write in (
        lambda: store.advance(first, State.REGISTERING),
        lambda: store.note(first, version="9"),
        lambda: store.fail(first, "r2", "w1 gives up"),
        lambda: store.release(first, "transient", store.get("r2").updated_at),
        lambda: store.ensure(first),
    ):
        with pytest.raises(ClaimLost, match="lease 1 of w1 was taken over"):
            write()
    assert not store.beat(first)
    row = store.get("r2")
    assert (row.status, row.owner, row.version, row.error) == ("training", "w2", None, None)


def test_a_held_lease_refuses_a_transition_the_machine_lacks(settings) -> None:
    store = RequestStore(settings)
    store.create("r3", "m", {}, "manual")
    lease = store.claim_training("r3", "w1").lease
    with pytest.raises(IllegalTransition):
        store.advance(lease, State.SUCCEEDED)  # training cannot skip export
    assert store.get("r3").status == "training"


def test_heartbeat_keeps_a_claim_and_reports_its_loss(settings, monkeypatch) -> None:
    clock = Clock()
    store = stale_store(monkeypatch, "30", clock)
    store.create("r4", "m", {}, "manual")
    lease = store.claim_training("r4", "w1").lease
    with store.heartbeat(lease, every=0.02) as lost:
        for _ in range(4):  # four lease lengths pass; the heartbeat keeps the claim through each
            clock.advance(20)
            wait_for(lambda: beat_of(store, "r4") == clock.now, "a heartbeat at the new time")
            assert store.claim_training("r4", "w2").state == "busy"
        assert not lost.is_set()
    clock.advance(31)  # the holder stopped beating
    other = store.claim_training("r4", "w2").lease
    with store.heartbeat(lease, every=0.1) as lost:
        assert lost.wait(2), "the old holder's heartbeat never noticed the takeover"
    assert store.get("r4").lease == other.token


def test_concurrent_claims_give_one_lease(settings) -> None:
    store = RequestStore(settings)
    store.create("r5", "m", {}, "manual")
    results: list[str] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        results.append(store.claim_training("r5", f"w{i}").state)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["busy"] * 7 + ["claimed"]


def test_release_and_fail(settings) -> None:
    store = RequestStore(settings)
    store.create("r6", "m", {}, "manual")
    lease = store.claim_training("r6", "w1").lease
    store.release(lease, "MLflow is down", store.get("r6").updated_at)
    row = store.get("r6")
    assert (row.status, row.owner, row.error) == ("queued", None, "MLflow is down")
    again = store.claim_training("r6", "w1")  # a retry after a transient error: no worker died
    assert again.lease.token == lease.token + 1 and not again.took_over and again.row.takeovers == 0
    store.release(again.lease, "MLflow is down", store.get("r6").updated_at)
    assert store.fail(None, "r6", "bad dataset")  # a waiting request fails without a lease
    assert store.get("r6").status == "failed"
    assert store.claim_training("r6", "w2").state == "failed"
    assert not store.fail(None, "r6", "again")


def test_schema_head_constant_matches_the_migrations() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from modelyard.platform.store.db import MIGRATIONS, SCHEMA_HEAD

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


def test_a_stale_lease_is_republished_once_unless_the_broker_lost_it(settings, monkeypatch) -> None:
    import datetime as dt

    clock = Clock()
    store = stale_store(monkeypatch, "30", clock)
    store.create("r7", "m", {}, "manual")
    store.claim_training("r7", "w1")
    clock.advance(31)
    hour = dt.timedelta(hours=1)
    row = store.get("r7")
    assert store.take_republish(row, "epoch-a", hour)
    assert not store.take_republish(store.get("r7"), "epoch-a", hour)  # once per lease
    before = store.get("r7")
    assert store.take_republish(before, "epoch-b", hour)  # the broker restarted: it lost that one
    store.undo_republish(before)  # say the send failed: the reservation is given back
    assert store.take_republish(store.get("r7"), "epoch-b", hour)  # so the next pass sends it
    assert not store.take_republish(store.get("r7"), "epoch-b", hour)


def test_a_busy_answer_rearms_the_republish_of_its_lease(settings, monkeypatch) -> None:
    """The reconciler's one message for a lease, answered 'busy' by a live holder, is spent:
    if the holder dies later, the reconciler may send another."""
    import datetime as dt

    clock = Clock()
    store = stale_store(monkeypatch, "30", clock)
    store.create("r8", "m", {}, "manual")
    lease = store.claim_training("r8", "w1").lease
    clock.advance(31)  # the holder looks dead (a slow TensorFlow import, say) ...
    hour = dt.timedelta(hours=1)
    assert store.take_republish(store.get("r8"), "e", hour)
    assert store.beat(lease)  # ... but it was alive: the message finds it busy
    assert store.claim_training("r8", "w2").state == "busy"
    clock.advance(31)  # now it died
    assert store.take_republish(store.get("r8"), "e", hour)
    assert not store.take_republish(store.get("r8"), "e", hour)  # still one outstanding at most
