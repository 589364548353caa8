"""`modelyard trainings ...`: start a training from a spec, list the requests, follow one."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from modelyard.platform.cli.common import JsonOpt, WaitOpt, current_platform, out, print_json

trainings_cli = typer.Typer(no_args_is_help=True, help="Training requests: start one, list them, follow one.")


@trainings_cli.command("start")
def trainings_start(
    spec: Annotated[Path, typer.Argument(help="Training spec (YAML).")],
    wait: WaitOpt = False,
    request_id: Annotated[str | None, typer.Option(help="Idempotency key; default: a new one.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue a training on the `train` queue; it exports, gates and (if it passes) promotes by itself."""
    from modelyard.platform.services.submit import submit_training

    rid = request_id or uuid.uuid4().hex
    submitted = submit_training(current_platform().settings, spec, rid)
    if not as_json:
        known = "" if submitted.new else " (known request: a worker will not train it twice)"
        out.print(f"queued training of [bold]{submitted.model}[/bold], request {rid}{known}")
    if wait:
        return follow_and_show(rid, as_json)
    if as_json:
        print_json({"request_id": rid, "model": submitted.model, "new": submitted.new})


@trainings_cli.command("list")
def trainings_list(
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
    from modelyard.platform.services.operations import find_requests

    rows = find_requests(current_platform(), state, model, limit)
    if as_json:
        return print_json(rows)
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
    out.print(table if rows else "no training requests" + (" in these states" if state else " yet"))


@trainings_cli.command("show")
def trainings_show(request_id: str, wait: WaitOpt = False, as_json: JsonOpt = False) -> None:
    """One training request: its state, version, attempts, last error and result; --wait follows it to its end."""
    from modelyard.platform.services.operations import request_status

    if wait:
        return follow_and_show(request_id, as_json)
    data = request_status(current_platform(), request_id)
    if as_json:
        return print_json(data)
    out.print(f"request {data['request_id']} of {data['model']}: {data['state']}")
    for key in ("version", "trigger", "owner", "attempts", "export_attempts", "updated", "error"):
        if data.get(key) not in (None, ""):
            out.print(f"  {key}: {data[key]}")
    if data.get("progress"):
        p = data["progress"]
        out.print(f"  progress: {p.get('stage', 'training')} epoch {p.get('epoch', 0)}/{p.get('epochs', '?')}")


def follow_and_show(request_id: str, as_json: bool) -> None:
    """Follow a request with a progress bar to its end, then show its result (the gate's decision)."""
    from modelyard.platform.services.follow import follow

    result = follow(current_platform().settings, request_id, quiet=as_json)
    if as_json:
        return print_json(result)
    from modelyard.platform.views.registry import print_training_result

    print_training_result(out, result)


def register(cli: typer.Typer, panel: str) -> None:
    cli.add_typer(trainings_cli, name="trainings", rich_help_panel=panel)
