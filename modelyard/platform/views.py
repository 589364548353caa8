"""How the CLI shows things: rows for --json, rich tables and timelines for people."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console
from rich.table import Table

from modelyard.platform.db import Event
from modelyard.platform.registry import TAG_PREFIX, Registry

KIND_STYLE = {
    "gate_passed": "green",
    "gate_rejected": "red",
    "training_failed": "red",
    "alias_set": "cyan",
    "alias_removed": "yellow",
    "registered": "blue",
    "training_resumed": "magenta",
}


def version_rows(registry: Registry, name: str) -> list[dict[str, Any]]:
    rows = []
    for v in registry.list_versions(name):
        created = dt.datetime.fromtimestamp(v.created_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append(
            {
                "version": v.version,
                "aliases": sorted(v.aliases),
                "created": created,
                "run_id": v.run_id,
                "trigger": v.tags.get(f"{TAG_PREFIX}trigger"),
                "request_id": v.tags.get(f"{TAG_PREFIX}request_id"),
                "dataset_sha256": v.tags.get(f"{TAG_PREFIX}dataset_sha256"),
                "parent_version": v.tags.get(f"{TAG_PREFIX}parent_version") or None,
            }
        )
    return rows


def event_rows(events: list[Event]) -> list[dict[str, Any]]:
    return [
        {
            "id": e.id,
            "time": e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "model": e.model,
            "kind": e.kind,
            "alias": e.alias,
            "from": e.from_version,
            "to": e.to_version,
            "actor": e.actor,
            "reason": e.reason,
            "evidence": e.evidence,
            "request_id": e.request_id,
        }
        for e in events
    ]


def _what(row: dict[str, Any]) -> str:
    if row["kind"] in ("alias_set", "alias_removed"):
        return f"{row['alias']}: {row['from'] or '-'} -> {row['to'] or '-'}"
    if row["kind"] == "registered":
        return f"version {row['to']} registered"
    if row["kind"].startswith("gate_"):
        return (
            f"v{row['to']} {'passed' if row['kind'] == 'gate_passed' else 'rejected'} (champion v{row['from'] or '-'})"
        )
    return row["kind"].replace("_", " ")


def print_timeline(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    table = Table("time (UTC)", "event", "actor", "reason", title=title, show_lines=False)
    for row in rows:
        style = KIND_STYLE.get(row["kind"], "")
        table.add_row(
            row["time"], f"[{style}]{_what(row)}[/{style}]" if style else _what(row), row["actor"], row["reason"]
        )
    console.print(table if rows else "no events yet")


def print_version(console: Console, data: dict[str, Any]) -> None:
    console.print(
        f"[bold]{data['name']}[/bold] version {data['version']}  aliases: {', '.join(data['aliases']) or '-'}"
    )
    console.print(f"run: {data['run_id']}  source: {data['source']}")
    table = Table("tag", "value")
    for key, value in sorted(data["tags"].items()):
        table.add_row(key, value)
    console.print(table)
    metrics = Table("metric", "value")
    for key, value in data["metrics"].items():
        if key.startswith(("test_", "baseline_")):
            metrics.add_row(key, f"{value:.4f}")
    console.print(metrics)


def print_training_result(console: Console, result: dict[str, Any]) -> None:
    status = result["status"]
    style = {"promoted": "green", "rejected": "red", "awaiting_approval": "yellow"}.get(status, "")
    dup = " (this request was trained before; nothing new registered)" if result.get("duplicate") else ""
    console.print(f"[bold]{result['model']}[/bold] version {result['version']}: [{style}]{status}[/{style}]{dup}")
    gate = result.get("gate") or {}
    for reason in gate.get("reasons", []):
        console.print(f"  gate: {reason}")
    metrics = result.get("metrics") or {}
    shown = ", ".join(
        f"{k} {metrics[k]:.4f}" for k in ("accuracy", "f1_macro", "roc_auc", "mae", "rmse") if k in metrics
    )
    if shown:
        console.print(f"  test: {shown}")
