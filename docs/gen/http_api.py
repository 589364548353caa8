"""Generates reference/http-api.md from the API's OpenAPI schema: every route with its method, path,
summary, who may call it, parameters, request and response schemas, then every schema's fields.

The app is built by the API's own factory against a throwaway MODELYARD_HOME (embedded mode, nothing
running, nothing written into the checkout); every other MODELYARD_* variable of the caller's environment
is hidden while it is built, so a configured server database is never touched. Run by mkdocs-gen-files."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).parent))
from _md import anchor, cell, code, pipes, text

APP_MODULE = "modelyard.platform.api.app"
TOKENS_MODULE = "modelyard.platform.store.tokens"
METHODS = ("get", "post", "put", "patch", "delete")
BASIC = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "null", "object": "object"}


def build_app() -> Any:
    saved = {k: v for k, v in os.environ.items() if k.startswith("MODELYARD_")}
    home = tempfile.mkdtemp(prefix="modelyard-docs-")
    for key in saved:
        del os.environ[key]
    os.environ["MODELYARD_HOME"] = home
    quiet = "MLFLOW_LOGGING_LEVEL" not in os.environ
    if quiet:  # creating the throwaway MLflow store logs at INFO otherwise
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    try:
        return importlib.import_module(APP_MODULE).create_app()
    finally:
        del os.environ["MODELYARD_HOME"]
        if quiet:
            del os.environ["MLFLOW_LOGGING_LEVEL"]
        os.environ.update(saved)
        shutil.rmtree(home, ignore_errors=True)


def api_routes(routes: list[Any], prefix: str = "") -> Any:
    """(path, route) of every API route, also inside included routers (newer FastAPI keeps them nested)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from api_routes(inner.routes, prefix + getattr(context, "prefix", ""))
        elif hasattr(route, "dependant") and hasattr(route, "methods"):
            yield prefix + route.path, route


def callers(app: Any) -> dict[tuple[str, str], str]:
    """Who may call each route, as far as the code shows it: the scope a `require(...)` dependency or an
    `authorize(request, "...")` call names, or a device credential."""
    found: dict[tuple[str, str], str] = {}
    for path, route in api_routes(app.routes):
        who: list[str] = []

        def walk(dependant: Any, who: list[str] = who) -> None:
            for dep in dependant.dependencies:
                call = dep.call
                if inspect.isfunction(call):
                    scope = inspect.getclosurevars(call).nonlocals.get("scope")
                    if isinstance(scope, str):
                        who.append(f"token with `{scope}`")
                    if call.__name__ in ("_caller", "_device"):
                        who.append("device credential")
                walk(dep)

        walk(route.dependant)
        try:
            source = inspect.getsource(route.endpoint)
        except (OSError, TypeError):
            source = ""
        who += [f"token with `{s}`" for s in re.findall(r"authorize\(\s*request\s*,\s*\"(\w+)\"", source)]
        if re.search(r"\b_device\b", source):
            who.append("device credential")
        label = " or ".join(dict.fromkeys(who)) or "open (no credential)"
        for method in route.methods:
            found[(method.lower(), path)] = label
    return found


