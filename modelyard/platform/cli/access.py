"""`modelyard tokens ...`: the HTTP API's bearer tokens, with scopes, stored hashed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from modelyard.platform.cli.common import JsonOpt, current_platform, out, print_json

tokens_cli = typer.Typer(no_args_is_help=True, help="Bearer tokens of the HTTP API (stored hashed).")


@tokens_cli.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="Who uses it (kept as the actor in the audit log).")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help="read, infer, ingest, operate, admin (repeatable).")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from modelyard.platform.store.tokens import TokenStore, check_scopes

    token = TokenStore(current_platform().settings).create(name, scope, "cli")
    if as_json:
        return print_json({"name": name, "token": token, "scopes": list(check_scopes(scope))})
    out.print(f"token [bold]{name}[/bold] ({', '.join(check_scopes(scope))}); shown once, keep it secret:")
    typer.echo(token)


@tokens_cli.command("list")
def tokens_list(as_json: JsonOpt = False) -> None:
    """Tokens: name, scopes, created, revoked, last used (never the token itself)."""
    from modelyard.platform.store.tokens import TokenStore

    found = TokenStore(current_platform().settings).list()
    if as_json:
        return print_json([t.as_dict() for t in found])
    table = Table("name", "prefix", "scopes", "created", "last used", "revoked")
    for t in found:
        table.add_row(t.name, t.prefix + "…", " ".join(t.scopes), t.created, t.last_used or "-", t.revoked or "-")
    out.print(table if found else "no tokens yet (`modelyard tokens create NAME --scope read`)")


@tokens_cli.command("revoke")
def tokens_revoke(name: str) -> None:
    """Revoke a token: the API refuses it from now on (a running server within MODELYARD_TOKEN_CACHE_SECONDS)."""
    from modelyard.platform.store.tokens import TokenStore

    info = TokenStore(current_platform().settings).revoke(name)
    out.print(f"token {info.name} revoked at {info.revoked} UTC")


def register(cli: typer.Typer, panel: str) -> None:
    cli.add_typer(tokens_cli, name="tokens", rich_help_panel=panel)
