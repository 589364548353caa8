"""The install state machine: switch, no-op, older refused, smoke failure, resume, local rollback."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from modelyard.bundle import RuntimeSupport
from modelyard.edge import state as st
from modelyard.edge.agent import Agent
from modelyard.edge.config import Options
from modelyard.edge.errors import InferenceError
from modelyard.edge.install import copy_fetch
from modelyard.edge.runtime import LoadedModel
from modelyard.edge.slots import Slots
from modelyard.exporters.bundle import BuiltBundle, build_bundle
from tests.edge.conftest import INPUTS, NEEDS, OUTPUTS, BuildFn, desired_for, fragile_bundle, installer, smoke_rows


def test_v2_installs_into_the_other_slot_and_keeps_v1_for_rollback(
    home: Path, v1: BuiltBundle, v2: BuiltBundle
) -> None:
    installer(home, v1.path).install(desired_for(v1))

    outcome = installer(home, v2.path).install(desired_for(v2, rollout_id=7))

    slots = Slots(home)
    assert outcome.outcome == "installed" and outcome.reason == ""
    assert slots.active_info()["slot"] == "b" and slots.active_info()["previous"]["sha256"] == v1.sha256
    assert (slots.path("a") / "model.onnx").exists()  # v1 untouched
    state = st.StateStore(home).load()
    assert state.state == st.PROBATION  # real inferences (or quiet time) commit it: test_probation.py
    assert state.pending_report == {
        "rollout_id": 7, "model": "tiny", "version": "2", "sha256": v2.sha256, "outcome": "installed",
        "stage": "switch", "reason": "", "seconds": outcome.seconds,
    }  # fmt: skip
    assert not list((home / "downloads").iterdir())


def test_the_installed_bundle_again_is_a_no_op(home: Path, v1: BuiltBundle) -> None:
    installer(home, v1.path).install(desired_for(v1))
    assert installer(home, v1.path).install(desired_for(v1)) is None


def test_an_older_version_is_refused_unless_marked_rollback(home: Path, v1: BuiltBundle, v2: BuiltBundle) -> None:
    installer(home, v2.path).install(desired_for(v2))

    refused = installer(home, v1.path).install(desired_for(v1))
    assert (refused.outcome, refused.stage) == ("refused", "verify")
    assert refused.reason == (
        "bundle tiny/1 (edge-cpu) is older than the installed version 2 and the control plane did not mark it "
        "as a rollback."
    )
    assert Slots(home).active_info()["version"] == "2"

    rolled = installer(home, v1.path).install(desired_for(v1, rollback=True))
    assert rolled.outcome == "installed" and Slots(home).active_info()["version"] == "1"


def test_a_failed_smoke_test_leaves_the_old_slot_serving(
    home: Path, v1: BuiltBundle, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    installer(home, v1.path).install(desired_for(v1))
    from tests.edge.conftest import make_onnx

    wrong = {"probabilities": np.full((8, 3), 0.5, dtype=np.float32)}
    bad = build_bundle(
        make_onnx(tmp_path / "m.onnx", seed=3), tmp_path / "out", model="tiny", version="3", variant="fp32",
        target="edge-cpu", inputs=INPUTS, outputs=OUTPUTS, runtime_needs=NEEDS, smoke_inputs=smoke_rows(),
        private_key=keys[0], expected_override=wrong,
    )  # fmt: skip

    outcome = installer(home, bad.path).install(desired_for(bad))

    assert (outcome.outcome, outcome.stage) == ("failed", "smoke")
    assert outcome.reason.startswith("bundle tiny/3 (edge-cpu): smoke output 'probabilities' differs from the expected")
    assert Slots(home).active_info()["sha256"] == v1.sha256
    # The same desired entry is not retried in a loop.
    assert installer(home, bad.path).install(desired_for(bad)) is None


def test_a_latency_budget_the_device_misses_fails_at_smoke(home: Path, build: BuildFn) -> None:
    slow = build("4", seed=4, max_latency_ms=1e-6)
    outcome = installer(home, slow.path).install(desired_for(slow))
    assert (outcome.outcome, outcome.stage) == ("failed", "smoke")
    assert "exceeds the 1e-06 ms budget" in outcome.reason
    assert Slots(home).active() is None


def test_a_bundle_needing_a_newer_opset_is_refused(home: Path, v1: BuiltBundle) -> None:
    old_runtime = RuntimeSupport("1.14.0", 16, {"ai.onnx": 16})
    outcome = installer(home, v1.path, support=old_runtime).install(desired_for(v1))
    assert (outcome.outcome, outcome.stage) == ("refused", "verify")
    assert outcome.reason == (
        "bundle tiny/1 (edge-cpu) needs ai.onnx opset 17, but onnxruntime 1.14.0 on this device implements opset 16 "
        "at most."
    )


@pytest.mark.parametrize("interrupted", [st.DOWNLOADING, st.VERIFYING, st.INSTALLING, st.SMOKE, st.SWITCHING])
def test_an_install_interrupted_in_any_state_resumes_there(
    interrupted: str, home: Path, v1: BuiltBundle, v2: BuiltBundle
) -> None:
    installer(home, v1.path).install(desired_for(v1))
    desired = desired_for(v2)
    # What a SIGKILL during `interrupted` leaves on disk: the state entered, the tar downloaded after the download.
    store = st.StateStore(home)
    state = store.load()
    state.desired, state.slot, state.state = desired, "b", interrupted
    store.save(state)
    if interrupted != st.DOWNLOADING:
        copy_fetch(v2.path)(desired, home / "downloads" / f"{v2.sha256}.tar")
    if interrupted == st.SWITCHING:
        installer(home, v2.path).slots.install(_staged(home, v2), "b")

    # Past the download nothing is fetched again: a fetch from nowhere would fail.
    fetch_from = v2.path if interrupted == st.DOWNLOADING else Path("/nonexistent")
    outcome = installer(home, fetch_from).install(desired)

    assert outcome.outcome == "installed"
    assert Slots(home).active_info()["sha256"] == v2.sha256


def _staged(home: Path, bundle: BuiltBundle) -> Path:
    from modelyard.edge.archive import verify_bundle
    from tests.edge.conftest import SUPPORT

    staging = home / "manual-staging"
    verify_bundle(bundle.path, staging, home / "trust.pem", label="b", support=SUPPORT, agent_version="1.0.0")
    return staging


def test_first_inferences_failing_after_the_switch_roll_back_locally(
    home: Path, v1: BuiltBundle, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    agent = Agent(home)
    agent.installer.fetch = copy_fetch(v1.path)
    agent.installer.install(desired_for(v1))
    fragile = fragile_bundle(tmp_path, keys[0])  # passes its 8-row smoke test, fails on any other batch size
    agent.installer.fetch = copy_fetch(fragile.path)

    outcome = agent.installer.install(desired_for(fragile, failed_inference_limit=3))
    assert outcome.outcome == "installed" and agent.current_manifest().version == "9"
    for _ in range(3):
        with pytest.raises(InferenceError, match=r"model tiny/9 \(edge-cpu\) failed to run"):
            agent.predict(smoke_rows(2))

    state = st.StateStore(home).load()
    assert state.state == st.ROLLED_BACK
    assert state.pending_report["outcome"] == "rolled_back" and state.pending_report["stage"] == "serve"
    assert "failed its first 3 inferences after the switch" in state.pending_report["reason"]
    assert agent.current_manifest().version == "1"
    assert agent.predict(smoke_rows(2))["probabilities"].shape == (2, 3)
    # The bad bundle is remembered: the same desired entry does not install again.
    assert agent.installer.install(desired_for(fragile, failed_inference_limit=3)) is None


def test_the_heartbeat_counts_every_inference_and_starts_again_with_each_loaded_bundle(
    home: Path, v1: BuiltBundle, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    def counted() -> dict:
        return agent.heartbeat_body()["inferences"]

    def without_since(counts: dict) -> dict:
        return {k: v for k, v in counts.items() if k != "since"}

    agent = Agent(home)
    agent.buffer.sample_rate = 0.0  # telemetry samples successes; the counts take every inference
    assert counted() is None
    agent.installer.fetch = copy_fetch(v1.path)
    agent.installer.install(desired_for(v1))
    agent.predict(smoke_rows(3))
    on_v1 = counted()
    assert without_since(on_v1) == {"model": "tiny", "version": "1", "total": 3, "failed": 0}
    switched_out = SimpleNamespace(manifest=SimpleNamespace(model="tiny", version="0"))
    agent._after(switched_out, smoke_rows(2), None, time.perf_counter(), "boom")  # type: ignore[arg-type]
    assert counted() == on_v1, "a request that began on a bundle switched out since is not this one's"

    fragile = fragile_bundle(tmp_path, keys[0])
    agent.installer.fetch = copy_fetch(fragile.path)
    agent.installer.install(desired_for(fragile, failed_inference_limit=3))
    for _ in range(2):
        with pytest.raises(InferenceError):
            agent.predict(smoke_rows(2))
    on_v9 = counted()
    assert without_since(on_v9) == {"model": "tiny", "version": "9", "total": 4, "failed": 4}
    with pytest.raises(InferenceError):
        agent.predict(smoke_rows(2))  # the third failure: rolled back locally to v1, counted from zero again
    back = counted()
    assert without_since(back) == {"model": "tiny", "version": "1", "total": 0, "failed": 0}
    assert len({on_v1["since"], on_v9["since"], back["since"]}) == 3


def test_good_inferences_commit_the_probation_once_there_are_enough(home: Path, v1: BuiltBundle) -> None:
    agent = Agent(home, Options(probation_successes=3))
    agent.installer.fetch = copy_fetch(v1.path)
    agent.installer.install(desired_for(v1, failed_inference_limit=3))
    assert st.StateStore(home).load().state == st.PROBATION

    for _ in range(2):
        agent.predict(smoke_rows(1))
    assert st.StateStore(home).load().state == st.PROBATION, "one good inference is not enough any more"
    agent.predict(smoke_rows(1))

    assert st.StateStore(home).load().state == st.COMMITTED
    assert not (home / "probation.json").exists()


def test_a_new_install_ends_the_probation_of_the_last_one(home: Path, v1: BuiltBundle, v2: BuiltBundle) -> None:
    installer(home, v1.path).install(desired_for(v1, failed_inference_limit=3))

    outcome = installer(home, v2.path).install(desired_for(v2, failed_inference_limit=3))

    assert outcome.outcome == "installed"
    assert Slots(home).active_info()["previous"]["sha256"] == v1.sha256


def test_the_state_file_is_written_before_each_step(home: Path, v1: BuiltBundle) -> None:
    seen: list[str] = []
    inst = installer(home, v1.path)
    original = inst.store.save

    def spy(state: st.InstallState) -> None:
        original(state)
        seen.append(json.loads(inst.store.path.read_text())["state"])

    inst.store.save = spy  # type: ignore[method-assign]
    inst.install(desired_for(v1))

    assert seen == [st.DOWNLOADING, st.VERIFYING, st.INSTALLING, st.SMOKE, st.SWITCHING, st.PROBATION]
    assert LoadedModel(Slots(home).path("a")).manifest.version == "1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sha256", "../../.."),
        ("sha256", "A" * 64),
        ("url", "https://elsewhere.example/v1/bundles/tiny/1/edge-cpu"),
        ("url", "/v1/bundles/../devices/x"),
        ("url", "/v2/models/tiny"),
        ("size", 0),
        ("size", "12"),
        ("version", "1; rm"),
        ("version", 1),
        ("rollout_id", "7"),
        ("rollback", "yes"),
    ],
)
def test_a_malformed_desired_entry_is_refused_once_before_any_use(
    home: Path, v1: BuiltBundle, field: str, value: object
) -> None:
    fetched: list[object] = []
    inst = installer(home, v1.path)
    inst.fetch = lambda desired, dest: fetched.append(desired)
    desired = desired_for(v1, **{"rollout_id": 3, field: value})

    outcome = inst.install(desired)

    assert outcome is not None and (outcome.outcome, outcome.stage) == ("refused", "verify")
    assert f"{field} " in outcome.reason and fetched == [] and not (home / "downloads").exists()
    state = st.StateStore(home).load()
    report = state.pending_report
    if field == "version":  # nothing to file the report under: the log says it
        assert report is None
    else:
        assert report is not None and (report["outcome"], report["model"], report["version"]) == (
            "refused",
            "tiny",
            "1",
        )
        assert report["rollout_id"] == (3 if field != "rollout_id" else None)
    assert state.state == st.IDLE
    state.pending_report = None
    st.StateStore(home).save(state)
    assert inst.install(desired) is None  # not refused (nor reported) again every heartbeat
    assert st.StateStore(home).load().pending_report is None


def test_a_report_reason_is_cut_to_what_the_control_plane_takes() -> None:
    from modelyard.edge.install import Outcome, report_body

    body = report_body({"model": "tiny", "version": "1"}, Outcome("failed", "smoke", "x" * 10_000, 1.0))
    assert len(body["reason"]) == 2000