def type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{anchor('schema', name)})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(dict.fromkeys(type_of(s) for s in schema[key]))
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return type_of(schema["allOf"][0])
    if "const" in schema:
        return code(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(code(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return "list of " + type_of(schema.get("items", {}))
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "mapping of str to " + type_of(schema["additionalProperties"])
    if "title" in schema and "properties" in schema:  # an inline model (the inference body)
        return f"[{schema['title']}](#{anchor('schema', schema['title'])})"
    return BASIC.get(kind, "any") if isinstance(kind, str) else "any"


def body_of(operation: dict[str, Any]) -> str:
    content = operation.get("requestBody", {}).get("content", {})
    return ", ".join(f"{type_of(c.get('schema', {}))} ({code(kind)})" for kind, c in content.items()) or "-"


def responses_of(operation: dict[str, Any]) -> str:
    by_schema: dict[str, list[str]] = defaultdict(list)
    for status, answer in sorted(operation.get("responses", {}).items()):
        content = answer.get("content", {})
        schema = next((c.get("schema") for c in content.values() if c.get("schema")), None)
        label = type_of(schema) if schema else (", ".join(code(k) for k in content) or "no body")
        by_schema[label].append(code(status))
    return "; ".join(f"{', '.join(codes)}: {label}" for label, codes in by_schema.items())


def params_of(operation: dict[str, Any]) -> list[str]:
    rows = []
    for p in operation.get("parameters", []):
        req = "yes" if p.get("required") else "no"
        desc = p.get("description") or p.get("schema", {}).get("description") or ""
        rows.append(
            f"| {code(p['name'])} | {p.get('in', '')} | {pipes(type_of(p.get('schema', {})))} | {req} | {cell(desc)} |"
        )
    return rows


def inline_schemas(spec: dict[str, Any]) -> dict[str, Any]:
    """Schemas given inline (the inference body with its own $defs), so they get a section too."""
    found: dict[str, Any] = {}
    for item in spec.get("paths", {}).values():
        for method in METHODS:
            for c in item.get(method, {}).get("requestBody", {}).get("content", {}).values():
                s = c.get("schema", {})
                if "title" in s and "properties" in s:
                    found[s["title"]] = s
                    found.update(s.get("$defs", {}))
    return found


def schema_section(name: str, schema: dict[str, Any]) -> list[str]:
    out = [f"### {name} {{#{anchor('schema', name)}}}\n"]
    if schema.get("description"):
        out.append(text(schema["description"]) + "\n")
    props = schema.get("properties")
    if not props:
        out.append(f"Type: {type_of(schema)}\n")
        return out
    required = set(schema.get("required", []))
    out += ["| field | type | required | description |", "|---|---|---|---|"]
    for field, prop in props.items():
        kind = pipes(type_of(prop))
        out.append(
            f"| {code(field)} | {kind} | {'yes' if field in required else 'no'} | {cell(prop.get('description'))} |"
        )
    return [*out, ""]


def main() -> None:
    app = build_app()
    spec = app.openapi()
    who = callers(app)
    out = [
        "# HTTP API reference\n",
        f"Generated when the site is built, from the OpenAPI schema of the app `{APP_MODULE}.create_app()` builds "
        f"(OpenAPI {spec.get('openapi', '')}, API version {spec.get('info', {}).get('version', '')}). A running "
        "server serves the same schema at `/openapi.json` and an interactive page at `/docs`. "
        '"Who" is read from each route\'s code: the scope its token must hold (`admin` holds every scope), '
        "a device's own credential, or nothing.\n",
        spec.get("info", {}).get("description", "") + "\n",
    ]
    scopes = getattr(importlib.import_module(TOKENS_MODULE), "SCOPES", None)
    if scopes:
        out += ["## Scopes\n", "| scope | allows |", "|---|---|"]
        out += [f"| {code(name)} | {cell(what)} |" for name, what in scopes.items()]
        out.append("")
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = defaultdict(list)
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                by_tag[(item[method].get("tags") or ["other"])[0]].append((method, path, item[method]))
    out += ["## Routes\n", "| method | path | summary | who |", "|---|---|---|---|"]
    for ops in by_tag.values():
        for method, path, op in ops:
            link = f"[{code(path)}](#{anchor(method, path)})"
            out.append(f"| {method.upper()} | {link} | {cell(op.get('summary'))} | {who.get((method, path), '-')} |")
    out.append("")
    for tag, ops in by_tag.items():
        out.append(f"## {tag.capitalize()} {{#{anchor('tag', tag)}}}\n")
        for method, path, op in ops:
            out.append(f"### {method.upper()} {code(path)} {{#{anchor(method, path)}}}\n")
            if op.get("summary"):
                out.append(f"**{text(op['summary'])}**\n")
            if op.get("description"):
                out.append(text(op["description"]) + "\n")
            out.append(f"- Who: {who.get((method, path), '-')}")
            out.append(f"- Request body: {body_of(op)}")
            out.append(f"- Responses: {responses_of(op)}\n")
            params = params_of(op)
            if params:
                out += ["| parameter | in | type | required | description |", "|---|---|---|---|---|", *params, ""]
    schemas = {**spec.get("components", {}).get("schemas", {}), **inline_schemas(spec)}
    out.append("## Schemas\n")
    for name in sorted(schemas):
        out += schema_section(name, schemas[name])
    with mkdocs_gen_files.open("reference/http-api.md", "w") as f:
        f.write("\n".join(out) + "\n")


main()
