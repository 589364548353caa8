"""What every command module shares: the platform of this process and JSON output."""

from __future__ import annotations

import json
from functools import cache
from typing import Annotated, Any

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@cache
def current_platform() -> Any:
    """Settings and the stores, opened on first use: read commands never open MLflow."""
    from modelyard.platform.context import Platform

    return Platform()


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))
