"""`modelyard up`: workers for every queue and beat, restarted when they die, stopped on Ctrl-C.

Also the flags each queue's worker needs. On start it runs the reconciler once
(services/reconcile.py); beat runs it every `reconcile_seconds` after that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from modelyard.errors import ModelyardError
from modelyard.platform.services.bootstrap import prepare_stores
from modelyard.platform.settings import Settings

APP = "modelyard.platform.worker.app:app"
PARTS = frozenset({"train", "export", "beat", "api"})  # what `modelyard up` supervises (`--only` picks)


def worker_argv(
    settings: Settings, queues: list[str], concurrency: int | None, loglevel: str = "INFO", name: str | None = None
) -> list[str]:
    from modelyard.platform.queue.app import QUEUES, TRAIN_QUEUES

    queues = [q.strip() for q in queues if q.strip()]
    unknown = [q for q in queues if q not in QUEUES]
    if unknown or not queues:
        raise ModelyardError(f"unknown queue '{unknown[0] if unknown else ''}' (queues: {', '.join(QUEUES)}).")
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        APP,
        "worker",
        "-Q",
        ",".join(queues),
        "-n",
        f"{name or '+'.join(queues)}-{os.getpid()}@%h",
        "-l",
        loglevel,
        "--prefetch-multiplier",
        "1",
        "-O",
        "fair",
    ]
    training = [q for q in queues if q in TRAIN_QUEUES]
    if training:
        if len(training) < len(queues):
            raise ModelyardError(
                "the train queues need a worker of their own (one process per GPU, a fresh child per task)."
            )
        # A fresh child per training: TensorFlow never gives GPU memory back, CUDA does not survive fork.
        argv += ["--pool", "prefork", "--concurrency", str(concurrency or 1), "--max-tasks-per-child", "1"]
    else:
        argv += ["--concurrency", str(concurrency or os.cpu_count() or 2)]
    if settings.mode == "embedded":  # no broadcast chatter over the filesystem queue
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return argv


def reconcile_once(settings: Settings) -> list[str]:
    """One reconciler pass (services/reconcile.py), as lines to print; beat runs the next ones."""
    from modelyard.platform.context import Platform
    from modelyard.platform.services.reconcile import reconcile

    return [f"{a.request_id} ({a.state}): {a.action}, {a.reason}" for a in reconcile(Platform(settings))]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        console: Console,
        grace: float = 60.0,
        gpus: list[str] | None = None,
        only: frozenset[str] = PARTS,
    ) -> None:
        """Supervise the parts asked for (train workers, the export+monitor worker, beat); every one by default."""
        from modelyard.platform.worker.gpus import train_workers, visible_gpus

        unknown = sorted(only - PARTS)
        if unknown or not only:
            raise ModelyardError(f"unknown part '{unknown[0] if unknown else ''}' (parts: {', '.join(sorted(PARTS))}).")

        self.settings = settings
        self.console = console
        self.grace = grace
        self.stopping = 0
        beat = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            APP,
            "beat",
            "-l",
            "INFO",
            "-s",
            str(settings.run_folder / "beat-schedule"),
        ]
        trainers = [
            Child(w.name, worker_argv(settings, list(w.queues), None, name=w.name), w.env)
            for w in (train_workers(visible_gpus() if gpus is None else gpus) if "train" in only else [])
        ]
        self.children = [
            *trainers,
            *([Child("export+monitor", worker_argv(settings, ["export", "monitor"], 2))] if "export" in only else []),
            *([Child("beat", beat)] if "beat" in only else []),
            *([Child("api", [sys.executable, "-m", "modelyard.platform.cli.main", "serve"])] if "api" in only else []),
        ]
        self.api_url = f"http://{settings.api_host}:{settings.api_port}" if "api" in only else None

    @property
    def pidfile(self) -> Path:
        return self.settings.run_folder / "up.pid"

    def run(self) -> int:
        prepare_stores(self.settings)
        if running_supervisor(self.settings):
            raise ModelyardError(f"`modelyard up` already runs for {self.settings.root} (pid file {self.pidfile}).")
        self.pidfile.write_text(str(os.getpid()))
        try:  # what was left unfinished when the platform stopped
            for line in reconcile_once(self.settings):
                self.console.print(f"reconciler: {line}")
        except Exception as err:  # the broker is down: beat's passes will catch up
            from modelyard.platform.faults import describe

            self.console.print(f"[yellow]reconciler: {describe(err)}[/yellow]")
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        logs = self.settings.root / "logs"
        logs.mkdir(exist_ok=True)
        try:
            for child in self.children:
                self._start(child, logs)
            if self.api_url:
                self.console.print(f"API on {self.api_url} (docs: {self.api_url}/docs; log: {logs / 'api.log'})")
            self.console.print(f"modelyard up ({self.settings.mode} mode): logs in {logs}; Ctrl-C stops")
            while not self.stopping:
                for child in self.children:
                    died = child.proc and child.proc.poll() is not None and not self.stopping
                    if died and not self._restart(child, logs):
                        return 1
                time.sleep(0.5)
            return 0
        finally:
            self._stop_all()
            self.pidfile.unlink(missing_ok=True)

    def _start(self, child: Child, logs: Path) -> None:
        log = open(logs / f"{child.name}.log", "ab")  # noqa: SIM115 - the child keeps it open
        env = {**os.environ, **child.env}
        child.proc = subprocess.Popen(child.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def _restart(self, child: Child, logs: Path) -> bool:
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < 60] + [now]
        code = child.proc.returncode if child.proc else None
        if len(child.restarts) > 5:
            self.console.print(f"[red]{child.name} died {len(child.restarts)} times in a minute; stopping[/red]")
            return False
        self.console.print(f"[yellow]{child.name} exited ({code}); restarting[/yellow]")
        time.sleep(min(2 ** len(child.restarts), 30))
        self._start(child, logs)
        return True

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping += 1
        if self.stopping == 1:
            self.console.print("stopping: running tasks finish first (Ctrl-C again to kill them)")
        else:
            for child in self.children:
                if child.proc and child.proc.poll() is None:
                    child.proc.kill()

    def _stop_all(self) -> None:
        alive = [c.proc for c in self.children if c.proc and c.proc.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)  # Celery's warm shutdown
        deadline = time.monotonic() + self.grace
        for proc in alive:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def running_supervisor(settings: Settings) -> int | None:
    pidfile = settings.run_folder / "up.pid"
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
