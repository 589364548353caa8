"""The rollout's transition rule (fleet/phases.py) on plain values: every transition and every halt
reason, no database, no clock, no sleeps.

The reasons are the sentences operators read in `modelyard rollouts` and the audit log; they are
checked word for word.
"""

from __future__ import annotations

import datetime as dt

from modelyard.platform.fleet import phases
from modelyard.platform.fleet.phases import (
    AssignRest,
    Complete,
    Counts,
    Halt,
    Observe,
    Policy,
    RolloutState,
    Row,
    TimeOut,
    canary_inferences,
    error_rate_trouble,
    step,
)

T0 = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
POLICY = Policy(observe_seconds=60, max_failure_share=0.2, install_timeout_seconds=300, max_error_rate=0.05)


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _rollout(state: str, phase_started: float = 0) -> RolloutState:
    return RolloutState(id=7, version="3", state=state, phase_started_at=_at(phase_started))


def _row(device: str, state: str, phase: str = "canary", reason: str | None = None, assigned: float = 0) -> Row:
    return Row(device, phase, state, _at(assigned), reason)


def _step(
    state: str,
    rows: list[Row],
    now: float = 10,
    observed: Counts = Counts(),
    others: tuple[str, ...] = (),
    policy: Policy = POLICY,
    phase_started: float = 0,
) -> phases.Step:
    return step(_rollout(state, phase_started), policy, rows, observed, others, _at(now))


# -- nothing due ---------------------------------------------------------------------------------------
def test_a_canary_still_installing_takes_no_step() -> None:
    done = _step("canary", [_row("a", "installed"), _row("b", "assigned")])
    assert done == phases.Step("canary", ()) and not done.moved


def test_an_observation_window_not_yet_over_takes_no_step() -> None:
    done = _step("observing", [_row("a", "installed")], now=59, others=("b",))
    assert done == phases.Step("observing", ())


def test_a_rest_still_installing_takes_no_step() -> None:
    rows = [_row("a", "installed"), _row("b", "assigned", "rest"), _row("c", "installed", "rest")]
    assert _step("rolling", rows) == phases.Step("rolling", ())


# -- canary -> observing --------------------------------------------------------------------------------
def test_a_settled_canary_starts_observing_with_a_summary() -> None:
    rows = [_row("a", "installed"), _row("b", "installed"), _row("c", "offline"), _row("z", "assigned", "rest")]
    done = _step("canary", rows)
    assert done.state == "observing" and done.moved
    assert done.actions == (Observe("rollout 7 of v3: canary installed (2 installed, 1 offline)"),)


def test_a_canary_of_no_devices_observes_nothing() -> None:
    done = _step("canary", [])
    assert done.actions == (Observe("rollout 7 of v3: canary installed (no devices)"),)


def test_failures_within_the_share_do_not_halt_the_canary() -> None:
    rows = [_row("a", "failed", reason="x")] + [_row(f"d{i}", "installed") for i in range(4)]  # 1 of 5: 20%
    assert _step("canary", rows).state == "observing"


# -- halts -------------------------------------------------------------------------------------------
def test_failures_past_the_share_halt_the_canary_naming_the_first() -> None:
    rows = [_row("a", "installed"), _row("b", "failed", reason="outputs differ"), _row("c", "refused", reason="old")]
    done = _step("canary", rows)
    assert done.state == "halted"
    assert done.actions == (Halt("2 of 3 canary devices failed (more than 20%); first: b: failed: outputs differ"),)


def test_a_failure_without_a_reason_says_so() -> None:
    done = _step("canary", [_row("a", "rolled_back")])
    assert done.actions == (Halt("1 of 1 canary devices failed (more than 20%); first: a: rolled_back: no reason"),)


def test_a_canary_that_settled_without_one_install_halts() -> None:
    done = _step("canary", [_row("a", "offline"), _row("b", "gone")])
    assert done == phases.Step("halted", (Halt("no canary device installed it (offline or gone)"),))


def test_a_local_rollback_in_the_canary_halts_it_while_observed() -> None:
    done = _step("observing", [_row("a", "rolled_back", reason="3 failed inferences")], others=("b",))
    assert done.actions == (
        Halt("1 of 1 canary devices failed (more than 20%); first: a: rolled_back: 3 failed inferences"),
    )


def test_failures_of_the_rest_halt_a_rolling_rollout() -> None:
    rows = [_row("a", "installed"), _row("b", "failed", "rest", "disk full"), _row("c", "installed", "rest")]
    done = _step("rolling", rows)
    assert done.actions == (Halt("1 of 2 rest devices failed (more than 20%); first: b: failed: disk full"),)


