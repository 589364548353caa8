"""The `modelyard` command line. Heavy modules are imported inside the commands."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from modelyard.errors import ModelyardError
from modelyard.platform.cli.common import JsonOpt
from modelyard.platform.cli.common import current_platform as _platform
from modelyard.platform.cli.common import print_json as _print_json

cli = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Train, register, gate, promote and roll back models."
)
out = Console()
err = Console(stderr=True)


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


def _settings():
    return _platform().settings


def _registry():
    return _platform().registry


def _audit():
    return _platform().audit


def _lifecycle():
    return _platform().lifecycle


@cli.command()
def train(
    spec: Annotated[Path, typer.Argument(help="Training spec (YAML).")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the training until it ends.")] = False,
    request_id: Annotated[str | None, typer.Option(help="Idempotency key; default: a new one.")] = None,
    trigger: Annotated[str, typer.Option(help="manual, drift or schedule.")] = "manual",
    as_json: JsonOpt = False,
) -> None:
    """Queue a training on the `train` queue (and follow it with --wait)."""
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.submit import submit_training

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
    from modelyard.platform.views.registry import print_training_result

    print_training_result(out, result)


@cli.command()
def models(as_json: JsonOpt = False) -> None:
    """Registered models and their aliases."""
    from modelyard.platform.views.registry import model_rows

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
    from modelyard.platform.views.registry import version_rows

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
    from modelyard.platform.services.operations import version_detail
    from modelyard.platform.views.registry import print_version

    data = version_detail(_platform(), ref)
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
    from modelyard.platform.services.follow import wait_for_task
    from modelyard.platform.services.operations import queue_export

    task_id, name, version = queue_export(_platform(), ref, target, "cli")
    if not wait:
        return out.print(f"queued export of {name}/{version} ({task_id})")
    summary = dict(wait_for_task(_settings(), task_id, f"export of {name}/{version}", timeout, as_json))
    if as_json:
        return _print_json(summary)
    from modelyard.platform.views.registry import print_export

    print_export(out, summary)


@cli.command()
def promote(
    ref: Annotated[str, typer.Argument(help="NAME/VERSION or NAME@challenger")],
    reason: Annotated[str, typer.Option(help="Why; kept in the audit log.")] = "promoted by hand",
    actor: Annotated[str, typer.Option(help="Who; kept in the audit log.")] = "cli",
    force: Annotated[bool, typer.Option("--force", help="Serve a version that is not deployable.")] = False,
) -> None:
    """Make a version champion; the current champion becomes previous."""
    from modelyard.platform.services.operations import promote as promote_version

    for e in promote_version(_platform(), ref, actor, reason, force=force):
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
    from modelyard.platform.services.operations import rollback as roll_back

    for e in roll_back(_platform(), name, actor, reason, to, force=force):
        out.print(f"{e.alias}: {e.from_version or '-'} -> {e.to_version or '-'}")
    from modelyard.platform.fleet.rollouts import Rollouts

    followers = [g.name for g in Rollouts(_settings()).groups() if g.follows == name]
    if followers:  # the API's fleet tick starts their rollouts
        out.print(f"device groups following {name} go back too: {', '.join(followers)}")


@cli.command()
def history(name: str, as_json: JsonOpt = False) -> None:
    """Every lifecycle event of a model, oldest first (the audit log)."""
    from modelyard.platform.services.operations import history_rows
    from modelyard.platform.views.registry import print_timeline

    rows = history_rows(_audit(), name)
    if as_json:
        return _print_json(rows)
    print_timeline(out, rows, title=f"history of {name}")


@cli.command()
def log(
    name: str,
    file: Annotated[Path, typer.Argument(help="CSV or Parquet: input columns, optional prediction and request_id")],
    source: Annotated[str, typer.Option(help="Where the rows come from (kept with them).")] = "upload",
) -> None:
    """Log production inputs (and predictions; computed by the champion when absent) for drift checks."""
    from modelyard.platform.services.ingest import log_file

    done = log_file(_platform(), name, file, source)
    out.print(
        f"logged {done['stored']} rows of {name} v{done['version']} (predictions {done['predictions']}); "
        f"request ids from {done['first_request_id']}"
    )


@cli.command()
def feedback(
    name: str,
    file: Annotated[Path, typer.Argument(help="CSV or Parquet with request_id and label columns")],
    source: Annotated[str, typer.Option(help="Where the labels come from (kept with them).")] = "upload",
) -> None:
    """Labels for logged predictions, joined by request id: all of the file or nothing."""
    from modelyard.platform.services.ingest import feedback_file

    done = feedback_file(_platform(), name, file, source)
    out.print(f"stored {done['stored']} labels for {name}")


@cli.command()
def drift(
    name: str,
    now: Annotated[bool, typer.Option("--now", help="Run a check of the newest window here, and wait for it.")] = False,
    limit: Annotated[int, typer.Option(help="How many recent checks to show.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Recent drift checks of a model (verdict, drifted columns, performance, what the policy did)."""
    from modelyard.platform.services.drift import drift_rows, run_check
    from modelyard.platform.views.registry import print_checks

    if now:
        result = run_check(_platform(), name)
        if result.get("verdict") is None:
            raise ModelyardError(f"no drift check of '{name}': {result['reason']}.")
    rows = drift_rows(_platform(), name, limit)
    if as_json:
        return _print_json(rows)
    print_checks(out, rows, f"drift checks of {name}")


