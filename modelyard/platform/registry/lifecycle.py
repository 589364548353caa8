"""Alias transitions (challenger, champion, previous), each one written to the audit log."""

from __future__ import annotations

from typing import Any

from modelyard.errors import LifecycleError
from modelyard.platform.registry.base import Registry
from modelyard.platform.store.audit import AuditLog, EventRecord


class Lifecycle:
    def __init__(self, registry: Registry, audit: AuditLog) -> None:
        self.registry = registry
        self.audit = audit

    def _move(
        self,
        name: str,
        moves: list[tuple[str, str | None]],
        actor: str,
        reason: str,
        evidence: dict[str, Any],
        request_id: str | None = None,
        extra: tuple[EventRecord, ...] = (),
    ) -> list[EventRecord]:
        """Apply alias moves (alias -> version, or None to remove); restore them all if one fails."""
        before = {alias: self.registry.get_alias(name, alias) for alias, _ in moves}
        events, done = [], []
        try:
            for alias, version in moves:
                current = before[alias]
                old = current.version if current else None
                if old == version:
                    continue
                if version is None:
                    self.registry.delete_alias(name, alias)
                else:
                    self.registry.set_alias(name, alias, version)
                done.append(alias)
                kind = "alias_removed" if version is None else "alias_set"
                events.append(EventRecord(name, kind, reason, actor, alias, old, version, evidence, request_id))
            self.audit.record(*extra, *events)
        except Exception:
            for alias in done:  # put the registry back as it was
                old_info = before[alias]
                if old_info is None:
                    self.registry.delete_alias(name, alias)
                else:
                    self.registry.set_alias(name, alias, old_info.version)
            raise
        return events

    def make_challenger(
        self, name: str, version: str, actor: str, reason: str, evidence: dict[str, Any], request_id: str | None = None
    ) -> None:
        registered = EventRecord(name, "registered", reason, actor, None, None, version, evidence, request_id)
        self._move(name, [("challenger", version)], actor, "newest candidate", {}, request_id, (registered,))

    def promote(
        self,
        name: str,
        version: str,
        actor: str,
        reason: str,
        evidence: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> list[EventRecord]:
        """version becomes champion; the old champion becomes previous."""
        self.registry.get_version(name, version)  # unknown version: NotFoundError before any change
        champion = self.registry.get_alias(name, "champion")
        if champion is not None and champion.version == version:
            raise LifecycleError(f"version {version} of '{name}' is already champion.")
        challenger = self.registry.get_alias(name, "challenger")
        moves: list[tuple[str, str | None]] = []
        if champion is not None:
            moves.append(("previous", champion.version))
        moves.append(("champion", version))
        if challenger is not None and challenger.version == version:
            moves.append(("challenger", None))
        return self._move(name, moves, actor, reason, evidence or {}, request_id)

    def rollback(self, name: str, actor: str, reason: str, to_version: str | None = None) -> list[EventRecord]:
        """Champion goes back to `previous` (or a named version); previous is cleared."""
        champion = self.registry.get_alias(name, "champion")
        if to_version is None:
            previous = self.registry.get_alias(name, "previous")
            if previous is None:
                raise LifecycleError(f"model '{name}' has no previous version to roll back to; name one with --to.")
            to_version = previous.version
        else:
            self.registry.get_version(name, to_version)
        if champion is not None and champion.version == to_version:
            raise LifecycleError(f"version {to_version} of '{name}' is already champion.")
        evidence = {"rolled_back_from": champion.version if champion else None}
        return self._move(name, [("champion", to_version), ("previous", None)], actor, reason, evidence)
