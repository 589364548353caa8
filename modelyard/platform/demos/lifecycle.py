"""`modelyard demo`: the whole lifecycle on digits, on real workers, in a few minutes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from rich.console import Console

from modelyard.errors import ModelyardError, NotFoundError
from modelyard.platform.context import Platform
from modelyard.platform.settings import Settings


def examples_folder() -> Path:
    """The checkout's examples/ (editable install), else ./examples (the Docker image's /app)."""
    for folder in (Path(__file__).resolve().parents[3] / "examples", Path.cwd() / "examples"):
        if (folder / STEPS[0][1]).is_file():
            return folder
    raise ModelyardError("the demo's specs are missing: run it from a modelyard checkout (examples/ not found).")


STEPS = (
    ("v1: a small CNN; it meets the threshold but loses to logistic regression", "digits-v1.yaml"),
    ("v2: a two-layer CNN; no champion yet, threshold and baseline decide", "digits-v2.yaml"),
    ("v3: a wider CNN; must beat the champion on the same held-out data", "digits-v3.yaml"),
    ("v4: a deliberately weak model; the gate must reject it", "digits-v4-weak.yaml"),
)


def free_name(platform: Platform, wanted: str) -> str:
    """The wanted name if unused in this registry, else the first free `wanted-N`."""
    taken = {m.name for m in platform.registry.list_models()}
    name, n = wanted, 1
    while name in taken:
        n += 1
        name = f"{wanted}-{n}"
    return name


def start_workers(settings: Settings, console: Console) -> subprocess.Popen | None:
    """Start `modelyard up` unless workers run already; the handle to stop it, or None."""
    from modelyard.platform.worker.supervisor import running_supervisor

    if running_supervisor(settings):
        console.print("using the workers of the running `modelyard up`")
        return None
    if settings.mode == "server":
        from modelyard.platform.queue.app import create_app

        if create_app(settings).control.ping(timeout=2.0):
            console.print("using the running workers")
            return None
    console.print("starting workers (`modelyard up`) for the demo")
    return subprocess.Popen(
        # The demo needs workers and beat; the API (`modelyard up` starts it too) is not part of it.
        [
            sys.executable,
            "-m",
            "modelyard.platform.cli.main",
            "up",
            "--only",
            "train",
            "--only",
            "export",
            "--only",
            "monitor",
            "--only",
            "beat",
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_workers(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def open_demo(settings: Settings, console: Console, wanted: str, title: str) -> tuple[Platform, str]:
    """The stores, and a model name this registry has not used: what every demo starts with."""
    from modelyard.platform.services.bootstrap import prepare_stores

    examples_folder()  # a demo run outside a checkout fails here, before anything starts
    prepare_stores(settings)
    platform = Platform(settings)
    name = free_name(platform, wanted)
    console.print(f"[bold]{title}[/bold]: model '{name}', {settings.mode} mode, home {settings.root}")
    return platform, name


def where_to_look(console: Console, settings: Settings, commands: list[str], mlflow_note: str = "") -> None:
    console.print("where to look:")
    console.print("  " + "      ".join(commands))
    ui = f"mlflow ui --backend-store-uri {settings.tracking_uri}"
    if settings.artifact_location:
        ui += f" --default-artifact-root {settings.artifact_location}"
    console.print(f"  {ui}{mlflow_note}")


def run_demo(settings: Settings, console: Console, wanted: str) -> None:
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.submit import submit_training
    from modelyard.platform.views.registry import event_rows, print_timeline, print_training_result

    examples = examples_folder()
    platform, name = open_demo(settings, console, wanted, "modelyard demo")
    workers = start_workers(settings, console)
    started = time.monotonic()
    try:
        versions = []
        for title, spec_file in STEPS:
            console.rule(title)
            rid = uuid.uuid4().hex
            submit_training(settings, examples / spec_file, rid, overrides={"name": name})
            result = follow(settings, rid, timeout=900)
            print_training_result(console, result)
            versions.append(result["version"])
        console.rule("rollback: back to v2, as if v3 misbehaved in production")
        for e in platform.lifecycle.rollback(name, "demo", "demo: v3 misbehaves in production; restore v2"):
            console.print(f"{e.alias}: {e.from_version or '-'} -> {e.to_version or '-'}")
    finally:
        stop_workers(workers)
    try:
        aliases = {a: (platform.registry.get_alias(name, a) or None) for a in ("champion", "challenger", "previous")}
    except NotFoundError:
        aliases = {}
    print_timeline(console, event_rows(platform.audit.history(name)), title=f"timeline of {name}")
    console.print("aliases now: " + ", ".join(f"{a} = v{v.version}" if v else f"{a} = -" for a, v in aliases.items()))
    console.print(f"versions trained: {', '.join(versions)}; demo took {time.monotonic() - started:.0f} s")
    where_to_look(
        console,
        settings,
        [
            f"modelyard models history {name}",
            f"modelyard versions list {name}",
            f"modelyard versions show {name}@champion",
        ],
    )
