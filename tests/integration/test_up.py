"""`modelyard up` and beat as real processes: beat on a damaged schedule file, and every part
(workers, their pool children, beat, the API) dying with a SIGKILLed supervisor."""

from __future__ import annotations

import os
import shelve
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Worker, _free_port

pytestmark = pytest.mark.integration


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _processes() -> dict[int, tuple[str, int, int]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            found[int(entry)] = stat
    return found


def _descendants(root: int) -> dict[int, tuple[int, int]]:
    """Every process under `root`: pid -> (parent pid, start time)."""
    table = _processes()
    found: dict[int, tuple[int, int]] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (_state, ppid, start) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = (ppid, start)
                frontier.append(pid)
    return found


def _running(pid: int, start: int) -> bool:
    """This very process (not a later one with its pid) still runs (a zombie counts as dead)."""
    stat = _stat(pid)
    return stat is not None and stat[2] == start and stat[0] != "Z"


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def _kill_left(processes: dict[int, tuple[int, int]]) -> None:
    for pid, (_ppid, start) in processes.items():
        if _running(pid, start):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(120)
def test_beat_on_a_truncated_schedule_file_starts_afresh_and_runs_its_first_tick(settings, tmp_path: Path) -> None:
    """What a demo left: `run/beat-schedule.dat` empty, the `.dir` still listing entries. Beat used
    to exit at every start (EOFError: Ran out of input in shelve), and `up` restarted it forever."""
    settings.ensure_folders()
    schedule = settings.run_folder / "beat-schedule"
    with shelve.open(str(schedule)) as db:  # a schedule file as beat keeps it (dbm.dumb)
        db["entries"] = {}
        db["__version__"], db["tz"], db["utc_enabled"] = "5.7.0", None, True
    Path(f"{schedule}.dat").write_bytes(b"")
    assert Path(f"{schedule}.dir").stat().st_size > 0

    log = tmp_path / "beat.log"
    env = {**os.environ, "MODELYARD_HOME": str(settings.root), "MODELYARD_MONITOR_TICK_SECONDS": "1"}
    argv = [sys.executable, "-m", "celery", "-A", "modelyard.platform.worker.app:app", "beat", "-l", "INFO"]
    with open(log, "wb") as out:  # as docker compose runs it: `celery beat -s FILE`
        beat = subprocess.Popen(
            [*argv, "-s", str(schedule)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
        )
    try:
        deadline = time.monotonic() + 60
        while "Sending due task monitor-tick" not in log.read_text(errors="replace"):
            assert beat.poll() is None, f"beat exited ({beat.returncode}): {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        text = log.read_text()
        assert f"schedule file {schedule} is damaged (EOFError: Ran out of input)" in text
        assert "Traceback" not in text  # one warning line, not celery's traceback
    finally:
        beat.terminate()
        try:
            beat.wait(timeout=20)
        except subprocess.TimeoutExpired:
            beat.kill()
            beat.wait(timeout=10)


@pytest.mark.timeout(300)
def test_up_killed_takes_every_part_with_it_and_frees_the_api_port(settings, tmp_path: Path) -> None:
    """`modelyard up` SIGKILLed (after a Ctrl-C, by the OOM killer) used to leave its workers,
    their pool children, beat and the API running in sessions of their own; the API held its port
    and the next `up`'s API died on "address already in use". Also: "API on" means it answers."""
    port = _free_port()
    env = {"MODELYARD_HOME": str(settings.root), "MODELYARD_API_PORT": str(port), "MODELYARD_API_HOST": "127.0.0.1"}
    log = tmp_path / "up.log"
    with open(log, "wb") as out:  # `modelyard up` as a user starts it, in a session of its own
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelyard.platform.cli.main", "up"],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=tmp_path,
        )
    up = Worker(proc, log)
    family: dict[int, tuple[int, int]] = {}
    try:
        deadline = time.monotonic() + 120
        while f"API on http://127.0.0.1:{port}" not in up.text():
            assert up.proc.poll() is None and time.monotonic() < deadline, up.text()[-3000:]
            time.sleep(0.05)
        answered_when_said = _answers(port)  # checked last: the kill is this test's first question
        while not _answers(port):
            assert up.proc.poll() is None and time.monotonic() < deadline, up.text()[-3000:]
            time.sleep(0.2)

        workers = [p for p in (settings.root / "logs").glob("*.log") if p.stem not in ("beat", "api")]
        assert len(workers) >= 2, workers  # the train worker(s) (one per GPU) and export+monitor
        while not all("ready." in w.read_text(errors="replace") for w in workers):
            assert up.proc.poll() is None and time.monotonic() < deadline, up.text()[-3000:]
            time.sleep(0.2)
        time.sleep(1)  # the pool children run their initializer (Celery's own PR_SET_PDEATHSIG)
        family = _descendants(up.proc.pid)
        parts = [pid for pid, (ppid, _start) in family.items() if ppid == up.proc.pid]
        pool = [pid for pid, (ppid, _start) in family.items() if ppid != up.proc.pid]
        assert len(parts) == len(workers) + 2 and len(pool) >= len(workers) + 1, family  # beat, api; pool children

        os.kill(up.proc.pid, signal.SIGKILL)
        up.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (left := [pid for pid, (_ppid, start) in family.items() if _running(pid, start)]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert left == [], {pid: _stat(pid) for pid in left}
        with socket.socket() as s:  # the next `up`'s API can listen
            s.bind(("127.0.0.1", port))
        assert answered_when_said, "`up` said 'API on' before the API listened"
    finally:
        if up.proc.poll() is None:  # failed early: whatever it started goes too
            family.update(_descendants(up.proc.pid))
        up.kill()
        _kill_left(family)
