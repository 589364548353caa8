"""Alias transitions against an in-memory registry and the real (SQLite) audit log."""

from __future__ import annotations

import pytest

from modelyard.errors import LifecycleError, NotFoundError, RegistryError
from modelyard.platform.registry.base import ModelSummary, Registry, VersionInfo, parse_ref, resolve
from modelyard.platform.registry.lifecycle import Lifecycle
from modelyard.platform.store.audit import AuditLog


class MemoryRegistry(Registry):
    """The Registry interface on dicts; `fail_on` makes one alias write fail."""

    def __init__(self, versions: int) -> None:
        self.versions = {str(v) for v in range(1, versions + 1)}
        self.aliases: dict[str, str] = {}
        self.fail_on: str | None = None
        self.tags = {v: {"modelyard.deployable": "true"} for v in self.versions}

    def list_models(self) -> list[ModelSummary]:
        return [ModelSummary("m", max(self.versions, key=int), dict(self.aliases))]

    def list_versions(self, name: str) -> list[VersionInfo]:
        return [self.get_version(name, v) for v in sorted(self.versions, key=int)]

    def get_version(self, name: str, version: str) -> VersionInfo:
        if name != "m":
            raise NotFoundError(f"model '{name}' is not registered.")
        if version not in self.versions:
            raise NotFoundError(f"model 'm' has no version {version}.")
        aliases = [a for a, v in self.aliases.items() if v == version]
        return VersionInfo("m", version, None, aliases, dict(self.tags[version]))

    def get_alias(self, name: str, alias: str) -> VersionInfo | None:
        version = self.aliases.get(alias)
        return None if version is None else self.get_version(name, version)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        if alias == self.fail_on:
            raise RegistryError("registry down")
        self.aliases[alias] = version

    def delete_alias(self, name: str, alias: str) -> None:
        self.aliases.pop(alias, None)

    def find_by_tag(self, name: str, key: str, value: str) -> VersionInfo | None:
        return None

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.tags[version][key] = value

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return {}


@pytest.fixture
def lifecycle(settings) -> Lifecycle:
    return Lifecycle(MemoryRegistry(3), AuditLog(settings))


def aliases(lc: Lifecycle) -> dict[str, str]:
    return dict(lc.registry.aliases)  # type: ignore[attr-defined]


def test_promote_moves_champion_to_previous_and_clears_challenger(lifecycle: Lifecycle) -> None:
    lifecycle.make_challenger("m", "1", "t", "trained", {})
    lifecycle.promote("m", "1", "gate", "first")
    lifecycle.make_challenger("m", "2", "t", "trained", {})
    lifecycle.promote("m", "2", "gate", "better")
    assert aliases(lifecycle) == {"champion": "2", "previous": "1"}
    moves = [
        (e.alias, e.from_version, e.to_version) for e in lifecycle.audit.history("m", ("alias_set", "alias_removed"))
    ]
    assert moves == [
        ("challenger", None, "1"),
        ("champion", None, "1"),
        ("challenger", "1", None),
        ("challenger", None, "2"),
        ("previous", None, "1"),
        ("champion", "1", "2"),
        ("challenger", "2", None),
    ]


def test_rollback_restores_previous_then_needs_a_version(lifecycle: Lifecycle) -> None:
    lifecycle.promote("m", "1", "gate", "first")
    lifecycle.promote("m", "2", "gate", "better")
    events = lifecycle.rollback("m", "oncall", "v2 is worse in production")
    assert aliases(lifecycle) == {"champion": "1"}
    assert events[0].actor == "oncall" and events[0].evidence == {"rolled_back_from": "2"}
    with pytest.raises(LifecycleError, match="no previous version to roll back to; name one with --to"):
        lifecycle.rollback("m", "oncall", "again")
    lifecycle.rollback("m", "oncall", "to 3", to_version="3")
    assert aliases(lifecycle) == {"champion": "3"}


def test_unknown_versions_and_no_op_promotions_change_nothing(lifecycle: Lifecycle) -> None:
    lifecycle.promote("m", "1", "gate", "first")
    before = len(lifecycle.audit.history("m"))
    with pytest.raises(NotFoundError, match="no version 9"):
        lifecycle.promote("m", "9", "cli", "typo")
    with pytest.raises(LifecycleError, match="already champion"):
        lifecycle.promote("m", "1", "cli", "again")
    with pytest.raises(NotFoundError):
        lifecycle.rollback("m", "cli", "typo", to_version="9")
    assert aliases(lifecycle) == {"champion": "1"} and len(lifecycle.audit.history("m")) == before


def test_a_failed_alias_write_restores_the_others_and_records_nothing(lifecycle: Lifecycle) -> None:
    lifecycle.promote("m", "1", "gate", "first")
    before = len(lifecycle.audit.history("m"))
    lifecycle.registry.fail_on = "champion"  # type: ignore[attr-defined]
    with pytest.raises(RegistryError):
        lifecycle.promote("m", "2", "gate", "better")
    assert aliases(lifecycle) == {"champion": "1"} and len(lifecycle.audit.history("m")) == before


def test_references() -> None:
    assert parse_ref("digits@champion") == ("digits", "champion", None)
    assert parse_ref("digits/12") == ("digits", None, "12")
    with pytest.raises(NotFoundError, match="write NAME@alias or NAME/VERSION"):
        parse_ref("digits@@x")
    registry = MemoryRegistry(2)
    with pytest.raises(NotFoundError, match="model 'm' has no champion"):
        resolve(registry, "m")
    with pytest.raises(NotFoundError, match="'best' in 'm@best' is not an alias"):
        resolve(registry, "m@best")


def test_an_undeployable_or_unexported_version_is_served_only_when_forced(lifecycle: Lifecycle) -> None:
    registry = lifecycle.registry
    lifecycle.promote("m", "1", "gate", "first")
    registry.set_version_tag("m", "2", "modelyard.deployable", "false")
    registry.set_version_tag("m", "2", "modelyard.export.error", "parity failed at output 0.")
    del registry.tags["3"]["modelyard.deployable"]  # type: ignore[attr-defined]

    with pytest.raises(LifecycleError) as refused:
        lifecycle.promote("m", "2", "cli", "by hand")
    assert str(refused.value) == (
        "version 2 of 'm' is not deployable (parity failed at output 0); "
        "to serve it anyway, use --force with a --reason."
    )
    with pytest.raises(LifecycleError, match=r"version 3 of 'm' has not been exported yet"):
        lifecycle.rollback("m", "cli", "by hand", to_version="3")
    assert aliases(lifecycle) == {"champion": "1"}

    forced = lifecycle.promote("m", "2", "cli", "incident: v1 crashes", force=True)
    assert aliases(lifecycle)["champion"] == "2"
    assert forced[-1].evidence["forced"].startswith("version 2 is not deployable")
