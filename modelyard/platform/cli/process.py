"""Running the platform: `modelyard up` supervises its parts, `modelyard run PART` runs one in the foreground.

One vocabulary for both: the parts are the workers by queue (train, export, monitor), beat and
the api. `up --only export --only monitor` and `run export monitor` start the same worker; `run`
is what a container or a service manager runs, `up` is one machine's everything.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from modelyard.errors import ModelyardError
from modelyard.platform.cli.common import current_platform, out

WORKER_PARTS = {"train": ("train", "train-all"), "export": ("export",), "monitor": ("monitor",)}
PARTS = (*WORKER_PARTS, "beat", "api")


def up(
    only: Annotated[
        list[str] | None,
        typer.Option(help="Run only these parts (repeatable): train (one worker per GPU), export, monitor, beat, api."),
    ] = None,
) -> None:
    """Start every part (workers, beat, the HTTP API), supervised and restarted; Ctrl-C stops them."""
    from modelyard.platform.worker.supervisor import Supervisor

    chosen = frozenset(only) if only else frozenset(PARTS)
    _check(sorted(chosen))
    sys.exit(Supervisor(current_platform().settings, out, only=chosen).run())


def run(
    parts: Annotated[
        list[str], typer.Argument(help="train, export, monitor (one worker for those given), beat or api.")
    ],
    concurrency: Annotated[int | None, typer.Option(help="Worker processes (train: 1 per GPU).")] = None,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    host: Annotated[str | None, typer.Option(help="api: address; default MODELYARD_API_HOST (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="api: port; default MODELYARD_API_PORT (8790).")] = None,
) -> None:
    """Run one part of the platform in the foreground (this process becomes it): a worker, beat or the API."""
    _check(parts)
    settings = current_platform().settings
    if parts == ["api"]:
        from modelyard.platform.api.serve import run as serve

        overrides = {k: v for k, v in (("api_host", host), ("api_port", port)) if v is not None}
        return serve(settings.model_copy(update=overrides) if overrides else settings)
    if parts == ["beat"]:
        from modelyard.platform.worker.supervisor import beat_argv

        argv, env = beat_argv(settings, loglevel), dict(os.environ)
    elif set(parts) <= set(WORKER_PARTS):
        argv, env = _worker(settings, parts, concurrency, loglevel)
    else:
        raise ModelyardError("run one part at a time: workers by queue (train, export, monitor), beat, or api.")
    os.execve(argv[0], argv, env)


def _worker(settings, parts: list[str], concurrency: int | None, loglevel: str) -> tuple[list[str], dict[str, str]]:
    from modelyard.platform.worker.gpus import train_workers, visible_gpus
    from modelyard.platform.worker.supervisor import worker_argv

    env = dict(os.environ)
    if "train" in parts:
        plan = train_workers(visible_gpus())
        if len(plan) > 1:
            raise ModelyardError(
                f"this machine has {len(plan) - 1} GPUs: `modelyard up --only train` runs one worker per GPU."
            )
        env.update(plan[0].env)
    queues = [q for p in parts for q in WORKER_PARTS[p]]
    return worker_argv(settings, queues, concurrency, loglevel), env


def _check(parts: list[str]) -> None:
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ModelyardError(f"unknown part '{unknown[0] if unknown else ''}' (parts: {', '.join(PARTS)}).")


def demo(
    scenario: Annotated[str, typer.Argument(help="lifecycle (the default), drift or edge")] = "lifecycle",
    name: Annotated[str | None, typer.Option(help="Registered model name to use.")] = None,
) -> None:
    """lifecycle: four versions on digits gated, promoted, rolled back. drift: the monitoring loop end to end.
    edge: a local fleet of five agents: canary rollouts, following the champion, a halted bad bundle, rollback."""
    settings = current_platform().settings
    if scenario == "lifecycle":
        from modelyard.platform.demos.lifecycle import run_demo

        return run_demo(settings, out, name or "digits-demo")
    if scenario == "drift":
        from modelyard.platform.demos.drift import run_drift_demo

        return run_drift_demo(settings, out, name or "cancer-drift")
    if scenario == "edge":
        from modelyard.platform.demos.edge import run_edge_demo

        return run_edge_demo(settings, out, name or "edge-demo")
    raise ModelyardError(f"unknown demo '{scenario}' (lifecycle, drift or edge).")


def register(cli: typer.Typer, panel: str) -> None:
    for command in (up, run, demo):
        cli.command(rich_help_panel=panel)(command)