@cli.command()
def retrain(
    name: str,
    reason: Annotated[str, typer.Option(help="Why; kept in the audit log.")],
    actor: Annotated[str, typer.Option(help="Who; kept in the audit log.")] = "cli",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the training to its gate.")] = False,
) -> None:
    """Retrain the champion's spec on its data plus the labeled window (monitoring.retrain_data), now."""
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.retraining import retrain as queue

    done = queue(_platform(), name, reason, actor)
    out.print(f"retraining {done['request_id']} queued (from v{done['parent_version']}, data {done['data']})")
    if wait:
        result = follow(_settings(), done["request_id"])
        out.print(f"v{result.get('version')}: {result.get('gate', {}).get('reasons', result.get('status'))}")


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
    from modelyard.platform.services.operations import find_requests

    rows = find_requests(_platform(), state, model, limit)
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
    out.print(table if rows else "no training requests" + (" in these states" if state else " yet"))


@cli.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated: train, export, monitor.")] = "train",
    concurrency: Annotated[int | None, typer.Option(help="Processes (train: 1 per GPU).")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker with the flags its queues need (replaces this process)."""
    from modelyard.platform.worker.supervisor import worker_argv

    argv = worker_argv(_settings(), queues.split(","), concurrency, loglevel)
    os.execv(argv[0], argv)


@cli.command()
def up(
    only: Annotated[
        list[str] | None,
        typer.Option(help="Run only these parts (repeatable): train (one worker per GPU), export, beat, api."),
    ] = None,
) -> None:
    """Start workers for every queue, beat and the HTTP API, supervised and restarted; Ctrl-C stops them."""
    from modelyard.platform.worker.supervisor import PARTS, Supervisor

    sys.exit(Supervisor(_settings(), out, only=frozenset(only) if only else PARTS).run())


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address; default MODELYARD_API_HOST (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port; default MODELYARD_API_PORT (8790).")] = None,
) -> None:
    """Run the HTTP API: registry, inference (Open Inference Protocol), ingest, tokens; docs at /docs."""
    from modelyard.platform.api.serve import run

    overrides = {k: v for k, v in (("api_host", host), ("api_port", port)) if v is not None}
    run(_settings().model_copy(update=overrides) if overrides else _settings())


token_cli = typer.Typer(no_args_is_help=True, help="Bearer tokens of the HTTP API (stored hashed).")
cli.add_typer(token_cli, name="token")


@token_cli.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="Who uses it (kept as the actor in the audit log).")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help="read, infer, ingest, operate, admin (repeatable).")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from modelyard.platform.store.tokens import TokenStore, check_scopes

    token = TokenStore(_settings()).create(name, scope, "cli")
    if as_json:
        return _print_json({"name": name, "token": token, "scopes": list(check_scopes(scope))})
    out.print(f"token [bold]{name}[/bold] ({', '.join(check_scopes(scope))}); shown once, keep it secret:")
    typer.echo(token)


@token_cli.command("list")
def token_list(as_json: JsonOpt = False) -> None:
    """Tokens: name, scopes, created, revoked, last used (never the token itself)."""
    from modelyard.platform.store.tokens import TokenStore

    found = TokenStore(_settings()).list()
    if as_json:
        return _print_json([t.as_dict() for t in found])
    table = Table("name", "prefix", "scopes", "created", "last used", "revoked")
    for t in found:
        table.add_row(t.name, t.prefix + "…", " ".join(t.scopes), t.created, t.last_used or "-", t.revoked or "-")
    out.print(table if found else "no tokens yet (`modelyard token create NAME --scope read`)")


@token_cli.command("revoke")
def token_revoke(name: str) -> None:
    """Revoke a token: the API refuses it from now on (a running server within MODELYARD_TOKEN_CACHE_SECONDS)."""
    from modelyard.platform.store.tokens import TokenStore

    info = TokenStore(_settings()).revoke(name)
    out.print(f"token {info.name} revoked at {info.revoked} UTC")


@cli.command()
def demo(
    scenario: Annotated[str, typer.Argument(help="lifecycle (the default), drift or edge")] = "lifecycle",
    name: Annotated[str | None, typer.Option(help="Registered model name to use.")] = None,
) -> None:
    """lifecycle: four versions on digits gated, promoted, rolled back. drift: the monitoring loop end to end.
    edge: a local fleet of five agents: canary rollouts, following the champion, a halted bad bundle, rollback."""
    if scenario == "lifecycle":
        from modelyard.platform.demos.lifecycle import run_demo

        return run_demo(_settings(), out, name or "digits-demo")
    if scenario == "drift":
        from modelyard.platform.demos.drift import run_drift_demo

        return run_drift_demo(_settings(), out, name or "cancer-drift")
    if scenario == "edge":
        from modelyard.platform.demos.edge import run_edge_demo

        return run_edge_demo(_settings(), out, name or "edge-demo")
    raise ModelyardError(f"unknown demo '{scenario}' (lifecycle, drift or edge).")


def _register_fleet() -> None:
    from modelyard.platform.cli import fleet

    fleet.register(cli)


_register_fleet()

if __name__ == "__main__":
    main()