def test_the_canary_s_failures_do_not_count_against_the_rest() -> None:
    canary = [_row("a", "failed", reason="x"), *(_row(f"c{i}", "installed") for i in range(4))]  # 1 of 5: 20%
    rest = [_row("b", "failed", "rest", "disk full"), *(_row(f"r{i}", "installed", "rest") for i in range(4))]
    assert _step("rolling", canary + rest).actions == (Complete("rollout 7 of v3: done (2 failed, 8 installed)"),)


# -- the canary after its window: probation outlasts the window, a late rollback still halts -------------
LATE_ROLLBACK = Halt("1 of 1 canary devices failed (more than 20%); first: a: rolled_back: 3 failed inferences")


def test_a_canary_s_late_local_rollback_halts_a_rolling_rollout() -> None:
    rows = [_row("a", "rolled_back", reason="3 failed inferences"), _row("b", "assigned", "rest", assigned=70)]
    assert _step("rolling", rows, now=100) == phases.Step("halted", (LATE_ROLLBACK,))


def test_a_canary_s_late_local_rollback_halts_instead_of_completing() -> None:
    rows = [_row("a", "rolled_back", reason="3 failed inferences"), _row("b", "installed", "rest", assigned=70)]
    assert _step("rolling", rows, now=200) == phases.Step("halted", (LATE_ROLLBACK,))


def test_a_canary_device_s_late_failed_install_halts_a_rolling_rollout() -> None:
    # offline when the canary was assigned, it came back after the window and failed the install
    rows = [_row("a", "installed"), _row("b", "failed", reason="outputs differ"), _row("c", "installed", "rest")]
    assert _step("rolling", rows).actions == (
        Halt("1 of 2 canary devices failed (more than 20%); first: b: failed: outputs differ"),
    )


def test_a_late_canary_failure_within_the_share_does_not_halt() -> None:
    rows = [_row("a", "rolled_back", reason="x"), *(_row(f"c{i}", "installed") for i in range(4))]  # 1 of 5
    assert _step("rolling", [*rows, _row("b", "installed", "rest")]).state == "completed"
    assert _step("rolling", [*rows, _row("b", "assigned", "rest")]).actions == ()


def test_the_canary_is_judged_before_the_rest_while_rolling() -> None:
    rows = [_row("a", "rolled_back", reason="3 failed inferences"), _row("b", "failed", "rest", "disk full")]
    assert _step("rolling", rows).actions == (LATE_ROLLBACK,)


def test_a_time_out_in_the_canary_while_rolling_halts_it() -> None:
    rows = [_row("a", "assigned", assigned=0), _row("b", "installed", "rest", assigned=70)]
    done = _step("rolling", rows, now=301)
    assert done.actions == (
        TimeOut(("a",), "no outcome reported within 300 s"),
        Halt("1 of 1 canary devices failed (more than 20%); first: a: timed_out: no outcome reported within 300 s"),
    )


def test_a_rollout_does_not_complete_while_a_canary_device_is_unsettled() -> None:
    rows = [_row("a", "assigned"), _row("b", "installed", "rest")]
    assert _step("rolling", rows, now=100) == phases.Step("rolling", ())


def test_the_canary_s_error_rate_halts_it_while_observed() -> None:
    done = _step("observing", [_row("a", "installed")], observed=Counts(100, 30), others=("b",))
    assert done == phases.Step(
        "halted", (Halt("canary: 30 of 100 inferences failed while observed (30%, more than 5%)"),)
    )


def test_the_error_rate_is_judged_before_the_window_ends() -> None:
    done = _step("observing", [_row("a", "installed")], now=3600, observed=Counts(40, 20), others=("b",))
    assert done.actions == (Halt("canary: 20 of 40 inferences failed while observed (50%, more than 5%)"),)


def test_too_few_inferences_say_nothing_about_an_error_rate() -> None:
    assert _step("observing", [_row("a", "installed")], observed=Counts(19, 19)).actions == ()
    assert error_rate_trouble(Counts(19, 19), POLICY) is None
    assert error_rate_trouble(Counts(20, 20), POLICY) == (
        "canary: 20 of 20 inferences failed while observed (100%, more than 5%)"
    )


def test_an_error_rate_at_the_limit_does_not_halt() -> None:
    assert error_rate_trouble(Counts(100, 5), POLICY) is None
    assert error_rate_trouble(Counts(100, 6), POLICY) is not None
    lenient = Policy(60, 0.2, 300, max_error_rate=0.5, min_error_rows=5)
    assert error_rate_trouble(Counts(5, 2), lenient) is None and error_rate_trouble(Counts(5, 3), lenient)


def test_the_error_rate_is_only_judged_while_observing() -> None:
    rows = [_row("a", "installed"), _row("b", "assigned", "rest")]
    assert _step("rolling", rows, observed=Counts(100, 100)).actions == ()


