"""Generates reference/cli.md from the command trees themselves: the typer app of `modelyard`
(walked as click commands) and the argparse parser of `modelyard-agent`. Run by mkdocs-gen-files.

Typer ships its own copy of click (typer._click), so commands and parameters are recognised by what
they have (list_commands, param_type_name, is_flag, choices), not by click's classes."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path
from typing import Any

import mkdocs_gen_files
from typer.main import get_command

sys.path.insert(0, str(Path(__file__).parent))
from _md import anchor, cell, code, pipes, text

CLI_MODULE = "modelyard.platform.cli.main"
AGENT_MODULE = "modelyard.edge.cli"


def typer_app() -> object:
    module = importlib.import_module(CLI_MODULE)
    for name in ("app", "cli"):
        app = getattr(module, name, None)
        if app is not None and type(app).__name__ == "Typer":
            return app
    raise RuntimeError(
        f"docs: {CLI_MODULE} has no typer app named `app` (or `cli`): the CLI reference cannot be built."
    )


def has_default(value: object) -> bool:
    if value is None or value == () or value == []:
        return False
    return not type(value).__name__.lower().endswith(("sentinel", "unset"))  # click's UNSET marker


def is_argument(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def is_flag(param: Any) -> bool:
    return bool(getattr(param, "is_flag", False))


def param_type(param: Any, ctx: Any) -> str:
    if is_flag(param):
        return "flag"
    if hasattr(param, "display_type"):  # typer's parameters describe their own type
        name = param.display_type(ctx).strip("<>")
        if "|" in name:
            name = "one of " + ", ".join(code(c) for c in name.split("|"))
    elif getattr(param.type, "choices", None):
        name = "one of " + ", ".join(code(c) for c in param.type.choices)
    else:
        name = getattr(param.type, "name", "") or type(param.type).__name__
    limits = [f"{sign} {v}" for sign, v in ((">=", getattr(param, "min", None)), ("<=", getattr(param, "max", None)))]
    extra = [x for x in limits if not x.endswith("None")]
    if getattr(param, "multiple", False):
        name = name.removeprefix("list[").removesuffix("]")
        extra.append("repeatable")
    return ", ".join([name, *extra])


def param_rows(command: Any, ctx: Any) -> list[str]:
    rows = []
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        if is_argument(param):
            names = code((param.metavar or param.name or "").upper())
        else:
            names = ", ".join(code(o) for o in [*param.opts, *param.secondary_opts])
        default = "required" if param.required else ""
        if not param.required and has_default(param.default) and not callable(param.default):
            shown = param.default
            if is_flag(param) and isinstance(shown, bool):
                shown = "on" if shown else "off"
            default = code(shown if not isinstance(shown, (list, tuple)) else ", ".join(map(str, shown)))
        help_text = getattr(param, "help", None) or ""
        if getattr(param, "envvar", None):
            help_text += f" (environment: `{param.envvar}`)"
        rows.append(f"| {names} | {pipes(param_type(param, ctx))} | {default or '-'} | {cell(help_text)} |")
    return rows


def render_command(out: list[str], ctx: Any, level: int) -> None:
    command = ctx.command
    path = ctx.command_path
    out.append(f"{'#' * level} {path} {{#{anchor(path)}}}\n")
    if command.help:
        out.append(text(command.help.replace("\b\n", "")) + "\n")
    pieces = [  # argument names in capitals, as click's own help writes them
        re.sub(r"[a-z_]+", lambda m: m.group(0).upper(), p).replace("{", "").replace("}", "")
        if re.fullmatch(r"[\[{]*[a-z_]+[\]}.]*", p)
        else p
        for p in command.collect_usage_pieces(ctx)
    ]
    usage = " ".join([path, *pieces])
    out.append(f"Usage: {code(usage)}\n")
    rows = param_rows(command, ctx)
    if rows:
        out += ["| argument or option | type | default | description |", "|---|---|---|---|", *rows, ""]
    if hasattr(command, "list_commands"):
        children = [(n, command.get_command(ctx, n)) for n in command.list_commands(ctx)]
        children = [(n, c) for n, c in children if c is not None and not c.hidden]
        out += ["| command | what it does |", "|---|---|"]
        for name, child in children:
            out.append(f"| [{code(name)}](#{anchor(path, name)}) | {cell(child.get_short_help_str(limit=120))} |")
        out.append("")
        for name, child in children:
            render_command(out, child.context_class(child, info_name=name, parent=ctx), min(level + 1, 4))


def usage_of(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().removeprefix("usage: ").split())


def render_agent(out: list[str]) -> None:
    module = importlib.import_module(AGENT_MODULE)
    parser: argparse.ArgumentParser = module._parser()
    out.append(f"## {parser.prog} {{#{anchor(parser.prog)}}}\n")
    out.append(text(parser.description or "") + "\n")
    out.append(f"Usage: {code(usage_of(parser))}\n")
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help for s in subparsers for c in s._choices_actions}
    for sub in subparsers:
        for name, child in sub.choices.items():
            path = f"{parser.prog} {name}"
            out.append(f"### {path} {{#{anchor(path)}}}\n")
            out.append(text(helps.get(name) or child.description or "") + "\n")
            out.append(f"Usage: {code(usage_of(child))}\n")
            rows = []
            for action in child._actions:
                if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                    continue
                names = ", ".join(code(o) for o in action.option_strings) or code(action.dest)
                kind = getattr(action.type, "__name__", None) or ("flag" if action.nargs == 0 else "str")
                if isinstance(action, argparse._AppendAction):
                    kind += ", repeatable"
                default = "required" if action.required else ""
                if not action.required and has_default(action.default) and action.default is not argparse.SUPPRESS:
                    default = code(action.default)
                rows.append(f"| {names} | {cell(kind)} | {default or '-'} | {cell(action.help or '')} |")
            if rows:
                out += ["| argument or option | type | default | description |", "|---|---|---|---|", *rows, ""]


def main() -> None:
    root = get_command(typer_app())  # type: ignore[arg-type]
    out = [
        "# CLI reference\n",
        "Generated when the site is built, from the command trees in the code "
        f"(`{CLI_MODULE}` and `{AGENT_MODULE}`): every command, argument and option, with its help text. "
        "`modelyard COMMAND --help` prints the same.\n",
    ]
    render_command(out, root.context_class(root, info_name="modelyard"), 2)
    render_agent(out)
    with mkdocs_gen_files.open("reference/cli.md", "w") as f:
        f.write("\n".join(out) + "\n")


main()
