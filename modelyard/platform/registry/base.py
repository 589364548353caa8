"""The registry interface lifecycle rules talk to; MLflow is one implementation of it."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

from modelyard.errors import NotFoundError

ALIASES = ("champion", "challenger", "previous")
TAG_PREFIX = "modelyard."
EXPORT_TAG = f"{TAG_PREFIX}export"  # modelyard.export.<target> = the variant chosen for it


@dataclass
class VersionInfo:
    name: str
    version: str
    run_id: str | None
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    created_ms: int = 0
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelSummary:
    name: str
    latest_version: str | None
    aliases: dict[str, str]
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Registry(ABC):
    @abstractmethod
    def list_models(self) -> list[ModelSummary]: ...

    @abstractmethod
    def list_versions(self, name: str) -> list[VersionInfo]:
        """Every version of a model, oldest first; NotFoundError for an unknown model."""

    @abstractmethod
    def get_version(self, name: str, version: str) -> VersionInfo: ...

    @abstractmethod
    def get_alias(self, name: str, alias: str) -> VersionInfo | None:
        """The version an alias points to, None when it is unset."""

    @abstractmethod
    def set_alias(self, name: str, alias: str, version: str) -> None: ...

    @abstractmethod
    def delete_alias(self, name: str, alias: str) -> None: ...

    @abstractmethod
    def find_by_tag(self, name: str, key: str, value: str) -> VersionInfo | None: ...

    @abstractmethod
    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None: ...

    @abstractmethod
    def run_metrics(self, run_id: str) -> dict[str, float]: ...


_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<alias>[a-z]+)|/(?P<version>\d+))?$")


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """'NAME@alias' or 'NAME/VERSION' (or plain 'NAME') -> (name, alias, version)."""
    match = _REF.match(ref.strip())
    if not match:
        raise NotFoundError(
            f"'{ref}' is not a model reference; write NAME@alias or NAME/VERSION.", code="invalid_reference"
        )
    return match["name"], match["alias"], match["version"]


def resolve(registry: Registry, ref: str, default_alias: str = "champion") -> VersionInfo:
    name, alias, version = parse_ref(ref)
    if version is not None:
        return registry.get_version(name, version)
    alias = alias or default_alias
    if alias not in ALIASES:
        raise NotFoundError(
            f"'{alias}' in '{ref}' is not an alias (one of {', '.join(ALIASES)}).", code="alias_not_found"
        )
    found = registry.get_alias(name, alias)
    if found is None:
        raise NotFoundError(f"model '{name}' has no {alias}.", code="alias_not_set")
    return found
