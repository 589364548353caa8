"""What every command module shares: the platform of this process, the argument types, JSON output.

The grammar: `modelyard NOUN VERB`, nouns plural (as the mlflow CLI: `models`, `versions`,
`trainings`, ...), one verb per action. Every command that starts long work returns at once
with an id and takes `--wait` to follow it; `show ID --wait` follows it later. A version is
named the same way everywhere (RefArg). Shares are percentages everywhere.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Annotated, Any

import typer
from rich.console import Console

from modelyard.errors import InputError

out = Console()
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
RefArg = Annotated[str, typer.Argument(help="NAME (its champion), NAME@ALIAS or NAME/VERSION.")]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow it until it ends (default: return at once).")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds --wait waits at most.")]
ReasonOpt = Annotated[str, typer.Option(help="Why; kept in the audit log.")]
ActorOpt = Annotated[str, typer.Option(help="Who; kept in the audit log.")]


@cache
def current_platform() -> Any:
    """Settings and the stores, opened on first use: read commands never open MLflow."""
    from modelyard.platform.context import Platform

    return Platform()


def read_audit() -> Any:
    """The audit log for a read command: straight from the embedded SQLite file when there is one
    (no pydantic-settings, no SQLAlchemy: store/reads.py), else the platform's AuditLog."""
    from modelyard.platform.store.reads import AuditReader, embedded_database

    path = embedded_database()
    reader = AuditReader.open(path) if path is not None else None
    return reader if reader is not None else current_platform().audit


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def percent(text: str, option: str) -> float:
    """A share given as a percentage, `10%` or `10`, in (0, 100]."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise InputError(f"{option} '{text}' is not a percentage such as 10%.") from None
    if not 0 < value <= 100:
        raise InputError(f"{option} must be between 0% and 100%, not {text}.")
    return value