# -- time-outs -------------------------------------------------------------------------------------------
def test_a_silent_device_times_out_and_counts_as_a_failure() -> None:
    rows = [_row("a", "assigned", assigned=0), _row("b", "installed")]
    done = _step("canary", rows, now=301)
    assert done.state == "halted"
    assert done.actions == (
        TimeOut(("a",), "no outcome reported within 300 s"),
        Halt("1 of 2 canary devices failed (more than 20%); first: a: timed_out: no outcome reported within 300 s"),
    )


def test_a_device_is_not_late_at_the_limit_itself() -> None:
    assert _step("canary", [_row("a", "assigned", assigned=0)], now=300).actions == ()


def test_a_time_out_within_the_share_is_a_step_of_its_own() -> None:
    rows = [_row("a", "assigned"), *(_row(f"d{i}", "installed") for i in range(4)), _row("e", "assigned", assigned=250)]
    done = _step("canary", rows, now=301)
    assert done == phases.Step("canary", (TimeOut(("a",), "no outcome reported within 300 s"),)) and done.moved


def test_a_time_out_that_settles_the_canary_also_moves_it_on() -> None:
    rows = [_row("a", "assigned"), *(_row(f"d{i}", "installed") for i in range(4))]
    done = _step("canary", rows, now=301)
    assert done.state == "observing"
    assert done.actions == (
        TimeOut(("a",), "no outcome reported within 300 s"),
        Observe("rollout 7 of v3: canary installed (4 installed, 1 timed_out)"),
    )


def test_time_outs_are_for_assigned_rows_only() -> None:
    rows = [_row("a", "offline"), _row("b", "installed"), _row("c", "assigned", "rest")]
    done = _step("rolling", rows, now=1000)
    assert done.actions == (
        TimeOut(("c",), "no outcome reported within 300 s"),
        Halt("1 of 1 rest devices failed (more than 20%); first: c: timed_out: no outcome reported within 300 s"),
    )


# -- observing -> rolling -> completed ----------------------------------------------------------------
def test_a_quiet_window_assigns_the_rest() -> None:
    done = _step("observing", [_row("a", "installed")], now=60, others=("b", "c"), observed=Counts(1000, 50))
    assert done == phases.Step(
        "rolling", (AssignRest(("b", "c"), "observed 60 s without trouble; assigned to the other 2 devices"),)
    )


def test_the_window_counts_from_when_observing_began() -> None:
    assert _step("observing", [_row("a", "installed")], now=100, phase_started=50, others=("b",)).actions == ()
    assert _step("observing", [_row("a", "installed")], now=110, phase_started=50, others=("b",)).state == "rolling"


def test_with_no_other_device_the_rollout_completes_at_once() -> None:
    policy = Policy(0, 0.2, 300, 0.05)
    done = _step("observing", [_row("a", "installed")], now=0, policy=policy)
    assert done == phases.Step(
        "completed",
        (AssignRest((), "observed 0 s without trouble; assigned to the other 0 devices"), Complete("no other devices")),
    )


def test_a_settled_rest_completes_the_rollout_with_every_row_counted() -> None:
    rows = [
        _row("a", "installed"),
        _row("b", "installed", "rest"),
        _row("c", "offline", "rest"),
        _row("d", "gone", "rest"),
    ]
    done = _step("rolling", rows)
    assert done == phases.Step("completed", (Complete("rollout 7 of v3: done (1 gone, 2 installed, 1 offline)"),))


# -- the canary's counts -----------------------------------------------------------------------------
def test_counts_since_observing_began_subtract_what_was_counted_then() -> None:
    then = {"since": "a", "total": 1_000_000, "failed": 0}
    now = {"since": "a", "total": 1_000_100, "failed": 30}
    assert canary_inferences([(then, now)]) == Counts(100, 30)


def test_counts_that_started_again_are_taken_whole() -> None:
    assert canary_inferences(
        [({"since": "a", "total": 500, "failed": 0}, {"since": "b", "total": 40, "failed": 20})]
    ) == (Counts(40, 20))
    assert canary_inferences([(None, {"since": "a", "total": 40, "failed": 2})]) == Counts(40, 2)
    assert canary_inferences([({}, {"since": None, "total": 40, "failed": 2})]) == Counts(40, 2)


def test_devices_without_counts_of_the_bundle_add_nothing_and_counts_never_go_negative() -> None:
    rows = [
        ({"since": "a", "total": 10, "failed": 1}, None),
        ({"since": "a", "total": 50, "failed": 9}, {"since": "a", "total": 40, "failed": 2}),
        (None, {"since": "b", "total": 7, "failed": None}),
    ]
    assert canary_inferences(rows) == Counts(7, 0)


def test_the_rule_leaves_its_inputs_alone() -> None:
    rows = (_row("a", "assigned"), _row("b", "installed"))
    before = list(rows)
    first = _step("canary", list(rows), now=301)
    assert list(rows) == before and _step("canary", list(rows), now=301) == first
