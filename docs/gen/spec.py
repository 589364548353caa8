"""Generates reference/training-spec.md from the JSON schemas of the pydantic models a training spec is
validated with: `TrainSpec` and every model nested in it, and the models that validate its `export:` and
`monitoring:` sections. Run by mkdocs-gen-files."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).parent))
from _md import anchor, cell, code, pipes, text

# (module, class, the YAML key it validates or None for the whole spec, what it is)
ROOTS = [
    ("modelyard.trainers.spec", "TrainSpec", None, "The whole spec file."),
    ("modelyard.exporters.spec", "ExportSpec", "export", "The spec's `export:` section (ONNX export)."),
    (
        "modelyard.monitoring.spec",
        "MonitoringSpec",
        "monitoring",
        "The spec's `monitoring:` section (drift checks, retraining policy, guard).",
    ),
]
BASIC = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "null", "object": "mapping"}
LIMITS = {
    "minimum": ">=",
    "exclusiveMinimum": ">",
    "maximum": "<=",
    "exclusiveMaximum": "<",
    "minLength": "length >=",
    "maxLength": "length <=",
    "minItems": "items >=",
    "maxItems": "items <=",
}


def ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = ref_name(schema["$ref"])
        return f"[{name}](#{anchor(name)})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [type_of(s) for s in schema[key]]
            return " or ".join(dict.fromkeys(options))
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return type_of(schema["allOf"][0])
    if "const" in schema:
        return code(json.dumps(schema["const"]))
    if "enum" in schema:
        return "one of " + ", ".join(code(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return "list of " + type_of(schema.get("items", {}))
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "mapping of str to " + type_of(schema["additionalProperties"])
    if isinstance(kind, list):
        return " or ".join(BASIC.get(k, k) for k in kind)
    return BASIC.get(kind, "any") if kind else "any"


def limits_of(schema: dict[str, Any]) -> str:
    found = [f"{sign} {schema[key]}" for key, sign in LIMITS.items() if key in schema]
    if "pattern" in schema:
        found.append(f"matches `{schema['pattern']}`")
    for option in schema.get("anyOf", []):
        found += [f"{sign} {option[key]}" for key, sign in LIMITS.items() if key in option]
    return ", ".join(found)


def model_table(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    rows = ["| field | type | default | limits | description |", "|---|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        if name in required:
            default = "required"
        elif "default" in prop:
            default = code(json.dumps(prop["default"]))
        else:
            default = "optional"
        description = prop.get("description") or ""
        rows.append(
            f"| {code(name)} | {pipes(type_of(prop))} | {pipes(default)} "
            f"| {cell(limits_of(prop))} | {cell(description)} |"
        )
    return [*rows, ""]


def render(out: list[str], module: str, cls: str, key: str | None, what: str, seen: set[str]) -> None:
    model = getattr(importlib.import_module(module), cls)
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    title = f"`{key}:` section" if key else "The training spec"
    out.append(f"## {title} ({cls}) {{#{anchor(cls)}}}\n")
    out.append(f"{text(what)} Validated by `{module}.{cls}`.\n")
    if schema.get("description"):
        out.append(text(schema["description"]) + "\n")
    out += model_table(schema)
    seen.add(cls)
    for name in order(schema, defs):
        if name in seen:
            continue
        seen.add(name)
        sub = defs[name]
        out.append(f"### {name} {{#{anchor(name)}}}\n")
        if sub.get("description"):
            out.append(text(sub["description"]) + "\n")
        if "properties" in sub:
            out += model_table(sub)
        else:
            out.append(f"Type: {type_of(sub)}\n")


def order(schema: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    """Nested models in the order a reader meets them: breadth first from the root's fields."""
    found: list[str] = []
    queue = [schema]
    while queue:
        for ref in refs(queue.pop(0).get("properties", {})):
            if ref not in found and ref in defs:
                found.append(ref)
                queue.append(defs[ref])
    return found + [d for d in defs if d not in found]


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [ref_name(node["$ref"])] if "$ref" in node else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def main() -> None:
    out = [
        "# Training spec reference\n",
        "Generated when the site is built, from the JSON schemas of the pydantic models that validate a "
        "training spec (`modelyard train SPEC.yaml`, or the `spec` of `POST /v1/trainings`). A field not "
        "listed is an error, naming the field; so is a value outside its limits. "
        "[Getting started](../getting-started.md#a-training-spec) has an annotated example.\n",
    ]
    seen: set[str] = set()
    for module, cls, key, what in ROOTS:
        render(out, module, cls, key, what, seen)
    with mkdocs_gen_files.open("reference/training-spec.md", "w") as f:
        f.write("\n".join(out) + "\n")


main()
