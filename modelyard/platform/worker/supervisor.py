"""`modelyard up`: workers for every queue, beat and the API, restarted when they die, stopped on Ctrl-C.

Also the flags each queue's worker needs. On start it runs the reconciler once
(services/reconcile.py); beat runs it every `reconcile_seconds` after that.

Each part runs in a session of its own, so a Ctrl-C reaches only the supervisor, which
stops them warm (SIGTERM: running tasks finish), and kills them after `grace` seconds
or at a second Ctrl-C. They also die with the supervisor however it dies (SIGKILL, the
OOM killer): on Linux each is started with PR_SET_PDEATHSIG = SIGKILL, and Celery gives
its pool children the same (celery.concurrency.prefork.process_initializer). SIGKILL, not
SIGTERM: with nobody left to wait for a warm shutdown, a worker would finish a training
unsupervised beside the next `modelyard up`'s workers, and the API would hold its port;
what a kill interrupts is what leases and the reconciler recover.

A part that dies is restarted, and the supervisor says so. One that keeps dying
(`crash_loop` deaths in a row, each within `settle` seconds of its start) stops
`modelyard up` with exit status 1, naming the part, its exit code and the last lines of
its log: every part carries a promise of the platform (beat: the reconciler, drift checks
and the guard's automatic rollback; the API: serving; the workers: trainings and exports),
so a platform that looks up without one of them is worse than one that stops and says
why; the exit status is what systemd, a container's restart policy or a script watch.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from modelyard.errors import ModelyardError
from modelyard.platform.services.bootstrap import prepare_stores
from modelyard.platform.settings import Settings

APP = "modelyard.platform.worker.app:app"
# What `modelyard up` supervises (`--only` picks), by the names `modelyard run` takes: the workers by queue
# (the export and monitor queues chosen together share one worker), beat and the API.
PARTS = frozenset({"train", "export", "monitor", "beat", "api"})
CPU_QUEUES = ("export", "monitor")


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


def beat_argv(settings: Settings, loglevel: str = "INFO") -> list[str]:
    """Celery beat for the platform's periodic tasks (its scheduler, from the app's config, is worker/beat.py)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        APP,
        "beat",
        "-l",
        loglevel,
        "-s",
        str(settings.run_folder / "beat-schedule"),
    ]


def api_argv() -> list[str]:
    """The HTTP API (`modelyard run api`): uvicorn, with the settings from the environment."""
    return [sys.executable, "-m", "modelyard.platform.cli.main", "run", "api"]


def reconcile_once(settings: Settings) -> list[str]:
    """One reconciler pass (services/reconcile.py), as lines to print; beat runs the next ones."""
    from modelyard.platform.context import Platform
    from modelyard.platform.services.reconcile import reconcile

    return [f"{a.request_id} ({a.state}): {a.action}, {a.reason}" for a in reconcile(Platform(settings))]


