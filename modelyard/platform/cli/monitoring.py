"""`modelyard inferences`, `labels` and `drift`: what production sent, what it should have been, the verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelyard.errors import ModelyardError
from modelyard.platform.cli.common import JsonOpt, current_platform, out, print_json

inferences_cli = typer.Typer(no_args_is_help=True, help="The inference log: upload production inputs.")
labels_cli = typer.Typer(no_args_is_help=True, help="Labels for logged predictions, joined by request id.")
drift_cli = typer.Typer(no_args_is_help=True, help="Drift checks: recent verdicts, or a check now.")
SourceOpt = Annotated[str, typer.Option(help="Where the rows come from (kept with them).")]


@inferences_cli.command("upload")
def inferences_upload(
    name: str,
    file: Annotated[Path, typer.Argument(help="CSV or Parquet: input columns, optional prediction and request_id")],
    source: SourceOpt = "upload",
    as_json: JsonOpt = False,
) -> None:
    """Log production inputs (and predictions; computed by the champion when absent): all of the file or nothing."""
    from modelyard.platform.services.ingest import log_file

    done = log_file(current_platform(), name, file, source)
    if as_json:
        return print_json(done)
    out.print(
        f"logged {done['stored']} rows of {name} v{done['version']} (predictions {done['predictions']}); "
        f"request ids from {done['first_request_id']}"
    )


@labels_cli.command("upload")
def labels_upload(
    name: str,
    file: Annotated[Path, typer.Argument(help="CSV or Parquet with request_id and label columns")],
    source: SourceOpt = "upload",
    as_json: JsonOpt = False,
) -> None:
    """Labels for logged predictions, joined by request id: all of the file or nothing."""
    from modelyard.platform.services.ingest import feedback_file

    done = feedback_file(current_platform(), name, file, source)
    if as_json:
        return print_json(done)
    out.print(f"stored {done['stored']} labels for {name}")


@drift_cli.command("list")
def drift_list(
    name: str,
    limit: Annotated[int, typer.Option(min=1, help="How many recent checks to show.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Recent drift checks of a model: verdict, drifted columns, performance, what the policy did."""
    from modelyard.platform.services.drift import drift_rows
    from modelyard.platform.views.registry import print_checks

    rows = drift_rows(current_platform(), name, limit)
    if as_json:
        return print_json(rows)
    print_checks(out, rows, f"drift checks of {name}")


@drift_cli.command("check")
def drift_check(name: str, as_json: JsonOpt = False) -> None:
    """Judge the champion's newest window here and now (the policy acts on it as on a scheduled check)."""
    from modelyard.platform.services.drift import run_check
    from modelyard.platform.views.registry import print_checks

    result = run_check(current_platform(), name)
    if result.get("verdict") is None:
        raise ModelyardError(f"no drift check of '{name}': {result['reason']}.")
    if as_json:
        return print_json(result)
    print_checks(out, [result], f"drift check of {name}")


def register(cli: typer.Typer, panel: str) -> None:
    cli.add_typer(inferences_cli, name="inferences", rich_help_panel=panel)
    cli.add_typer(labels_cli, name="labels", rich_help_panel=panel)
    cli.add_typer(drift_cli, name="drift", rich_help_panel=panel)
