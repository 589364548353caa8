"""The `modelyard` command line. Heavy modules are imported inside the commands."""

from __future__ import annotations

import json
import os
import sys
import uuid
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from modelyard.errors import ModelyardError, NotFoundError

cli = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Train, register, gate, promote and roll back models."
)
out = Console()
err = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def main() -> None:
    """Entry point: a user error is one red sentence and exit code 1, never a stack trace."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow's INFO lines are not for CLI users
    try:
        cli(standalone_mode=False)
    except ModelyardError as e:
        err.print(f"[red]error:[/red] {e}")
        sys.exit(1)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except Exception as e:  # click's usage errors carry their own exit code
        code = getattr(e, "exit_code", None)
        if code is None:
            raise
        if hasattr(e, "show"):
            e.show()
        sys.exit(code)


@cache
def _platform():
    """Settings and the stores, opened on first use: read commands never open MLflow."""
    from modelyard.platform.context import Platform

    return Platform()


def _settings():
    return _platform().settings


def _registry():
    return _platform().registry


def _audit():
    return _platform().audit


def _lifecycle():
    return _platform().lifecycle


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@cli.command()
def train(
    spec: Annotated[Path, typer.Argument(help="Training spec (YAML).")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the training until it ends.")] = False,
    request_id: Annotated[str | None, typer.Option(help="Idempotency key; default: a new one.")] = None,
    trigger: Annotated[str, typer.Option(help="manual, drift or schedule.")] = "manual",
    as_json: JsonOpt = False,
) -> None:
    """Queue a training on the `train` queue (and follow it with --wait)."""
    from modelyard.platform.jobs.submit import follow, submit_training

    rid = request_id or uuid.uuid4().hex
    submitted = submit_training(_settings(), spec, rid, trigger)
    if not as_json:
        known = "" if submitted.new else " (known request: a worker will not train it twice)"
        out.print(f"queued training of [bold]{submitted.model}[/bold], request {rid}{known}")
    if not wait:
        if as_json:
            _print_json({"request_id": rid, "model": submitted.model, "new": submitted.new})
        return
    result = follow(_settings(), rid, quiet=as_json)
    if as_json:
        _print_json(result)
        return
    from modelyard.platform.cli.views import print_training_result

    print_training_result(out, result)


@cli.command()
def models(as_json: JsonOpt = False) -> None:
    """Registered models and their aliases."""
    from modelyard.platform.cli.views import model_rows

    found = model_rows(_audit())
    if as_json:
        return _print_json(found)
    table = Table("model", "latest", "champion", "challenger", "previous")
    for m in found:
        table.add_row(
            m["name"],
            m["latest_version"] or "-",
            *(m["aliases"].get(a, "-") for a in ("champion", "challenger", "previous")),
        )
    out.print(table if found else "no registered models yet")


@cli.command()
def versions(name: str, as_json: JsonOpt = False) -> None:
    """Versions of a model with their aliases and lineage."""
    from modelyard.platform.cli.views import version_rows

    rows = version_rows(_audit(), name)
    if as_json:
        return _print_json(rows)
    table = Table("version", "aliases", "trigger", "created", "dataset", "request")
    for r in rows:
        table.add_row(
            r["version"],
            ", ".join(r["aliases"]) or "-",
            r["trigger"] or "-",
            r["created"],
            (r["dataset_sha256"] or "-")[:12],
            (r["request_id"] or "-")[:12],
        )
    out.print(table)


@cli.command()
def show(ref: Annotated[str, typer.Argument(help="NAME@alias or NAME/VERSION")], as_json: JsonOpt = False) -> None:
    """One version: aliases, tags, test metrics, run."""
    from modelyard.platform.cli.views import export_report, print_version
    from modelyard.platform.registry.base import resolve

    registry = _registry()
    info = resolve(registry, ref)
    metrics = registry.run_metrics(info.run_id) if info.run_id else {}
    data = {
        **info.as_dict(),
        "metrics": {k: v for k, v in sorted(metrics.items())},
        "export": export_report(info.run_id),
    }
    if as_json:
        return _print_json(data)
    print_version(out, data)


@cli.command()
def export(
    ref: Annotated[str, typer.Argument(help="NAME@alias or NAME/VERSION")],
    target: Annotated[list[str] | None, typer.Option(help="edge-cpu, server-cpu, server-gpu (repeatable).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the export to finish.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 900,
    as_json: JsonOpt = False,
) -> None:
    """Export a version to ONNX variants on the `export` queue; tags name the variant per target."""
    from modelyard.exporters.spec import TARGETS
    from modelyard.platform.jobs.celery_app import EXPORT_TASK, create_app
    from modelyard.platform.jobs.submit import wait_for_task
    from modelyard.platform.registry.base import resolve

    unknown = [t for t in target or [] if t not in TARGETS]
    if unknown:
        raise ModelyardError(f"unknown target '{unknown[0]}' (targets: {', '.join(TARGETS)}).")
    info = resolve(_registry(), ref)
    payload = {"name": info.name, "version": info.version, "targets": target or None, "actor": "cli"}
    task_id = f"export-{info.name}-{info.version}-{uuid.uuid4().hex[:8]}"
    create_app(_settings()).send_task(EXPORT_TASK, args=[payload], task_id=task_id)
    if not wait:
        return out.print(f"queued export of {info.name}/{info.version} ({task_id})")
    summary = dict(wait_for_task(_settings(), task_id, f"export of {info.name}/{info.version}", timeout, as_json))
    if as_json:
        return _print_json(summary)
    from modelyard.platform.cli.views import print_export

    print_export(out, summary)


@cli.command()
def promote(
    ref: Annotated[str, typer.Argument(help="NAME/VERSION or NAME@challenger")],
    reason: Annotated[str, typer.Option(help="Why; kept in the audit log.")] = "promoted by hand",
    actor: Annotated[str, typer.Option(help="Who; kept in the audit log.")] = "cli",
    force: Annotated[bool, typer.Option("--force", help="Serve a version that is not deployable.")] = False,
) -> None:
    """Make a version champion; the current champion becomes previous."""
    from modelyard.platform.registry.base import resolve

    lifecycle = _lifecycle()
    info = resolve(lifecycle.registry, ref, default_alias="challenger")
    for e in lifecycle.promote(info.name, info.version, actor, reason, force=force):
        out.print(f"{e.alias}: {e.from_version or '-'} -> {e.to_version or '-'}")


@cli.command()
def rollback(
    name: str,
    to: Annotated[str | None, typer.Option(help="Version to restore; default: previous.")] = None,
    reason: Annotated[str, typer.Option(help="Why; kept in the audit log.")] = "rolled back by hand",
    actor: Annotated[str, typer.Option(help="Who; kept in the audit log.")] = "cli",
    force: Annotated[bool, typer.Option("--force", help="Serve a version that is not deployable.")] = False,
) -> None:
    """Restore `previous` (or --to VERSION) as champion."""
    for e in _lifecycle().rollback(name, actor, reason, to, force=force):
        out.print(f"{e.alias}: {e.from_version or '-'} -> {e.to_version or '-'}")


@cli.command()
def history(name: str, as_json: JsonOpt = False) -> None:
    """Every lifecycle event of a model, oldest first (the audit log)."""
    from modelyard.platform.cli.views import event_rows, print_timeline

    audit = _audit()
    if not audit.knows(name):  # a clear error, not an empty table
        raise NotFoundError(f"model '{name}' is not registered.")
    rows = event_rows(audit.history(name))
    if as_json:
        return _print_json(rows)
    print_timeline(out, rows, title=f"history of {name}")


@cli.command()
def requests(
    state: Annotated[
        list[str] | None,
        typer.Option(
            help="Only these states (repeatable): queued, training, registering, trained, exporting, "
            "succeeded, failed; `unfinished` for every non-final one."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only this model's requests.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Training requests with their state, owner, attempts and last error (what the reconciler drives)."""
    from modelyard.platform.cli.views import request_rows
    from modelyard.platform.store.states import FINAL, State

    wanted: set[State] = set()
    for s in state or []:
        if s == "unfinished":
            wanted |= {x for x in State if x not in FINAL}
        elif s in {x.value for x in State}:
            wanted.add(State(s))
        else:
            names = ", ".join([x.value for x in State] + ["unfinished"])
            raise ModelyardError(f"unknown state '{s}' (states: {names}).")
    rows = request_rows(_platform().requests.find(sorted(wanted), model, limit))
    if as_json:
        return _print_json(rows)
    table = Table("request", "model", "state", "version", "owner", "attempts", "updated", "last error")
    for r in rows:
        table.add_row(
            r["request_id"][:24],
            r["model"],
            r["state"],
            r["version"] or "-",
            r["owner"] or "-",
            f"{r['attempts']}+{r['export_attempts']}",
            r["updated"],
            (r["error"] or "-")[:80],
        )
    out.print(table if rows else "no training requests" + (" in these states" if wanted else " yet"))


@cli.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated: train, export, monitor.")] = "train",
    concurrency: Annotated[int | None, typer.Option(help="Processes (train: 1 per GPU).")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker with the flags its queues need (replaces this process)."""
    from modelyard.platform.jobs.supervisor import worker_argv

    argv = worker_argv(_settings(), queues.split(","), concurrency, loglevel)
    os.execv(argv[0], argv)


@cli.command()
def up(
    only: Annotated[
        list[str] | None,
        typer.Option(help="Run only these parts (repeatable): train (one worker per GPU), export, beat."),
    ] = None,
) -> None:
    """Start workers for every queue and beat, supervised and restarted; Ctrl-C stops them."""
    from modelyard.platform.jobs.supervisor import PARTS, Supervisor

    sys.exit(Supervisor(_settings(), out, only=frozenset(only) if only else PARTS).run())


@cli.command()
def demo(name: Annotated[str, typer.Option(help="Registered model name to use.")] = "digits-demo") -> None:
    """Train four versions on digits; gate (threshold, baseline, champion), promote, roll back; print the timeline."""
    from modelyard.platform.cli.demo import run_demo

    run_demo(_settings(), out, name)


if __name__ == "__main__":
    main()