PR_SET_PDEATHSIG = 1  # prctl.h
API_LISTENING = "Uvicorn running on"  # logged once the socket listens ("Application startup complete" comes before)


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn for Popen: the child gets SIGKILL when the process that started it dies (Linux; else None).

    libc is loaded here, in the parent: after fork the child only calls prctl. Then it checks
    that its parent is still the one that started it: had the parent died before prctl took
    effect, no signal would ever come.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def how_it_ended(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            pass
    return f"exited with code {code}"


def log_tail(path: Path, since: int = 0, lines: int = 12) -> list[str]:
    """The last non-empty lines written to `path` after byte `since`."""
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(since, size - 16384))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    started_at: float = 0.0  # time.monotonic() of its last start
    log_offset: int = 0  # where the output of its last start begins in its log
    deaths_in_row: int = 0  # deaths in a row, each (but the first) soon after its start
    restart_at: float | None = None  # dead, to be started again at this time
    ready: bool = False  # the API: listening, and said so
    slow_said: bool = False  # the API: said that it is not listening yet


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        console: Console,
        grace: float = 60.0,
        gpus: list[str] | None = None,
        only: frozenset[str] = PARTS,
        crash_loop: int = 5,
        settle: float = 60.0,
    ) -> None:
        """Supervise the parts asked for (train workers, the export+monitor worker, beat, the API); all by default.

        A part that dies `crash_loop` times in a row, each within `settle` seconds of its start, stops `up`.
        """
        from modelyard.platform.worker.gpus import train_workers, visible_gpus

        unknown = sorted(only - PARTS)
        if unknown or not only:
            raise ModelyardError(f"unknown part '{unknown[0] if unknown else ''}' (parts: {', '.join(sorted(PARTS))}).")

        self.settings = settings
        self.console = console
        self.grace = grace
        self.crash_loop = crash_loop
        self.settle = settle
        self.stopping = 0
        self.logs = settings.root / "logs"
        self.announced = False  # "modelyard up (...)" said: every part started, the API listening
        self.failure: str | None = None
        trainers = [
            Child(w.name, worker_argv(settings, list(w.queues), None, name=w.name), w.env)
            for w in (train_workers(visible_gpus() if gpus is None else gpus) if "train" in only else [])
        ]
        cpu = [q for q in CPU_QUEUES if q in only]  # one worker for the export and monitor queues chosen
        self.children = [
            *trainers,
            *([Child("+".join(cpu), worker_argv(settings, cpu, 2))] if cpu else []),
            *([Child("beat", beat_argv(settings))] if "beat" in only else []),
            *([Child("api", api_argv())] if "api" in only else []),
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
        try:
            try:  # what was left unfinished when the platform stopped
                for line in reconcile_once(self.settings):
                    self.console.print(f"reconciler: {line}")
            except Exception as err:  # the broker is down: beat's passes will catch up
                from modelyard.platform.faults import describe

                self.console.print(f"[yellow]reconciler: {escape(describe(err))}[/yellow]")
            handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                self.start_all()
                while not self.stopping:
                    if not self.tick():
                        break
                    time.sleep(0.5)
            finally:
                self._stop_all()
                for signum, handler in handlers.items():
                    signal.signal(signum, handler)
            if self.failure:
                self.console.print(f"[red]modelyard up stopped: {escape(self.failure)}[/red]")
                return 1
            return 0
        finally:
            self.pidfile.unlink(missing_ok=True)

    def start_all(self, now: float | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        now = time.monotonic() if now is None else now
        for child in self.children:
            self._start(child, now)
        self.console.print(f"starting {', '.join(c.name for c in self.children)}; logs in {self.logs}")

    def tick(self, now: float | None = None) -> bool:
        """One look at every part: restart the dead, say when the API listens; False when a part keeps dying."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            if self.stopping:
                return True
            if child.proc is not None and child.proc.poll() is not None:
                if not self._died(child, now):
                    return False
            elif child.proc is None and child.restart_at is not None and now >= child.restart_at:
                self._start(child, now)
            elif child.proc is not None and child.name == "api" and not child.ready:
                self._check_api(child, now)
        if not self.announced and all(c.proc is not None and (c.ready or c.name != "api") for c in self.children):
            self.announced = True
            self.console.print(f"modelyard up ({self.settings.mode} mode): logs in {self.logs}; Ctrl-C stops")
        return True

    def log_of(self, child: Child) -> Path:
        return self.logs / f"{child.name}.log"

    def _start(self, child: Child, now: float) -> None:
        path = self.log_of(child)
        with open(path, "ab") as log:  # the child writes after this line: a tail never shows an older run
            log.write(
                f"--- modelyard up starts {child.name} at {dt.datetime.now().isoformat(timespec='seconds')}\n".encode()
            )
            log.flush()  # before the child's first line
            child.log_offset = log.tell()
            child.proc = subprocess.Popen(
                child.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops the parts warm
                preexec_fn=die_with_parent(),  # prctl in the child; the supervisor runs no threads of its own
                env={**os.environ, **child.env},
            )
        child.started_at, child.restart_at, child.ready, child.slow_said = now, None, False, False

    def _died(self, child: Child, now: float) -> bool:
        """Say that a part died and plan its restart; False (and `failure` set) when it keeps dying."""
        assert child.proc is not None
        code, lived = child.proc.returncode, now - child.started_at
        how = how_it_ended(code)
        child.proc, child.ready = None, False
        child.deaths_in_row = child.deaths_in_row + 1 if lived < self.settle else 1
        n, log = child.deaths_in_row, self.log_of(child)
        if n == 1:
            after = f"{lived:.1f} s" if lived < 10 else f"{lived:.0f} s"
            self.console.print(f"[yellow]{child.name} {how} after {after}; restarting it (log: {log})[/yellow]")
            child.restart_at = now
            return True
        tail = log_tail(log, child.log_offset)
        if n >= self.crash_loop:
            self.failure = (
                f"{child.name} keeps dying ({how}, {n} times in a row, each within {self.settle:.0f} s of its start); "
                f"its log: {log}"
            )
            self.console.print(
                f"[bold red]{child.name} {how} again: {n} times in a row, each within {self.settle:.0f} s of its "
                f"start; stopping modelyard up. Last lines of {log}:[/bold red]"
            )
        else:
            delay = min(2 ** (n - 1), 30)
            child.restart_at = now + delay
            self.console.print(
                f"[bold red]{child.name} {how} again ({n} times in a row, each within {self.settle:.0f} s of its "
                f"start); restarting it in {delay} s. Last lines of {log}:[/bold red]"
            )
        for line in tail or ["(nothing since it started)"]:
            self.console.print(f"[red]  | {escape(line)}[/red]", highlight=False)
        return n < self.crash_loop

    def _check_api(self, child: Child, now: float) -> None:
        """Say where the API is once uvicorn says it listens (only then does a request get an answer)."""
        if any(API_LISTENING in line for line in log_tail(self.log_of(child), child.log_offset, lines=1000)):
            child.ready = True
            self.console.print(f"API on {self.api_url} (docs: {self.api_url}/docs; log: {self.log_of(child)})")
        elif not child.slow_said and now - child.started_at > self.settle:
            child.slow_said = True
            self.console.print(
                f"[yellow]the API is not listening yet, {now - child.started_at:.0f} s after its start "
                f"(log: {self.log_of(child)})[/yellow]"
            )

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping += 1
        if self.stopping == 1:
            self.console.print("stopping: running tasks finish first (Ctrl-C again to kill them)")
        else:
            for child in self.children:
                _kill(child.proc)

    def _stop_all(self) -> None:
        alive = [c.proc for c in self.children if c.proc and c.proc.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)  # Celery's warm shutdown
        deadline = time.monotonic() + self.grace
        for proc in alive:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(proc)
                proc.wait()


def _kill(proc: subprocess.Popen | None) -> None:
    """SIGKILL a part and whatever runs in its process group (a worker's pool children)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own group: started with start_new_session
    except (ProcessLookupError, PermissionError):
        proc.kill()


def running_supervisor(settings: Settings) -> int | None:
    pidfile = settings.run_folder / "up.pid"
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
