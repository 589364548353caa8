"""`modelyard up`'s supervisor with stand-in parts (small Python processes), the beat
scheduler on damaged schedule files, and the reconciler's timing in embedded mode.

The supervisor runs for real (`Supervisor.run`, with the stores and the first reconciler
pass left out); times that decide (a crash loop, a resend) are injected where they can be.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import re
import shelve
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from tests.conftest import tiny_spec

CRASH = "import sys; print('beat: Starting...'); print('EOFError: Ran out of input', flush=True); sys.exit(1)"
IDLE = "import time; time.sleep(120)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Screen(io.StringIO):
    """What the supervisor prints; `on_write` sees each piece as it is printed."""

    def __init__(self, on_write=None) -> None:
        super().__init__()
        self.on_write = on_write

    def write(self, s: str) -> int:
        if self.on_write:
            self.on_write(s)
        return super().write(s)


@pytest.fixture
def make_supervisor(settings, monkeypatch):
    """A Supervisor whose parts are the given stand-ins; no stores, no reconciler pass; every process ends."""
    from modelyard.platform.worker import supervisor as module

    monkeypatch.setattr(module, "prepare_stores", lambda _settings: settings.ensure_folders())
    monkeypatch.setattr(module, "reconcile_once", lambda _settings: [])
    made = []
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def make(parts: dict[str, str], screen: io.StringIO | None = None, settings=settings):
        sup = module.Supervisor(
            settings, Console(file=screen or Screen(), width=400, color_system=None), grace=5, gpus=[]
        )
        sup.children = [module.Child(name, [sys.executable, "-c", code]) for name, code in parts.items()]
        sup.api_url = f"http://{settings.api_host}:{settings.api_port}" if "api" in parts else None
        made.append(sup)
        return sup

    yield make
    for sup in made:
        for child in sup.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait(timeout=10)
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


# --- 1. beat on a damaged schedule file ----------------------------------------------------------


def _damaged_schedule(path: Path, how: str) -> None:
    """A schedule file as a beat killed mid-write leaves it (dbm.dumb: .dat, .dir, .bak)."""
    with shelve.open(str(path)) as db:
        db["entries"] = {}
        db["tz"] = None
        db["utc_enabled"] = True
        db["__version__"] = "5.7.0"
    dat, folder = Path(f"{path}.dat"), Path(f"{path}.dir")
    if how == "empty .dat":  # what a demo left: the .dir still lists entries
        dat.write_bytes(b"")
    elif how == "garbage .dat":
        dat.write_bytes(b"\xff" * len(dat.read_bytes()))  # no pickle starts with 0xff
    elif how == "garbage .dir":
        folder.write_bytes(b"\x00not a dbm index\n")
    elif how == ".dat missing":
        dat.unlink()


@pytest.mark.parametrize("how", ["empty .dat", "garbage .dat", "garbage .dir", ".dat missing", "no file"])
def test_beat_starts_with_a_fresh_schedule_when_its_file_is_damaged(settings, how, caplog) -> None:
    """The scheduler the app configures (as `celery beat` loads it) starts on a damaged or missing
    file with every periodic task, saying so in one warning line; the file it leaves is whole."""
    from celery.utils.imports import symbol_by_name

    from modelyard.platform.queue.app import create_app

    app = create_app(settings)
    path = settings.run_folder / "beat-schedule"
    if how != "no file":
        _damaged_schedule(path, how)
    scheduler_class = symbol_by_name(app.conf.beat_scheduler, aliases={})
    with caplog.at_level(logging.WARNING):
        scheduler = scheduler_class(app=app, schedule_filename=str(path))
    try:
        assert {"reconcile-requests", "monitor-tick", "inference-log-retention"} <= set(scheduler.schedule)
    finally:
        scheduler.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if how == "no file":
        assert warnings == []
    else:
        assert len(warnings) == 1 and f"schedule file {path} is damaged" in warnings[0], warnings
    again = scheduler_class(app=app, schedule_filename=str(path))  # what it wrote reads back
    try:
        assert "monitor-tick" in again.schedule
    finally:
        again.close()


# --- 2. a part that keeps dying ------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_part_that_keeps_crashing_stops_up_loudly_and_the_others_with_it(make_supervisor) -> None:
    """Beat dying at every start used to be restarted forever, one yellow line each time (the
    backoff spread the deaths past the one-minute window that counted them). Now a crash loop
    stops `up` with exit status 1 after red lines naming the part, its exit code and its log's
    last lines; the other parts are stopped, not left behind."""
    screen = Screen()
    sup = make_supervisor({"export+monitor": IDLE, "beat": CRASH}, screen)
    sup.crash_loop = 3  # restarts after 0 and 2 s, then it gives up
    started = time.monotonic()

    assert sup.run() == 1

    assert time.monotonic() - started < 20
    out = screen.getvalue()
    log = sup.logs / "beat.log"
    assert re.search(rf"beat exited with code 1 after [\d.]+ s; restarting it \(log: {re.escape(str(log))}\)", out)
    repeated = "beat exited with code 1 again (2 times in a row, each within 60 s of its start); restarting it in 2 s"
    assert f"{repeated}. Last lines of {log}:\n  | beat: Starting...\n  | EOFError: Ran out of input\n" in out
    given_up = "beat exited with code 1 again: 3 times in a row, each within 60 s of its start; stopping modelyard up"
    assert f"{given_up}. Last lines of {log}:\n  | beat: Starting...\n  | EOFError: Ran out of input\n" in out
    stopped = (
        "modelyard up stopped: beat keeps dying (exited with code 1, 3 times in a row, each within 60 s of its start)"
    )
    assert out.rstrip().endswith(f"{stopped}; its log: {log}")
    assert all(child.proc is None or child.proc.poll() is not None for child in sup.children)
    assert log.read_text().count("EOFError: Ran out of input") == 3


def test_a_single_death_is_restarted_and_said_and_deaths_far_apart_never_stop_up(make_supervisor) -> None:
    """Time injected: a worker that dies after running a while is restarted at once, each time,
    with a yellow line; quick deaths in a row count up, and a long run in between resets them."""
    screen = Screen()
    sup = make_supervisor({"train": "import os; os.kill(os.getpid(), 9)"}, screen)
    [child] = sup.children
    sup.start_all(now=0.0)
    now = 0.0
    for _ in range(8):  # each death an hour after its start
        child.proc.wait(timeout=10)
        now += 3600
        assert sup.tick(now=now)
        assert child.restart_at == now and child.deaths_in_row == 1
        assert sup.tick(now=now) and child.proc is not None  # restarted
    assert screen.getvalue().count("train was killed by SIGKILL (exit code -9) after 3600 s; restarting it") == 8

    child.proc.wait(timeout=10)
    assert sup.tick(now=now + 5)  # a quick death after a long run: the second in a row
    assert child.deaths_in_row == 2 and child.restart_at == now + 5 + 2
    assert "train was killed by SIGKILL (exit code -9) again (2 times in a row" in screen.getvalue()
    assert sup.tick(now=now + 6) and child.proc is None  # not yet: the backoff
    assert sup.tick(now=now + 7) and child.proc is not None


# --- 3. parts die with the supervisor ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_part_dies_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """A process started with `die_with_parent` (as `up` starts every part) gets SIGKILL when the
    process that started it is SIGKILLed, though it lives in a session of its own."""
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, sys\n"
        "from modelyard.platform.worker.supervisor import die_with_parent\n"
        f"p = subprocess.Popen([sys.executable, '-c', {IDLE!r}], start_new_session=True,\n"
        "                     preexec_fn=die_with_parent())\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "p.wait()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        child = int(pidfile.read_text())
        assert _alive(child)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        parent.kill()
        parent.wait(timeout=10)
        if pidfile.exists() and pidfile.read_text() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


@pytest.mark.timeout(60)
def test_ctrl_c_stops_warm_and_a_second_ctrl_c_kills_each_part_with_its_children(make_supervisor, tmp_path) -> None:
    """First Ctrl-C: SIGTERM, running tasks may finish (this stand-in ignores it, as a worker busy
    with a training does); second Ctrl-C: SIGKILL to the part's whole process group (a worker's
    pool children too), well before `grace` ends."""
    pidfile = tmp_path / "pool.pid"
    busy = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pool = subprocess.Popen([sys.executable, '-c', {IDLE!r}])\n"
        f"open({str(pidfile)!r}, 'w').write(str(pool.pid))\n"
        "time.sleep(120)\n"
    )
    pressed: list[float] = []

    def ctrl_c(after: float = 0.0) -> None:
        deadline = time.monotonic() + 20
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)  # the stand-in ignores SIGTERM from here on
        time.sleep(after)
        pressed.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    def on_write(text: str) -> None:  # Ctrl-C once `up` is up, again a second after it says it stops
        if "modelyard up (" in text:
            threading.Thread(target=ctrl_c).start()
        elif text.startswith("stopping:"):
            threading.Thread(target=ctrl_c, args=(1.0,)).start()

    screen = Screen(on_write)
    sup = make_supervisor({"train": busy}, screen)
    sup.grace = 30

    try:
        assert sup.run() == 0

        assert len(pressed) == 2 and time.monotonic() - pressed[0] < 10  # not the 30 s of grace
        [child] = sup.children
        assert child.proc.returncode == -signal.SIGKILL
        assert "stopping: running tasks finish first (Ctrl-C again to kill them)" in screen.getvalue()
        pool, deadline = int(pidfile.read_text()), time.monotonic() + 5
        while _alive(pool) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pool)
    finally:
        if pidfile.exists() and pidfile.read_text() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_a_part_whose_supervisor_died_before_prctl_kills_itself(monkeypatch) -> None:
    """The race prctl leaves open: a parent gone before the child asked for the signal. The child
    sees another parent than the one that started it and ends itself before it runs anything."""
    from modelyard.platform.worker import supervisor

    monkeypatch.setattr(supervisor.os, "getpid", lambda: 1)  # "started by" a pid that is not our parent
    preexec = supervisor.die_with_parent()
    monkeypatch.undo()
    proc = subprocess.Popen([sys.executable, "-c", IDLE], preexec_fn=preexec)
    try:
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()


# --- 4. "API on" when it is true -----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_api_on_is_printed_only_once_the_api_listens(settings, make_supervisor) -> None:
    """uvicorn logs "Application startup complete" before it binds; `up` used to print "API on"
    as soon as it started the process, seconds before a request could connect."""
    port = _free_port()
    settings = settings.model_copy(update={"api_port": port})
    api = (
        "import socket, time\n"
        "print('INFO uvicorn.error Application startup complete.', flush=True)\n"
        "time.sleep(2)\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1', {port})); s.listen()\n"
        f"print('INFO uvicorn.error Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)', flush=True)\n"
        "time.sleep(120)\n"
    )
    answered: list[bool] = []
    sup = None

    def on_write(text: str) -> None:
        if "API on" in text:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                answered.append(True)
            except OSError:
                answered.append(False)
        if "modelyard up (" in text:
            sup.stopping = 1

    screen = Screen(on_write)
    sup = make_supervisor({"api": api, "beat": IDLE}, screen, settings=settings)

    assert sup.run() == 0

    out = screen.getvalue()
    assert answered == [True], out
    assert out.index(f"API on http://127.0.0.1:{port}") < out.index("modelyard up (embedded mode)")


# --- 5. the reconciler in embedded mode ----------------------------------------------------------


def test_embedded_reconciler_sends_a_lost_export_message_again_within_a_minute(settings) -> None:
    """A trained request whose export message a worker took and lost (killed before it claimed
    the request): with the embedded defaults a pass sends it again within a minute of sending
    (it used to wait 30 minutes); later resends back off. Times injected, no sleeps."""
    from modelyard.platform.context import Platform
    from modelyard.platform.queue.outbox import wake
    from modelyard.platform.services.reconcile import reconcile
    from modelyard.platform.store.states import State

    class Broker:
        def __init__(self) -> None:
            self.sent: list[str] = []

        def send_task(self, name, args=None, task_id=None, **_options) -> None:
            self.sent.append(task_id)

    platform, app = Platform(settings), Broker()
    store = platform.requests
    store.create("r1", "m", tiny_spec("m"), "manual")
    lease = store.claim_training("r1", "w1").lease
    store.advance(lease, State.REGISTERING)
    store.advance(lease, State.TRAINED, version="1")
    wake(app, settings, store, store.get("r1"))
    sent = store.get("r1").published_at.replace(tzinfo=dt.UTC)
    assert app.sent == ["r1:export"]  # and a worker took it from the queue, and died

    passes = [sent + dt.timedelta(seconds=s) for s in range(0, 3600, int(settings.reconcile_seconds))]
    first = next(t for t in passes if reconcile(platform, app, now=t))
    assert first - sent <= dt.timedelta(seconds=60)
    assert app.sent == ["r1:export", "r1:export"]
    row = store.get("r1")
    assert (row.status, row.republishes) == ("trained", 1)

    resent = row.published_at.replace(tzinfo=dt.UTC)
    assert reconcile(platform, app, now=resent + dt.timedelta(seconds=59)) == []  # the next one waits twice as long
    [again] = reconcile(platform, app, now=resent + dt.timedelta(seconds=61))
    assert (again.request_id, again.action) == ("r1", "republished")


def test_server_mode_keeps_its_half_hour_and_an_explicit_setting_wins(settings, monkeypatch) -> None:
    from modelyard.platform.settings import Settings

    assert settings.mode == "embedded" and settings.effective_republish_after_seconds == 30
    assert settings.effective_republish_after_seconds + settings.reconcile_seconds <= 60
    monkeypatch.setenv("MODELYARD_BROKER_URL", "redis://r:6379/0")
    assert Settings().effective_republish_after_seconds == 1800
    monkeypatch.setenv("MODELYARD_REPUBLISH_AFTER_SECONDS", "120")
    assert Settings().effective_republish_after_seconds == 120
