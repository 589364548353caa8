"""How the CLI shows things: rows for --json, rich tables and timelines for people."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from modelyard.platform.services.operations import event_rows, export_report, model_rows, request_rows, version_rows

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
    "drift_checked": "",
    "retraining_queued": "magenta",
    "retraining_skipped": "yellow",
    "guard_baked": "green",
    "guard_rolled_back": "red",
    "guard_alarm": "red",
    "bundle_built": "blue",
    "bundle_failed": "red",
    "rollout_started": "cyan",
    "rollout_completed": "green",
    "rollout_halted": "red",
    "rollout_aborted": "yellow",
    "rollout_superseded": "yellow",
    "device_failed": "red",
    "device_rolled_back": "red",
    "device_refused": "red",
    "device_timed_out": "red",
}
VERDICT_STYLE = {"no_drift": "green", "drift_harmless": "yellow", "harmful_drift": "red", "performance_drop": "red"}


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
    if row["kind"] == "drift_checked":
        return f"v{row['to']} drift check: {(row.get('evidence') or {}).get('verdict', '?').replace('_', ' ')}"
    if row["kind"] == "retraining_queued":
        return f"retraining queued (from v{row['from'] or '-'})"
    if row["kind"] == "guard_rolled_back":
        return f"guard: v{row['from']} rolled back"
    if row["kind"].startswith("guard_"):
        return f"guard: v{row['to']} {'baked' if row['kind'] == 'guard_baked' else 'worse, nothing to roll back to'}"
    if row["kind"].startswith(("rollout_", "device_", "bundle_")):
        group = (row.get("evidence") or {}).get("group")
        return f"v{row['to']} {row['kind'].replace('_', ' ')}" + (f" ({group})" if group else "")
    return row["kind"].replace("_", " ")


def print_checks(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    table = Table("#", "time (UTC)", "version", "rows", "verdict", "drift share", "performance", "policy", title=title)
    for row in rows:
        style = VERDICT_STYLE.get(row["verdict"] or "", "")
        verdict = str(row["verdict"]).replace("_", " ")
        perf = row.get("performance") or {}
        if perf.get("source") == "live":
            shown = f"live {perf['metric']} {perf['live']:.3f} (held-out {perf['heldout']:.3f})"
        elif perf.get("source") == "cbpe":
            shown = f"est. accuracy {perf['estimated_accuracy']:.3f} (ref {perf['reference_estimate']:.3f})"
        else:
            shown = "-"
        share = "-" if row["drift_share"] is None else f"{row['drift_share']:.0%} ({len(row['drifted_columns'])})"
        table.add_row(
            str(row["id"]),
            row["created"],
            f"v{row['version']}",
            f"{row['window']['rows']} ({row['window']['labeled']} labeled)",
            f"[{style}]{verdict}[/{style}]" if style else verdict,
            share,
            shown,
            row["decision"] or "",
        )
    console.print(table if rows else "no drift checks yet")


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
        console.print("no ONNX export yet (`modelyard versions export " + f"{data['name']}/{data['version']}`)")
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
