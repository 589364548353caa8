"""Alias transitions (challenger, champion, previous), serialized per model, each one written to the audit log."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal

from modelyard.errors import LifecycleError, NotFoundError
from modelyard.platform.failpoints import failpoint
from modelyard.platform.registry.base import TAG_PREFIX, Registry, VersionInfo
from modelyard.platform.store.audit import AliasMove, AuditLog, EventRecord
from modelyard.platform.store.requests import Lease

Moves = list[tuple[str, str | None]]  # (alias, version), or (alias, None) to remove it
ALIASES = ("champion", "challenger", "previous")


class ChampionMoved(LifecycleError):
    """The champion changed while a decision about it was being made: judge again."""


class Lifecycle:
    """Alias moves of a model, one at a time: each reads the aliases the platform database
    holds, applies the moves to the registry and records them in the same transaction.

    The platform database is the source of truth for aliases; the registry follows it.
    A crash between the registry write and the commit leaves the database unchanged, and
    the next move (or the retry) writes the registry again from the database's view.
    On PostgreSQL the read and the write are one transaction under an advisory lock; on
    SQLite (embedded mode) the driver reads outside the write transaction, and the file
    lock on the model is what keeps a read and its write together.
    """

    def __init__(self, registry: Registry, audit: AuditLog) -> None:
        self.registry = registry
        self.audit = audit

    def aliases(self, name: str) -> dict[str, str]:
        return self.audit.aliases(name).get(name, {})

    def _move(
        self,
        name: str,
        plan: Callable[[dict[str, str]], Moves],
        actor: str,
        reason: str,
        evidence: dict[str, Any] | Callable[[dict[str, str]], dict[str, Any]],
        request_id: str | None = None,
        extra: tuple[EventRecord, ...] = (),
        fence: Lease | None = None,
        run_folder: Path | None = None,
        precondition: Callable[[AliasMove], None] | None = None,
    ) -> list[EventRecord]:
        """Plan moves from the current aliases and apply them, all or none, under the model's lock.

        `precondition` runs first under the lock, in the move's transaction, and may raise to stop it.

        A failure before the commit puts the registry back (still under the lock); a failed
        commit resyncs the registry from the database under the lock taken again.
        """
        committing = False
        try:
            with self.audit.moving(name, fence) as tx:
                if precondition is not None:
                    precondition(tx)
                current = tx.aliases()
                moves = plan(current)
                proof = evidence(current) if callable(evidence) else evidence
                events, written = [], []
                try:
                    for alias, version in moves:
                        old = current.get(alias)
                        written.append(alias)
                        self._write(name, alias, version)  # even if unchanged: it resyncs the registry
                        if old != version:
                            kind = "alias_removed" if version is None else "alias_set"
                            events.append(
                                EventRecord(name, kind, reason, actor, alias, old, version, proof, request_id)
                            )
                    if run_folder is not None:
                        failpoint("before-alias-commit", run_folder)
                    tx.record(*extra, *events)
                except BaseException:
                    for alias in written:  # put the registry back as the database still has it
                        with suppress(Exception):
                            self._write(name, alias, current.get(alias))
                    raise
                committing = True
        except BaseException:
            if committing:  # the commit itself failed: the registry may be ahead of the database
                with suppress(Exception):
                    self.resync(name)
            raise
        return events

    def _write(self, name: str, alias: str, version: str | None) -> None:
        """Point the registry's alias at version, or remove it (None; already gone is fine)."""
        if version is None:
            with suppress(NotFoundError):
                self.registry.delete_alias(name, alias)
        else:
            self.registry.set_alias(name, alias, version)

    def resync(self, name: str) -> dict[str, str]:
        """Write the platform database's aliases of a model to the registry (the database is the truth)."""
        with self.audit.moving(name) as tx:
            current = tx.aliases()
            for alias in ALIASES:
                self._write(name, alias, current.get(alias))
        return current

    def make_challenger(
        self,
        name: str,
        version: str,
        actor: str,
        reason: str,
        evidence: dict[str, Any],
        request_id: str | None = None,
        fence: Lease | None = None,
    ) -> None:
        registered = EventRecord(name, "registered", reason, actor, None, None, version, evidence, request_id)

        def plan(current: dict[str, str]) -> Moves:
            return [("challenger", version)]

        self._move(name, plan, actor, "newest candidate", {}, request_id, (registered,), fence)

    def promote(
        self,
        name: str,
        version: str,
        actor: str,
        reason: str,
        evidence: dict[str, Any] | None = None,
        request_id: str | None = None,
        force: bool = False,
        expect_champion: str | Literal["any"] | None = "any",
        extra: tuple[EventRecord, ...] = (),
        fence: Lease | None = None,
        run_folder: Path | None = None,
    ) -> list[EventRecord]:
        """version becomes champion; the old champion becomes previous. An undeployable version needs force.

        `expect_champion`: the champion a decision was made against (None: there was none);
        if another version is champion by the time the lock is held, ChampionMoved.
        """
        checked = self._deployable_or_forced(self.registry.get_version(name, version), force, evidence or {})

        def plan(current: dict[str, str]) -> Moves:
            champion = current.get("champion")
            if expect_champion != "any" and champion != expect_champion:
                raise ChampionMoved(
                    f"the champion of '{name}' moved to v{champion} while v{version} was judged against "
                    f"{'v' + expect_champion if expect_champion else 'no champion'}."
                )
            if champion == version:
                raise LifecycleError(f"version {version} of '{name}' is already champion.")
            moves: Moves = [("previous", champion)] if champion is not None else []
            moves.append(("champion", version))
            if current.get("challenger") == version:
                moves.append(("challenger", None))
            return moves

        return self._move(name, plan, actor, reason, checked, request_id, extra, fence, run_folder)

    def rollback(
        self,
        name: str,
        actor: str,
        reason: str,
        to_version: str | None = None,
        force: bool = False,
        expect_champion: str | None = None,
        evidence: dict[str, Any] | None = None,
        extra: tuple[EventRecord, ...] = (),
        precondition: Callable[[AliasMove], None] | None = None,
    ) -> list[EventRecord]:
        """Champion goes back to `previous` (or a named version); previous is cleared.

        `expect_champion` (the guard): roll back only if that version is still champion, else
        ChampionMoved. `extra` events are written in the same transaction as the moves.
        """
        named = None if to_version is None else self.registry.get_version(name, to_version)
        if named is None:
            self.registry.get_alias(name, "champion")  # an unknown model: NotFoundError, said as such
        targets: dict[str, VersionInfo] = {}

        def plan(current: dict[str, str]) -> Moves:
            champion = current.get("champion")
            if expect_champion is not None and champion != expect_champion:
                moved = f"the champion of '{name}' moved to v{champion}"
                raise ChampionMoved(f"{moved}; v{expect_champion} is not rolled back.")
            if named is None:
                if "previous" not in current:
                    raise LifecycleError(f"model '{name}' has no previous version to roll back to; name one with --to.")
                target = self.registry.get_version(name, current["previous"])
            else:
                target = named
            if champion == target.version:
                raise LifecycleError(f"version {target.version} of '{name}' is already champion.")
            targets["target"] = target
            return [("champion", target.version), ("previous", None)]

        def proof(current: dict[str, str]) -> dict[str, Any]:
            found = {**(evidence or {}), "rolled_back_from": current.get("champion")}
            return self._deployable_or_forced(targets["target"], force, found)

        return self._move(name, plan, actor, reason, proof, extra=extra, fence=None, precondition=precondition)

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
            problem = f"has not been exported yet (`modelyard versions export {info.name}/{info.version}`)"
        if not force:
            raise LifecycleError(
                f"version {info.version} of '{info.name}' {problem}; to serve it anyway, use --force with a --reason."
            )
        return {**evidence, "forced": f"version {info.version} {problem}"}
