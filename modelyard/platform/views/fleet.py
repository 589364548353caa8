"""How the CLI shows the fleet: devices, rollouts and their devices."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

STATE_STYLE = {
    "completed": "green",
    "installed": "green",
    "halted": "red",
    "failed": "red",
    "rolled_back": "red",
    "refused": "red",
    "timed_out": "red",
    "aborted": "yellow",
    "superseded": "yellow",
    "reverted": "yellow",
    "paused": "yellow",
}


def styled(state: str) -> str:
    style = STATE_STYLE.get(state, "")
    return f"[{style}]{state}[/{style}]" if style else state


def print_devices(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table("device", "group", "tags", "profile", "installed", "desired", "health", "last seen (UTC)")
    for r in rows:
        profile = r.get("profile") or {}
        shown = " ".join(str(profile[k]) for k in ("arch", "runtime_version") if profile.get(k)) or "-"
        tags = " ".join(f"{k}={v}" for k, v in (r.get("tags") or {}).items()) or "-"
        health = r["health"] or "-"
        if r["state"] == "active" and not r["online"]:
            health = f"{health}, offline"
        table.add_row(
            r["id"], r["group"], tags, shown, r["installed"] or "-", r["desired"] or "-", health, r["last_seen"] or "-"
        )
    console.print(
        table if rows else "no devices yet (`modelyard devices enrollment-token --group NAME`, then enroll agents)"
    )


def print_rollout(console: Console, status: dict[str, Any]) -> None:
    console.print(
        f"rollout {status['id']}: {status['model']}/{status['version']} to group {status['group']} "
        f"({status['kind']}): {styled(status['state'])}" + (f" - {status['reason']}" if status.get("reason") else "")
    )
    table = Table("device", "phase", "state", "before", "reason", "updated (UTC)")
    for d in status["devices"]:
        table.add_row(d["device"], d["phase"], styled(d["state"]), d["before"] or "-", d["reason"] or "", d["updated"])
    if status["devices"]:
        console.print(table)


def print_rollouts(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table("#", "model", "version", "group", "kind", "state", "devices", "created (UTC)", "reason")
    for r in rows:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(r["counts"].items())) or "-"
        table.add_row(
            str(r["id"]),
            r["model"],
            r["version"],
            r["group"],
            r["kind"],
            styled(r["state"]),
            counts,
            r["created"],
            r["reason"] or "",
        )
    console.print(table if rows else "no rollouts yet (`modelyard rollouts start NAME@champion --group NAME`)")


def rollout_progress(status: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for d in status["devices"]:
        counts[d["state"]] = counts.get(d["state"], 0) + 1
    told = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no devices yet"
    return f"  {status['state']:<10} {told}" + (f" ({status['reason']})" if status.get("reason") else "")
