"""How the CLI shows things: rows for --json, rich tables and timelines for people."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from modelyard.platform.jobs.operations import event_rows, export_report, model_rows, request_rows, version_rows

__all__ = ["event_rows", "export_report", "model_rows", "request_rows", "version_rows"]  # the rows --json prints

KIND_STYLE = {
    "exported": "blue",
    "export_failed": "red",
    "gate_passed": "green",
    "gate_rejected": "red",
    "training_failed": "red",
    "alias_set": "cyan",
    "alias_removed": "yellow",
    "registered": "blue",
    "training_resumed": "magenta",
    "stale_worker_stopped": "magenta",
    "duplicate_archived": "yellow",
    "request_failed": "red",
}


def _what(row: dict[str, Any]) -> str:
    if row["kind"] in ("alias_set", "alias_removed"):
        return f"{row['alias']}: {row['from'] or '-'} -> {row['to'] or '-'}"
    if row["kind"] == "registered":
        return f"version {row['to']} registered"
    if row["kind"] == "exported":
        return f"v{row['to']} exported to ONNX"
    if row["kind"] == "export_failed":
        return f"v{row['to']} export failed"
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
    report = data.get("export")
    if not report:
        console.print("no ONNX export yet (`modelyard export " + f"{data['name']}/{data['version']}`)")
        return
    primary = report["primary_metric"]
    table = Table("variant", "size kB", primary, "p50 ms b1 1t", "p50 ms b32", "chosen for", title="ONNX variants")
    for v in report["variants"]:
        b1 = next((x["p50_ms"] for x in v["latencies"] if x["batch"] == 1 and x["threads"] == 1), None)
        b32 = min((x["p50_ms"] for x in v["latencies"] if x["batch"] == 32), default=None)
        targets = ", ".join(t for t, s in report["targets"].items() if s["chosen"] == v["variant"])
        table.add_row(
            v["variant"],
            f"{v['size_bytes'] / 1e3:.1f}",
            f"{v['metrics'].get(primary, float('nan')):.4f}",
            f"{b1:.3f}" if b1 else "-",
            f"{b32:.3f}" if b32 else "-",
            targets or "-",
        )
    console.print(table)


def print_export(console: Console, summary: dict[str, Any]) -> None:
    for target, variant in summary["targets"].items():
        console.print(f"{target}: [bold]{variant or 'none'}[/bold]")
        for name, why in summary.get("reasons", {}).get(target, {}).items():
            console.print(f"    {name}: {why}")


def print_training_result(console: Console, result: dict[str, Any]) -> None:
    status = result["status"]
    style = {"promoted": "green", "rejected": "red", "awaiting_approval": "yellow"}.get(status, "")
    dup = " (this request was trained before; nothing new registered)" if result.get("duplicate") else ""
    console.print(f"[bold]{result['model']}[/bold] version {result['version']}: [{style}]{status}[/{style}]{dup}")
    gate = result.get("gate") or {}
    for reason in gate.get("reasons", []):
        console.print(f"  gate: {reason}")
    export = result.get("export") or {}
    if export.get("targets"):
        console.print("  export: " + ", ".join(f"{t} -> {v or 'none'}" for t, v in export["targets"].items()))
    elif export.get("error"):
        console.print(f"  export: [red]{export['error']}[/red]")
    metrics = result.get("metrics") or {}
    shown = ", ".join(
        f"{k} {metrics[k]:.4f}" for k in ("accuracy", "f1_macro", "roc_auc", "mae", "rmse") if k in metrics
    )
    if shown:
        console.print(f"  test: {shown}")
