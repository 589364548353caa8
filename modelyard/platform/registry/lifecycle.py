"""Alias transitions (challenger, champion, previous), each one written to the audit log."""

from __future__ import annotations

from typing import Any

from modelyard.errors import LifecycleError
from modelyard.platform.registry.base import TAG_PREFIX, Registry, VersionInfo
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
        force: bool = False,
    ) -> list[EventRecord]:
        """version becomes champion; the old champion becomes previous. An undeployable version needs force."""
        evidence = self._deployable_or_forced(self.registry.get_version(name, version), force, evidence or {})
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
        return self._move(name, moves, actor, reason, evidence, request_id)

    def rollback(
        self, name: str, actor: str, reason: str, to_version: str | None = None, force: bool = False
    ) -> list[EventRecord]:
        """Champion goes back to `previous` (or a named version); previous is cleared."""
        champion = self.registry.get_alias(name, "champion")
        if to_version is None:
            target = self.registry.get_alias(name, "previous")
            if target is None:
                raise LifecycleError(f"model '{name}' has no previous version to roll back to; name one with --to.")
        else:
            target = self.registry.get_version(name, to_version)
        if champion is not None and champion.version == target.version:
            raise LifecycleError(f"version {target.version} of '{name}' is already champion.")
        evidence = self._deployable_or_forced(
            target, force, {"rolled_back_from": champion.version if champion else None}
        )
        return self._move(name, [("champion", target.version), ("previous", None)], actor, reason, evidence)

    @staticmethod
    def _deployable_or_forced(info: VersionInfo, force: bool, evidence: dict[str, Any]) -> dict[str, Any]:
        """A champion is served: refuse a version whose export failed or never ran, unless forced (and say so)."""
        deployable = info.tags.get(f"{TAG_PREFIX}deployable")
        if deployable == "true":
            return evidence
        if deployable == "false":
            why = info.tags.get(f"{TAG_PREFIX}export.error") or "no ONNX variant meets any target's budget"
            problem = f"is not deployable ({why.rstrip('.')})"
        else:
            problem = f"has not been exported yet (`modelyard export {info.name}/{info.version}`)"
        if not force:
            raise LifecycleError(
                f"version {info.version} of '{info.name}' {problem}; to serve it anyway, use --force with a --reason."
            )
        return {**evidence, "forced": f"version {info.version} {problem}"}
