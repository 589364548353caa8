"""Generates reference/settings.md from `Settings.model_fields`: every MODELYARD_* variable with its
type, default, limits and description. A field without a description fails the build, naming it.
Run by mkdocs-gen-files."""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path, PurePath

import mkdocs_gen_files
from pydantic_core import PydanticUndefined

sys.path.insert(0, str(Path(__file__).parent))
from _md import cell, code, pipes

from modelyard.platform.settings import Settings

LIMITS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >=", "max_length": "length <="}


def type_name(tp: object) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        return " or ".join(type_name(a) for a in args) + (", optional" if optional else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(code(a) for a in typing.get_args(tp))
    if origin is not None:
        return code(str(tp).replace("typing.", ""))
    return code(getattr(tp, "__name__", str(tp)))


def default_of(field: typing.Any) -> str:
    if field.default is PydanticUndefined:
        if field.default_factory is not None:
            return code(field.default_factory())
        return "required"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, PurePath):
        value = str(value)
    elif isinstance(value, bool):
        value = str(value).lower()
    return code(value)


def limits_of(field: typing.Any) -> str:
    found = []
    for item in field.metadata:
        for attr, sign in LIMITS.items():
            value = getattr(item, attr, None)
            if value is not None:
                found.append(f"{sign} {value}")
    return ", ".join(found)


def env_name(name: str, field: typing.Any) -> str:
    alias = field.validation_alias or field.alias
    if isinstance(alias, str):
        return alias.upper()
    return (Settings.model_config.get("env_prefix", "") + name).upper()


def main() -> None:
    fields = Settings.model_fields
    undescribed = [f"{env_name(n, f)} ({n})" for n, f in fields.items() if not (f.description or "").strip()]
    if undescribed:
        raise RuntimeError(
            "docs: these settings have no description, so the settings reference cannot be built: "
            + ", ".join(undescribed)
            + ". Give each Field a description= in modelyard/platform/settings.py."
        )
    out = [
        "# Settings reference\n",
        "Generated when the site is built, from `modelyard.platform.settings.Settings`. Every setting is an "
        "environment variable; nothing else in the code reads the "
        "environment. Unset URLs give embedded mode, everything under `MODELYARD_HOME`; setting the broker, "
        "MLflow and database URLs gives server mode ([Server mode](../server-mode.md)).\n",
        f"{len(fields)} settings, in the order the code declares them.\n",
        "| variable | type | default | limits | description |",
        "|---|---|---|---|---|",
    ]
    for name, field in fields.items():
        out.append(
            f"| {code(env_name(name, field))} | {pipes(type_name(field.annotation))} | {pipes(default_of(field))} "
            f"| {cell(limits_of(field))} | {cell(field.description)} |"
        )
    with mkdocs_gen_files.open("reference/settings.md", "w") as f:
        f.write("\n".join(out) + "\n")


main()
