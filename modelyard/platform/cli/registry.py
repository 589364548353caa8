"""`modelyard models ...` and `modelyard versions ...`: the registry, its aliases and the audit log."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from modelyard.platform.cli.common import (
    ActorOpt,
    JsonOpt,
    ReasonOpt,
    RefArg,
    TimeoutOpt,
    WaitOpt,
    current_platform,
    out,
    print_json,
    read_audit,
)

models_cli = typer.Typer(no_args_is_help=True, help="Registered models: aliases, history, promotion, rollback.")
versions_cli = typer.Typer(no_args_is_help=True, help="Versions of a model: lineage, metrics, exports, bundles.")
ForceOpt = Annotated[bool, typer.Option("--force", help="Serve a version that is not deployable.")]


@models_cli.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """Registered models and their aliases."""
    from modelyard.platform.views.registry import model_rows

    found = model_rows(read_audit())
    if as_json:
        return print_json(found)
    table = Table("model", "latest", "champion", "challenger", "previous")
    for m in found:
        aliases = (m["aliases"].get(a, "-") for a in ("champion", "challenger", "previous"))
        table.add_row(m["name"], m["latest_version"] or "-", *aliases)
    out.print(table if found else "no registered models yet")


@models_cli.command("history")
def models_history(name: str, as_json: JsonOpt = False) -> None:
    """Every lifecycle event of a model, oldest first (the audit log)."""
    from modelyard.platform.services.operations import history_rows
    from modelyard.platform.views.registry import print_timeline

    rows = history_rows(read_audit(), name)
    if as_json:
        return print_json(rows)
    print_timeline(out, rows, title=f"history of {name}")


@models_cli.command("promote")
def models_promote(
    ref: Annotated[str, typer.Argument(help="NAME (its challenger), NAME@ALIAS or NAME/VERSION.")],
    reason: ReasonOpt = "promoted by hand",
    actor: ActorOpt = "cli",
    force: ForceOpt = False,
) -> None:
    """Make a version champion; the current champion becomes previous."""
    from modelyard.platform.services.operations import promote

    for e in promote(current_platform(), ref, actor, reason, force=force):
        out.print(f"{e.alias}: {e.from_version or '-'} -> {e.to_version or '-'}")


@models_cli.command("rollback")
def models_rollback(
    name: str,
    to: Annotated[str | None, typer.Option(help="Version to restore; default: previous.")] = None,
    reason: ReasonOpt = "rolled back by hand",
    actor: ActorOpt = "cli",
    force: ForceOpt = False,
) -> None:
    """Restore `previous` (or --to VERSION) as champion; device groups that follow the model go back too."""
    from modelyard.platform.fleet.rollouts import Rollouts
    from modelyard.platform.services.operations import rollback

    platform = current_platform()
    for e in rollback(platform, name, actor, reason, to, force=force):
        out.print(f"{e.alias}: {e.from_version or '-'} -> {e.to_version or '-'}")
    followers = [g.name for g in Rollouts(platform.settings).groups() if g.follows == name]
    if followers:  # the fleet's tick starts their rollouts
        out.print(f"device groups following {name} go back too: {', '.join(followers)}")


@models_cli.command("retrain")
def models_retrain(
    name: str,
    reason: Annotated[str, typer.Option(help="Why; kept in the audit log.")],
    actor: ActorOpt = "cli",
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Retrain the champion's spec on its data plus the labeled window (monitoring.retrain_data), now."""
    from modelyard.platform.services.retraining import retrain

    platform = current_platform()
    done = retrain(platform, name, reason, actor)
    if not as_json:
        out.print(f"retraining {done['request_id']} queued (from v{done['parent_version']}, data {done['data']})")
    if wait:
        from modelyard.platform.cli.trainings import follow_and_show

        return follow_and_show(done["request_id"], as_json)
    if as_json:
        print_json(done)


@versions_cli.command("list")
def versions_list(name: str, as_json: JsonOpt = False) -> None:
    """Versions of a model with their aliases and lineage."""
    from modelyard.platform.views.registry import version_rows

    rows = version_rows(read_audit(), name)
    if as_json:
        return print_json(rows)
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


@versions_cli.command("show")
def versions_show(ref: RefArg, as_json: JsonOpt = False) -> None:
    """One version: aliases, tags, test metrics, run, export report."""
    from modelyard.platform.services.operations import version_detail
    from modelyard.platform.views.registry import print_version

    data = version_detail(current_platform(), ref)
    if as_json:
        return print_json(data)
    print_version(out, data)


@versions_cli.command("export")
def versions_export(
    ref: RefArg,
    target: Annotated[list[str] | None, typer.Option(help="edge-cpu, server-cpu, server-gpu (repeatable).")] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 900,
    as_json: JsonOpt = False,
) -> None:
    """Export a version to ONNX variants on the `export` queue; tags name the variant per target."""
    from modelyard.platform.services.follow import wait_for_task
    from modelyard.platform.services.operations import queue_export

    platform = current_platform()
    task_id, name, version = queue_export(platform, ref, target, "cli")
    if not wait:
        if as_json:
            return print_json({"task_id": task_id, "model": name, "version": version})
        return out.print(f"queued export of {name}/{version} ({task_id})")
    summary = dict(wait_for_task(platform.settings, task_id, f"export of {name}/{version}", timeout, as_json))
    if as_json:
        return print_json(summary)
    from modelyard.platform.views.registry import print_export

    print_export(out, summary)


def register(cli: typer.Typer, panel: str) -> None:
    cli.add_typer(models_cli, name="models", rich_help_panel=panel)
    cli.add_typer(versions_cli, name="versions", rich_help_panel=panel)
