"""The device agent: enroll once, then serve locally while polling, installing and reporting.

Threads of `run()`: the local OIP server, the heartbeat/poll loop, the install worker and the
telemetry uploader. Local inference never waits on the control plane: every loop that talks to
it catches its errors and backs off, and the serving model is swapped by reference.
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.bundle import Manifest
from modelyard.edge import state as st
from modelyard.edge import telemetry
from modelyard.edge.archive import Limits
from modelyard.edge.client import ControlPlane
from modelyard.edge.config import DEVICE_ID, UNAUTHORIZED_HEARTBEAT_S, Enrollment, Options, profile
from modelyard.edge.errors import EdgeError, InferenceError
from modelyard.edge.install import Installer
from modelyard.edge.loops import Loops
from modelyard.edge.runtime import LoadedModel, local_support
from modelyard.edge.version import AGENT_VERSION

log = logging.getLogger("modelyard.edge")


class Agent:
    def __init__(self, home: Path, options: Options | None = None) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.options = options or Options()
        self.support = local_support()
        self.enrollment = Enrollment.load(self.home)
        cap = self.options.max_bundle_bytes
        limits = Limits(max_member_bytes=cap, max_total_bytes=cap)
        self.installer = Installer(
            self.home, fetch=self._fetch, support=self.support, on_switch=self.reload, limits=limits,
            probation=self.options.probation_rules(),
        )  # fmt: skip
        rate = self.enrollment.sample_rate if self.enrollment else 1.0
        self.buffer = telemetry.TelemetryBuffer(
            self.home / "telemetry", max_bytes=self.options.max_telemetry_bytes, sample_rate=rate
        )
        self.model: LoadedModel | None = None
        self.load_error: str | None = None
        self.stop_event = threading.Event()
        self.wanted: queue.Queue[dict[str, Any]] = queue.Queue()
        self._cp: ControlPlane | None = None
        # Every inference of the serving bundle, counted (telemetry only samples successes): the heartbeat
        # carries these, and a rollout judges its canary's error rate by them. In memory; they start again
        # (a new `since`) whenever a bundle is loaded.
        self._counted = threading.Lock()
        self._inferences: dict[str, Any] = {}
        self.reload()

    # -- enrollment -------------------------------------------------------------------------

    def enroll(self, server_url: str, token: str, device_id: str, tags: dict[str, str] | None = None) -> Enrollment:
        if self.enrollment and not self.enrollment.decommissioned:
            raise EdgeError(f"agent home {self.home} is enrolled already as {self.enrollment.device_id}.")
        if not re.fullmatch(DEVICE_ID, device_id):
            raise EdgeError(f"device id {device_id!r} must be letters, digits, '_', '.', '-' (1-100, no leading sign).")
        body = {
            "token": token, "device_id": device_id, "tags": dict(tags or {}),
            "profile": profile(self.support), "agent_version": AGENT_VERSION,
        }  # fmt: skip
        cp = ControlPlane(server_url)
        try:
            answer = cp.enroll(body)
        finally:
            cp.close()
        if not isinstance(answer.get("credential"), str) or "BEGIN PUBLIC KEY" not in str(answer.get("public_key")):
            raise EdgeError(f"enrollment at {server_url}: the answer lacks a credential or a PEM public key.")
        (self.home / "trust.pem").write_text(answer["public_key"])
        self.enrollment = Enrollment(
            server_url=server_url, device_id=str(answer.get("device_id", device_id)), credential=answer["credential"],
            group=str(answer.get("group", "")), heartbeat_seconds=float(answer.get("heartbeat_seconds", 30.0)),
            upload_seconds=float(answer.get("upload_seconds", 60.0)), sample_rate=float(answer.get("sample_rate", 1.0)),
        )  # fmt: skip
        self.enrollment.save(self.home)
        self.buffer.sample_rate = self.enrollment.sample_rate
        return self.enrollment

    @property
    def control_plane(self) -> ControlPlane:
        if self.enrollment is None:
            raise EdgeError(f"agent home {self.home} is not enrolled; run `modelyard-agent enroll` first.")
        if self._cp is None:
            e = self.enrollment
            self._cp = ControlPlane(e.server_url, credential=e.credential, device_id=e.device_id)
        return self._cp

    def _fetch(self, desired: dict[str, Any], dest: Path) -> None:
        limits = self.options.download_limits()
        self.control_plane.download(desired, dest, max_bytes=self.options.max_bundle_bytes, limits=limits)

    # -- serving ------------------------------------------------------------------------------

    def reload(self) -> None:
        """Load the slot the pointer names (after a switch or a rollback); keep serving the old one on error."""
        active = self.installer.slots.active()
        if active is None:
            with self._counted:
                self.model, self._inferences = None, {}
            return
        try:
            model = LoadedModel(self.installer.slots.path(active), threads=self.options.threads)
            with self._counted:
                self.model, self.load_error = model, None
                m = model.manifest
                since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f"/{uuid.uuid4().hex[:8]}"
                self._inferences = {"model": m.model, "version": m.version, "since": since, "total": 0, "failed": 0}
        except Exception as exc:
            self.load_error = f"slot {active} cannot be loaded: {exc}"
            log.error("%s", self.load_error)

    def current_manifest(self) -> Manifest | None:
        model = self.model
        return model.manifest if model else None

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the serving model; sampled rows go to the telemetry buffer; failures count toward rollback."""
        model = self.model
        if model is None:
            raise InferenceError("no model is installed on this device yet.", client_error=False)
        start = time.perf_counter()
        try:
            outputs = model.predict(inputs)
        except InferenceError as exc:
            if not exc.client_error:
                self._after(model, inputs, None, start, str(exc))
            raise
        self._after(model, inputs, outputs, start, None)
        return outputs

    def _after(self, model: LoadedModel, inputs: dict[str, Any], outputs: Any, start: float, error: str | None) -> None:
        latency = (time.perf_counter() - start) * 1000
        rows = min((len(np.asarray(v)) for v in inputs.values() if np.asarray(v).ndim), default=0)
        m = model.manifest
        with self._counted:
            current = model is self.model  # not a request that began on the bundle just switched out
            if current:
                self._inferences["total"] += max(rows, 1)
                self._inferences["failed"] += max(rows, 1) if error is not None else 0
        for row in range(min(rows, telemetry.BATCH)):
            # Failures are always recorded: the control plane's error-rate check must see every one of them.
            if error is not None or self.buffer.sampled():
                self.buffer.append(
                    telemetry.record(m.model, m.version, inputs, outputs, latency_ms=latency, error=error, row=row)
                )
        # Probation judges the bundle serving now by each request it answered (a batch is one answer).
        outcome = self.installer.record_inference(error) if current else None
        if outcome is not None:
            self.wanted.put({})  # wake the worker: the report is pending

    # -- status and heartbeats ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        state = self.installer.store.load()
        installed = self.installer.slots.active_info()
        e = self.enrollment
        return {
            "agent_version": AGENT_VERSION,
            "home": str(self.home),
            "device_id": e.device_id if e else None,
            "enrolled": e is not None,
            "decommissioned": bool(e and e.decommissioned),
            "installed": {k: installed[k] for k in ("model", "version", "sha256", "slot")} if installed else None,
            "serving": self.model is not None,
            "install_state": state.state,
            "probation": self.installer.probation.summary(),
            "last_error": state.last_error or self.load_error,
            "pending_report": state.pending_report,
            "unsent_reports": len(state.unsent_reports),
            "buffered_records": self.buffer.count(),
            "dropped_records": self.buffer.dropped_total,  # cumulative: the control plane keeps the latest
            "port": _read_port(self.home),
            "runtime": {"onnxruntime": self.support.runtime_version, "max_opset": self.support.max_opset},
        }

    def heartbeat_body(self) -> dict[str, Any]:
        s = self.status()
        failing = s["last_error"] is not None
        health = "ok" if not failing else ("degraded" if s["serving"] else "failing")
        return {
            "agent_version": AGENT_VERSION, "installed": s["installed"], "health": health, "serving": s["serving"],
            "free_disk_bytes": shutil.disk_usage(self.home).free, "last_error": s["last_error"],
            "buffered_records": s["buffered_records"], "dropped_records": s["dropped_records"],
            "inferences": self.inferences(),
        }  # fmt: skip

    def inferences(self) -> dict[str, Any] | None:
        """{model, version, since, total, failed}: every inference of the serving bundle since it was loaded."""
        with self._counted:
            return dict(self._inferences) or None

    def send_pending_report(self) -> None:
        """Send the outcome waiting in the state file, once.

        Both the poll loop and the install worker call this; holding the installer's lock keeps the
        read-send-clear from interleaving with an install rewriting the state file. When an install
        holds it (a download can take minutes), the heartbeat goes on and the worker reports after.
        """
        if not self.installer.lock.acquire(blocking=False):
            return
        try:
            state = self.installer.store.load()
            while state.unsent_reports:  # oldest first; each is dropped once the control plane has it
                self.control_plane.report(state.unsent_reports[0])
                state.unsent_reports = state.unsent_reports[1:]
                self.installer.store.save(state)
            if state.pending_report is None:
                return
            self.control_plane.report(state.pending_report)
            state.pending_report = None
            self.installer.store.save(state)
        finally:
            self.installer.lock.release()

    # -- run -----------------------------------------------------------------------------------

    def run(self, port: int = 0) -> None:
        """Serve and poll until SIGTERM/SIGINT (or `stop()`)."""
        from modelyard.edge.server import LocalServer

        server = LocalServer(self, port=port)
        server.start()
        (self.home / "port").write_text(f"{server.port}\n")
        log.info("serving the Open Inference Protocol on 127.0.0.1:%d", server.port)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        loops = Loops(self)
        loops.start()
        try:
            self.stop_event.wait()
        finally:
            loops.join()
            server.stop()
            (self.home / "port").unlink(missing_ok=True)  # a stale port file would send callers to nothing
            if self._cp is not None:
                self._cp.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.wanted.put({})

    def mark_decommissioned(self) -> None:
        if self.enrollment and not self.enrollment.decommissioned:
            self.enrollment.decommissioned = True
            self.enrollment.save(self.home)
            log.error(
                "the control plane refused this device's credential (401): serving on, no installs, "
                "asking again every %.0f s",
                UNAUTHORIZED_HEARTBEAT_S,
            )

    def clear_decommissioned(self) -> None:
        if self.enrollment and self.enrollment.decommissioned:
            self.enrollment.decommissioned = False
            self.enrollment.save(self.home)
            log.warning("the control plane accepts this device's credential again: updates resume")

    def resume_pending(self) -> dict[str, Any] | None:
        state = self.installer.store.load()
        return state.desired if state.state in st.IN_FLIGHT else None


def _read_port(home: Path) -> int | None:
    try:
        return int((home / "port").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
