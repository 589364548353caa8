"""The agent's background loops: heartbeat/poll, install worker, telemetry upload.

Each loop catches every error from the control plane and waits before trying again, so an
unreachable control plane slows updates down and never stops local inference. Polls are
jittered (±20 %) so a fleet restarted together does not poll in lockstep; errors back off
exponentially with full jitter up to a cap.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import TYPE_CHECKING, Any

from modelyard.edge import config
from modelyard.edge.errors import ControlPlaneError, EdgeError
from modelyard.retry import backoff

if TYPE_CHECKING:
    from modelyard.edge.agent import Agent

log = logging.getLogger("modelyard.edge")


def jittered(seconds: float) -> float:
    return seconds * random.uniform(0.8, 1.2)


class Loops:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.threads = [
            threading.Thread(target=self._guard, args=(self.poll,), name="poll", daemon=True),
            threading.Thread(target=self._guard, args=(self.install,), name="install", daemon=True),
            threading.Thread(target=self._guard, args=(self.upload,), name="telemetry", daemon=True),
        ]

    def start(self) -> None:
        pending = self.agent.resume_pending()
        if pending:
            log.info("resuming the interrupted install of %s/%s", pending.get("model"), pending.get("version"))
            self.agent.wanted.put(pending)
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=10)

    def _guard(self, loop: Any) -> None:
        # A bug in one loop must not take the others (or serving) down with it: log and restart it.
        stop = self.agent.stop_event
        while not stop.is_set():
            try:
                loop()
            except Exception:
                log.exception("background loop %s crashed; restarting it", loop.__name__)
                stop.wait(5)

    def poll(self) -> None:
        agent, stop, failures = self.agent, self.agent.stop_event, 0
        while not stop.is_set():
            enrollment = agent.enrollment
            if enrollment is None:
                stop.wait(60)
                continue
            refused = enrollment.decommissioned
            # Time alone commits a bundle on probation that nothing failed (never waits for an install).
            agent.installer.tick()
            if not refused:
                # Apart from the heartbeat: a report the control plane will not take (a 5xx, a 422) must not
                # keep the heartbeat from going out, or the device would look offline.
                try:
                    agent.send_pending_report()
                except ControlPlaneError as exc:
                    log.warning("%s (the report is kept and sent again later)", exc)
            try:
                answer = agent.control_plane.heartbeat(agent.heartbeat_body())
                failures = 0
            except ControlPlaneError as exc:
                if exc.status == 401:
                    # Maybe revoked, maybe a restored database or a misconfigured proxy: keep serving, install
                    # nothing, and ask again now and then rather than never.
                    agent.mark_decommissioned()
                    stop.wait(jittered(config.UNAUTHORIZED_HEARTBEAT_S))
                    continue
                failures += 1
                log.warning("%s", exc)
                base = config.UNAUTHORIZED_HEARTBEAT_S if refused else self._interval()
                stop.wait(backoff(failures, max(1.0, base / 4), agent.options.backoff_cap_seconds, jitter=True))
                continue
            if refused:
                agent.clear_decommissioned()
            if not agent.options.heartbeat_seconds and answer.get("heartbeat_seconds"):
                enrollment.heartbeat_seconds = float(answer["heartbeat_seconds"])
            if isinstance(answer.get("desired"), dict):
                agent.wanted.put(answer["desired"])  # Installer.install checks it (check_desired) before any use
            stop.wait(jittered(self._interval()))

    def _interval(self) -> float:
        enrollment = self.agent.enrollment
        return self.agent.options.heartbeat_seconds or (enrollment.heartbeat_seconds if enrollment else 60.0)

    def install(self) -> None:
        agent = self.agent
        while not agent.stop_event.is_set():
            desired = agent.wanted.get()
            while not agent.wanted.empty():  # only the newest desired entry matters
                desired = agent.wanted.get_nowait() or desired
            if agent.stop_event.is_set():
                continue
            if not desired:  # a wake-up: a local rollback left a report to send
                self._report()
                continue
            if agent.enrollment is not None and agent.enrollment.decommissioned:
                # Queued before the 401: the control plane that asked for it is not trusted now.
                log.warning(
                    "not installing %s/%s: the control plane refused this device's credential",
                    desired.get("model"),
                    desired.get("version"),
                )
                continue
            try:
                outcome = agent.installer.install(desired)
            except EdgeError as exc:
                log.warning("%s", exc)
                continue
            if outcome is not None:
                log.info(
                    "install of %s/%s: %s %s",
                    desired.get("model"),
                    desired.get("version"),
                    outcome.outcome,
                    outcome.reason,
                )
                self._report()

    def _report(self) -> None:
        try:
            self.agent.send_pending_report()
        except ControlPlaneError as exc:
            log.warning("%s (the report is kept and sent with the next heartbeat)", exc)

    def upload(self) -> None:
        agent, stop, failures = self.agent, self.agent.stop_event, 0
        while not stop.is_set():
            enrollment = agent.enrollment
            interval = enrollment.upload_seconds if enrollment else 60.0
            if enrollment is None or enrollment.decommissioned:
                stop.wait(interval)
                continue
            try:
                agent.buffer.upload(agent.control_plane.telemetry)
                failures = 0
                stop.wait(jittered(interval))
            except ControlPlaneError as exc:
                failures += 1
                log.warning("%s (records stay buffered)", exc)
                stop.wait(backoff(failures, max(1.0, interval / 4), agent.options.backoff_cap_seconds, jitter=True))
