"""The install pipeline: one method per state of state.py, run in order, resumable.

Nothing here touches the serving slot until `switching`, and a failure before it leaves the
device serving what it served. The download itself is a callable (client.py in the agent, a
file copy in tests) so the pipeline runs without a control plane. After the switch the bundle
is on probation (probation.py) until real inferences commit it or send it back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.bundle import RuntimeSupport, check_desired, sha256_file
from modelyard.edge import probation as pb
from modelyard.edge import state as st
from modelyard.edge.archive import Limits, verify_bundle
from modelyard.edge.errors import BundleRefused, DownloadError, EdgeError
from modelyard.edge.runtime import LoadedModel, local_support
from modelyard.edge.slots import Slots
from modelyard.edge.version import AGENT_VERSION

log = logging.getLogger("modelyard.edge")

Fetch = Callable[[dict[str, Any], Path], None]
# A desired entry that failed is tried again after this long, even unchanged (a transient disk fault, a fixed
# clock); a failed download sooner, since networks fail and come back (it resumes from its .part file).
RETRY_FAILED_AFTER_S = 6 * 3600.0
RETRY_DOWNLOAD_AFTER_S = 300.0
# The control plane caps a report's reason at 4000 characters; a longer one would be refused (422) forever.
MAX_REASON = 2000


@dataclass(frozen=True)
class Outcome:
    outcome: str  # installed | failed | refused | rolled_back
    stage: str
    reason: str
    seconds: float


def entry_key(desired: dict[str, Any]) -> str:
    """What makes a desired entry "different": a new rollout or a rollback of the same bundle is tried again."""
    return f"{desired.get('sha256')}:{desired.get('rollout_id')}:{bool(desired.get('rollback'))}"


def describe(desired: dict[str, Any]) -> str:
    return f"bundle {desired.get('model')}/{desired.get('version')} ({desired.get('target', '?')})"


class Installer:
    def __init__(
        self,
        home: Path,
        *,
        fetch: Fetch,
        public_key: Path | None = None,
        limits: Limits | None = None,
        support: RuntimeSupport | None = None,
        on_switch: Callable[[], None] | None = None,
        probation: pb.Rules | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.home = home
        self.fetch = fetch
        self.public_key = public_key or home / "trust.pem"
        self.limits = limits or Limits()
        self.support = support or local_support()
        self.slots = Slots(home)
        self.store = st.StateStore(home)
        # Called after the pointer moved, so the server loads the new slot (agent.py reloads its model).
        self.on_switch = on_switch or (lambda: None)
        # Held for a whole install (a download can take minutes): inferences never wait on it.
        self.lock = threading.RLock()
        self.probation = pb.Probation(home / "probation.json", probation or pb.Rules(), clock)
        # Killed between writing the two files: install.json says where the bundle stands.
        state = self.store.load()
        if state.state == st.PROBATION and not self.probation.active:
            self._begin_probation(state.desired or {})
        elif state.state != st.PROBATION and self.probation.active:
            self.probation.end()

    def tar_path(self, desired: dict[str, Any]) -> Path:
        return self.home / "downloads" / f"{desired['sha256']}.tar"

    def skip_reason(self, desired: dict[str, Any], state: st.InstallState) -> str | None:
        """Why `desired` needs no install attempt now (None: install it); refusals raise instead."""
        installed = self.slots.active_info()
        if installed and installed.get("sha256") == desired["sha256"]:
            return "installed already"
        if time.time() < state.failed.get(entry_key(desired), 0.0):
            return "failed before"
        if installed and installed.get("model") == desired.get("model") and not desired.get("rollback"):
            older = _older(str(desired.get("version")), str(installed.get("version")))
            if older:
                raise BundleRefused(
                    f"{describe(desired)} is older than the installed version {installed.get('version')} "
                    "and the control plane did not mark it as a rollback.",
                    stage="verify",
                )
        return None

    def install(self, desired: dict[str, Any]) -> Outcome | None:
        """Install `desired` (or resume its install); None when there was nothing to do.

        The entry every heartbeat sends again, or one for the bundle serving now, changes nothing: a
        bundle on probation is judged by its inferences and the time only (probation.py).
        """
        with self.lock:
            try:
                outcome = self._install(desired)
            finally:
                # A verdict reached while this held the lock (inferences are counted meanwhile) is carried out now.
                settled = self.settle()
            return outcome or settled

    def _install(self, desired: dict[str, Any]) -> Outcome | None:
        state = self.store.load()
        problem = check_desired(desired)
        if problem is not None:  # before any field becomes a path or a URL
            return self._refuse_malformed(state, desired, problem)
        resuming = state.state in st.IN_FLIGHT and (state.desired or {}).get("sha256") == desired["sha256"]
        start = time.monotonic()
        if not resuming:
            try:
                if self.skip_reason(desired, state):
                    return None
            except BundleRefused as exc:
                return self._finish(state, desired, exc, start)
            if state.state == st.PROBATION:
                # The new bundle goes into the slot this one would go back to: judge this one now. Failures
                # that call for a rollback roll it back (that report goes out first; the next heartbeat asks
                # for the new bundle again); else it counts as committed and is the new one's rollback target.
                rolled_back = self.settle(ending=True)
                if rolled_back is not None:
                    return rolled_back
                state = self.store.load()
            state.desired, state.slot, state.started = desired, self.slots.inactive(), time.time()
            state.state = st.DOWNLOADING
        try:
            self._run_from(state, desired)
        except EdgeError as exc:
            return self._finish(state, desired, exc, start)
        except Exception as exc:  # a bug or an OS error: still one sentence, still the old slot serving
            err = EdgeError(f"{describe(desired)}: {type(exc).__name__}: {exc}", stage=st.STAGE_OF[state.state])
            return self._finish(state, desired, err, start)
        return self._finish(state, desired, None, start)

    def _run_from(self, state: st.InstallState, desired: dict[str, Any]) -> None:
        label = describe(desired)
        staging = self.home / "staging" / desired["sha256"]
        slot = state.slot or self.slots.inactive()
        tar = self.tar_path(desired)
        if state.state == st.DOWNLOADING:
            self.store.enter(state, st.DOWNLOADING)
            self.fetch(desired, tar)
            state.state = st.VERIFYING
        if state.state in (st.VERIFYING, st.INSTALLING, st.SMOKE):
            # Staging and the inactive slot are scratch until the switch: redo them all from the tar.
            self.store.enter(state, st.VERIFYING)
            if tar.stat().st_size != desired["size"]:  # what the control plane announced bounds what is read
                raise EdgeError(f"{label}: {tar.name} is not the {desired['size']} bytes announced.", stage="verify")
            manifest = verify_bundle(
                tar, staging, self.public_key,
                label=label, support=self.support, agent_version=AGENT_VERSION, limits=self.limits,
            )  # fmt: skip
            if (manifest.model, manifest.version) != (desired.get("model"), str(desired.get("version"))):
                raise EdgeError(f"{label}: the signed manifest is for {manifest.label} instead.", stage="verify")
            self.store.enter(state, st.INSTALLING)
            self.slots.install(staging, slot)
            self.store.enter(state, st.SMOKE)
            model = LoadedModel(self.slots.path(slot))
            p50 = model.smoke_test()
            log.info("%s passed its smoke test in slot %s (p50 %.1f ms)", label, slot, p50)
            state.state = st.SWITCHING
        if state.state == st.SWITCHING:
            self.store.enter(state, st.SWITCHING)
            if (self.slots.active_info() or {}).get("sha256") != desired["sha256"]:
                self.slots.switch(
                    slot, model=desired["model"], version=str(desired["version"]), sha256=desired["sha256"]
                )
            self.on_switch()

    def _finish(
        self, state: st.InstallState, desired: dict[str, Any], error: EdgeError | None, start: float
    ) -> Outcome:
        seconds = round(time.monotonic() - start, 3)
        if error is None:
            outcome = Outcome("installed", "switch", "", seconds)
            state.state = st.PROBATION if self.probation.rules.enabled else st.COMMITTED
            if state.state == st.PROBATION:
                self._begin_probation(desired)  # before install.json says so (__init__ mends a crash between)
            state.last_error = None
            self._clean(desired)
        else:
            outcome = Outcome(error.outcome, error.stage, str(error), seconds)
            if state.state != st.PROBATION:  # an entry refused up front leaves the bundle on probation as it is
                state.state = st.REFUSED if error.outcome == "refused" else st.FAILED
                state.desired = desired
            wait = RETRY_DOWNLOAD_AFTER_S if error.stage == "download" else RETRY_FAILED_AFTER_S
            state.failed[entry_key(desired)] = time.time() + wait
            state.last_error = str(error)
            log.warning("%s", error)
            if error.stage != "download":  # a download failure keeps its .part to resume from
                self._clean(desired)
        state.queue_report(report_body(desired, outcome))
        self.store.save(state)
        return outcome

    def _refuse_malformed(self, state: st.InstallState, desired: Any, problem: str) -> Outcome | None:
        """Refuse a malformed desired entry once: the install state and its files stay as they are."""
        # Keyed by a digest of the whole entry: its fields are not trusted to make a key of their own.
        raw = json.dumps(desired, sort_keys=True, default=str).encode()
        key = "malformed:" + hashlib.sha256(raw).hexdigest()
        if time.time() < state.failed.get(key, 0.0):
            return None
        state.failed[key] = time.time() + RETRY_FAILED_AFTER_S
        log.warning("refused %s", problem)
        outcome = Outcome("refused", "verify", f"refused {problem}", 0.0)
        entry = desired if isinstance(desired, dict) else {}
        model, version = entry.get("model"), entry.get("version")
        # Report it only when the control plane can file it under a model and version; else the log says it.
        if isinstance(model, str) and 0 < len(model) <= 200 and isinstance(version, str) and version.isdigit():
            sha = entry.get("sha256")
            rollout = entry.get("rollout_id")
            state.queue_report(
                report_body(
                    {
                        "model": model,
                        "version": version[:20],
                        "sha256": sha if isinstance(sha, str) and len(sha) <= 64 else None,
                        "rollout_id": rollout if isinstance(rollout, int) and not isinstance(rollout, bool) else None,
                    },
                    outcome,
                )
            )
        self.store.save(state)
        return outcome

    def _clean(self, desired: dict[str, Any]) -> None:
        self.tar_path(desired).unlink(missing_ok=True)
        shutil.rmtree(self.home / "staging" / desired["sha256"], ignore_errors=True)

    # -- probation ------------------------------------------------------------------------------

    def _begin_probation(self, desired: dict[str, Any]) -> None:
        self.probation.begin(desired, pb.failure_limit(self.probation.rules, desired.get("failed_inference_limit")))

    def record_inference(self, error: str | None) -> Outcome | None:
        """Count one inference of the serving bundle while it is on probation; the verdict's outcome, if carried out.

        Counting never waits for an install: when one holds the lock, the verdict waits in probation.json
        and the install carries it out when it ends (`install` settles last).
        """
        if self.probation.count(error) is None:
            return None
        return self.tick()

    def tick(self) -> Outcome | None:
        """Carry out a verdict that is due (time alone commits a quiet bundle); never waits for an install."""
        if not self.probation.active or not self.lock.acquire(blocking=False):
            return None
        try:
            return self.settle()
        finally:
            self.lock.release()

    def settle(self, *, ending: bool = False) -> Outcome | None:
        """Commit or roll back the bundle on probation once its verdict is in (`ending`: decide it now)."""
        with self.lock:
            decided = self.probation.decide(ending=ending)
            if decided is None:
                return None
            verdict, record = decided
            if verdict == pb.ROLLBACK:
                return self._roll_back(record)
            state = self.store.load()
            if state.state == st.PROBATION:
                state.state = st.COMMITTED
                self.store.save(state)
            log.info(
                "%s committed after %d inferences on probation (%d failed)",
                describe(state.desired or {}),
                record.total,
                record.failures,
            )
            return None

    def _roll_back(self, record: pb.Record) -> Outcome:
        """Point back at the previous slot after the new bundle failed in service, and say so to the control plane."""
        if record.failures == record.total:
            failed = f"failed its first {record.failures} inferences"
        else:
            failed = f"failed {record.failures} of its first {record.total} inferences"
        reason = f"{describe(record.desired)} {failed} after the switch (last: {record.last_error})"
        state = self.store.load()
        if self.slots.rollback() is None:
            self.slots.pointer.unlink(missing_ok=True)  # nothing to go back to: stop serving the failing model
            reason += "; there was no previous slot, so it serves nothing now."
        else:
            reason += "; rolled back to the previous slot."
        self.on_switch()
        outcome = Outcome("rolled_back", "serve", reason, round(self.probation.clock() - record.started, 3))
        state.state, state.last_error = st.ROLLED_BACK, reason
        state.failed[entry_key(record.desired)] = time.time() + RETRY_FAILED_AFTER_S
        state.queue_report(report_body(record.desired, outcome))
        self.store.save(state)
        self.probation.end()
        log.warning("%s", reason)
        return outcome


def report_body(desired: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    return {
        "rollout_id": desired.get("rollout_id"),
        "model": desired.get("model"),
        "version": str(desired.get("version")),
        "sha256": desired.get("sha256"),
        "outcome": outcome.outcome,
        "stage": outcome.stage,
        "reason": outcome.reason[:MAX_REASON],
        "seconds": outcome.seconds,
    }


def _older(candidate: str, installed: str) -> bool:
    # Registry versions are integers; anything else is not ordered, so never refused as older.
    return candidate.isdigit() and installed.isdigit() and int(candidate) < int(installed)


def copy_fetch(source: Path) -> Fetch:
    """A fetch that copies a local bundle.tar (tests, and installing from a file by hand)."""

    def fetch(desired: dict[str, Any], dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        if dest.stat().st_size != desired.get("size", dest.stat().st_size) or sha256_file(dest) != desired["sha256"]:
            dest.unlink()
            raise DownloadError(f"{describe(desired)}: {source} does not match the desired sha256 and size.")

    return fetch
