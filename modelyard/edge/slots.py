"""A/B slots: `<home>/slots/a` and `<home>/slots/b`, and the pointer `<home>/active.json`.

A new bundle always goes into the slot that is NOT serving; the pointer moves with one
os.replace once the bundle is proven, so at every instant the pointer names a complete slot.
The previous slot stays untouched until the next install, which makes a local rollback a
pointer move back.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from modelyard.edge.errors import EdgeError

SLOTS = ("a", "b")


def write_json_atomic(path: Path, data: Any, *, mode: int | None = None) -> None:
    """Write, fsync, rename, fsync the folder: after a crash the file is the old or the new one, whole.

    `mode` (e.g. 0o600 for a file holding a secret) is set when the temp file is created, before a byte
    is written, so the secret is never readable by others, not even between the write and the rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # A temp file left by a crash keeps its old mode through O_CREAT: start from a fresh one.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    if mode is not None:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise EdgeError(f"{path} is not valid JSON ({exc}); the agent home is damaged.", stage="switch") from exc


class Slots:
    def __init__(self, home: Path) -> None:
        self.root = home / "slots"
        self.pointer = home / "active.json"

    def path(self, slot: str) -> Path:
        return self.root / slot

    def active(self) -> str | None:
        data = read_json(self.pointer)
        slot = data.get("slot") if isinstance(data, dict) else None
        return slot if slot in SLOTS and self.path(slot).is_dir() else None

    def active_info(self) -> dict[str, Any] | None:
        """{"slot", "model", "version", "sha256", "previous"} of the serving bundle, or None."""
        data = read_json(self.pointer)
        return data if isinstance(data, dict) and self.active() else None

    def inactive(self) -> str:
        return "b" if self.active() == "a" else "a"

    def install(self, staging: Path, slot: str) -> Path:
        """Move a verified staging folder into `slot` (which must not be serving)."""
        if slot == self.active():
            raise EdgeError(f"slot {slot} is serving; refusing to install over it.", stage="unpack")
        target = self.path(slot)
        if target.exists():
            shutil.rmtree(target)
        self.root.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
        fsync_dir(self.root)
        return target

    def switch(self, slot: str, *, model: str, version: str, sha256: str) -> None:
        """Point at `slot`; the slot that served before is remembered as `previous` for a rollback."""
        current = self.active_info()
        previous = None
        if current:
            previous = {k: current[k] for k in ("slot", "model", "version", "sha256")}
        info = {"slot": slot, "model": model, "version": version, "sha256": sha256, "previous": previous}
        write_json_atomic(self.pointer, info)

    def rollback(self) -> dict[str, Any] | None:
        """Point back at the previous slot; returns what serves now, or None when there is nothing to go back to."""
        current = self.active_info()
        previous = current.get("previous") if current else None
        if not previous or not self.path(previous["slot"]).is_dir():
            return None
        write_json_atomic(self.pointer, {**previous, "previous": None})
        return self.active_info()
